"""`touchstone serve` and `touchstone admin`: thin clients of `serving` (never torch).

An option left out falls back to its `TOUCHSTONE_<NAME>` environment variable, then to the
default shown in each option's help (`serving/settings.py` holds them all)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console()


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
    decode_slots: int | None = typer.Option(
        None, help="photos decoded at once (default: as many as half the memory holds)"
    ),
    decode_memory_mb: float | None = typer.Option(
        None,
        help="memory the photos of uploads may take decoded at once; more wait "
        "(default: a quarter of the memory)",
    ),
    request_head_timeout: float | None = typer.Option(
        None, help="seconds for a request's headers to arrive, else closed (default: 10)"
    ),
    request_body_timeout: float | None = typer.Option(
        None, help="seconds for a request body to arrive, else 408 (default: 120)"
    ),
    keep_alive_seconds: int | None = typer.Option(
        None, help="idle keep-alive connections close after this (default: 5)"
    ),
    limit_concurrency: int | None = typer.Option(
        None, help="connections and requests in flight before 503 (default: 256)"
    ),
) -> None:
    """Run the appraisal API (TOUCHSTONE_DATABASE_URL picks the database)."""
    import uvicorn

    from serving.app import create_app
    from serving.appraisals.memory import default_budget_bytes, set_budget_bytes
    from serving.slow_clients import RequestBodyTimeout, head_deadline_protocol
    from touchstone.imaging import default_decode_slots, set_decode_slots

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
        decode_slots=decode_slots,
        decode_memory_bytes=_bytes(decode_memory_mb),
        request_head_timeout=request_head_timeout,
        request_body_timeout=request_body_timeout,
        keep_alive_seconds=keep_alive_seconds,
        limit_concurrency=limit_concurrency,
    )
    policy_or_exit(settings)
    set_decode_slots(settings.decode_slots or default_decode_slots(settings.max_pixels))
    set_budget_bytes(settings.decode_memory_bytes or default_budget_bytes(settings.max_pixels))
    uvicorn.run(
        RequestBodyTimeout(create_app(settings), settings.request_body_timeout),
        host=host,
        port=port,
        log_level="info",
        http=head_deadline_protocol(settings.request_head_timeout),
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=settings.limit_concurrency,
    )


def _bytes(megabytes: float | None) -> int | None:
    return None if megabytes is None else int(megabytes * 2**20)


def policy_or_exit(settings) -> None:  # settings: serving.settings.Settings
    """Refuse to start, exit code 2, when the routing policy loosens the model card: the
    service would make decisions its certification does not vouch for. A model that cannot be
    read here is left to the service, which starts without it and says why (`/readyz`)."""
    from serving.policy.config import PolicyError
    from serving.policy.overrides import check_policy
    from touchstone.model_card import ModelCardError, load_model_dir
    from touchstone.registry import RegistryError, fetch_model_dir

    if settings.model is None:
        return
    try:
        folder = fetch_model_dir(settings.model, settings.data_dir / "models")
        card = load_model_dir(folder, verify_hash=False).card
    except (ModelCardError, RegistryError, OSError):
        return
    try:
        check_policy(settings.policy_config, card.thresholds)
    except PolicyError as exc:
        said = f"{exc} (model {settings.model}; make the policy stricter or serve another model)"
        console.print(f"[bold red]error:[/] {escape(said)}", highlight=False)
        raise typer.Exit(2) from exc


def settings_or_exit(**options: object):  # -> serving.settings.Settings
    """The service's settings from these options and the environment; a clear error and exit
    code 2 when they cannot be used."""
    from serving.settings import SettingsError, load_settings

    try:
        return load_settings(**options)
    except SettingsError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc
