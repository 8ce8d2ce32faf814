"""`touchstone outbox`: deliver events to the membership platform, and look after them."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli.serve import settings_or_exit

console = Console()
app = typer.Typer(
    help="Events to the membership platform: deliver, status, retry dead letters.",
    no_args_is_help=True,
)

DATA_DIR = typer.Option(Path("data"), help="the SQLite database (unless TOUCHSTONE_DATABASE_URL)")
CONFIG = typer.Option(
    None,
    help="webhooks and delivery settings (default: configs/webhooks.yaml; TOUCHSTONE_WEBHOOKS)",
)


def _sessions(data_dir: Path):  # -> tuple[Engine, sessionmaker]
    from serving.settings import open_database

    return open_database(settings_or_exit(data_dir=data_dir))


@app.command("deliver")
def deliver(
    data_dir: Path = DATA_DIR,
    once: bool = typer.Option(False, "--once", help="deliver what is due now, then stop"),
    interval: float | None = typer.Option(None, help="seconds between rounds [2]"),
    config: Path | None = CONFIG,
) -> None:
    """POST due events to the webhooks (signed; retried with backoff; dead after N tries)."""
    from serving.outbox.delivery import deliver_with

    settings = settings_or_exit(data_dir=data_dir, webhooks_file=config).outbox_config
    if interval is not None:
        settings = settings.model_copy(update={"interval_seconds": interval})
    if not settings.webhooks:
        console.print(
            "[bold red]error:[/] no webhooks configured (configs/webhooks.yaml or "
            "TOUCHSTONE_WEBHOOKS)"
        )
        raise typer.Exit(2)
    engine, sessions = _sessions(data_dir)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    totals = {"delivered": 0, "retried": 0, "dead": 0}
    try:
        while True:
            report = deliver_with(sessions, settings)
            for key in totals:
                totals[key] += getattr(report, key)
            if report.claimed:
                console.print(
                    f"delivered {report.delivered}, to retry {report.retried}, dead {report.dead}",
                    highlight=False,
                )
                for error in report.errors:
                    console.print(f"  {error}", highlight=False, markup=False)
            if once and report.claimed < settings.batch:
                break
            if not once and report.claimed < settings.batch:
                stop.wait(settings.interval_seconds)
            if stop.is_set():
                break
    finally:
        engine.dispose()
    if once:
        console.print(
            f"done: delivered {totals['delivered']}, to retry {totals['retried']}, "
            f"dead {totals['dead']}",
            highlight=False,
        )


@app.command("status")
def status(data_dir: Path = DATA_DIR) -> None:
    """Events by status, the oldest pending one, and the dead letters with their errors."""
    from serving.outbox.admin import status as outbox_status

    engine, sessions = _sessions(data_dir)
    try:
        answer = outbox_status(sessions)
    finally:
        engine.dispose()
    counts = answer["counts"]
    console.print(
        f"pending {counts['pending']}, delivered {counts['delivered']}, dead {counts['dead']}",
        highlight=False,
    )
    if answer["oldest_pending"]:
        console.print(f"oldest pending since {answer['oldest_pending']}", highlight=False)
    if answer["dead"]:
        table = Table("id", "kind", "member", "attempts", "last error", title="dead letters")
        for event in answer["dead"]:
            table.add_row(
                event["id"],
                event["kind"],
                event["member_id"] or "",
                str(event["attempts"]),
                event["last_error"] or "",
            )
        console.print(table)


@app.command("retry-dead")
def retry_dead(
    ids: list[str] | None = typer.Argument(None, help="event ids [all dead letters]"),
    data_dir: Path = DATA_DIR,
) -> None:
    """Put dead letters back in the queue, with their tries counted from zero."""
    from serving.outbox.admin import retry_dead as requeue

    engine, sessions = _sessions(data_dir)
    try:
        count = requeue(sessions, ids)
    finally:
        engine.dispose()
    console.print(f"{count} dead letters queued again", highlight=False)
