"""The training loop: AdamW, warmup then cosine, EMA, AMP on CUDA, early stopping, resume.

`train()` is what `touchstone train` runs, on one process or under `torchrun`.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
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
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel

from touchstone.data.manifest import Manifest, PhotoRecord, load_manifest
from touchstone.data.splitting import assign_splits
from touchstone.evaluation.evaluate import evaluate, fit_policy
from touchstone.evaluation.metrics import photo_metrics
from touchstone.evaluation.report import decision_table, write_report
from touchstone.evaluation.scoring import score_records
from training import checkpoints
from training.config import TrainConfig, dump_config
from training.data import RegionPhotos, class_weights, eval_loader, train_loader
from training.distributed import World, broadcast, gather, init_world, shutdown
from training.models import AuthenticityNet, BuiltModel, create_model, torch_predict
from training.plots import plot_history, plot_regions
from training.tracking import (
    MlflowTracker,
    NullTracker,
    data_params,
    flatten,
    git_commit,
    system_info,
)


class TrainingError(RuntimeError):
    """Training cannot start as asked (data, model or weights); the message says why."""


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
    evaluation: dict[str, Any] = field(default_factory=dict)


def train(
    config: TrainConfig,
    manifest: Path,
    out: Path,
    resume: bool = False,
    console: Console | None = None,
) -> TrainResult:
    world = init_world()
    try:
        trainer = Trainer(config, Path(manifest), Path(out), world, console or Console())
        return trainer.run(resume)
    finally:
        shutdown(world)


def seed_everything(seed: int, cuda: bool) -> None:
    import random

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


class Trainer:
    def __init__(
        self, config: TrainConfig, manifest_path: Path, out: Path, world: World, console: Console
    ) -> None:
        self.config = config
        self.world = world
        self.out = out
        self.console = console
        # Every rank starts from the same weights; their augmentations differ (loader seed).
        seed_everything(config.seed, cuda=world.device.type == "cuda")
        self.manifest = load_manifest(manifest_path)
        self.regions = self.manifest.info.regions
        self.splits = split_records(self.manifest, config)
        self._build_model()
        self._build_data()
        self._build_optimisation()
        self.tracker: NullTracker = NullTracker()
        self.global_step = 0
        self.start_epoch = 0
        self.best_value: float | None = None
        self.result = TrainResult(out)

    def _build_model(self) -> None:
        config, world = self.config, self.world
        self.built: BuiltModel = create_model(config.model, config.data, self.regions)
        self.net: AuthenticityNet = self.built.net.to(world.device)
        self.channels_last = config.optim.channels_last
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.model = self.net
        if world.distributed:
            ids = [world.local_rank] if world.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        # Made after DDP has broadcast rank 0's weights, so every rank averages alike; warmup
        # ramps the decay up from 0, so short runs are not judged on the initial weights.
        self.ema = None
        if config.optim.ema_decay:
            self.ema = ModelEmaV3(self.net, decay=config.optim.ema_decay, use_warmup=True)

    def _build_data(self) -> None:
        config, world = self.config, self.world
        prep = self.built.preprocessing
        self.train_set = RegionPhotos(
            self.splits["train"], self.regions, prep, config.data.augment, seed=config.seed
        )
        self.val_set = RegionPhotos(self.splits["val"], self.regions, prep)
        self.train_loader, self.sampler = train_loader(
            self.train_set,
            config.data,
            config.seed,
            world.rank,
            world.size,
            pin_memory=world.device.type == "cuda",
        )
        self.val_loader = eval_loader(self.val_set, config.data, world.rank, world.size)
        self.steps_per_epoch = len(self.train_loader)
        if config.optim.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.optim.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise TrainingError("the train split is smaller than one batch")

    def _build_optimisation(self) -> None:
        optim, world = self.config.optim, self.world
        self.optimizer = create_optimizer_v2(
            self.net, opt="adamw", lr=optim.lr, weight_decay=optim.weight_decay
        )
        self.scheduler = CosineLRScheduler(
            self.optimizer,
            t_initial=optim.epochs * self.steps_per_epoch,
            lr_min=optim.lr * 0.01,
            warmup_t=int(optim.warmup_epochs * self.steps_per_epoch),
            warmup_lr_init=optim.lr * 0.01,
            t_in_epochs=False,
        )
        self.amp_dtype = None
        if world.device.type == "cuda" and optim.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # A balanced sampler already evens the classes; otherwise the loss weighs them.
        balance = self.config.data.balance
        in_loss = balance == "class_weights" or (balance == "sampler" and world.distributed)
        weights = class_weights(self.splits["train"]) if in_loss else {}
        self.label_weight = {
            1.0: weights.get("authentic", 1.0),
            0.0: weights.get("counterfeit", 1.0),
        }

    # -- the run -------------------------------------------------------------------------

    def run(self, resume: bool) -> TrainResult:
        if resume:
            self._resume()
        elif (self.out / "checkpoints" / checkpoints.LAST).exists():
            raise TrainingError(
                f"{self.out} already holds a run: pass --resume to continue "
                "it, or choose another --out"
            )
        if self.world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            dump_config(self.config, self.out / "config.yaml")
            self.tracker = self._start_tracking()
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        # A job started in the background by a shell script inherits SIGINT ignored; Ctrl-C
        # (or `kill -INT`) must still stop it cleanly.
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        status = "FAILED"
        try:
            self._epochs()
            status = "FINISHED"
        except KeyboardInterrupt:
            self.result.interrupted = True
            status = "KILLED"
            if self.world.is_main:
                self.console.print(
                    f"[yellow]stopped: the last checkpoint is kept in {self.out / 'checkpoints'}[/]"
                )
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
            if self.world.is_main:
                self._finish(status)
        return self.result

    def _epochs(self) -> None:
        optim = self.config.optim
        patience_left = optim.patience
        for epoch in range(self.start_epoch, optim.epochs):
            if self.sampler is not None:
                self.sampler.set_epoch(epoch)
            train_loss, rate = self._train_epoch(epoch)
            metrics = self._validate()
            row = {
                "epoch": float(epoch),
                "train_loss": train_loss,
                "images_per_second": rate,
                **{f"val_{k}": v for k, v in metrics.items()},
            }
            self.result.history.append(row)
            self.result.epochs_run = epoch + 1
            value = row[optim.monitor]
            improved = self._improved(value)
            if improved:
                self.best_value = value
                self.result.best_epoch = epoch
                self.result.best = row
                patience_left = optim.patience
            elif patience_left is not None:
                patience_left -= 1
            if self.world.is_main:
                self._checkpoint(epoch, improved)
                self.tracker.log_metrics(row, step=epoch)
                self._report(row, improved)
            if patience_left is not None and patience_left <= 0:
                self.result.stopped_early = True
                if self.world.is_main:
                    self.console.print(
                        f"early stop: {optim.monitor} has not improved for {optim.patience} epochs"
                    )
                break

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return self.best_value is None
        if self.best_value is None or math.isnan(self.best_value):
            return True
        if self.config.optim.monitor == "val_loss":
            return value < self.best_value
        return value > self.best_value

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        self.model.train()
        if self.config.data.workers == 0 and self.train_set.transform is not None:
            # Worker processes reseed themselves each epoch; in-process loading does it here,
            # so a resumed run draws the same augmentations as an uninterrupted one.
            self.train_set.transform.set_random_seed(self.config.seed * 100_003 + epoch)
        losses: list[float] = []
        seen = 0
        start = time.perf_counter()
        progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.config.optim.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} img/s  loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not self.world.is_main,
        )
        with progress:
            task = progress.add_task("train", total=self.steps_per_epoch, rate="-", loss="-")
            for step, batch in enumerate(self.train_loader):
                if step >= self.steps_per_epoch:
                    break
                self.result.skipped_photos += batch.skipped
                if len(batch.labels) == 0:
                    continue
                losses.append(self._step(batch))
                seen += len(batch.labels)
                rate = seen * self.world.size / (time.perf_counter() - start)
                progress.update(task, advance=1, rate=f"{rate:.1f}", loss=f"{losses[-1]:.3f}")
        elapsed = time.perf_counter() - start
        total_loss = float(
            np.mean(gather(self.world, float(np.mean(losses)) if losses else math.nan))
        )
        rate = seen * self.world.size / elapsed if elapsed > 0 else 0.0
        return total_loss, rate

    def _step(self, batch: Any) -> float:
        device = self.world.device
        images = batch.images.to(device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = batch.labels.to(device)
        smoothing = self.config.optim.label_smoothing
        targets = labels * (1 - smoothing) + 0.5 * smoothing
        weights = batch.weights.to(device) * torch.where(
            labels > 0.5, self.label_weight[1.0], self.label_weight[0.0]
        )
        with torch.autocast(
            device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            logits = self.model(images).gather(1, batch.regions.to(device)[:, None]).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits.float(), targets, reduction="none"
            )
            loss = (loss * weights).sum() / weights.sum().clamp_min(1e-8)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.global_step += 1
        self.scheduler.step_update(num_updates=self.global_step)
        if self.ema is not None:
            self.ema.update(self.net, step=self.global_step)
        return float(loss.detach())

    def evaluated_net(self) -> AuthenticityNet:
        """The weights that validation scores: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.net  # type: ignore[return-value]

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        net = self.evaluated_net()
        net.eval()
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for batch in self.val_loader:
            self.result.skipped_photos += batch.skipped
            if len(batch.labels) == 0:
                continue
            images = batch.images.to(self.world.device)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(
                self.world.device.type,
                dtype=self.amp_dtype or torch.float32,
                enabled=self.amp_dtype is not None,
            ):
                logits = net(images).float()
            chosen = logits.gather(1, batch.regions.to(self.world.device)[:, None]).squeeze(1)
            parts.append(
                (
                    batch.indices.numpy(),
                    chosen.cpu().numpy(),
                    batch.labels.numpy(),
                    batch.regions.numpy(),
                )
            )
        gathered = [p for rank_parts in gather(self.world, parts) for p in rank_parts]
        metrics: dict[str, float] = {}
        if self.world.is_main and gathered:
            indices = np.concatenate([p[0] for p in gathered])
            # A distributed sampler pads the last batch with repeats: count each photo once.
            _, first = np.unique(indices, return_index=True)
            logits, labels, regions = (
                np.concatenate([p[i] for p in gathered])[first] for i in (1, 2, 3)
            )
            metrics = photo_metrics(logits, labels, regions, self.regions)
        return broadcast(self.world, metrics)

    # -- checkpoints, resume, tracking ----------------------------------------------------

    def _checkpoint(self, epoch: int, improved: bool) -> None:
        folder = self.out / "checkpoints"
        state = {
            "epoch": epoch,
            "global_step": self.global_step,
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_value": self.best_value,
            "result": {k: v for k, v in asdict(self.result).items() if k != "run_dir"},
            "random": checkpoints.random_states(),
            "loader_generator": self.train_loader.generator.get_state(),
        }
        checkpoints.save(folder / checkpoints.LAST, state)
        if improved:
            checkpoints.save(folder / checkpoints.BEST, self._inference_payload(epoch))

    def _inference_payload(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.evaluated_net().state_dict(),
            "arch": self.config.model.arch,
            "regions": list(self.regions),
            "preprocessing": asdict(self.built.preprocessing),
            "config": self.config.model_dump(mode="json"),
            "metrics": self.result.best,
            "manifest_sha256": self.manifest.content_hash(),
            # Where export finds the data to calibrate on, and the run to attach the model to.
            "manifest_path": str(self.manifest.path.resolve()),
            "categories": sorted({r.category for r in self.splits["train"] if r.category}),
            "run_dir": str(self.out.resolve()),
            "mlflow_run_id": self.result.mlflow_run_id,
        }

    def _resume(self) -> None:
        path = self.out / "checkpoints" / checkpoints.LAST
        if not path.exists():
            raise TrainingError(f"nothing to resume: no {path}")
        state = checkpoints.load(path)
        self.net.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.global_step = state["global_step"]
        # The schedule is a function of the step: rebuilt from this run's config, so a resumed
        # run may also be given more epochs.
        self.scheduler.step_update(num_updates=self.global_step)
        self.best_value = state["best_value"]
        saved = state["result"]
        self.result = TrainResult(
            self.out,
            **{k: v for k, v in saved.items() if k not in ("mlflow_run_id", "model_version")},
        )
        self.start_epoch = state["epoch"] + 1
        checkpoints.restore_random_states(state["random"])
        self.train_loader.generator.set_state(state["loader_generator"])
        if self.world.is_main:
            self.console.print(
                f"resuming after epoch {self.start_epoch} of {self.config.optim.epochs}"
            )

    def _start_tracking(self) -> NullTracker:
        if not self.config.tracking.enabled:
            return NullTracker()
        tags = {
            "git_commit": git_commit(),
            "data.manifest": str(self.manifest.path),
            "data.manifest_sha256": self.manifest.content_hash(),
            "run_dir": str(self.out.resolve()),
        }
        tracker = MlflowTracker(self.config.tracking, self.out.name, tags)
        params = flatten("", self.config.model_dump(mode="json"))
        params.update(system_info(self.world.device, self.world.size))
        params.update(data_params(self.splits, self.regions, self.built.preprocessing))
        tracker.log_params(params)
        tracker.log_artifact(self.out / "config.yaml")
        self.result.mlflow_run_id = tracker.run_id
        return tracker

    def _finish(self, status: str) -> None:
        history = self.result.history
        if history:
            self.result.images_per_second = float(
                np.mean([h["images_per_second"] for h in history])
            )
            self.tracker.log_artifact(plot_history(history, self.out / "history.png"), "plots")
        if self.result.best:
            best = {k.removeprefix("val_"): v for k, v in self.result.best.items()}
            self.tracker.log_artifact(
                plot_regions(best, self.regions, self.out / "regions.png"), "plots"
            )
        best_path = self.out / "checkpoints" / checkpoints.BEST
        if status == "FINISHED" and best_path.exists():
            net = copy.deepcopy(self.evaluated_net()).to("cpu")
            net.load_state_dict(checkpoints.load(best_path)["model"])
            net = net.to(memory_format=torch.contiguous_format).eval()
            size = self.built.preprocessing.input_size
            example = np.zeros((1, 3, size, size), np.float32)
            self.result.model_version = self.tracker.register_model(net, example)
            self._evaluate(net)
        summary = {k: v for k, v in asdict(self.result).items() if k != "run_dir"}
        (self.out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
        self.tracker.log_artifact(self.out / "metrics.json")
        self.tracker.finish(status)

    def _evaluate(self, net: AuthenticityNet) -> None:
        """What export will do on the ONNX model, on the best torch weights: the calib split
        fits the decision policy, test (else val) measures it; the report goes to
        RUN_DIR/evaluation and MLflow."""
        held_out = "test" if self.splits.get("test") else "val"
        if not self.splits.get("calib"):
            self.console.print("no calib split: item decisions and thresholds are not fitted")
            return
        predict = torch_predict(net)
        prep = self.built.preprocessing
        calib = score_records(
            self.splits["calib"],
            predict,
            prep,
            self.regions,
            console=self.console,
            description="scoring calib",
        )
        policy = fit_policy(calib)
        scores = score_records(
            self.splits[held_out],
            predict,
            prep,
            self.regions,
            console=self.console,
            description=f"scoring {held_out}",
        )
        metrics = evaluate(scores, policy)
        paths = write_report(
            metrics, policy, self.out / "evaluation", f"{self.out.name}: {held_out}"
        )
        for path in paths.values():
            self.tracker.log_artifact(path, "evaluation")
        self.tracker.log_metrics(
            {
                f"{held_out}_item_accuracy": metrics["item"]["accuracy"],
                f"{held_out}_item_auc": metrics["item"]["auc"],
                f"{held_out}_coverage": metrics["decisions"]["coverage"],
                f"{held_out}_aurc": metrics["risk_coverage"]["aurc"],
            },
            step=self.result.epochs_run,
        )
        self.result.evaluation = {
            "split": held_out,
            "report": str(paths["report"]),
            "table": decision_table(metrics),
        }

    def _report(self, row: dict[str, float], improved: bool) -> None:
        mark = " *" if improved else ""
        self.console.print(
            f"epoch {int(row['epoch']) + 1}: train loss {row['train_loss']:.3f}, "
            f"val loss {row['val_loss']:.3f}, accuracy {row['val_accuracy']:.3f}, "
            f"ROC-AUC {row['val_auc']:.3f}, {row['images_per_second']:.1f} img/s{mark}"
        )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
