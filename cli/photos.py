"""`touchstone photos`: looking after the photo store (a thin client of `serving`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.table import Table

from cli.serve import console, settings_or_exit

app = typer.Typer(help="The photo store: orphan files.", no_args_is_help=True)


@app.command("collect-orphans")
def collect_orphans(
    data_dir: Path = typer.Option(Path("data"), help="the service's data directory"),
    older_than_hours: float = typer.Option(
        24.0, min=0.0, help="grace period: younger files may belong to an upload in flight"
    ),
    dry_run: bool = typer.Option(False, help="count what would be deleted, delete nothing"),
    force: bool = typer.Option(
        False, help="delete even when more than half of the store would go (refused otherwise)"
    ),
) -> None:
    """Delete photo files that no photo row names (an upload that crashed before its row was
    committed), once older than the grace period; and temp files of interrupted writes.
    `touchstone serve` does this on its own every few hours. Safe to repeat. Exit 1 when
    refused: more than half of the store unnamed looks like the wrong database."""
    from serving.db import make_sessionmaker
    from serving.orphans import SweepRefused
    from serving.orphans import collect_orphans as collect
    from serving.photos import PhotoStore
    from serving.settings import SettingsError, open_existing_database

    settings = settings_or_exit(data_dir=data_dir)
    try:
        engine = open_existing_database(settings, "photos")
    except SettingsError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    store = PhotoStore(data_dir / "photos")  # files are only listed and deleted: no key needed
    try:
        report = collect(
            make_sessionmaker(engine),
            store,
            dt.timedelta(hours=older_than_hours),
            dry_run=dry_run,
            force=force,
        )
    except SweepRefused as exc:
        console.print(f"[bold red]refused:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    table = Table(title="photo store" + (" (dry run: nothing deleted)" if dry_run else ""))
    for column in ("files", "count", ""):
        table.add_column(column, justify="right" if column == "count" else "left")
    gone = "would be deleted" if dry_run else "deleted"
    table.add_row("named", str(report.named), "kept: a photo row names them")
    table.add_row("fresh", str(report.fresh), f"kept: younger than {older_than_hours:g} h")
    table.add_row("orphans", str(report.orphans), gone)
    table.add_row("temp", str(report.temp_files), f"{gone}: left by interrupted writes")
    console.print(table)
