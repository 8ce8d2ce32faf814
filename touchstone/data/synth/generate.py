"""Plan items, render their regions, photograph them, write images and a manifest."""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from touchstone.data.manifest import DatasetInfo, PhotoRecord, write_manifest
from touchstone.data.splitting import DEFAULT_FRACTIONS, assign_splits
from touchstone.data.synth.camera import canvas_side, photograph, photograph_pixels
from touchstone.data.synth.counterfeits import (
    AUTHENTIC,
    DIFFICULTIES,
    RegionCues,
    sample_counterfeit,
)
from touchstone.data.synth.hardware import hardware_spec, render_hardware
from touchstone.data.synth.logo import logo_spec, render_logo
from touchstone.data.synth.materials import TextureBank
from touchstone.data.synth.phone import phone_photo, pick_orientation
from touchstone.data.synth.scene import Scene
from touchstone.data.synth.stitching import render_stitching, stitching_spec
from touchstone.data.synth.styles import (
    BACKGROUNDS,
    BRANDS,
    CATEGORY_REGIONS,
    CATEGORY_SHARES,
    BrandStyle,
)
from touchstone.imaging import DEFAULT_MAX_PIXELS, sniff_format
from touchstone.vocabulary import DEFAULT_REGIONS

GENERATOR_VERSION = 2  # 2: phone photos (`photo: phone`); square photos unchanged
EXTRA_COLUMNS = ("difficulty", "super_fake", "cue_strength", "cues")


class SynthConfig(BaseModel):
    """Everything that decides a synthetic data set: the same config gives the same bytes."""

    model_config = ConfigDict(extra="forbid")

    items: int = Field(600, ge=1)
    seed: int = 0
    difficulty: Literal["easy", "standard", "hard"] = "standard"
    # Square photos: the photo's side. Phone photos: the region's side before it is placed in
    # the frame (448 keeps its detail where a 12 MP frame's centre is read at 183 to 256 px).
    size: int = Field(224, ge=32, le=1024)
    counterfeit_share: float = Field(0.5, ge=0.0, le=1.0)
    photos_per_region: tuple[int, int] = (1, 3)
    fractions: tuple[float, float, float, float] = DEFAULT_FRACTIONS
    # "square": size x size JPEG crops of the region. "phone": whole phone photos of `frame`
    # (upright width x height) with EXIF, the region filling most of the centre (phone.py).
    photo: Literal["square", "phone"] = "square"
    frame: tuple[int, int] = (4032, 3024)
    heic_share: float = Field(0.15, ge=0.0, le=1.0)  # of phone photos; the rest are JPEG

    @model_validator(mode="after")
    def _frame_fits(self) -> SynthConfig:
        width, height = self.frame
        if min(width, height) < 64 or width * height > DEFAULT_MAX_PIXELS:
            raise ValueError(
                f"frame {width}x{height}: each side at least 64 and at most "
                f"{DEFAULT_MAX_PIXELS:,} pixels, what the service accepts"
            )
        return self


@dataclass(frozen=True)
class ItemPlan:
    index: int
    item_id: str
    label: str
    category: str
    brand: BrandStyle
    super_fake: bool
    cues: dict[str, RegionCues]


def generate_dataset(
    out_dir: str | os.PathLike[str],
    config: SynthConfig,
    workers: int | None = None,
    show_progress: bool = True,
) -> Path:
    """Write `out_dir/images/...` and `out_dir/manifest.csv` (+ `.yaml`); return the manifest."""
    out = Path(out_dir).resolve()
    (out / "images").mkdir(parents=True, exist_ok=True)
    labels = _labels(config)
    workers = max(1, workers or os.cpu_count() or 1)
    rows: list[list[PhotoRecord]] = [[] for _ in range(config.items)]
    progress = Progress(
        TextColumn("synthesising items"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        disable=not show_progress,
        transient=False,
        refresh_per_second=2,
    )
    jobs = [(config, out, index, labels[index]) for index in range(config.items)]
    with progress:
        task = progress.add_task("synth", total=config.items, rate="")
        photos = 0
        threads = cv2.getNumThreads()
        if workers == 1:
            _start_worker(config)
            results = map(_render_item, jobs)
            pool = None
        else:
            context = multiprocessing.get_context("spawn")
            pool = context.Pool(workers, initializer=_start_worker, initargs=(config,))
            results = pool.imap_unordered(_render_item, jobs, chunksize=8)
        try:
            for index, records in results:
                rows[index] = records
                photos += len(records)
                elapsed = progress.tasks[0].elapsed or 1e-9
                progress.update(task, advance=1, rate=f"{photos / elapsed:.0f} photos/s")
        finally:
            cv2.setNumThreads(threads)
            if pool is not None:
                pool.close()
                pool.join()
    records = [record for item_rows in rows for record in item_rows]
    fractions = dict(zip(("train", "val", "calib", "test"), config.fractions, strict=True))
    records = assign_splits(records, fractions, config.seed)
    info = DatasetInfo(
        name=f"synthetic-{config.difficulty}-{config.seed}"
        + ("-phone" * (config.photo == "phone")),
        description=f"Synthetic {'phone photos' if config.photo == 'phone' else 'region crops'}"
        " made by `touchstone data synth`",
        regions=DEFAULT_REGIONS,
        generator={"version": GENERATOR_VERSION, **config.model_dump(mode="json")},
    )
    return write_manifest(out / "manifest.csv", records, info, EXTRA_COLUMNS)


def _labels(config: SynthConfig) -> list[str]:
    """Exactly round(items x share) counterfeits, in a seeded order."""
    fakes = round(config.items * config.counterfeit_share)
    labels = np.array(["counterfeit"] * fakes + ["authentic"] * (config.items - fakes))
    rng = np.random.default_rng([config.seed, 0x1AB])
    return [str(label) for label in rng.permutation(labels)]


_BANK: TextureBank | None = None


def _start_worker(config: SynthConfig) -> None:
    global _BANK
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would only contend
    _BANK = TextureBank(config.seed, canvas_side(config.size))


def plan_item(config: SynthConfig, index: int, label: str, rng: np.random.Generator) -> ItemPlan:
    categories = list(CATEGORY_SHARES)
    shares = np.array([CATEGORY_SHARES[c] for c in categories])
    category = categories[int(rng.choice(len(categories), p=shares / shares.sum()))]
    brand = BRANDS[int(rng.integers(len(BRANDS)))]
    regions = CATEGORY_REGIONS[category]
    if label == "counterfeit":
        cues, super_fake = sample_counterfeit(rng, regions, DIFFICULTIES[config.difficulty])
    else:
        cues, super_fake = {region: AUTHENTIC for region in regions}, False
    item_id = f"syn-{config.difficulty[0]}{config.seed}-{index:06d}"
    return ItemPlan(index, item_id, label, category, brand, super_fake, cues)


def render_item(
    config: SynthConfig, index: int, label: str, bank: TextureBank
) -> tuple[ItemPlan, list[tuple[str, bytes]]]:
    """Plan one item and photograph it, in memory: (region, file bytes) for each photo (JPEG,
    or HEIC for a share of phone photos)."""
    rng = np.random.default_rng([config.seed, index])
    plan = plan_item(config, index, label, rng)
    scenes = _scenes(plan, rng, canvas_side(config.size), bank)
    low, high = config.photos_per_region
    photos = []
    for region, scene in scenes.items():
        for _ in range(int(rng.integers(low, high + 1))):
            if config.photo == "square":
                photos.append((region, photograph(scene, bank, rng, config.size)))
                continue
            pixels = photograph_pixels(scene, bank, rng, config.size)
            kind = "heic" if rng.random() < config.heic_share else "jpeg"
            orientation = pick_orientation(rng)
            photos.append((region, phone_photo(pixels, rng, config.frame, kind, orientation)))
    return plan, photos


def _render_item(job: tuple[SynthConfig, Path, int, str]) -> tuple[int, list[PhotoRecord]]:
    config, out, index, label = job
    assert _BANK is not None, "worker not started"
    plan, photos = render_item(config, index, label, _BANK)
    folder = out / "images" / plan.item_id
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    shots: Counter[str] = Counter()
    for region, data in photos:
        shots[region] += 1
        suffix = ".heic" if sniff_format(data[:64]) == "HEIF" else ".jpg"
        path = folder / f"{region}-{shots[region]}{suffix}"
        path.write_bytes(data)
        cues = plan.cues[region]
        records.append(
            PhotoRecord(
                line=0,
                image=path.relative_to(out).as_posix(),
                path=path,
                item_id=plan.item_id,
                region=region,
                label=plan.label,
                category=plan.category,
                brand=plan.brand.name,
                source="synthetic",
                extra={
                    "difficulty": config.difficulty,
                    "super_fake": "1" if plan.super_fake else "0",
                    "cue_strength": f"{cues.strength:.3f}",
                    "cues": cues.describe(),
                },
            )
        )
    return index, records


def _scenes(
    plan: ItemPlan, rng: np.random.Generator, side: int, bank: TextureBank
) -> dict[str, Scene]:
    """One rendered scene per region: the physical item, photographed 1 to 3 times."""
    brand = plan.brand
    leather = tuple(
        float(c)
        for c in np.clip(
            np.asarray(brand.leathers[int(rng.integers(3))]) + rng.normal(0, 3, 3), 0, 255
        )
    )
    background = tuple(
        float(c)
        for c in np.asarray(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]) + rng.normal(0, 4, 3)
    )
    scenes: dict[str, Scene] = {}
    for region in CATEGORY_REGIONS[plan.category]:
        cues = plan.cues[region]
        if region == "hardware":
            spec = hardware_spec(rng, brand, plan.category, leather, cues)
            scenes[region] = render_hardware(spec, bank, rng, side)
        elif region == "stitching":
            stitch = stitching_spec(rng, brand, leather, background, cues)
            scenes[region] = render_stitching(stitch, bank, rng, side)
        else:
            ground, grain = _logo_ground(plan, brand, leather, rng)
            logo = logo_spec(rng, brand, ground, grain, cues)
            scenes[region] = render_logo(logo, bank, rng, side)
    return scenes


def _logo_ground(
    plan: ItemPlan, brand: BrandStyle, leather: tuple[float, ...], rng: np.random.Generator
) -> tuple[tuple[float, float, float], str]:
    """Bags carry the logo on their leather or canvas, watches on the dial, jewellery on metal."""
    if plan.category == "watch":
        dial = brand.leathers[int(rng.integers(3))]
        return tuple(float(c) for c in dial), "smooth"  # type: ignore[return-value]
    if plan.category == "jewellery":
        return tuple(float(c) for c in brand.plating), "polished"  # type: ignore[return-value]
    return leather, brand.grain  # type: ignore[return-value]
