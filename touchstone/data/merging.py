"""One data set from several: e.g. the synthetic set plus photos exported from reviews.

Rows are concatenated in the order of the inputs, with image paths rewritten relative to the
new manifest. Splits already assigned are kept (a frozen test set stays frozen), also when
only a later input gives an item its split. An item already given by an earlier input keeps
those rows alone: two review exports whose dates overlap hold the same item under two image
folders, and its photos must not count twice. Refused: an input with row errors (those rows
would be lost), region vocabularies that differ, an item with two labels or two splits, and one
image file listed for two items.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from touchstone.data.manifest import (
    DatasetInfo,
    Manifest,
    PhotoRecord,
    load_manifest,
    write_manifest,
)


class MergeError(Exception):
    """The inputs cannot be merged as they are; the message says which rows and why."""


@dataclass
class MergeResult:
    manifest: Path
    inputs: list[Manifest]
    records: list[PhotoRecord]
    repeated: int  # rows left out: their item or image was given by an earlier input


def merge_manifests(
    paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]
) -> MergeResult:
    """Merge manifests into `out` (overwritten) and its sidecar; MergeError if they conflict."""
    manifests = [load_manifest(path) for path in paths]
    regions = manifests[0].info.regions
    for manifest in manifests[1:]:
        if manifest.info.regions != regions:
            raise MergeError(
                f"{manifest.path} has the regions {', '.join(manifest.info.regions)} but "
                f"{manifests[0].path} has {', '.join(regions)}: a merged set needs one vocabulary"
            )

    label_of: dict[str, tuple[str, Manifest, int]] = {}
    split_of: dict[str, tuple[str, Manifest, int]] = {}
    item_of_image: dict[Path, str] = {}
    added: set[Path] = set()
    earlier: set[str] = set()  # items of the inputs before this one
    records: list[PhotoRecord] = []
    repeated = 0
    for manifest in manifests:
        for record in manifest.records:
            for value, seen, what in (
                (record.label, label_of, "label"),
                (record.split, split_of, "split"),
            ):
                if value is None:
                    continue
                first = seen.setdefault(record.item_id, (value, manifest, record.line))
                if first[0] != value:
                    raise MergeError(
                        f"item {record.item_id!r} has the {what} {value} in {manifest.path} "
                        f"(line {record.line}) but {first[0]} in {first[1].path} "
                        f"(line {first[2]})"
                    )
            owner = item_of_image.setdefault(record.path, record.item_id)
            if owner != record.item_id:
                raise MergeError(
                    f"{record.path} is listed for item {owner!r} and for item "
                    f"{record.item_id!r} ({manifest.path}, line {record.line})"
                )
            if record.item_id in earlier or record.path in added:
                repeated += 1
                continue
            added.add(record.path)
            records.append(record)
        earlier.update(r.item_id for r in manifest.records)

    merged = [
        dataclasses.replace(r, split=split_of[r.item_id][0])
        if r.split is None and r.item_id in split_of
        else r
        for r in records
    ]
    extra: list[str] = []
    for manifest in manifests:
        extra += [c for c in manifest.extra_columns if c not in extra]
    root = Path(out).resolve().parent
    info = DatasetInfo(
        name=None,
        description="merged from " + ", ".join(os.path.relpath(m.path, root) for m in manifests),
        regions=regions,
    )
    written = write_manifest(out, merged, info, extra)
    return MergeResult(written, manifests, merged, repeated)
