import os

# Nothing may touch the network at import or run time (also set by the Makefile and CI).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Commands print rich tables; a fixed width keeps their text the same on every machine.
os.environ["COLUMNS"] = "200"

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
