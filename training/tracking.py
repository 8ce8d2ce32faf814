"""MLflow tracking: a local SQLite store under experiments/ unless MLFLOW_TRACKING_URI says
otherwise. Only rank 0 tracks; other ranks get a tracker that does nothing."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from touchstone.data.manifest import PhotoRecord
from touchstone.imaging import Preprocessing
from training.config import TrackingConfig
from training.run_setup import RunContext

CANDIDATE_ALIAS = "candidate"


class NullTracker:
    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path, folder: str | None = None) -> None: ...
    def register_model(self, net: torch.nn.Module, example: np.ndarray) -> str | None:
        return None

    def finish(self, status: str) -> None: ...


class MlflowTracker(NullTracker):
    def __init__(self, config: TrackingConfig, run_name: str, tags: dict[str, str]) -> None:
        import mlflow

        self.mlflow = mlflow
        self.config = config
        uri = os.environ.get("MLFLOW_TRACKING_URI") or config.uri
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.get_experiment_by_name(config.experiment)
        if experiment is None:
            location = config.artifact_location
            if "://" not in location:
                location = Path(location).resolve().as_uri()
            experiment_id = mlflow.create_experiment(config.experiment, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        self.run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
        self.run_id = self.run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow caps a parameter's value at 6000 characters; ours are short.
        self.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        clean = {
            k.replace("/", "."): float(v) for k, v in metrics.items() if v == v
        }  # NaN (e.g. AUC of a one-class set) is left out
        self.mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=folder)

    def register_model(self, net: torch.nn.Module, example: np.ndarray) -> str | None:
        """Log the best weights as an MLflow model, register it, point `candidate` at it."""
        import mlflow.pytorch
        from mlflow import MlflowClient
        from mlflow.models import infer_signature

        with torch.no_grad():
            output = net(torch.from_numpy(example)).numpy()
        info = mlflow.pytorch.log_model(
            net,
            name="model",
            registered_model_name=self.config.registered_model,
            signature=infer_signature(example, output),
            # The class lives in this package; pt2 (torch.export) would need an input example
            # run through tracing at every registration.
            serialization_format="pickle",
            # Listing requirements skips MLflow's slow inference of them.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "timm"],
        )
        version = str(info.registered_model_version)
        MlflowClient().set_registered_model_alias(
            self.config.registered_model, CANDIDATE_ALIAS, version
        )
        return version

    def finish(self, status: str) -> None:
        self.mlflow.end_run(status=status)


def start_tracking(run: RunContext, preprocessing: Preprocessing) -> NullTracker:
    """An MLflow run with the config, the system and the data as parameters (rank 0 only)."""
    config = run.config
    if not config.tracking.enabled:
        return NullTracker()
    tags = {
        "git_commit": git_commit(),
        "data.manifest": str(run.manifest.path),
        "data.manifest_sha256": run.manifest.content_hash(),
        "run_dir": str(run.out.resolve()),
    }
    tracker = MlflowTracker(config.tracking, run.out.name, tags)
    params = flatten("", config.model_dump(mode="json"))
    params.update(system_info(run.world.device, run.world.size))
    params.update(data_params(run.splits, run.regions, preprocessing))
    tracker.log_params(params)
    tracker.log_artifact(run.out / "config.yaml")
    return tracker


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def system_info(device: torch.device, world_size: int) -> dict[str, str]:
    info = {
        "system.python": platform.python_version(),
        "system.platform": platform.platform(),
        "system.torch": torch.__version__,
        "system.cpu_count": str(os.cpu_count()),
        "system.device": str(device),
        "system.world_size": str(world_size),
    }
    if device.type == "cuda":
        info["system.gpu"] = torch.cuda.get_device_name(device)
    return info


def data_params(
    splits: dict[str, list[PhotoRecord]], regions: tuple[str, ...], prep: Preprocessing
) -> dict[str, Any]:
    """What the run was trained on: photos, items and authentic photos per split."""
    params: dict[str, Any] = {
        "data.regions": ",".join(regions),
        "data.input_size": prep.input_size,
        "data.mean": prep.mean,
        "data.std": prep.std,
    }
    for split, records in splits.items():
        params[f"data.{split}.photos"] = len(records)
        params[f"data.{split}.items"] = len({r.item_id for r in records})
        params[f"data.{split}.authentic"] = sum(r.label == "authentic" for r in records)
    return params


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), child))
        return out
    return {prefix: value}
