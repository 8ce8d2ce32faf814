"""`touchstone data merge` and `touchstone data export-reviews`: bring reviewers' verdicts back
as training data, and put manifests together."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from cli.data_common import console
from cli.data_common import fail as _fail
from cli.serve import settings_or_exit
from touchstone.data.manifest import ManifestError
from touchstone.data.validation import UNLABELLED
from touchstone.vocabulary import LABELS


def merge(
    manifests: list[Path] = typer.Argument(..., help="two or more CSV manifests"),
    out: Path = typer.Option(..., help="manifest to write; image paths become relative to it"),
    force: bool = typer.Option(False, help="overwrite --out if it exists"),
) -> None:
    """Concatenate manifests, keeping their splits; refuse items whose labels or splits clash."""
    from touchstone.data.merging import MergeError, merge_manifests

    if len(manifests) < 2:
        raise _fail("give two or more manifests to merge")
    if out.resolve() in {m.resolve() for m in manifests}:
        raise _fail(f"--out {out} is one of the inputs; write the merged manifest elsewhere")
    if out.exists() and not force:
        raise _fail(f"{out} exists; pass --force to overwrite it")
    try:
        result = merge_manifests(manifests, out)
    except (ManifestError, MergeError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    table = Table(title="merged")
    for column in ("manifest", "photos", *LABELS, UNLABELLED, "items"):
        if column == "manifest":
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, justify="right")
    for name, records in [
        *((str(m.path), m.records) for m in result.inputs),
        (str(result.manifest), result.records),
    ]:
        labels = {r.item_id: r.label or UNLABELLED for r in records}
        counts = Counter(labels.values())
        table.add_row(
            name,
            str(len(records)),
            *(str(counts[label]) for label in (*LABELS, UNLABELLED)),
            str(len(labels)),
        )
    console.print(table)
    if result.repeated:
        console.print(
            f"{result.repeated} row(s) left out: their item or image came in an earlier manifest"
        )
    console.print(f"wrote {result.manifest}")


def export_reviews(
    out: Path = typer.Option(..., help="manifest to write; photos go to images/ beside it"),
    since: str | None = typer.Option(
        None, help="only items finalized at or after this UTC date or datetime (ISO 8601)"
    ),
    data_dir: Path = typer.Option(
        Path("data"), help="the service's data directory: photos/, and the SQLite database"
    ),
    force: bool = typer.Option(False, help="overwrite --out if it exists"),
) -> None:
    """Export items whose final verdict came from reviewers as a manifest (source=review).
    Each export is recorded, with the members it holds, so that an erasure names it.

    TOUCHSTONE_DATABASE_URL picks the database, as for `touchstone serve`;
    TOUCHSTONE_PHOTO_KEY decrypts the photos when they are encrypted at rest. Exit 1 when
    some photos could not be read (what could be read is written).
    """
    # Imported here: `touchstone data` must stay quick and work without `.[serve]` installed.
    try:
        from serving.db import make_sessionmaker
        from serving.feedback import ITEM_REASONS, PHOTO_REASONS, ExportError, parse_since
        from serving.feedback import export_reviews as export
        from serving.photos import PhotoStore
        from serving.settings import SettingsError, open_existing_database
    except ImportError as exc:
        raise _fail(
            f"export-reviews needs the serving extras: pip install '.[serve]' ({exc})"
        ) from exc

    if out.exists() and not force:
        raise _fail(f"{out} exists; pass --force to overwrite it")
    try:
        since_utc = parse_since(since) if since else None
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    settings = settings_or_exit(data_dir=data_dir)
    store = PhotoStore(data_dir / "photos", settings.photo_key_bytes())
    try:
        engine = open_existing_database(settings, "appraisals")
    except SettingsError as exc:
        raise _fail(str(exc)) from exc
    try:
        summary = export(make_sessionmaker(engine), store, out, since_utc)
    except ExportError as exc:
        raise _fail(str(exc)) from exc
    finally:
        engine.dispose()

    table = Table(
        title="exported"
        + (f" (finalized since {since_utc:%Y-%m-%d %H:%M:%S} UTC)" if since_utc else "")
    )
    for column in ("label", "items", "photos"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for index, label in enumerate(LABELS):
        counts = str(summary.items[label]), str(summary.photos[label])
        table.add_row(label, *counts, end_section=index == len(LABELS) - 1)
    table.add_row("all", str(summary.items.total()), str(summary.photos.total()))
    console.print(table)
    left = Table(title="left out")
    for column in ("reason", "items", "photos"):
        left.add_column(column, justify="left" if column == "reason" else "right")
    for reason in ITEM_REASONS:
        left.add_row(reason, str(summary.left_out[reason]), "")
    for reason in PHOTO_REASONS:
        left.add_row(f"photo {reason}", "", str(summary.photos_left_out[reason]))
    console.print(left)
    if summary.manifest is None:
        console.print("nothing to export: no manifest written")
    else:
        console.print(f"wrote {summary.manifest}")
    # The record lets an erasure name this export; delete the folder when it is done with.
    console.print(f"recorded as export {summary.export_id}", highlight=False)
    if summary.photos_left_out["unreadable"]:
        # Usually the wrong key: a run that quietly exports nothing would look like a quiet month.
        console.print(
            f"[bold red]error:[/] {summary.photos_left_out['unreadable']} photo(s) could not be "
            "decrypted or verified: is TOUCHSTONE_PHOTO_KEY the service's key?"
        )
        raise typer.Exit(1)
