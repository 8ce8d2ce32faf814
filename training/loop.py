"""The training loop: AdamW, warmup then cosine, EMA, AMP on CUDA, early stopping, resume.

`train()` is what `touchstone train` runs, on one process or under `torchrun`. The loop is
here; `run_setup` builds what it runs, `steps` trains an epoch, `validation` scores it,
`bookkeeping` keeps the best and the checkpoints, and `end_of_run` registers and evaluates.
"""

from __future__ import annotations

import dataclasses
from math import nan
from pathlib import Path

from rich.console import Console

from touchstone.data.manifest import load_manifest
from training import checkpoints
from training.bookkeeping import EarlyStopping, TrainResult, resume_from_last, save_checkpoints
from training.config import TrainConfig, dump_config
from training.distributed import World, init_world, shutdown
from training.end_of_run import finish_run
from training.interrupts import interrupts_stop_training
from training.run_setup import (
    RunContext,
    TrainingError,
    build_parts,
    seed_everything,
    split_records,
)
from training.steps import train_epoch
from training.tracking import NullTracker, start_tracking
from training.validation import validate

__all__ = ["TrainResult", "Trainer", "TrainingError", "split_records", "train"]


def train(
    config: TrainConfig,
    manifest: Path,
    out: Path,
    resume: bool = False,
    console: Console | None = None,
    leave_out: frozenset[str] = frozenset(),
) -> TrainResult:
    """Train on the manifest's rows, less those of the items in `leave_out` (items of members
    erased since the manifest was exported: `touchstone train` asks the service's database)."""
    world = init_world()
    try:
        trainer = Trainer(config, Path(manifest), Path(out), world, console or Console(), leave_out)
        return trainer.run(resume)
    finally:
        shutdown(world)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        manifest_path: Path,
        out: Path,
        world: World,
        console: Console,
        leave_out: frozenset[str] = frozenset(),
    ) -> None:
        # Every rank starts from the same weights; their augmentations differ (loader seed).
        seed_everything(config.seed, cuda=world.device.type == "cuda")
        manifest = load_manifest(manifest_path)
        if leave_out:
            kept = [r for r in manifest.records if r.item_id not in leave_out]
            manifest = dataclasses.replace(manifest, records=kept)
        splits = split_records(manifest, config)
        self.context = RunContext(config, world, manifest, splits, out, console)
        self.parts = build_parts(self.context)
        self.stopping = EarlyStopping(config.optim.monitor, config.optim.patience)
        self.tracker: NullTracker = NullTracker()
        self.start_epoch = 0
        self.result = TrainResult(out)

    def run(self, resume: bool) -> TrainResult:
        self._start(resume)
        is_main = self.context.world.is_main
        status = "FAILED"
        try:
            with interrupts_stop_training():
                self._epochs()
            status = "FINISHED"
        except KeyboardInterrupt:
            self.result.interrupted = True
            status = "KILLED"
            if is_main:
                folder = self.context.out / "checkpoints"
                self.context.console.print(
                    f"[yellow]stopped: the last checkpoint is kept in {folder}[/]"
                )
        finally:
            if is_main:
                finish_run(self.context, self.parts.networks, self.result, self.tracker, status)
        return self.result

    def _start(self, resume: bool) -> None:
        out = self.context.out
        if resume:
            self._resume()
        elif (out / "checkpoints" / checkpoints.LAST).exists():
            raise TrainingError(
                f"{out} already holds a run: pass --resume to continue it, or choose another --out"
            )
        if self.context.world.is_main:
            out.mkdir(parents=True, exist_ok=True)
            dump_config(self.context.config, out / "config.yaml")
            self.tracker = start_tracking(self.context, self.parts.networks.built.preprocessing)
            self.result.mlflow_run_id = self.tracker.run_id

    def _resume(self) -> None:
        resumed = resume_from_last(self.context, self.parts)
        self.start_epoch = resumed.start_epoch
        self.stopping.best_value = resumed.best_value
        self.result = resumed.result
        if self.context.world.is_main:
            epochs = self.context.config.optim.epochs
            self.context.console.print(f"resuming after epoch {self.start_epoch} of {epochs}")

    def _epochs(self) -> None:
        context, parts, optim = self.context, self.parts, self.context.config.optim
        for epoch in range(self.start_epoch, optim.epochs):
            if parts.loaders.sampler is not None:
                parts.loaders.sampler.set_epoch(epoch)
            stats = train_epoch(epoch, context, parts, self.result)
            metrics = validate(context, parts, self.result)
            row = {
                "epoch": float(epoch),
                "train_loss": stats.train_loss,
                "images_per_second": stats.images_per_second,
                **{f"val_{k}": v for k, v in metrics.items()},
            }
            self.result.history.append(row)
            self.result.epochs_run = epoch + 1
            improved = self.stopping.observe(row[optim.monitor])
            if improved:
                self.result.best_epoch = epoch
                self.result.best = row
            if context.world.is_main:
                save_checkpoints(context, parts, self.result, self.stopping, epoch, improved)
                self.tracker.log_metrics(row, step=epoch)
                self._report(row, improved)
            if self.stopping.exhausted:
                self.result.stopped_early = True
                if context.world.is_main:
                    context.console.print(
                        f"early stop: {optim.monitor} has not improved for {optim.patience} epochs"
                    )
                break

    def _report(self, row: dict[str, float], improved: bool) -> None:
        mark = " *" if improved else ""
        item_loss, item_auc = row.get("val_item_log_loss", nan), row.get("val_item_auc", nan)
        self.context.console.print(
            f"epoch {int(row['epoch']) + 1}: train loss {row['train_loss']:.3f}, "
            f"val loss {row['val_loss']:.3f}, accuracy {row['val_accuracy']:.3f}, "
            f"ROC-AUC {row['val_auc']:.3f}; items: log-loss {item_loss:.3f}, "
            f"ROC-AUC {item_auc:.3f}; {row['images_per_second']:.1f} img/s{mark}"
        )
