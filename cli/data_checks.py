"""`touchstone data validate` and `touchstone data split`: check a manifest, split it by item.

Exit codes: 0 success; 1 the data has errors (validate); 2 the command cannot run as asked
(bad option, unreadable manifest).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from cli.data_common import DEFAULT_WORKERS, console, fail, parse_regions
from touchstone.data.manifest import Issue, ManifestError, read_manifest, write_manifest
from touchstone.data.near_duplicates import DEFAULT_MAX_DISTANCE
from touchstone.data.validation import UNASSIGNED, UNLABELLED, ValidationReport, validate_manifest
from touchstone.imaging import DEFAULT_MAX_PIXELS
from touchstone.vocabulary import LABELS, SPLITS


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
        parsed = read_manifest(manifest, parse_regions(regions))
    except (ManifestError, ValueError) as exc:
        raise fail(str(exc)) from exc
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
        raise fail(str(exc)) from exc
    # Rows that did not parse would be dropped from the new manifest, and an item with two
    # labels or two splits has no one stratum: those must be fixed by a person first.
    stoppers = {"bad_row", "missing_value", "conflicting_labels"}
    if not reassign:
        stoppers.add("item_crosses_splits")
    blocking = [i for i in parsed.errors if i.code in stoppers]
    if blocking:
        raise fail(f"fix the manifest first: line {blocking[0].line}: {blocking[0].message}")
    pairs = near_duplicates(parsed.records, max_distance, workers) if duplicates else []
    links = [(p.first.item_id, p.second.item_id) for p in pairs]
    records = assign_splits(parsed.records, wanted, seed, linked_items=links, reassign=reassign)
    written = write_manifest(out, records, parsed.info, parsed.extra_columns)

    split_of = {r.item_id: r.split for r in records}
    _print_split_counts(records)
    _print_near_duplicates(pairs, split_of)
    if duplicates_report is not None:
        _write_pairs(duplicates_report, pairs, split_of)
    console.print(f"wrote {written}")


def _print_near_duplicates(pairs: list, split_of: dict[str, str | None]) -> None:
    crossing = [p for p in pairs if split_of[p.first.item_id] != split_of[p.second.item_id]]
    console.print(
        f"{len(pairs)} near-duplicate pair(s) between different items; "
        f"{len(crossing)} cross splits" + (" (kept splits)" if crossing else "")
    )
    if not crossing:
        return
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
