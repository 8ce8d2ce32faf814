"""Validation after each epoch: the evaluated weights (the EMA when there is one) on the val
split, each rank its share, gathered on rank 0 and the metrics sent back to every rank."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from touchstone.decision import ItemAggregation
from touchstone.evaluation.calibration import fit_item_aggregation
from touchstone.evaluation.metrics import log_loss, photo_metrics
from training.bookkeeping import TrainResult
from training.distributed import World, broadcast, gather
from training.run_setup import RunContext, RunParts

# (dataset indices, logits of the photo's region, labels, region indices) of one batch
Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@torch.no_grad()
def validate(run: RunContext, parts: RunParts, result: TrainResult) -> dict[str, float]:
    """Photo metrics of the val split (`photo_metrics` keys) and item metrics (`item_metrics`),
    the same on every rank."""
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
        records = parts.loaders.val.dataset.records
        item_ids = [records[i].item_id for i in indices[first]]
        metrics.update(item_metrics(logits, labels, region_index, item_ids, run.regions))
    return broadcast(world, metrics)


def item_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    region_index: np.ndarray,
    item_ids: list[str],
    regions: tuple[str, ...],
) -> dict[str, float]:
    """Item log-loss and ROC-AUC: photos grouped by item, combined by the item rule
    (`fit_item_aggregation`) fitted on these very items. Fitted rather than the plain sum of
    region log-odds because export refits the rule anyway: an epoch should win for how well its
    scores separate items once combined and calibrated, not for the scale its raw log-odds
    happen to have (the plain sum of three regions' log-odds is overconfident, and its log-loss
    punishes that more than it rewards ranking). Fitting four numbers on the items it then
    scores flatters every epoch alike, so the comparison between epochs stays fair."""
    names = sorted(set(item_ids))
    position = {item: i for i, item in enumerate(names)}
    item_index = np.array([position[item] for item in item_ids], dtype=int)
    means, _ = ItemAggregation.uncalibrated(regions).region_features(
        item_index, region_index, logits.astype(np.float64), len(names)
    )
    item_labels = np.zeros(len(names))
    item_labels[item_index] = labels  # an item's photos share its label
    log_odds = fit_item_aggregation(means, item_labels, regions).item_log_odds_from_features(means)
    both = 0 < item_labels.sum() < len(item_labels)
    return {
        "item_log_loss": log_loss(log_odds, item_labels),
        "item_auc": float(roc_auc_score(item_labels, log_odds)) if both else math.nan,
        "item_count": float(len(names)),
    }


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
