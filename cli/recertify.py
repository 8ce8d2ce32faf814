"""`touchstone recertify`: a model's thresholds certified again on its calib items pooled with
the audit stream, the service's finalised `audit_sample` appraisals of the same ONNX file
(docs/recertification.md). Writes a new model directory; the service switches to it like to any
model (`POST /v1/models`, or a restart with `--model`)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from touchstone.model_card import ModelCard

console = Console()


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(2)


def recertify(
    model: str = typer.Option(..., help="model directory, or models:/NAME@ALIAS"),
    out: Path = typer.Option(..., help="new model directory to write (must not exist)"),
    data_dir: Path = typer.Option(
        Path("data"), help="the service's data directory (its SQLite database)"
    ),
    since: str | None = typer.Option(
        None, help="only audits finalised at or after this UTC date or datetime (ISO 8601)"
    ),
) -> None:
    """Certify the model's thresholds again on its calib items and the finalised audit-sample
    verdicts of the same ONNX file; write OUT/model.onnx (the same file) and OUT/model.json.

    TOUCHSTONE_DATABASE_URL picks the database, as for `touchstone serve`.
    """
    # Imported here: the rest of `touchstone` must stay quick and work without `.[serve]`.
    try:
        from serving.db import make_sessionmaker
        from serving.feedback import parse_since
        from serving.recertification_source import read_audit_stream
        from serving.settings import SettingsError, open_existing_database
    except ImportError as exc:
        raise _fail(f"recertify needs the serving extras: pip install '.[serve]' ({exc})") from exc
    from cli.serve import settings_or_exit
    from touchstone.evaluation import recertification as rc
    from touchstone.model_card import ModelCardError, load_model_dir
    from touchstone.registry import RegistryError, fetch_model_dir

    if out.exists():
        raise _fail(f"{out} exists; name a new directory for the recertified model")
    try:
        since_utc = parse_since(since) if since else None
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    settings = settings_or_exit(data_dir=data_dir)
    with tempfile.TemporaryDirectory(prefix="touchstone-recertify-") as cache:
        try:
            source = load_model_dir(fetch_model_dir(model, Path(cache)))
        except (ModelCardError, RegistryError) as exc:
            raise _fail(str(exc)) from exc
        card = source.card
        try:
            engine = open_existing_database(settings, "appraisals")
        except SettingsError as exc:
            raise _fail(str(exc)) from exc
        try:
            stream = read_audit_stream(
                make_sessionmaker(engine),
                lambda version: rc.scored_by_same_onnx(card, version),
                since_utc,
            )
        finally:
            engine.dispose()
        audited = rc.audited_sample(card, stream.items)
        left_out = stream.left_out + audited.left_out
        _print_left_out(left_out)
        if len(audited) == 0:
            # Certifying calib alone again would give the card it has: say so instead.
            raise _fail(
                f"no finalised audit_sample appraisal of {card.name} {rc.onnx_version(card)} "
                "with an authentic or counterfeit verdict"
                + (f" since {since_utc:%Y-%m-%d %H:%M:%S} UTC" if since_utc else "")
                + ": nothing to recertify on; the card stands as it is"
            )
        try:
            thresholds = rc.recertify(
                card,
                audited.log_odds,
                audited.labels,
                audit={
                    "since": since_utc.isoformat() if since_utc else None,
                    "left_out": dict(sorted(left_out.items())),
                },
            )
        except ValueError as exc:  # a card whose sample is not calib's alone
            raise _fail(str(exc)) from exc
        new_card = rc.recertified_card(card, thresholds)
        _write(source.onnx_path, new_card, out)
    _print_sides(card, new_card)
    _print_sources(new_card)
    mix = new_card.thresholds.evidence["audit"]["mix"]
    low, high = mix["interval"]
    declared = mix["declared"]
    line = (
        f"audited counterfeit share {mix['counterfeit_share']:.1%} of {mix['items']} items "
        f"({mix['confidence']:.0%} interval {low:.1%} to {high:.1%}); declared range "
        f"{declared['low']:.0%} to {declared['high']:.0%}"
    )
    console.print(line, highlight=False)
    if mix["range_excluded"]:
        console.print(
            "[bold yellow]warning:[/] the traffic's counterfeit share lies outside the declared "
            "range: the card's decision-rate bounds do not describe this traffic"
        )
    console.print(
        f"wrote {out} (version {new_card.version}, certification "
        f"{new_card.thresholds.certification}); serve it with POST /v1/models or --model",
        highlight=False,
    )


def _write(onnx_path: Path, card: ModelCard, out: Path) -> None:
    """Both files into a folder beside OUT, checked as serving checks them, then renamed: a
    half-written OUT never exists."""
    from touchstone.model_card import ONNX_FILE, ModelCardError, load_model_dir

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        shutil.copyfile(onnx_path, partial / ONNX_FILE)
        card.write(partial)
        load_model_dir(partial)  # the hash still holds: the same ONNX file
        partial.rename(out)
    except (OSError, ModelCardError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise _fail(f"could not write {out}: {exc}") from exc


def _print_sides(before: ModelCard, after: ModelCard) -> None:
    from touchstone.evaluation.recertification import SIDES, side_summary

    table = Table(title="thresholds (item log-odds)")
    table.add_column("side")
    table.add_column("")
    old, new = before.thresholds.certification, after.thresholds.certification
    table.add_column(f"before ({before.version}, certification {old})", overflow="fold")
    table.add_column(f"after ({after.version}, certification {new})", overflow="fold")
    for index, side in enumerate(SIDES):
        was, now = side_summary(before.thresholds, side), side_summary(after.thresholds, side)
        for row, key in enumerate(was):
            table.add_row(
                side if row == 0 else "",
                key,
                was[key],
                now[key],
                end_section=row == len(was) - 1 and index < len(SIDES) - 1,
            )
    console.print(table)


def _print_sources(card: ModelCard) -> None:
    from touchstone.evaluation.recertification import sources_rows

    table = Table(title="items certified on")
    for column in ("source", "authentic", "counterfeit"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for name, authentic, counterfeit in sources_rows(card.thresholds):
        table.add_row(name, str(authentic), str(counterfeit))
    console.print(table)


def _print_left_out(left_out: Counter[str]) -> None:
    from serving.recertification_source import DB_REASONS
    from touchstone.evaluation.recertification import ITEM_REASONS

    table = Table(title="audited appraisals left out")
    table.add_column("reason")
    table.add_column("items", justify="right")
    for reason in (*DB_REASONS, *ITEM_REASONS):
        table.add_row(reason, str(left_out[reason]))
    console.print(table)
