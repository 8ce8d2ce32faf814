"""The one data format: a CSV manifest of region photos, plus an optional YAML sidecar.

A manifest row is one photo of one region of one item. `read_manifest` never stops at a bad row:
it keeps every row it can and lists what is wrong with each, with its line number, so that
`touchstone data validate` can report them all. Training uses `load_manifest`, which refuses a
manifest with any error.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, field_validator

from touchstone.config_files import ConfigFileError, read_yaml, validate
from touchstone.imaging import BBox
from touchstone.vocabulary import DEFAULT_REGIONS, LABELS, SOURCES, SPLITS, check_region_vocabulary

REQUIRED_COLUMNS: tuple[str, ...] = ("image", "item_id", "region", "label")
OPTIONAL_COLUMNS: tuple[str, ...] = ("category", "brand", "bbox", "split", "source", "weight")
COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

Severity = Literal["error", "warning"]


class ManifestError(Exception):
    """The manifest as a whole cannot be used (unreadable, no header, missing columns, or rows
    with errors when loaded strictly)."""

    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message)
        self.issues = issues or []


@dataclass(frozen=True)
class Issue:
    """One problem found in a manifest. `line` is the CSV line (1 is the header, 0 the file)."""

    line: int
    code: str
    message: str
    severity: Severity = "error"
    image: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "image": self.image,
        }


class DatasetInfo(BaseModel):
    """The sidecar `<manifest>.yaml`: what the data set declares about itself."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    regions: tuple[str, ...] = DEFAULT_REGIONS
    # The synthetic generator records its parameters here so a data set can be remade.
    generator: dict[str, Any] | None = None

    @field_validator("regions")
    @classmethod
    def _regions_are_a_vocabulary(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_region_vocabulary(value)


@dataclass(frozen=True)
class PhotoRecord:
    """One manifest row. Fields that failed to parse are None; the row's issues say why."""

    line: int
    image: str
    path: Path
    item_id: str
    region: str
    label: str | None = None
    category: str | None = None
    brand: str | None = None
    bbox: BBox | None = None
    split: str | None = None
    source: str | None = None
    weight: float = 1.0
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Manifest:
    path: Path
    info: DatasetInfo
    records: list[PhotoRecord]
    extra_columns: list[str]
    issues: list[Issue]

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def errors(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.severity == "error"]

    def content_hash(self) -> str:
        """sha256 of the manifest file: identifies the data a model was trained on."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def sidecar_path(manifest_path: Path) -> Path:
    return manifest_path.with_suffix(".yaml")


def read_dataset_info(manifest_path: Path) -> DatasetInfo:
    sidecar = sidecar_path(manifest_path)
    if not sidecar.exists():
        return DatasetInfo()
    try:
        return validate(
            DatasetInfo, read_yaml(sidecar), f"{sidecar}: not a valid data set description"
        )
    except ConfigFileError as exc:
        raise ManifestError(str(exc)) from exc


def read_manifest(path: str | os.PathLike[str], regions: Iterable[str] | None = None) -> Manifest:
    """Parse a manifest, collecting row problems as issues instead of stopping at the first.

    `regions` overrides the vocabulary the sidecar declares. Raises ManifestError only when the
    file as a whole is unusable.
    """
    manifest_path = Path(path).resolve()
    info = read_dataset_info(manifest_path)
    if regions is not None:
        info = info.model_copy(update={"regions": check_region_vocabulary(tuple(regions))})
    try:
        text = manifest_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ManifestError(f"no such manifest: {manifest_path}") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{manifest_path}: not UTF-8 text ({exc.reason})") from exc
    except IsADirectoryError as exc:
        raise ManifestError(f"{manifest_path} is a directory, not a CSV manifest") from exc

    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header or not any(cell.strip() for cell in header):
        raise ManifestError(f"{manifest_path}: empty file, expected a CSV header")
    header = [cell.strip() for cell in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ManifestError(
            f"{manifest_path}: missing column(s) {', '.join(missing)}; "
            f"a manifest needs {', '.join(REQUIRED_COLUMNS)}"
        )
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise ManifestError(f"{manifest_path}: column(s) named twice: {', '.join(duplicated)}")

    parser = _RowParser(manifest_path.parent, info.regions)
    records: list[PhotoRecord] = []
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue  # blank lines carry nothing
        record = parser.parse(line, header, cells)
        if record is not None:
            records.append(record)
    issues = parser.issues
    if not records and not issues:
        issues.append(Issue(0, "empty_manifest", "the manifest has a header but no rows"))
    issues.extend(_check_items(records))
    issues.sort(key=lambda issue: issue.line)
    extra = [c for c in header if c not in COLUMNS]
    return Manifest(manifest_path, info, records, extra, issues)


def load_manifest(path: str | os.PathLike[str], regions: Iterable[str] | None = None) -> Manifest:
    """Read a manifest for use: any error in any row refuses the whole manifest."""
    manifest = read_manifest(path, regions)
    if manifest.errors:
        first = manifest.errors[0]
        raise ManifestError(
            f"{manifest.path}: {len(manifest.errors)} error(s); first at line {first.line}: "
            f"{first.message} (run `touchstone data validate` for all)",
            manifest.errors,
        )
    return manifest


class _RowParser:
    def __init__(self, root: Path, regions: tuple[str, ...]) -> None:
        self.root = root
        self.regions = regions
        self.issues: list[Issue] = []

    def _problem(self, line: int, code: str, message: str, severity: Severity = "error") -> None:
        self.issues.append(Issue(line, code, message, severity))

    def parse(self, line: int, header: list[str], cells: list[str]) -> PhotoRecord | None:
        if len(cells) != len(header):
            self._problem(
                line, "bad_row", f"expected {len(header)} fields as in the header, got {len(cells)}"
            )
            return None
        row = {name: cell.strip() for name, cell in zip(header, cells, strict=True)}
        for name in ("image", "item_id", "region"):
            if not row[name]:
                self._problem(line, "missing_value", f"column {name!r} is empty")
        if not row["image"] or not row["item_id"]:
            return None
        region = row["region"]
        if region and region not in self.regions:
            self._problem(
                line,
                "unknown_region",
                f"region {region!r} is not in the vocabulary ({', '.join(self.regions)})",
            )
        return PhotoRecord(
            line=line,
            image=row["image"],
            path=(self.root / row["image"]).resolve(),
            item_id=row["item_id"],
            region=region,
            label=self._choice(line, row.get("label", ""), LABELS, "label", "unknown_label"),
            category=row.get("category") or None,
            brand=row.get("brand") or None,
            bbox=self._bbox(line, row.get("bbox", "")),
            split=self._choice(line, row.get("split", ""), SPLITS, "split", "unknown_split"),
            source=self._source(line, row.get("source", "")),
            weight=self._weight(line, row.get("weight", "")),
            extra={k: v for k, v in row.items() if k not in COLUMNS},
        )

    def _choice(
        self, line: int, value: str, allowed: tuple[str, ...], column: str, code: str
    ) -> str | None:
        if not value:
            return None
        if value.lower() in allowed:
            return value.lower()
        self._problem(line, code, f"{column} {value!r} is not one of {', '.join(allowed)}")
        return None

    def _bbox(self, line: int, value: str) -> BBox | None:
        if not value:
            return None
        try:
            return BBox.parse(value)
        except ValueError as exc:
            self._problem(line, "bad_bbox", str(exc))
            return None

    def _source(self, line: int, value: str) -> str | None:
        if value and value not in SOURCES:
            self._problem(
                line,
                "unknown_source",
                f"source {value!r} is not one of {', '.join(SOURCES)}",
                severity="warning",
            )
        return value or None

    def _weight(self, line: int, value: str) -> float:
        if not value:
            return 1.0
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or weight < 0:
            self._problem(line, "bad_weight", f"weight {value!r} must be a number >= 0")
            return 1.0
        return weight


def _check_items(records: list[PhotoRecord]) -> list[Issue]:
    """Checks across rows: an item has one label and sits in one split; a file is listed once."""
    issues: list[Issue] = []
    first_label: dict[str, PhotoRecord] = {}
    first_split: dict[str, PhotoRecord] = {}
    first_use: dict[Path, PhotoRecord] = {}
    for record in records:
        if record.label is not None:
            seen = first_label.setdefault(record.item_id, record)
            if seen.label != record.label:
                issues.append(
                    Issue(
                        record.line,
                        "conflicting_labels",
                        f"item {record.item_id!r} is {record.label} here but {seen.label} "
                        f"on line {seen.line}",
                    )
                )
        if record.split is not None:
            seen = first_split.setdefault(record.item_id, record)
            if seen.split != record.split:
                issues.append(
                    Issue(
                        record.line,
                        "item_crosses_splits",
                        f"item {record.item_id!r} is in {record.split} here but in {seen.split} "
                        f"on line {seen.line}: an item's photos must share one split",
                    )
                )
        seen = first_use.setdefault(record.path, record)
        if seen is not record:
            same_item = seen.item_id == record.item_id
            issues.append(
                Issue(
                    record.line,
                    "duplicate_image",
                    f"{record.image} is already listed on line {seen.line}"
                    + ("" if same_item else f" for another item ({seen.item_id!r})"),
                    severity="warning" if same_item else "error",
                    image=record.image,
                )
            )
    return issues


def write_manifest(
    path: str | os.PathLike[str],
    records: Iterable[PhotoRecord],
    info: DatasetInfo | None = None,
    extra_columns: Iterable[str] = (),
) -> Path:
    """Write records as a manifest, image paths relative to its folder when they lie under it.

    The sidecar is written too when `info` is given. Extra columns keep their values.
    """
    out = Path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = list(COLUMNS) + [c for c in extra_columns if c not in COLUMNS]
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(columns)
        for record in records:
            writer.writerow(_cells(record, out.parent, columns))
    tmp.replace(out)
    if info is not None:
        sidecar_path(out).write_text(
            yaml.safe_dump(info.model_dump(mode="json", exclude_none=True), sort_keys=False),
            encoding="utf-8",
        )
    return out


def _cells(record: PhotoRecord, root: Path, columns: list[str]) -> list[str]:
    values = {
        "image": _relative_image(record, root),
        "item_id": record.item_id,
        "region": record.region,
        "label": record.label or "",
        "category": record.category or "",
        "brand": record.brand or "",
        "bbox": str(record.bbox) if record.bbox else "",
        "split": record.split or "",
        "source": record.source or "",
        "weight": "" if record.weight == 1.0 else repr(record.weight),
    }
    return [values[c] if c in values else record.extra.get(c, "") for c in columns]


def _relative_image(record: PhotoRecord, root: Path) -> str:
    if Path(record.image).is_absolute():
        return record.image
    try:
        return record.path.relative_to(root).as_posix()
    except ValueError:
        return Path(os.path.relpath(record.path, root)).as_posix()
