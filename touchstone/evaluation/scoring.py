"""Scoring the photos of a manifest with any model: a torch network at the end of training or
an ONNX Runtime session after export. The input goes through `to_model_input`, the function
serving runs on every photo, so the scores evaluated here are the scores served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from touchstone.data.manifest import PhotoRecord
from touchstone.decision import ItemAggregation
from touchstone.imaging import PhotoError, Preprocessing, decode_for_model, to_model_input

# (B, 3, H, W) normalised pixels -> (B, regions) log-odds of authentic.
Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class PhotoScores:
    """Photos that could be scored, in manifest order, with their log-odds; `skipped` lists the
    ones that could not be decoded."""

    records: list[PhotoRecord]
    log_odds: np.ndarray
    regions: tuple[str, ...]
    skipped: list[PhotoRecord]

    @property
    def labels(self) -> np.ndarray:
        """1.0 authentic, 0.0 counterfeit."""
        return np.array([1.0 if r.label == "authentic" else 0.0 for r in self.records])

    @property
    def region_index(self) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.regions)}
        return np.array([index[r.region] for r in self.records], dtype=int)


@dataclass
class ItemScores:
    """The photo scores grouped by item: what the item rule is fitted on and decides with."""

    item_ids: list[str]
    labels: np.ndarray  # 1 authentic, 0 counterfeit
    categories: list[str]
    means: np.ndarray  # (items, regions) mean photo log-odds, 0 where absent
    present: np.ndarray  # (items, regions) bool
    super_fake: np.ndarray  # bool; False when the data does not say
    cue_strength: np.ndarray  # strongest counterfeit cue of the item; nan when unknown
    regions: tuple[str, ...] = ()  # the columns of `means` and `present`

    def log_odds(self, aggregation: ItemAggregation) -> np.ndarray:
        return aggregation.item_log_odds_from_features(self.means)


def item_scores(scores: PhotoScores) -> ItemScores:
    ids = sorted({r.item_id for r in scores.records})
    index = {item: i for i, item in enumerate(ids)}
    item_index = np.array([index[r.item_id] for r in scores.records], dtype=int)
    means, present = ItemAggregation.uncalibrated(scores.regions).region_features(
        item_index, scores.region_index, scores.log_odds, len(ids)
    )
    labels = np.zeros(len(ids))
    categories = ["unknown"] * len(ids)
    super_fake = np.zeros(len(ids), bool)
    strength = np.full(len(ids), np.nan)
    for record, i in zip(scores.records, item_index, strict=True):
        labels[i] = 1.0 if record.label == "authentic" else 0.0
        categories[i] = record.category or "unknown"
        super_fake[i] |= record.extra.get("super_fake") == "1"
        if record.extra.get("cue_strength"):
            strength[i] = np.fmax(strength[i], float(record.extra["cue_strength"]))
    return ItemScores(ids, labels, categories, means, present, super_fake, strength, scores.regions)


def prepare_photo(record: PhotoRecord, prep: Preprocessing) -> np.ndarray | None:
    """The model's input for a photo, read as training and serving read it; None if it cannot
    be decoded."""
    try:
        return to_model_input(decode_for_model(record.path, prep, bbox=record.bbox).image, prep)
    except PhotoError:
        return None


def score_records(
    records: Sequence[PhotoRecord],
    predict: Predict,
    preprocessing: Preprocessing,
    regions: tuple[str, ...],
    batch_size: int = 32,
    console: Console | None = None,
    description: str = "scoring",
) -> PhotoScores:
    """Photos whose region the model does not know are an error: evaluating a model on regions
    it has no head for would silently score the wrong column."""
    unknown = sorted({r.region for r in records} - set(regions))
    if unknown:
        raise ValueError(
            f"the model knows the regions {', '.join(regions)}; the data has {', '.join(unknown)}"
        )
    index = {name: i for i, name in enumerate(regions)}
    kept: list[PhotoRecord] = []
    skipped: list[PhotoRecord] = []
    scores: list[np.ndarray] = []
    progress = Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=True,
    )
    # Decoding releases the GIL in Pillow and OpenCV: threads keep the model fed.
    with progress, ThreadPoolExecutor(max_workers=2) as pool:
        task = progress.add_task(description, total=len(records))
        for start in range(0, len(records), batch_size):
            chunk = list(records[start : start + batch_size])
            arrays = list(pool.map(lambda r: prepare_photo(r, preprocessing), chunk))
            good = [(r, a) for r, a in zip(chunk, arrays, strict=True) if a is not None]
            skipped.extend(r for r, a in zip(chunk, arrays, strict=True) if a is None)
            if good:
                logits = predict(np.stack([a for _, a in good]))
                columns = np.array([index[r.region] for r, _ in good])
                scores.append(logits[np.arange(len(good)), columns].astype(np.float64))
                kept.extend(r for r, _ in good)
            progress.update(task, advance=len(chunk))
    log_odds = np.concatenate(scores) if scores else np.zeros(0)
    return PhotoScores(kept, log_odds, regions, skipped)
