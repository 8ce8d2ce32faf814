"""`touchstone data import`: a manifest from the common folder layout.

    DIR/<label>/<region>/*.jpg      (label: authentic, counterfeit or unlabelled)
    DIR/<label>/*.jpg               (no region folders: pass --region)

Every photo is its own item unless `item_pattern` (a regular expression whose first group is
the item id, matched against the file name) says which photos show the same item: without it,
photos of one item could land in different splits and leak.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from touchstone.data.manifest import DatasetInfo, Issue, PhotoRecord, write_manifest
from touchstone.imaging import ACCEPTED_SUFFIXES
from touchstone.vocabulary import DEFAULT_REGIONS, LABELS

# The formats the decoder accepts, and no others: a photo imported here must decode in training.
IMAGE_SUFFIXES = ACCEPTED_SUFFIXES
UNLABELLED_FOLDERS = {"unlabelled", "unlabeled"}


class FolderImportError(ValueError):
    """The folder cannot be imported as asked (the message says what to change)."""


@dataclass
class ImportResult:
    manifest: Path
    records: list[PhotoRecord]
    skipped: list[Issue] = field(default_factory=list)


def import_folder(
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    regions: tuple[str, ...] = DEFAULT_REGIONS,
    region: str | None = None,
    item_pattern: str | None = None,
    category: str | None = None,
    brand: str | None = None,
) -> ImportResult:
    root = Path(images).resolve()
    if not root.is_dir():
        raise FolderImportError(f"{root} is not a folder")
    if region is not None and region not in regions:
        raise FolderImportError(f"--region {region!r} is not one of {', '.join(regions)}")
    pattern = _compile(item_pattern)
    records: list[PhotoRecord] = []
    skipped: list[Issue] = []
    label_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not label_dirs:
        raise FolderImportError(f"{root} has no label folders ({', '.join(LABELS)}, unlabelled)")
    for label_dir in label_dirs:
        name = label_dir.name.lower()
        if name not in LABELS and name not in UNLABELLED_FOLDERS:
            raise FolderImportError(
                f"folder {label_dir.name!r} is not a label; expected {', '.join(LABELS)} "
                "or unlabelled"
            )
        label = name if name in LABELS else None
        for path, photo_region in _photos(label_dir, regions, region):
            item_id = _item_id(path, pattern)
            if item_id is None:
                skipped.append(
                    Issue(
                        0,
                        "no_item_id",
                        f"{path.name} does not match --item-pattern",
                        "warning",
                        str(path),
                    )
                )
                continue
            records.append(
                PhotoRecord(
                    line=0,
                    image=path.relative_to(root).as_posix(),
                    path=path,
                    item_id=item_id,
                    region=photo_region,
                    label=label,
                    category=category,
                    brand=brand,
                    source="import",
                )
            )
    if not records:
        if skipped:
            raise FolderImportError(f"none of the {len(skipped)} photos matched --item-pattern")
        raise FolderImportError(f"no photos found under {root}")
    info = DatasetInfo(name=root.name, description=f"imported from {root}", regions=regions)
    manifest = write_manifest(out, records, info)
    return ImportResult(manifest, records, skipped)


def _compile(item_pattern: str | None) -> re.Pattern[str] | None:
    if item_pattern is None:
        return None
    try:
        pattern = re.compile(item_pattern)
    except re.error as exc:
        raise FolderImportError(f"--item-pattern is not a regular expression: {exc}") from exc
    if pattern.groups < 1:
        raise FolderImportError("--item-pattern needs a group, e.g. '^([^_]+)_' for ITEM_1.jpg")
    return pattern


def _item_id(path: Path, pattern: re.Pattern[str] | None) -> str | None:
    if pattern is None:
        return path.stem
    match = pattern.search(path.name)
    return match.group(1) if match and match.group(1) else None


def _photos(
    label_dir: Path, regions: tuple[str, ...], region: str | None
) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for entry in sorted(label_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if entry.name not in regions:
                raise FolderImportError(
                    f"folder {entry.relative_to(label_dir.parent)} is not a region "
                    f"({', '.join(regions)})"
                )
            found.extend((p, entry.name) for p in sorted(entry.rglob("*")) if _is_photo(p))
        elif _is_photo(entry):
            if region is None:
                raise FolderImportError(
                    f"{entry.relative_to(label_dir.parent)} is not in a region folder; "
                    "pass --region to say which region such photos show"
                )
            found.append((entry, region))
    return found


def _is_photo(path: Path) -> bool:
    return (
        path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )
