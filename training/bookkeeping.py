"""What a run keeps from epoch to epoch and across a restart: its result so far, the best value
of the monitored metric with the patience left, and the checkpoints that a resume starts from."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training import checkpoints
from training.run_setup import RunContext, RunParts, TrainingError

# Monitored metrics that improve downwards; the others (ROC-AUC, accuracy) improve upwards.
LOWER_IS_BETTER = frozenset({"val_loss", "val_item_log_loss"})


@dataclass
class TrainResult:
    run_dir: Path
    epochs_run: int = 0
    best_epoch: int = -1
    best: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    interrupted: bool = False
    skipped_photos: int = 0
    images_per_second: float = 0.0
    mlflow_run_id: str | None = None
    model_version: str | None = None
    # The end-of-run evaluation: split, report (its path) and table (the decision table rows).
    evaluation: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Everything but the run directory, which is where the summary is kept."""
        return {k: v for k, v in asdict(self).items() if k != "run_dir"}


class EarlyStopping:
    """The best value of the monitored metric so far, and the epochs left to beat it."""

    def __init__(self, monitor: str, patience: int | None) -> None:
        self.monitor = monitor
        self.patience = patience
        self.patience_left = patience
        self.best_value: float | None = None

    def observe(self, value: float) -> bool:
        """Record one epoch's value; whether it is the best so far."""
        improved = self._improves(value)
        if improved:
            self.best_value = value
            self.patience_left = self.patience
        elif self.patience_left is not None:
            self.patience_left -= 1
        return improved

    @property
    def exhausted(self) -> bool:
        return self.patience_left is not None and self.patience_left <= 0

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return self.best_value is None
        if self.best_value is None or math.isnan(self.best_value):
            return True
        if self.monitor in LOWER_IS_BETTER:
            return value < self.best_value
        return value > self.best_value


def save_checkpoints(
    run: RunContext,
    parts: RunParts,
    result: TrainResult,
    stopping: EarlyStopping,
    epoch: int,
    improved: bool,
) -> None:
    """`last.pt` after every epoch; `best.pt` when the epoch improved on the best."""
    networks, optimisation = parts.networks, parts.optimisation
    state = {
        "epoch": epoch,
        "global_step": optimisation.global_step,
        "model": networks.net.state_dict(),
        "ema": networks.ema.state_dict() if networks.ema is not None else None,
        "optimizer": optimisation.optimizer.state_dict(),
        "scaler": optimisation.scaler.state_dict(),
        "best_value": stopping.best_value,
        "result": result.summary(),
        "random": checkpoints.random_states(),
        "loader_generator": parts.loaders.train.generator.get_state(),
    }
    folder = run.out / "checkpoints"
    checkpoints.save(folder / checkpoints.LAST, state)
    if improved:
        checkpoints.save(folder / checkpoints.BEST, _inference_payload(run, parts, result, epoch))


def _inference_payload(
    run: RunContext, parts: RunParts, result: TrainResult, epoch: int
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "model": parts.networks.evaluated().state_dict(),
        "arch": run.config.model.arch,
        "regions": list(run.regions),
        "preprocessing": asdict(parts.networks.built.preprocessing),
        "config": run.config.model_dump(mode="json"),
        "metrics": result.best,
        "manifest_sha256": run.manifest.content_hash(),
        # Where export finds the data to calibrate on, and the run to attach the model to.
        "manifest_path": str(run.manifest.path.resolve()),
        "categories": sorted({r.category for r in run.splits["train"] if r.category}),
        "run_dir": str(run.out.resolve()),
        "mlflow_run_id": result.mlflow_run_id,
    }


@dataclass
class Resumed:
    start_epoch: int
    best_value: float | None
    result: TrainResult


def resume_from_last(run: RunContext, parts: RunParts) -> Resumed:
    """Put the weights, optimiser, schedule and random states back as `last.pt` left them."""
    path = run.out / "checkpoints" / checkpoints.LAST
    if not path.exists():
        raise TrainingError(f"nothing to resume: no {path}")
    state = checkpoints.load(path)
    networks, optimisation = parts.networks, parts.optimisation
    networks.net.load_state_dict(state["model"])
    if networks.ema is not None and state["ema"] is not None:
        networks.ema.load_state_dict(state["ema"])
    optimisation.optimizer.load_state_dict(state["optimizer"])
    optimisation.scaler.load_state_dict(state["scaler"])
    optimisation.global_step = state["global_step"]
    # The schedule is a function of the step: rebuilt from this run's config, so a resumed
    # run may also be given more epochs.
    optimisation.scheduler.step_update(num_updates=optimisation.global_step)
    saved = state["result"]
    result = TrainResult(
        run.out,
        **{k: v for k, v in saved.items() if k not in ("mlflow_run_id", "model_version")},
    )
    checkpoints.restore_random_states(state["random"])
    parts.loaders.train.generator.set_state(state["loader_generator"])
    return Resumed(state["epoch"] + 1, state["best_value"], result)
