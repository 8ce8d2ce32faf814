"""The MLflow model registry for exported models (ONNX + card), without torch.

Training registers its torch weights as `touchstone-authenticity` (alias `candidate`); export
registers what serving runs, the model directory, as `touchstone-authenticity-onnx`, also as
`candidate`. `touchstone promote` moves the alias `champion`; serving loads a directory or a
registry URI such as `models:/touchstone-authenticity-onnx@champion`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ONNX_SUFFIX = "-onnx"
ARTIFACT_FOLDER = "onnx-model"
CANDIDATE = "candidate"
CHAMPION = "champion"
DEFAULT_TRACKING_URI = "sqlite:///experiments/mlflow.db"


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says why."""


def _client(tracking_uri: str | None):  # -> mlflow.MlflowClient
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient()


def log_export(
    run_dir: Path, model_dir: Path, registered_model: str, tracking_uri: str | None = None
) -> str | None:
    """Attach the exported directory to its training run and register it; None when the
    training run was not tracked."""
    summary = Path(run_dir) / "metrics.json"
    run_id = json.loads(summary.read_text()).get("mlflow_run_id") if summary.exists() else None
    if not run_id:
        return None
    client = _client(tracking_uri)
    client.log_artifacts(run_id, str(model_dir), artifact_path=ARTIFACT_FOLDER)
    name = registered_model + ONNX_SUFFIX
    try:
        client.get_registered_model(name)
    except Exception:  # MlflowException RESOURCE_DOES_NOT_EXIST
        client.create_registered_model(name, description="Exported models: model.onnx + model.json")
    version = client.create_model_version(
        name, source=f"runs:/{run_id}/{ARTIFACT_FOLDER}", run_id=run_id
    ).version
    client.set_registered_model_alias(name, CANDIDATE, str(version))
    return str(version)


def promote(
    name: str, version: str, alias: str = CHAMPION, tracking_uri: str | None = None
) -> None:
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        client.get_model_version(name, version)
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise RegistryError(
            f"cannot set {name}@{alias} to version {version}: {exc.message}"
        ) from exc


def fetch_model_dir(uri: str, cache: Path, tracking_uri: str | None = None) -> Path:
    """A model directory from a path, or from `models:/NAME@ALIAS` / `models:/NAME/VERSION`
    downloaded into `cache` (one folder per version, so a switch never overwrites the model
    in service)."""
    if not uri.startswith("models:/"):
        return Path(uri)
    import mlflow
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    reference = uri.removeprefix("models:/")
    try:
        if "@" in reference:
            name, alias = reference.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = reference.rsplit("/", 1)
            version = client.get_model_version(name, number)
        target = Path(cache) / f"{name}-v{version.version}"
        if not (target / "model.json").exists():
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version.version}", dst_path=str(target)
            )
    except (MlflowException, ValueError) as exc:
        raise RegistryError(f"cannot load {uri}: {exc}") from exc
    return target
