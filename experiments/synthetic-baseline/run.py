"""Can a simple baseline solve the synthetic data? Logistic regression on downscaled pixels.

    .venv/bin/python experiments/synthetic-baseline/run.py [--items 600] [--seeds 0] \
        [--photo phone --frame 1008x756 --size 320]

For each difficulty: synthesise a data set, fit on the train split, score photos of the other
splits, and print photo- and item-level accuracy and ROC-AUC. Phone photos are read as the
model reads them: decoded reduced, the centre square, then downscaled. The data card
(datasets/README.md) quotes the output. Run outputs go to experiments/runs/ (git-ignored).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from touchstone.data.manifest import load_manifest
from touchstone.data.synth import SynthConfig, generate_dataset
from touchstone.imaging import decode_photo, decode_reduced

RUNS = Path(__file__).resolve().parents[1] / "runs" / "synthetic-baseline"


def pixels(records: list, side: int, phone: bool) -> np.ndarray:
    rows = [np.asarray(_photo(r.path, side, phone), np.float32).ravel() / 255.0 for r in records]
    return np.stack(rows)


def _photo(path: Path, side: int, phone: bool) -> Image.Image:
    if not phone:  # a square crop, read whole as for the data card's first numbers
        return decode_photo(path).resize((side, side))
    image = decode_reduced(path, 4 * side).image
    short = min(image.size)
    left, top = (image.width - short) // 2, (image.height - short) // 2
    return image.crop((left, top, left + short, top + short)).resize((side, side))


def evaluate(difficulty: str, items: int, seed: int, side: int, extra: dict) -> dict[str, float]:
    # e.g. standard-600-0, or standard-600-0-phone-1008x756-320
    parts = [
        difficulty,
        items,
        seed,
        *(v if k != "frame" else "x".join(map(str, v)) for k, v in extra.items()),
    ]
    name = "-".join(str(part) for part in parts)
    out = RUNS / name
    manifest_path = out / "manifest.csv"
    if not manifest_path.exists():
        config = SynthConfig(items=items, seed=seed, difficulty=difficulty, **extra)
        generate_dataset(out, config)
    records = load_manifest(manifest_path).records
    train = [r for r in records if r.split == "train"]
    held = [r for r in records if r.split != "train"]
    model = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=[1e-4, 1e-3, 1e-2, 1e-1], max_iter=2000, use_legacy_attributes=False
        ),
    )
    phone = extra.get("photo") == "phone"
    model.fit(pixels(train, side, phone), [r.label == "counterfeit" for r in train])
    p_fake = model.predict_proba(pixels(held, side, phone))[:, 1]
    truth = np.array([r.label == "counterfeit" for r in held])
    result = {
        "photo_accuracy": float(np.mean((p_fake > 0.5) == truth)),
        "photo_auc": float(roc_auc_score(truth, p_fake)),
    }
    # Item level: the mean log-odds of its photos.
    logit = np.log(np.clip(p_fake, 1e-6, 1 - 1e-6) / np.clip(1 - p_fake, 1e-6, 1))
    by_item: dict[str, list[float]] = {}
    item_truth: dict[str, bool] = {}
    for record, value in zip(held, logit, strict=True):
        by_item.setdefault(record.item_id, []).append(value)
        item_truth[record.item_id] = record.label == "counterfeit"
    scores = np.array([np.mean(v) for v in by_item.values()])
    labels = np.array([item_truth[i] for i in by_item])
    result["item_accuracy"] = float(np.mean((scores > 0) == labels))
    result["item_auc"] = float(roc_auc_score(labels, scores))
    result["train_photos"] = len(train)
    result["held_out_photos"] = len(held)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--side", type=int, default=32, help="downscaled photo side in pixels")
    parser.add_argument("--photo", choices=["square", "phone"], default="square")
    parser.add_argument("--frame", default="1008x756", help="phone photos' WIDTHxHEIGHT")
    parser.add_argument("--size", type=int, default=None, help="photo (square) or region side")
    args = parser.parse_args()
    extra: dict = {}
    if args.photo == "phone":
        width, height = (int(v) for v in args.frame.lower().split("x"))
        extra = {"photo": "phone", "frame": (width, height), "size": args.size or 320}
        extra["heic_share"] = 0.05  # as the demo's configs/synthetic-phone.yaml
    elif args.size:
        extra = {"size": args.size}
    table = Table(title=f"logistic regression on {args.side}x{args.side} RGB pixels")
    for column in (
        "difficulty",
        "seed",
        "train / held-out photos",
        "photo acc",
        "photo AUC",
        "item acc",
        "item AUC",
    ):
        table.add_column(column)
    for difficulty in ("easy", "standard", "hard"):
        for seed in args.seeds:
            r = evaluate(difficulty, args.items, seed, args.side, extra)
            table.add_row(
                difficulty,
                str(seed),
                f"{r['train_photos']} / {r['held_out_photos']}",
                f"{r['photo_accuracy']:.3f}",
                f"{r['photo_auc']:.3f}",
                f"{r['item_accuracy']:.3f}",
                f"{r['item_auc']:.3f}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
