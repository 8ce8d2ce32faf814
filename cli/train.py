"""`touchstone train`: a thin client of the `training` package (imported only when run, so
that `touchstone data` and serving never load torch)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def train(
    data: Path = typer.Option(..., help="CSV manifest; splits are assigned if absent"),
    out: Path = typer.Option(..., help="run directory: config, checkpoints, metrics, plots"),
    config: Path | None = typer.Option(None, help="YAML config, e.g. configs/cpu-small.yaml"),
    set_: list[str] = typer.Option([], "--set", help="override a key: --set optim.lr=3e-4"),
    resume: bool = typer.Option(False, help="continue from the run directory's last checkpoint"),
    database_url: str | None = typer.Option(
        None,
        envvar="TOUCHSTONE_DATABASE_URL",
        help="the service's database (e.g. sqlite:////srv/data/touchstone.db), read for the "
        "members erased since the export; needed when the manifest holds review rows",
    ),
) -> None:
    """Fine-tune a region-aware classifier; track it in MLflow; register the best model.

    Rows exported from reviews (source=review) of members erased since are left out: the
    service's database says which (--database-url); without it such a manifest is refused.

    Many machines: torchrun --nproc-per-node=N --no-python touchstone train ...
    """
    erased = _erased_items(data, database_url)
    from touchstone.data.manifest import ManifestError
    from training.config import ConfigError, load_config
    from training.loop import TrainingError
    from training.loop import train as run_training
    from training.weights import WeightsError

    try:
        settings = load_config(config, set_)
        result = run_training(settings, data, out, resume=resume, console=console, leave_out=erased)
    except (ConfigError, ManifestError, TrainingError, WeightsError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if result.best:
        print_best(result.best, result.best_epoch)
    if result.skipped_photos:
        console.print(
            f"[yellow]{result.skipped_photos} photo(s) could not be decoded and were skipped[/]"
        )
    if result.model_version:
        console.print(
            f"registered {settings.tracking.registered_model} version "
            f"{result.model_version} as @candidate (MLflow run {result.mlflow_run_id})"
        )
    if result.evaluation:
        from cli.model import print_decisions

        split = result.evaluation["split"]
        print_decisions(result.evaluation["table"], f"{split} split, items, best weights (torch)")
        console.print(f"evaluation report: {result.evaluation['report']}")
    console.print(f"run directory: {out}")
    if result.interrupted:
        raise typer.Exit(130)


def _erased_items(data: Path, database_url: str | None) -> frozenset[str]:
    """The manifest's review items whose member was erased since the export (PIPL: an erased
    member's photos are never trained on again). Training itself never opens the database."""
    from touchstone.data.manifest import ManifestError, read_manifest

    try:
        records = read_manifest(data).records
    except ManifestError:
        return frozenset()  # training reports it
    reviews = {r.item_id for r in records if r.source == "review"}
    if not reviews:
        return frozenset()
    if not database_url:
        console.print(
            f"[bold red]error:[/] {data} holds {len(reviews)} item(s) exported from reviews "
            "(source=review): pass --database-url (or TOUCHSTONE_DATABASE_URL), the service's "
            "database, so that the rows of members erased since the export are left out"
        )
        raise typer.Exit(2)
    try:
        from sqlalchemy.exc import SQLAlchemyError

        from serving.db import make_engine, make_sessionmaker
        from serving.feedback import erased_items
    except ImportError as exc:
        console.print(f"[bold red]error:[/] reading erasures needs '.[serve]' too ({exc})")
        raise typer.Exit(2) from exc
    engine = make_engine(database_url)
    try:
        erased = frozenset(erased_items(make_sessionmaker(engine), reviews))
    except SQLAlchemyError as exc:
        console.print(f"[bold red]error:[/] cannot read the erased members: {exc}")
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    if erased:
        rows = sum(r.item_id in erased for r in records)
        console.print(
            f"left out {rows} row(s) of {len(erased)} item(s) whose member was erased since "
            "the export"
        )
    return erased


def print_best(best: dict[str, float], epoch: int) -> None:
    table = Table(title=f"validation, best epoch ({epoch + 1}), per photo")
    for column in ("region", "photos", "accuracy", "ROC-AUC", "loss"):
        table.add_column(column, justify="right")
    regions = sorted({k.split("/")[0].removeprefix("val_") for k in best if "/" in k})
    for name, prefix in [("all", "val_"), *[(r, f"val_{r}/") for r in regions]]:
        table.add_row(
            name,
            f"{best.get(prefix + 'count', 0):.0f}",
            f"{best.get(prefix + 'accuracy', float('nan')):.3f}",
            f"{best.get(prefix + 'auc', float('nan')):.3f}",
            f"{best.get(prefix + 'loss', float('nan')):.3f}",
        )
    console.print(table)
