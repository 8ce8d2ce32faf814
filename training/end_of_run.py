"""The end of a run, on rank 0: plots, the best weights registered in MLflow and evaluated as
export will evaluate the ONNX model, and the run's summary in `metrics.json`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from touchstone.evaluation.evaluate import evaluate
from touchstone.evaluation.policy import fit_policy
from touchstone.evaluation.report import decision_table, write_report
from touchstone.evaluation.scoring import PhotoScores, Predict, score_records
from training import checkpoints
from training.bookkeeping import TrainResult
from training.models import AuthenticityNet, torch_predict
from training.plots import plot_history, plot_regions
from training.run_setup import Networks, RunContext
from training.tracking import NullTracker


def finish_run(
    run: RunContext, networks: Networks, result: TrainResult, tracker: NullTracker, status: str
) -> None:
    """`status` is MLflow's: FINISHED, KILLED (interrupted) or FAILED."""
    _plot(run, result, tracker)
    best_path = run.out / "checkpoints" / checkpoints.BEST
    if status == "FINISHED" and best_path.exists():
        net = _best_weights(networks, best_path)
        size = networks.built.preprocessing.input_size
        example = np.zeros((1, 3, size, size), np.float32)
        result.model_version = tracker.register_model(net, example)
        evaluation = evaluate_best(run, net, networks, tracker, result.epochs_run)
        if evaluation is not None:
            result.evaluation = evaluation
    (run.out / "metrics.json").write_text(json.dumps(result.summary(), indent=2, default=str))
    tracker.log_artifact(run.out / "metrics.json")
    tracker.finish(status)


def _plot(run: RunContext, result: TrainResult, tracker: NullTracker) -> None:
    history = result.history
    if history:
        result.images_per_second = float(np.mean([h["images_per_second"] for h in history]))
        tracker.log_artifact(plot_history(history, run.out / "history.png"), "plots")
    if result.best:
        best = {k.removeprefix("val_"): v for k, v in result.best.items()}
        tracker.log_artifact(plot_regions(best, run.regions, run.out / "regions.png"), "plots")


def _best_weights(networks: Networks, best_path: Path) -> AuthenticityNet:
    """The weights of `best.pt` on the CPU, in a copy of the evaluated network."""
    net = copy.deepcopy(networks.evaluated()).to("cpu")
    net.load_state_dict(checkpoints.load(best_path)["model"])
    return net.to(memory_format=torch.contiguous_format).eval()


def evaluate_best(
    run: RunContext, net: AuthenticityNet, networks: Networks, tracker: NullTracker, step: int
) -> dict[str, Any] | None:
    """What export will do on the ONNX model, on the best torch weights: val fits the item
    rule, calib certifies the thresholds, test (else val) measures them; the report goes to
    RUN_DIR/evaluation and MLflow. None without a calib split."""
    held_out = "test" if run.splits.get("test") else "val"
    if not run.splits.get("calib"):
        run.console.print("no calib split: item decisions and thresholds are not fitted")
        return None
    predict = torch_predict(net)
    policy = fit_policy(
        _score(run, networks, predict, "val"), _score(run, networks, predict, "calib")
    )
    metrics = evaluate(_score(run, networks, predict, held_out), policy)
    paths = write_report(metrics, policy, run.out / "evaluation", f"{run.out.name}: {held_out}")
    for path in paths.values():
        tracker.log_artifact(path, "evaluation")
    tracker.log_metrics(
        {
            f"{held_out}_item_accuracy": metrics.item.accuracy,
            f"{held_out}_item_auc": metrics.item.auc,
            f"{held_out}_coverage": metrics.decisions.coverage,
            f"{held_out}_aurc": metrics.risk_coverage.aurc,
        },
        step=step,
    )
    return {"split": held_out, "report": str(paths["report"]), "table": decision_table(metrics)}


def _score(run: RunContext, networks: Networks, predict: Predict, split: str) -> PhotoScores:
    return score_records(
        run.splits[split],
        predict,
        networks.built.preprocessing,
        run.regions,
        console=run.console,
        description=f"scoring {split}",
    )
