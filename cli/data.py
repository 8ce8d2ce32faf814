"""`touchstone data ...`: validate, split, import, synthesise and look at data sets.

Exit codes: 0 success; 1 the data has errors (validate); 2 the command cannot run as asked
(bad option, unreadable manifest).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from touchstone.data.manifest import Issue, ManifestError, read_manifest, write_manifest
from touchstone.data.near_duplicates import DEFAULT_MAX_DISTANCE
from touchstone.data.validation import UNASSIGNED, UNLABELLED, ValidationReport, validate_manifest
from touchstone.imaging import DEFAULT_MAX_PIXELS
from touchstone.vocabulary import LABELS, SPLITS

app = typer.Typer(help="Data sets: manifests of region photos.", no_args_is_help=True)
console = Console()
DEFAULT_WORKERS = os.cpu_count() or 1


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def _regions(text: str | None) -> tuple[str, ...] | None:
    return tuple(r.strip() for r in text.split(",") if r.strip()) if text else None


@app.command()
def validate(
    manifest: Path = typer.Argument(..., help="CSV manifest"),
    regions: str | None = typer.Option(
        None,
        help="region vocabulary, comma-separated; "
        "default: the manifest's .yaml sidecar, else "
        "hardware,stitching,logo",
    ),
    images: bool = typer.Option(True, help="decode every image (--no-images: rows only)"),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, help="refuse larger images"),
    workers: int = typer.Option(DEFAULT_WORKERS, help="threads decoding images"),
    report: Path | None = typer.Option(None, help="also write every issue as JSON here"),
    show: int = typer.Option(50, help="issues to print (all go to --report)"),
) -> None:
    """Check every row and image; print a summary; exit 1 if anything is wrong."""
    try:
        parsed = read_manifest(manifest, _regions(regions))
    except (ManifestError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    result = validate_manifest(parsed, check_images=images, max_pixels=max_pixels, workers=workers)
    print_summary(result)
    print_issues(result.issues, show)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.as_dict(), indent=2))
    errors, warnings = len(result.errors), len(result.warnings)
    colour = "red" if errors else "green"
    console.print(f"[{colour}]{errors} error(s), {warnings} warning(s)[/] in {parsed.path}")
    if errors:
        raise typer.Exit(1)


def print_summary(result: ValidationReport) -> None:
    labels = [*LABELS, UNLABELLED]
    table = Table(
        title=f"{len(result.manifest.records)} photos of {sum(result.item_counts.values())} items"
    )
    table.add_column("split")
    table.add_column("region")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("items", justify="right")
    splits = [s for s in (*SPLITS, UNASSIGNED) if result.item_counts.get(s)]
    for split in splits:
        regions = sorted({r for (s, r, _l) in result.photo_counts if s == split})
        for index, region in enumerate(regions):
            counts = [str(result.photo_counts.get((split, region, lab), 0)) for lab in labels]
            items = str(result.item_counts[split]) if index == 0 else ""
            table.add_row(
                split if index == 0 else "",
                region,
                *counts,
                items,
                end_section=index == len(regions) - 1,
            )
    console.print(table)


def print_issues(issues: list[Issue], show: int) -> None:
    if not issues:
        return
    table = Table(
        title="issues" + (f" (first {show} of {len(issues)})" if len(issues) > show else "")
    )
    for column in ("line", "severity", "code", "message"):
        table.add_column(column)
    for issue in issues[:show]:
        colour = "red" if issue.severity == "error" else "yellow"
        table.add_row(str(issue.line), f"[{colour}]{issue.severity}[/]", issue.code, issue.message)
    console.print(table)
    codes = Counter(i.code for i in issues)
    console.print("by code: " + ", ".join(f"{code} {n}" for code, n in codes.most_common()))


@app.command()
def split(
    manifest: Path = typer.Argument(..., help="CSV manifest"),
    out: Path = typer.Option(..., help="where to write the split manifest"),
    seed: int = typer.Option(0, help="random seed"),
    fractions: str = typer.Option("0.7,0.1,0.1,0.1", help="train,val,calib,test"),
    reassign: bool = typer.Option(False, help="ignore splits already in the manifest"),
    duplicates: bool = typer.Option(True, help="look for near-duplicate photos"),
    max_distance: int = typer.Option(
        DEFAULT_MAX_DISTANCE,
        min=0,
        max=31,
        help="perceptual-hash bits apart that count as near-duplicates",
    ),
    duplicates_report: Path | None = typer.Option(None, help="write near-duplicate pairs as CSV"),
    workers: int = typer.Option(DEFAULT_WORKERS, help="threads hashing photos"),
) -> None:
    """Split by item, stratified by label and category; near-duplicates share a split."""
    from touchstone.data.near_duplicates import near_duplicates
    from touchstone.data.splitting import assign_splits, parse_fractions

    try:
        wanted = parse_fractions(fractions)
        parsed = read_manifest(manifest)
    except (ManifestError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    # Rows that did not parse would be dropped from the new manifest, and an item with two
    # labels or two splits has no one stratum: those must be fixed by a person first.
    stoppers = {"bad_row", "missing_value", "conflicting_labels"}
    if not reassign:
        stoppers.add("item_crosses_splits")
    blocking = [i for i in parsed.errors if i.code in stoppers]
    if blocking:
        raise _fail(f"fix the manifest first: line {blocking[0].line}: {blocking[0].message}")
    pairs = near_duplicates(parsed.records, max_distance, workers) if duplicates else []
    links = [(p.first.item_id, p.second.item_id) for p in pairs]
    records = assign_splits(parsed.records, wanted, seed, linked_items=links, reassign=reassign)
    written = write_manifest(out, records, parsed.info, parsed.extra_columns)

    split_of = {r.item_id: r.split for r in records}
    crossing = [p for p in pairs if split_of[p.first.item_id] != split_of[p.second.item_id]]
    _print_split_counts(records)
    console.print(
        f"{len(pairs)} near-duplicate pair(s) between different items; "
        f"{len(crossing)} cross splits" + (" (kept splits)" if crossing else "")
    )
    if crossing:
        table = Table(title="near-duplicates across splits: these leak")
        for column in ("photo", "split", "photo", "split", "bits apart"):
            table.add_column(column)
        for pair in crossing[:20]:
            table.add_row(
                pair.first.image,
                split_of[pair.first.item_id] or "",
                pair.second.image,
                split_of[pair.second.item_id] or "",
                str(pair.distance),
            )
        console.print(table)
    if duplicates_report is not None:
        _write_pairs(duplicates_report, pairs, split_of)
    console.print(f"wrote {written}")


def _print_split_counts(records: list) -> None:
    items: dict[str, set[str]] = {}
    labels: Counter[tuple[str, str]] = Counter()
    seen: set[str] = set()
    for record in records:
        items.setdefault(record.split, set()).add(record.item_id)
        if record.item_id not in seen:
            seen.add(record.item_id)
            labels[(record.split, record.label or UNLABELLED)] += 1
    table = Table(title="items per split")
    table.add_column("split")
    for label in (*LABELS, UNLABELLED):
        table.add_column(label, justify="right")
    table.add_column("items", justify="right")
    for name in SPLITS:
        if name in items:
            table.add_row(
                name,
                *(str(labels[(name, lab)]) for lab in (*LABELS, UNLABELLED)),
                str(len(items[name])),
            )
    console.print(table)


def _write_pairs(path: Path, pairs: list, split_of: dict[str, str | None]) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            ["image_a", "item_a", "split_a", "image_b", "item_b", "split_b", "distance"]
        )
        for p in pairs:
            writer.writerow(
                [
                    p.first.image,
                    p.first.item_id,
                    split_of[p.first.item_id],
                    p.second.image,
                    p.second.item_id,
                    split_of[p.second.item_id],
                    p.distance,
                ]
            )


@app.command("import")
def import_(
    images: Path = typer.Option(..., help="folder laid out as <label>/<region>/*.jpg"),
    out: Path = typer.Option(..., help="manifest to write"),
    region: str | None = typer.Option(None, help="region of photos not in a region folder"),
    regions: str | None = typer.Option(None, help="region vocabulary, comma-separated"),
    item_pattern: str | None = typer.Option(
        None,
        help="regex on the file name whose first group is the item id, "
        "e.g. '^([^_]+)_'; default: every photo is its own item",
    ),
    category: str | None = typer.Option(None, help="category of every photo (bag, watch...)"),
    brand: str | None = typer.Option(None, help="brand of every photo"),
) -> None:
    """Make a manifest from a folder of labelled photos."""
    from touchstone.data.importing import FolderImportError, import_folder
    from touchstone.vocabulary import DEFAULT_REGIONS, check_region_vocabulary

    try:
        vocabulary = check_region_vocabulary(_regions(regions) or DEFAULT_REGIONS)
        result = import_folder(
            images,
            out,
            regions=vocabulary,
            region=region,
            item_pattern=item_pattern,
            category=category,
            brand=brand,
        )
    except (FolderImportError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    for issue in result.skipped[:20]:
        console.print(f"[yellow]skipped[/] {issue.image}: {issue.message}")
    items = len({r.item_id for r in result.records})
    console.print(
        f"wrote {result.manifest}: {len(result.records)} photos of {items} items"
        + (f", {len(result.skipped)} skipped" if result.skipped else "")
    )
    if item_pattern is None:
        console.print(
            "[yellow]note:[/] every photo is its own item; pass --item-pattern if "
            "several photos show one item, or splits will leak"
        )


@app.command()
def synth(
    out: Path = typer.Option(..., help="folder for images/ and manifest.csv"),
    config: Path | None = typer.Option(
        None, help="YAML with SynthConfig keys, e.g. configs/synthetic-standard.yaml"
    ),
    items: int | None = typer.Option(None, min=1, help="number of items [600]"),
    seed: int | None = typer.Option(
        None, help="random seed: the same seed gives the same data [0]"
    ),
    difficulty: str | None = typer.Option(None, help="easy | standard | hard [standard]"),
    size: int | None = typer.Option(None, min=32, max=1024, help="photo side in pixels [224]"),
    counterfeit_share: float | None = typer.Option(None, min=0.0, max=1.0, help="[0.5]"),
    workers: int = typer.Option(DEFAULT_WORKERS, min=1, help="processes"),
) -> None:
    """Generate a synthetic data set of region crops with known counterfeit cues."""
    from touchstone.data.synth import SynthConfig, generate_dataset

    overrides = {
        "items": items,
        "seed": seed,
        "difficulty": difficulty,
        "size": size,
        "counterfeit_share": counterfeit_share,
    }
    try:
        settings = load_yaml(config) if config else {}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        resolved = SynthConfig.model_validate(settings)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    manifest = generate_dataset(out, resolved, workers=workers)
    console.print(f"wrote {manifest}")


def load_yaml(path: Path) -> dict:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings")
    return data


@app.command()
def sheet(
    manifest: Path = typer.Argument(..., help="CSV manifest"),
    out: Path = typer.Option(..., help="PNG to write"),
    per_side: int = typer.Option(4, min=1, help="photos per side in a row"),
    rows: int = typer.Option(2, min=1, help="rows (brands) per region"),
    tile: int = typer.Option(144, min=32, help="tile side in pixels"),
    seed: int = typer.Option(0),
) -> None:
    """A contact sheet: authentic next to counterfeit, region by region."""
    from touchstone.data.sheet import contact_sheet

    try:
        parsed = read_manifest(manifest)
    except ManifestError as exc:
        raise _fail(str(exc)) from exc
    path = contact_sheet(parsed, out, per_side=per_side, rows_per_region=rows, tile=tile, seed=seed)
    console.print(f"wrote {path}")


@app.command()
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


@app.command("export-reviews")
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

    TOUCHSTONE_DATABASE_URL picks the database, as for `touchstone serve`;
    TOUCHSTONE_PHOTO_KEY decrypts the photos when they are encrypted at rest. Exit 1 when
    some photos could not be read (what could be read is written).
    """
    # Imported here: `touchstone data` must stay quick and work without `.[serve]` installed.
    try:
        from sqlalchemy import inspect

        from serving.db import make_engine, make_sessionmaker
        from serving.feedback import ITEM_REASONS, PHOTO_REASONS, parse_since
        from serving.feedback import export_reviews as export
        from serving.photos import PhotoStore, PhotoStoreError
        from serving.settings import ServiceSettings
    except ImportError as exc:
        raise _fail(
            f"export-reviews needs the serving extras: pip install '.[serve]' ({exc})"
        ) from exc

    if out.exists() and not force:
        raise _fail(f"{out} exists; pass --force to overwrite it")
    try:
        since_utc = parse_since(since) if since else None
        store = PhotoStore.from_env(data_dir / "photos")
    except (ValueError, PhotoStoreError) as exc:
        raise _fail(str(exc)) from exc
    settings = ServiceSettings.from_env(data_dir=data_dir)
    if settings.database_url is None and not (data_dir / "touchstone.db").exists():
        raise _fail(f"no database in {data_dir} (touchstone.db); is --data-dir the service's?")
    engine = make_engine(settings.resolved_database_url())
    try:
        # Read only: a database the service has not created is refused rather than migrated.
        if not inspect(engine).has_table("appraisals"):
            raise _fail("the database has no appraisals table: not a Touchstone database")
        summary = export(make_sessionmaker(engine), store, out, since_utc)
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
    if not summary.gold_column:
        console.print("note: this database has no gold flag (appraisals.is_gold) yet")
    if not summary.erasure_table:
        console.print("note: this database lists no erased members (no erased_members table)")
    if summary.manifest is None:
        console.print("nothing to export: no manifest written")
    else:
        console.print(f"wrote {summary.manifest}")
    if summary.photos_left_out["unreadable"]:
        # Usually the wrong key: a run that quietly exports nothing would look like a quiet month.
        console.print(
            f"[bold red]error:[/] {summary.photos_left_out['unreadable']} photo(s) could not be "
            "decrypted or verified: is TOUCHSTONE_PHOTO_KEY the service's key?"
        )
        raise typer.Exit(1)
