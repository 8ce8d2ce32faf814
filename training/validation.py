"""Validation after each epoch: the evaluated weights (the EMA when there is one) on the val
split, each rank its share, gathered on rank 0 and the metrics sent back to every rank."""

from __future__ import annotations

import numpy as np
import torch

from touchstone.evaluation.metrics import photo_metrics
from training.bookkeeping import TrainResult
from training.distributed import World, broadcast, gather
from training.run_setup import RunContext, RunParts

# (dataset indices, logits of the photo's region, labels, region indices) of one batch
Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@torch.no_grad()
def validate(run: RunContext, parts: RunParts, result: TrainResult) -> dict[str, float]:
    """Photo metrics of the val split (`photo_metrics` keys), the same on every rank."""
    world = run.world
    gathered = [p for rank_parts in gather(world, _score(parts, world, result)) for p in rank_parts]
    metrics: dict[str, float] = {}
    if world.is_main and gathered:
        indices = np.concatenate([p[0] for p in gathered])
        # A distributed sampler pads the last batch with repeats: count each photo once.
        _, first = np.unique(indices, return_index=True)
        logits, labels, region_index = (
            np.concatenate([p[i] for p in gathered])[first] for i in (1, 2, 3)
        )
        metrics = photo_metrics(logits, labels, region_index, run.regions)
    return broadcast(world, metrics)


def _score(parts: RunParts, world: World, result: TrainResult) -> list[Part]:
    """This rank's share of the val split, scored; undecodable photos counted in `result`."""
    net = parts.networks.evaluated()
    net.eval()
    scored: list[Part] = []
    for batch in parts.loaders.val:
        result.skipped_photos += batch.skipped
        if len(batch.labels) == 0:
            continue
        images = parts.networks.to_input(batch.images.to(world.device))
        with parts.optimisation.autocast(world.device):
            logits = net(images).float()
        chosen = logits.gather(1, batch.regions.to(world.device)[:, None]).squeeze(1)
        scored.append(
            (
                batch.indices.numpy(),
                chosen.cpu().numpy(),
                batch.labels.numpy(),
                batch.regions.numpy(),
            )
        )
    return scored
