"""`touchstone serve` and `touchstone admin`: thin clients of `serving` (never torch).

An option left out falls back to its `TOUCHSTONE_<NAME>` environment variable, then to the
default shown in each option's help (`serving/settings.py` holds them all)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
admin_app = typer.Typer(help="Administration: API keys.", no_args_is_help=True)


def serve(
    model: str | None = typer.Option(None, help="model directory or models:/NAME@ALIAS"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    data_dir: Path | None = typer.Option(
        None, help="photos, and the SQLite database (default: data)"
    ),
    policy: Path | None = typer.Option(
        None, help="routing policy YAML (default: configs/policy.yaml)"
    ),
    max_batch: int | None = typer.Option(None, help="photos per model batch (default: 16)"),
    max_wait_ms: float | None = typer.Option(
        None, help="longest wait to fill a batch (default: 5)"
    ),
    batching: bool | None = typer.Option(None, help="--no-batching runs each photo alone"),
    max_queue: int | None = typer.Option(
        None, help="photos waiting for the model before 503 (default: 256)"
    ),
    max_request_mb: float | None = typer.Option(None, help="largest request body (default: 64)"),
    max_photo_mb: float | None = typer.Option(None, help="largest photo (default: 16)"),
    threads: int | None = typer.Option(None, help="ONNX Runtime threads (default: all cores)"),
    review_lease_seconds: float | None = typer.Option(
        None, help="a review claim without heartbeat (default: 600)"
    ),
    sla_sweep_seconds: float | None = typer.Option(
        None, help="how often overdue reviews are flagged (default: 30)"
    ),
) -> None:
    """Run the appraisal API (TOUCHSTONE_DATABASE_URL picks the database)."""
    import uvicorn

    from serving.app import create_app

    settings = settings_or_exit(
        model=model,
        data_dir=data_dir,
        policy=policy,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        batching=batching,
        max_queue=max_queue,
        max_request_bytes=_bytes(max_request_mb),
        max_photo_bytes=_bytes(max_photo_mb),
        threads=threads,
        review_lease_seconds=review_lease_seconds,
        sla_sweep_seconds=sla_sweep_seconds,
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def _bytes(megabytes: float | None) -> int | None:
    return None if megabytes is None else int(megabytes * 2**20)


def settings_or_exit(**options: object):  # -> serving.settings.Settings
    """The service's settings from these options and the environment; a clear error and exit
    code 2 when they cannot be used."""
    from serving.settings import SettingsError, load_settings

    try:
        return load_settings(**options)
    except SettingsError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc


@admin_app.command("create-key")
def create_key(
    role: str = typer.Option(..., help="app, platform, reviewer, senior or admin"),
    data_dir: Path = typer.Option(Path("data")),
    label: str | None = typer.Option(None, help="who or what holds the key"),
) -> None:
    """Create an API key; it is printed once, alone on the last line."""
    from serving.auth import ROLES
    from serving.auth import create_key as new_key
    from serving.settings import open_database

    if role not in ROLES:
        console.print(f"[bold red]error:[/] unknown role {role!r}; roles: {', '.join(ROLES)}")
        raise typer.Exit(2)
    engine, sessions = open_database(settings_or_exit(data_dir=data_dir))
    with sessions() as session:
        key = new_key(session, role, label)
    engine.dispose()
    console.print(f"created a {role} key; it is shown once:", highlight=False)
    print(key)
