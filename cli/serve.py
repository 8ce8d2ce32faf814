"""`touchstone serve` and `touchstone admin`: thin clients of `serving` (never torch)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()
admin_app = typer.Typer(help="Administration: API keys.", no_args_is_help=True)


def serve(
    model: str | None = typer.Option(None, help="model directory or models:/NAME@ALIAS"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    data_dir: Path = typer.Option(Path("data"), help="photos, and the SQLite database"),
    policy: Path | None = typer.Option(None, help="routing policy YAML [configs/policy.yaml]"),
    max_batch: int = typer.Option(16, help="photos per model batch"),
    max_wait_ms: float = typer.Option(5.0, help="longest wait to fill a batch"),
    batching: bool = typer.Option(True, help="--no-batching runs each photo alone"),
    max_queue: int = typer.Option(256, help="photos waiting for the model before 503"),
    max_request_mb: float = typer.Option(64.0, help="largest request body"),
    max_photo_mb: float = typer.Option(16.0, help="largest photo"),
    threads: int | None = typer.Option(None, help="ONNX Runtime threads [all cores]"),
    review_lease_seconds: float = typer.Option(600.0, help="a review claim without heartbeat"),
    sla_sweep_seconds: float = typer.Option(30.0, help="how often overdue reviews are flagged"),
) -> None:
    """Run the appraisal API (TOUCHSTONE_DATABASE_URL picks the database)."""
    import uvicorn

    from serving.app import create_app
    from serving.settings import ServiceSettings

    settings = ServiceSettings.from_env(
        model=model,
        data_dir=data_dir,
        policy=policy,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        batching=batching,
        max_queue=max_queue,
        max_request_bytes=int(max_request_mb * 2**20),
        max_photo_bytes=int(max_photo_mb * 2**20),
        threads=threads,
        review_lease_seconds=review_lease_seconds,
        sla_sweep_seconds=sla_sweep_seconds,
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


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
    engine, sessions = open_database(data_dir)
    with sessions() as session:
        key = new_key(session, role, label)
    engine.dispose()
    console.print(f"created a {role} key; it is shown once:", highlight=False)
    print(key)
