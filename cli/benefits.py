"""`touchstone benefits`: month close and points expiry, thin clients of `serving.benefits`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from cli.serve import settings_or_exit

console = Console()
app = typer.Typer(help="Member benefits: month close, points expiry.", no_args_is_help=True)

DATA_DIR = typer.Option(Path("data"), help="where the SQLite database is")


def _service(data_dir: Path):  # -> tuple[Engine, BenefitsService]
    """The benefits service on the service's database."""
    from serving.benefits.ledger import Ledger
    from serving.benefits.service import BenefitsService
    from serving.settings import open_database

    settings = settings_or_exit(data_dir=data_dir)
    engine, sessions = open_database(settings)
    return engine, BenefitsService(sessions, Ledger(settings.benefits_config))


def _month_or_exit(text: str) -> str:
    """The month, strictly YYYY-MM (the service's one parser), else exit 2; checked before the
    database is opened (or migrated)."""
    from serving.benefits.ledger import InvalidMonth, parse_month

    try:
        return parse_month(text)
    except InvalidMonth as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from exc


@app.command("close-month")
def close_month(
    month: str = typer.Option(..., help="YYYY-MM, a month that has ended"),
    data_dir: Path = DATA_DIR,
) -> None:
    """Bank each member's unused free appraisals of MONTH as points (safe to run twice); also
    expire due points. TOUCHSTONE_DATABASE_URL picks the database, as for `touchstone serve`."""
    from serving.benefits.month import MonthNotOver

    month = _month_or_exit(month)
    engine, benefits = _service(data_dir)
    try:
        totals = benefits.close_month(month)
    except MonthNotOver as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    print(json.dumps(asdict(totals)))


@app.command("expire-points")
def expire_points(data_dir: Path = DATA_DIR) -> None:
    """Post due point expiries and the reminders 30 days ahead (safe to run often)."""
    engine, benefits = _service(data_dir)
    try:
        totals = benefits.expire_points()
    finally:
        engine.dispose()
    print(json.dumps(asdict(totals)))
