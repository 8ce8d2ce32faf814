import os

# Nothing may touch the network at import or run time (also set by the Makefile and CI).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Commands print rich tables; a fixed width keeps their text the same on every machine.
os.environ["COLUMNS"] = "200"

from collections.abc import Iterator
from pathlib import Path

import pytest

from touchstone.data.synth import SynthConfig, generate_dataset


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic data set (manifest path), shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("synthetic")
    return generate_dataset(
        out, SynthConfig(items=24, seed=3, size=96), workers=1, show_progress=False
    )


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> Path:
    """A few steps of a tiny network on the small synthetic set, tracked in its own MLflow
    store: a finished training run directory."""
    from training.config import load_config
    from training.loop import train

    root = tmp_path_factory.mktemp("tiny-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = load_config(
            ROOT / "configs" / "tiny-test.yaml",
            [
                f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
                f"tracking.artifact_location={root / 'artifacts'}",
            ],
        )
        result = train(config, tiny_synthetic, root / "run")
    assert result.evaluation["split"] == "test"
    return root / "run"


@pytest.fixture(scope="session")
def tiny_model(tiny_run: Path) -> Path:
    """That run exported: model.onnx and model.json."""
    from training.export import export_run

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = export_run(tiny_run, tiny_run.parent / "model")
    assert result.parity_max_abs_diff <= 1e-4
    return result.model_dir


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Storage tests run on both databases: the embedded SQLite default (None: it lives in the
    data directory) and a fresh PostgreSQL database at 127.0.0.1:5432, dropped afterwards."""
    if request.param == "sqlite":
        yield None
    else:
        from tests.serving_support import postgres_database

        with postgres_database() as url:
            yield url
