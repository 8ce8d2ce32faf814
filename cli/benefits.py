"""`touchstone benefits`: month close and points expiry, thin clients of `serving.benefits`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

console = Console()
app = typer.Typer(help="Member benefits: month close, points expiry.", no_args_is_help=True)


def _sessions(data_dir: Path):  # -> tuple[Engine, sessionmaker]
    from serving.settings import open_database

    return open_database(data_dir)


@app.command("close-month")
def close_month(
    month: str = typer.Option(..., help="YYYY-MM, a month that has ended"),
    data_dir: Path = typer.Option(Path("data"), help="where the SQLite database is"),
) -> None:
    """Bank each member's unused free appraisals of MONTH as points (safe to run twice); also
    expire due points. TOUCHSTONE_DATABASE_URL picks the database, as for `touchstone serve`."""
    from serving import benefits

    try:
        benefits.month_bounds(month)
    except ValueError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    engine, sessions = _sessions(data_dir)
    try:
        totals = benefits.close_month(sessions, month)
    except benefits.MonthNotOver as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    print(json.dumps(totals))


@app.command("expire-points")
def expire_points(
    data_dir: Path = typer.Option(Path("data"), help="where the SQLite database is"),
) -> None:
    """Post due point expiries and the reminders 30 days ahead (safe to run often)."""
    from serving import benefits

    engine, sessions = _sessions(data_dir)
    try:
        totals = benefits.expire_points(sessions)
    finally:
        engine.dispose()
    print(json.dumps(totals))
