"""`touchstone evaluate`, `export` and `promote`: thin clients of `training` and the registry
(imported when run, so that the rest of the command stays quick and torch-free)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def print_decisions(rows: list[tuple[str, str]], title: str) -> None:
    table = Table(title=title)
    table.add_column("")
    table.add_column("", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def evaluate(
    model: str = typer.Option(..., help="model directory, or models:/NAME@ALIAS"),
    data: Path = typer.Option(..., help="CSV manifest, from anywhere"),
    split: str = typer.Option("test", help="train, val, calib, test, or all"),
    out: Path = typer.Option(..., help="folder for metrics.json, report.md and plots"),
) -> None:
    """Measure an exported model on a manifest at the thresholds in its card."""
    from touchstone.data.manifest import ManifestError
    from touchstone.evaluation.evaluate_model import evaluate_model_dir
    from touchstone.evaluation.report import certification_table, decision_table
    from touchstone.model_card import ModelCardError
    from touchstone.registry import RegistryError, fetch_model_dir

    try:
        model_dir = fetch_model_dir(model, out / "model-cache")
        result = evaluate_model_dir(model_dir, data, split, out, console)
    except (ModelCardError, ManifestError, RegistryError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    print_decisions(certification_table(result.policy), "the card's certification")
    print_decisions(decision_table(result.metrics), f"{result.split} split: items")
    console.print(f"report: {result.report}")


def export(
    run: Path = typer.Option(..., help="training run directory (holds checkpoints/best.pt)"),
    out: Path = typer.Option(..., help="model directory to write: model.onnx + model.json"),
    data: Path | None = typer.Option(None, help="manifest to calibrate on (default: the run's)"),
    quantize: str | None = typer.Option(None, help="int8: static quantisation"),
    force: bool = typer.Option(
        False, help="overwrite --out; ship an int8 model that lost accuracy"
    ),
    false_authentic: float = typer.Option(0.005, help="target false-authentic rate"),
    false_counterfeit: float = typer.Option(0.02, help="target false-counterfeit rate"),
    counterfeit_share: tuple[float, float] = typer.Option(
        (0.10, 0.30), help="LOW HIGH: the counterfeit share of traffic the rates must hold for"
    ),
) -> None:
    """Export to ONNX (parity-checked), fit the item rule on val, certify thresholds on calib,
    write the card."""
    from touchstone.data.manifest import ManifestError
    from touchstone.evaluation.report import certification_table, decision_table
    from touchstone.evaluation.thresholds import ShareRange, Targets
    from touchstone.model_card import ModelCardError
    from training.export import ExportError, export_run
    from training.weights import WeightsError

    if quantize not in (None, "int8"):
        console.print(f"[bold red]error:[/] --quantize takes int8, not {quantize!r}")
        raise typer.Exit(2)
    for name, value in (
        ("false-authentic", false_authentic),
        ("false-counterfeit", false_counterfeit),
    ):
        if not 0 < value < 1:
            console.print(f"[bold red]error:[/] --{name} must lie between 0 and 1")
            raise typer.Exit(2)
    try:
        share = ShareRange(*counterfeit_share)
    except ValueError as exc:
        console.print(f"[bold red]error:[/] --counterfeit-share: {exc}")
        raise typer.Exit(2) from exc
    targets = Targets(false_authentic, false_counterfeit, counterfeit_share=share)
    try:
        result = export_run(run, out, data, quantize, force, targets, console)
    except (ExportError, ManifestError, ModelCardError, WeightsError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    print_decisions(certification_table(result.policy), "certification")
    print_decisions(decision_table(result.metrics), f"{result.metrics_split} split: items")
    console.print(f"model: {out / 'model.onnx'} with its card {out / 'model.json'}")
    console.print(f"report: {result.report}")
    if result.registered_version:
        console.print(
            f"registered {result.card.name}-onnx version {result.registered_version} as "
            f"@candidate; promote it with: touchstone promote --model-name "
            f"{result.card.name}-onnx --version {result.registered_version}"
        )


def promote(
    model_name: str = typer.Option("touchstone-authenticity-onnx", help="registered model"),
    version: str = typer.Option(..., help="the version to serve"),
    alias: str = typer.Option("champion", help="alias to point at it"),
) -> None:
    """Point the registry alias `champion` (or another) at a model version."""
    from touchstone.registry import RegistryError
    from touchstone.registry import promote as set_alias

    try:
        set_alias(model_name, version, alias)
    except RegistryError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"{model_name}@{alias} -> version {version}")
