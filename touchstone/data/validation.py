"""`touchstone data validate`: every row and every image of a manifest checked, never a crash."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rich.progress import Progress

from touchstone.data.manifest import Issue, Manifest, PhotoRecord
from touchstone.imaging import DEFAULT_MAX_PIXELS, PhotoError, decode_reduced

# A crop smaller than this on its short side carries too little detail to authenticate.
MIN_SIDE_PIXELS = 32
UNLABELLED = "unlabelled"
UNASSIGNED = "unassigned"


@dataclass
class ValidationReport:
    manifest: Manifest
    issues: list[Issue]
    # (split, region, label) -> number of photos
    photo_counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # split -> number of items
    item_counts: Counter[str] = field(default_factory=Counter)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    def as_dict(self) -> dict[str, object]:
        return {
            "manifest": str(self.manifest.path),
            "photos": len(self.manifest.records),
            "items": sum(self.item_counts.values()),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "issues": [issue.as_dict() for issue in self.issues],
            "counts": [
                {"split": s, "region": r, "label": lab, "photos": n}
                for (s, r, lab), n in sorted(self.photo_counts.items())
            ],
        }


def validate_manifest(
    manifest: Manifest,
    *,
    check_images: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 4,
    show_progress: bool = True,
) -> ValidationReport:
    issues = list(manifest.issues)
    if check_images and manifest.records:
        issues.extend(_check_images(manifest.records, max_pixels, workers, show_progress))
    issues.sort(key=lambda issue: (issue.line, issue.code))
    report = ValidationReport(manifest, issues)
    items_by_split: dict[str, set[str]] = {}
    for record in manifest.records:
        split = record.split or UNASSIGNED
        report.photo_counts[(split, record.region, record.label or UNLABELLED)] += 1
        items_by_split.setdefault(split, set()).add(record.item_id)
    report.item_counts.update({split: len(items) for split, items in items_by_split.items()})
    return report


def _check_images(
    records: list[PhotoRecord], max_pixels: int, workers: int, show_progress: bool
) -> list[Issue]:
    issues: list[Issue] = []
    # Pillow releases the GIL while decoding, so threads do use several cores here.
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        Progress(transient=True, disable=not show_progress) as progress,
    ):
        task = progress.add_task("checking images", total=len(records))
        for found in pool.map(lambda r: check_photo(r, max_pixels), records):
            issues.extend(found)
            progress.advance(task)
    return issues


def check_photo(record: PhotoRecord, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Issue]:
    """Decode all of one photo (truncation only shows when the last bytes are read), at the
    smallest size: a JPEG's DCT-scaled decode still reads every byte of its entropy-coded data,
    and takes a tenth of the time a full decode does (a 12 MP JPEG: 0.06 s, not 0.57 s)."""
    try:
        photo = decode_reduced(record.path, 1, max_pixels=max_pixels)
    except PhotoError as exc:
        return [Issue(record.line, exc.code, f"{record.image}: {exc.message}", image=record.image)]
    width, height = photo.width, photo.height
    if record.bbox is not None:
        if not record.bbox.fits(width, height):
            return [
                Issue(
                    record.line,
                    "bad_bbox",
                    f"bbox {record.bbox} lies outside the {width}x{height} photo {record.image}",
                    image=record.image,
                )
            ]
        width, height = record.bbox.x1 - record.bbox.x0, record.bbox.y1 - record.bbox.y0
    if min(width, height) < MIN_SIDE_PIXELS:
        return [
            Issue(
                record.line,
                "small_image",
                f"{record.image}: the region is {width}x{height} pixels; under "
                f"{MIN_SIDE_PIXELS} on a side carries little detail",
                severity="warning",
                image=record.image,
            )
        ]
    return []
