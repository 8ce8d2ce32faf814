"""What a training run is made of, built in a fixed order so that a seed gives the same run:
the splits, the network (DDP-wrapped under torchrun, with its EMA), the loaders, and the
optimiser with its schedule, mixed precision and class weights."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from touchstone.data.manifest import Manifest, PhotoRecord
from touchstone.data.splitting import assign_splits
from training.config import TrainConfig
from training.data import (
    RegionPhotos,
    class_weights,
    eval_loader,
    fill_decode_cache,
    train_loader,
)
from training.distributed import World
from training.models import AuthenticityNet, BuiltModel, create_model
from training.param_groups import param_groups, set_trainable


class TrainingError(RuntimeError):
    """Training cannot start as asked (data, model or weights); the message says why."""


def seed_everything(seed: int, cuda: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if cuda:
        # GPUs need deterministic kernels asked for (and cost some speed); on CPUs the same
        # seed and thread count already give the same numbers, and forcing the deterministic
        # kernels there measured about 9% slower (benchmarks/train_throughput.py).
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def split_records(manifest: Manifest, config: TrainConfig) -> dict[str, list[PhotoRecord]]:
    labelled = [r for r in manifest.records if r.label is not None]
    if any(r.split is None for r in labelled):
        fractions = dict(zip(("train", "val", "calib", "test"), config.data.fractions, strict=True))
        labelled = assign_splits(labelled, fractions, config.seed)
    splits: dict[str, list[PhotoRecord]] = {}
    for record in labelled:
        splits.setdefault(record.split or "", []).append(record)
    for needed in ("train", "val"):
        if not splits.get(needed):
            raise TrainingError(f"{manifest.path}: no labelled photos in the {needed} split")
    return splits


@dataclass(frozen=True)
class RunContext:
    """What a run was asked to do, and where: its config, processes, data and directory."""

    config: TrainConfig
    world: World
    manifest: Manifest
    splits: dict[str, list[PhotoRecord]]
    out: Path
    console: Console

    @property
    def regions(self) -> tuple[str, ...]:
        return self.manifest.info.regions


@dataclass
class Networks:
    built: BuiltModel
    net: AuthenticityNet  # the weights themselves
    model: torch.nn.Module  # what the step runs: `net`, DDP-wrapped under torchrun
    ema: ModelEmaV3 | None
    channels_last: bool
    world: World
    head_only: bool = False  # the backbone is frozen (training.param_groups)

    def evaluated(self) -> AuthenticityNet:
        """The weights that validation scores: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.net  # type: ignore[return-value]

    def train_mode(self, head_only: bool) -> None:
        """Ready for a training step of the given phase (the heads alone, or everything)."""
        changed = head_only != self.head_only
        set_trainable(self.net, head_only)
        if changed:
            self.head_only = head_only
            self.model = _wrap(self.net, self.world)

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images


def build_networks(config: TrainConfig, regions: tuple[str, ...], world: World) -> Networks:
    built = create_model(config.model, config.data, regions)
    net = built.net.to(world.device)
    channels_last = config.optim.channels_last
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = _wrap(net, world)
    # Made after DDP has broadcast rank 0's weights, so every rank averages alike; warmup
    # ramps the decay up from 0, so short runs are not judged on the initial weights.
    ema = None
    if config.optim.ema_decay:
        ema = ModelEmaV3(net, decay=config.optim.ema_decay, use_warmup=True)
    return Networks(built, net, model, ema, channels_last, world)


def _wrap(net: AuthenticityNet, world: World) -> torch.nn.Module:
    """What the step runs: DDP-wrapped under torchrun. DDP reduces the gradients of the
    parameters that required one when it was made, so a change of phase wraps anew."""
    if not world.distributed:
        return net
    ids = [world.local_rank] if world.device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)


@dataclass
class Loaders:
    train_set: RegionPhotos
    train: DataLoader
    sampler: DistributedSampler | None  # under torchrun: told the epoch, so ranks reshuffle
    val: DataLoader
    steps_per_epoch: int


def build_loaders(
    config: TrainConfig,
    splits: dict[str, list[PhotoRecord]],
    regions: tuple[str, ...],
    networks: Networks,
    world: World,
    console: Console | None = None,
) -> Loaders:
    prep = networks.built.preprocessing
    train_set = RegionPhotos(splits["train"], regions, prep, config.data.augment, seed=config.seed)
    val_set = RegionPhotos(splits["val"], regions, prep)
    if config.data.decode_cache:
        fill_decode_cache([train_set, val_set], config.data, console, show_progress=world.is_main)
    train, sampler = train_loader(
        train_set,
        config.data,
        config.seed,
        world.rank,
        world.size,
        pin_memory=world.device.type == "cuda",
    )
    val = eval_loader(val_set, config.data, world.rank, world.size)
    steps_per_epoch = len(train)
    if config.optim.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.optim.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise TrainingError("the train split is smaller than one batch")
    return Loaders(train_set, train, sampler, val, steps_per_epoch)


@dataclass
class Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # None: full precision
    label_weight: dict[float, float]  # loss weight by label, 1.0 authentic and 0.0 counterfeit
    head_steps: int = 0  # steps before this one train the heads alone (optim.head_epochs)
    global_step: int = 0  # the schedule and the phase are functions of it

    @property
    def head_only(self) -> bool:
        return self.global_step < self.head_steps

    def autocast(self, device: torch.device) -> AbstractContextManager[Any]:
        return torch.autocast(
            device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )


def build_optimisation(
    config: TrainConfig,
    net: AuthenticityNet,
    steps_per_epoch: int,
    train_records: list[PhotoRecord],
    world: World,
) -> Optimisation:
    optim = config.optim
    groups = param_groups(net, optim.weight_decay, optim.backbone_lr_scale)
    optimizer = create_optimizer_v2(
        groups, opt="adamw", lr=optim.lr, weight_decay=optim.weight_decay
    )
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=optim.epochs * steps_per_epoch,
        lr_min=optim.lr * 0.01,
        warmup_t=int(optim.warmup_epochs * steps_per_epoch),
        warmup_lr_init=optim.lr * 0.01,
        t_in_epochs=False,
    )
    amp_dtype = None
    if world.device.type == "cuda" and optim.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    # A balanced sampler already evens the classes; otherwise the loss weighs them.
    balance = config.data.balance
    in_loss = balance == "class_weights" or (balance == "sampler" and world.distributed)
    weights = class_weights(train_records) if in_loss else {}
    label_weight = {1.0: weights.get("authentic", 1.0), 0.0: weights.get("counterfeit", 1.0)}
    head_steps = round(optim.head_epochs * steps_per_epoch)
    return Optimisation(optimizer, scheduler, scaler, amp_dtype, label_weight, head_steps)


@dataclass
class RunParts:
    networks: Networks
    loaders: Loaders
    optimisation: Optimisation


def build_parts(run: RunContext) -> RunParts:
    config, world = run.config, run.world
    networks = build_networks(config, run.regions, world)
    loaders = build_loaders(config, run.splits, run.regions, networks, world, run.console)
    optimisation = build_optimisation(
        config, networks.net, loaders.steps_per_epoch, run.splits["train"], world
    )
    return RunParts(networks, loaders, optimisation)
