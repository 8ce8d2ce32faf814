"""`touchstone evaluate`: an exported model (directory or registry URI) on any manifest.

The manifest may come from elsewhere: its own region vocabulary, no splits, unlabelled rows.
Photos of regions the model has no head for are left out and counted; the policy (temperature,
item rule, thresholds) is the card's, never refitted on the data being measured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from touchstone.data.manifest import Manifest, ManifestError, PhotoRecord, load_manifest
from touchstone.evaluation.evaluate import evaluate
from touchstone.evaluation.policy import DecisionPolicy, policy_from_card
from touchstone.evaluation.report import write_report
from touchstone.evaluation.results import EvaluatedData, EvaluatedModel, Evaluation
from touchstone.evaluation.scoring import score_records
from touchstone.inference import OnnxModel


@dataclass
class EvaluationResult:
    metrics: Evaluation
    policy: DecisionPolicy
    report: Path
    split: str
    photos: int
    unknown_region_photos: int


def evaluate_model_dir(
    model_dir: Path, manifest_path: Path, split: str, out: Path, console: Console | None = None
) -> EvaluationResult:
    console = console or Console()
    model = OnnxModel(model_dir)
    manifest = load_manifest(manifest_path)
    known, unknown, split = _photos_to_score(manifest, manifest_path, split, model, console)
    scores = score_records(
        known,
        model.predict,
        model.preprocessing,
        model.card.regions,
        console=console,
        description=f"scoring {split}",
    )
    policy = policy_from_card(model.card)
    metrics = replace(
        evaluate(scores, policy),
        model=EvaluatedModel(model.card.name, model.card.version),
        data=EvaluatedData(str(manifest_path), manifest.content_hash(), split, unknown),
    )
    title = f"{model.card.name} {model.card.version} on {manifest_path.name} ({split})"
    report = write_report(metrics, policy, Path(out), title)["report"]
    return EvaluationResult(metrics, policy, report, split, len(known), unknown)


def _photos_to_score(
    manifest: Manifest, manifest_path: Path, split: str, model: OnnxModel, console: Console
) -> tuple[list[PhotoRecord], int, str]:
    """The labelled photos of `split` (all of them where the manifest has no splits) whose
    region the model knows, how many were left out for their region, and the split's name."""
    labelled = [r for r in manifest.records if r.label is not None]
    if split == "all" or not any(r.split for r in labelled):
        if split != "all":
            console.print(f"{manifest_path} has no splits: evaluating all labelled photos")
        split = "all"
        chosen = labelled
    else:
        chosen = [r for r in labelled if r.split == split]
    known = [r for r in chosen if r.region in model.region_index]
    unknown = len(chosen) - len(known)
    if unknown:
        console.print(
            f"[yellow]{unknown} photo(s) show regions the model has no head for "
            f"({', '.join(sorted({r.region for r in chosen} - set(model.region_index)))}); "
            "left out[/]"
        )
    if not known:
        raise ManifestError(
            f"{manifest_path}: no labelled photos of the model's regions "
            f"({', '.join(model.card.regions)}) in split {split!r}"
        )
    return known, unknown, split
