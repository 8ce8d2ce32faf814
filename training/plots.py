"""Training curves and per-region results as PNG, for the run directory and MLflow."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen: render to files
import matplotlib.pyplot as plt


def plot_history(history: list[dict[str, float]], out: Path) -> Path:
    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    left.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="accuracy")
    right.plot(epochs, [h["val_auc"] for h in history], marker="o", label="ROC-AUC")
    right.set(xlabel="epoch", ylim=(0.4, 1.01), title="validation, per photo")
    right.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def plot_regions(metrics: dict[str, float], regions: tuple[str, ...], out: Path) -> Path:
    present = [r for r in regions if f"{r}/accuracy" in metrics]
    figure, axis = plt.subplots(figsize=(5, 3.2))
    xs = range(len(present))
    axis.bar(
        [x - 0.2 for x in xs], [metrics[f"{r}/accuracy"] for r in present], 0.4, label="accuracy"
    )
    axis.bar(
        [x + 0.2 for x in xs], [metrics.get(f"{r}/auc", 0.0) for r in present], 0.4, label="ROC-AUC"
    )
    axis.set_xticks(list(xs), present)
    axis.set(ylim=(0.0, 1.0), title="validation by region (best epoch)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
