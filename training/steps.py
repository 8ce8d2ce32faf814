"""One epoch of training, step by step: weighted, label-smoothed BCE on each photo's own region
head, AMP on CUDA, gradient clipping, the schedule by step, and the EMA."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from training.bookkeeping import TrainResult
from training.config import TrainConfig
from training.distributed import World, gather
from training.run_setup import Networks, Optimisation, RunContext, RunParts


@dataclass
class EpochStats:
    train_loss: float  # mean over steps and ranks
    images_per_second: float


def train_epoch(epoch: int, run: RunContext, parts: RunParts, result: TrainResult) -> EpochStats:
    """Train one epoch; photos that cannot be decoded are counted in `result` as they come."""
    config, world = run.config, run.world
    networks, loaders, optimisation = parts.networks, parts.loaders, parts.optimisation
    if config.data.workers == 0 and loaders.train_set.transform is not None:
        # Worker processes reseed themselves each epoch; in-process loading does it here,
        # so a resumed run draws the same augmentations as an uninterrupted one.
        loaders.train_set.transform.set_random_seed(config.seed * 100_003 + epoch)
    losses: list[float] = []
    seen = 0
    start = time.perf_counter()
    with _progress(epoch, config, world, run.console) as progress:
        task = progress.add_task("train", total=loaders.steps_per_epoch, rate="-", loss="-")
        for step, batch in enumerate(loaders.train):
            if step >= loaders.steps_per_epoch:
                break
            result.skipped_photos += batch.skipped
            if len(batch.labels) == 0:
                continue
            # The phase is a function of the step, so a resumed run picks it up as it was.
            networks.train_mode(head_only=optimisation.head_only)
            losses.append(train_step(batch, config, world, networks, optimisation))
            seen += len(batch.labels)
            rate = seen * world.size / (time.perf_counter() - start)
            progress.update(task, advance=1, rate=f"{rate:.1f}", loss=f"{losses[-1]:.3f}")
    elapsed = time.perf_counter() - start
    mean_loss = float(np.mean(losses)) if losses else math.nan
    total_loss = float(np.mean(gather(world, mean_loss)))
    rate = seen * world.size / elapsed if elapsed > 0 else 0.0
    return EpochStats(total_loss, rate)


def _progress(epoch: int, config: TrainConfig, world: World, console: Console) -> Progress:
    return Progress(
        TextColumn(f"epoch {epoch + 1}/{config.optim.epochs}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} img/s  loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not world.is_main,
    )


def train_step(
    batch: Any, config: TrainConfig, world: World, networks: Networks, optimisation: Optimisation
) -> float:
    device = world.device
    images = networks.to_input(batch.images.to(device, non_blocking=True))
    labels = batch.labels.to(device)
    smoothing = config.optim.label_smoothing
    targets = labels * (1 - smoothing) + 0.5 * smoothing
    label_weight = optimisation.label_weight
    weights = batch.weights.to(device) * torch.where(
        labels > 0.5, label_weight[1.0], label_weight[0.0]
    )
    with optimisation.autocast(device):
        logits = networks.model(images).gather(1, batch.regions.to(device)[:, None]).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.float(), targets, reduction="none"
        )
        loss = (loss * weights).sum() / weights.sum().clamp_min(1e-8)
    _update(loss, config, networks, optimisation)
    return float(loss.detach())


def _update(
    loss: torch.Tensor, config: TrainConfig, networks: Networks, optimisation: Optimisation
) -> None:
    optimizer, scaler = optimisation.optimizer, optimisation.scaler
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if config.optim.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(networks.net.parameters(), config.optim.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimisation.global_step += 1
    optimisation.scheduler.step_update(num_updates=optimisation.global_step)
    if networks.ema is not None:
        networks.ema.update(networks.net, step=optimisation.global_step)
