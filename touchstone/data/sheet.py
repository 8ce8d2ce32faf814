"""`touchstone data sheet`: authentic beside counterfeit, region by region, for a person."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from touchstone.data.manifest import Manifest, PhotoRecord
from touchstone.data.synth.drawing import font
from touchstone.imaging import PhotoError, decode_reduced

INK = (30, 30, 30)
PAPER = (250, 249, 246)


def contact_sheet(
    manifest: Manifest,
    out: str | os.PathLike[str],
    *,
    per_side: int = 4,
    rows_per_region: int = 2,
    tile: int = 144,
    seed: int = 0,
) -> Path:
    """Write a PNG: for each region, rows of authentic photos beside counterfeit ones of the
    same brand where brands are known. Counterfeit tiles show their cue strength when the
    manifest records one (synthetic data)."""
    rng = np.random.default_rng(seed)
    regions = [r for r in manifest.info.regions if any(x.region == r for x in manifest.records)]
    margin, label_width, gap = 10, 110, 24
    header = 34
    width = label_width + 2 * per_side * (tile + 4) + gap + margin
    height = header + len(regions) * rows_per_region * (tile + 22) + margin
    sheet = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(sheet)
    left_x = label_width
    right_x = label_width + per_side * (tile + 4) + gap
    draw.text((left_x, 8), "authentic", font=font(18), fill=INK)
    draw.text((right_x, 8), "counterfeit", font=font(18), fill=INK)
    y = header
    for region in regions:
        for row, (authentic, counterfeit) in enumerate(
            _rows(manifest.records, region, per_side, rows_per_region, rng)
        ):
            if row == 0:
                draw.text((margin, y + tile // 2 - 9), region, font=font(17), fill=INK)
            for column, record in enumerate(authentic):
                _place(sheet, draw, record, left_x + column * (tile + 4), y, tile)
            for column, record in enumerate(counterfeit):
                _place(sheet, draw, record, right_x + column * (tile + 4), y, tile)
            y += tile + 22
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target)
    return target


def _rows(
    records: list[PhotoRecord], region: str, per_side: int, rows: int, rng: np.random.Generator
) -> list[tuple[list[PhotoRecord], list[PhotoRecord]]]:
    by_brand: dict[str, dict[str, list[PhotoRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.region != region or record.label is None:
            continue
        if record.label == "counterfeit" and _strength(record) == 0.0:
            continue  # a super-fake's flawless region shows nothing to compare
        by_brand[record.brand or ""][record.label].append(record)
    brands = sorted(b for b, labels in by_brand.items() if len(labels) == 2)
    chosen = [brands[i] for i in rng.permutation(len(brands))[:rows]] if brands else []
    out = []
    for brand in chosen:
        pair = []
        for label in ("authentic", "counterfeit"):
            # One photo per item: several photos of one item would show the same piece twice.
            first_photo = {r.item_id: r for r in reversed(by_brand[brand][label])}
            pool = sorted(first_photo.values(), key=lambda r: r.line)
            picks = rng.permutation(len(pool))[:per_side]
            pair.append([pool[i] for i in picks])
        out.append((pair[0], pair[1]))
    return out


def _strength(record: PhotoRecord) -> float | None:
    value = record.extra.get("cue_strength")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _place(
    sheet: Image.Image, draw: ImageDraw.ImageDraw, record: PhotoRecord, x: int, y: int, tile: int
) -> None:
    try:
        # Decoded no larger than the tile needs: a 12 MP JPEG at 1/8 of its size.
        photo = decode_reduced(record.path, tile, bbox=record.bbox).image
        photo.thumbnail((tile, tile))
        sheet.paste(photo, (x + (tile - photo.width) // 2, y + (tile - photo.height) // 2))
    except PhotoError as exc:
        draw.rectangle((x, y, x + tile, y + tile), outline=(200, 60, 60))
        draw.text((x + 4, y + tile // 2), exc.code, font=font(12), fill=(200, 60, 60))
    caption = record.brand or ""
    strength = _strength(record)
    if record.label == "counterfeit" and strength is not None:
        caption += f"  cues {strength:.2f}"
    draw.text((x, y + tile + 3), caption, font=font(12), fill=INK)
