"""Training end to end on a tiny synthetic set: checkpoints, MLflow, resume, torchrun."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from touchstone.data.manifest import load_manifest
from training import checkpoints
from training.config import load_config
from training.loop import TrainingError, train

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny-test.yaml"
TOUCHSTONE = str(Path(sys.executable).parent / "touchstone")


def _tracking(tmp_path: Path) -> list[str]:
    return [
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"tracking.artifact_location={tmp_path / 'artifacts'}",
    ]


def test_a_few_steps_end_with_a_checkpoint_a_run_and_a_registered_model(
    tmp_path: Path, tiny_synthetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(TINY, _tracking(tmp_path))
    result = train(config, tiny_synthetic, tmp_path / "run")
    assert not result.interrupted and result.epochs_run == 2
    best = checkpoints.load(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["regions"] == ["hardware", "stitching", "logo"]
    assert best["preprocessing"]["input_size"] == 64
    assert (tmp_path / "run" / "config.yaml").exists()
    assert (tmp_path / "run" / "history.png").stat().st_size > 5_000

    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert {"val_auc", "val_loss", "train_loss", "val_hardware.accuracy"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2
    assert run.data.tags["data.manifest_sha256"] == best["manifest_sha256"]
    assert run.data.params["model.arch"] == "test_resnet"
    assert "system.torch" in run.data.params
    version = client.get_model_version_by_alias("touchstone-authenticity", "candidate")
    assert str(version.version) == result.model_version and version.run_id == run.info.run_id
    loaded = mlflow.pytorch.load_model("models:/touchstone-authenticity@candidate")
    assert loaded(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


def test_same_seed_same_run(tmp_path: Path, tiny_synthetic: Path) -> None:
    config = load_config(TINY, ["tracking.enabled=false"])
    first = train(config, tiny_synthetic, tmp_path / "a")
    second = train(config, tiny_synthetic, tmp_path / "b")
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]
    assert [h["val_loss"] for h in first.history] == [h["val_loss"] for h in second.history]


def test_a_bad_photo_is_skipped_and_counted(tmp_path: Path, tiny_synthetic: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic.parent, data)
    lines = (data / "manifest.csv").read_text().splitlines()
    first_train = next(line for line in lines[1:] if ",train," in line)
    broken = data / first_train.split(",")[0]
    broken.write_bytes(broken.read_bytes()[:200])  # truncated mid-file
    config = load_config(
        TINY, ["tracking.enabled=false", "optim.max_steps_per_epoch=null", "optim.epochs=1"]
    )
    result = train(config, data / "manifest.csv", tmp_path / "run")
    assert result.epochs_run == 1 and result.skipped_photos >= 1


def test_ctrl_c_keeps_the_last_checkpoint_and_resume_continues(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    run = tmp_path / "run"
    args = [
        TOUCHSTONE,
        "train",
        "--config",
        str(TINY),
        "--data",
        str(tiny_synthetic),
        "--out",
        str(run),
        "--set",
        "tracking.enabled=false",
        "--set",
        "optim.epochs=40",
        "--set",
        "optim.max_steps_per_epoch=1",
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert last.exists(), process.communicate()[0]
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "last checkpoint is kept" in output
    stopped_at = checkpoints.load(last)["epoch"]
    assert stopped_at < 39
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["interrupted"] is True
    history_before = summary["history"]

    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming after epoch {stopped_at + 1}" in " ".join(resumed.stdout.split())
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["epochs_run"] == 40
    assert [h["epoch"] for h in summary["history"]] == [float(e) for e in range(40)]

    def scores(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in h.items() if k != "images_per_second"} for h in history]

    assert scores(summary["history"][: len(history_before)]) == scores(history_before)
    # Stopped and resumed, the run scores exactly what an uninterrupted run scores.
    config = load_config(
        TINY, ["tracking.enabled=false", "optim.epochs=40", "optim.max_steps_per_epoch=1"]
    )
    reference = train(config, tiny_synthetic, tmp_path / "reference")
    assert scores(summary["history"]) == scores(reference.history)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path: Path, tiny_synthetic: Path) -> None:
    result = subprocess.run(
        [
            TOUCHSTONE,
            "train",
            "--config",
            str(TINY),
            "--data",
            str(tiny_synthetic),
            "--out",
            str(tmp_path / "none"),
            "--resume",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "nothing to resume" in result.stdout


def test_two_processes_under_torchrun_with_gloo(tmp_path: Path, tiny_synthetic: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node=2",
            "--no-python",
            TOUCHSTONE,
            "train",
            "--config",
            str(TINY),
            "--data",
            str(tiny_synthetic),
            "--out",
            str(tmp_path / "run"),
            *[a for pair in (("--set", s) for s in _tracking(tmp_path)) for a in pair],
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["touchstone-training"])
    assert len(runs) == 1  # rank 1 wrote nothing
    assert runs.iloc[0]["params.system.world_size"] == "2"


def test_a_finished_run_is_not_overwritten(tmp_path: Path, tiny_synthetic: Path) -> None:
    config = load_config(TINY, ["tracking.enabled=false", "optim.epochs=1"])
    train(config, tiny_synthetic, tmp_path / "done")
    with pytest.raises(TrainingError, match="already holds a run"):
        train(config, tiny_synthetic, tmp_path / "done")


def test_class_balance_by_weights_or_by_sampling(tmp_path: Path, tiny_synthetic: Path) -> None:
    from training.data import class_weights

    records = [r for r in load_manifest(tiny_synthetic).records][:4]
    labels = ["authentic", "authentic", "authentic", "counterfeit"]
    weights = class_weights([replace(r, label=lab) for r, lab in zip(records, labels, strict=True)])
    assert weights == pytest.approx({"authentic": 4 / 6, "counterfeit": 2.0})
    config = load_config(TINY, ["tracking.enabled=false", "optim.epochs=1", "data.balance=sampler"])
    assert train(config, tiny_synthetic, tmp_path / "sampled").epochs_run == 1
