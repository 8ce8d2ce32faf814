"""`touchstone data import`, `synth` and `sheet`: make a data set and look at it."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.data_common import DEFAULT_WORKERS, console, fail, parse_regions
from touchstone.data.manifest import ManifestError, read_manifest


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
        vocabulary = check_region_vocabulary(parse_regions(regions) or DEFAULT_REGIONS)
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
        raise fail(str(exc)) from exc
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
    photo: str | None = typer.Option(
        None, help="square (region crops) | phone (whole phone photos with EXIF) [square]"
    ),
    frame: str | None = typer.Option(
        None, help="phone photos' upright WIDTHxHEIGHT, e.g. 2016x1512 [4032x3024]"
    ),
    heic_share: float | None = typer.Option(
        None, min=0.0, max=1.0, help="share of phone photos sent as HEIC [0.15]"
    ),
    workers: int = typer.Option(DEFAULT_WORKERS, min=1, help="processes"),
) -> None:
    """Generate a synthetic data set with known counterfeit cues: region crops, or whole phone
    photos (--photo phone)."""
    from touchstone.config_files import ConfigFileError, read_yaml, validate
    from touchstone.data.synth import SynthConfig, generate_dataset

    overrides = {
        "items": items,
        "seed": seed,
        "difficulty": difficulty,
        "size": size,
        "counterfeit_share": counterfeit_share,
        "photo": photo,
        "frame": frame.lower().split("x") if frame else None,
        "heic_share": heic_share,
    }
    try:
        settings = read_yaml(config) if config else {}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        resolved = validate(SynthConfig, settings, str(config) if config else "synth")
    except ConfigFileError as exc:
        raise fail(str(exc)) from exc
    manifest = generate_dataset(out, resolved, workers=workers)
    console.print(f"wrote {manifest}")


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
        raise fail(str(exc)) from exc
    path = contact_sheet(parsed, out, per_side=per_side, rows_per_region=rows, tile=tile, seed=seed)
    console.print(f"wrote {path}")
