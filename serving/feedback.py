"""The feedback loop: items that people finalized, exported as a training manifest.

An appraisal becomes training data when its final verdict came from people (status `finalized`,
path `human`) and says `authentic` or `counterfeit`. Each usable photo becomes one manifest row,
its image the clean bytes from the photo store (decrypted when the store is encrypted), written
to `images/<appraisal_id>/<sha256>.<ext>` beside the manifest. The item id is the appraisal id;
no split is written, so the next `touchstone data split` assigns one (and links a review item to
any near-duplicate already in a frozen split).

Left out, and counted:
- `erased_member`: the member asked for erasure (PIPL; `DELETE /v1/members/{id}/data` records
  them in `erased_members`, migration 0004; read where the table exists).
- `gold`: items with known answers planted in the review queue to check reviewers; their
  labels are not the reviewers' work. Read from `appraisals.is_gold` where that column exists
  (migration 0003), so this works on databases from before and after it.
- `inconclusive`: people could not tell, so there is no label.
- `no_usable_photos`: every photo of the item failed the quality checks or is gone.

Photos left out: `unusable` (failed the quality checks), `duplicate` (the same clean photo twice
in one item), `missing` (no longer in the store, e.g. erased) and `unreadable` (the store cannot
decrypt or verify it: usually the wrong TOUCHSTONE_PHOTO_KEY).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import column, distinct, func, inspect, literal_column, select, table
from sqlalchemy.orm import Session, sessionmaker

from serving.db import Appraisal, Photo, Verdict, iso_utc
from serving.photos import PhotoStore, PhotoStoreError
from touchstone.data.manifest import DatasetInfo, PhotoRecord, write_manifest
from touchstone.vocabulary import DEFAULT_REGIONS, LABELS

EXTRA_COLUMNS: tuple[str, ...] = ("finalized_at", "reviewers")
# Item reasons in the order they are checked: an item is counted under the first that applies.
ITEM_REASONS: tuple[str, ...] = ("erased_member", "gold", "inconclusive", "no_usable_photos")
PHOTO_REASONS: tuple[str, ...] = ("unusable", "duplicate", "missing", "unreadable")
_CHUNK = 500  # ids per IN (...) list: well under every database's parameter limit


@dataclass
class ExportSummary:
    manifest: Path | None  # None when nothing qualified (no manifest is written then)
    items: Counter[str] = field(default_factory=Counter)  # exported items by label
    photos: Counter[str] = field(default_factory=Counter)  # exported photos by label
    left_out: Counter[str] = field(default_factory=Counter)  # items, by reason
    photos_left_out: Counter[str] = field(default_factory=Counter)  # photos of exported items
    gold_column: bool = False  # whether the database could say which items are gold
    erasure_table: bool = False  # whether the database lists erased members


def parse_since(text: str) -> dt.datetime:
    """An ISO 8601 date or datetime as an aware UTC datetime; a value without a zone is UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(
            f"--since {text!r} is not an ISO date or datetime (e.g. 2026-11-01 or "
            "2026-11-01T08:00:00Z)"
        ) from exc
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def export_reviews(
    sessions: sessionmaker, store: PhotoStore, out: Path, since: dt.datetime | None = None
) -> ExportSummary:
    """Write the finalized human verdicts (finalized at or after `since`) as a manifest at `out`.

    Overwrites `out` and image files of the same names; the caller decides whether it may.
    """
    out = Path(out).resolve()
    summary = ExportSummary(manifest=None)
    with sessions() as session:
        items = _finalized_items(session, since, summary)
        kept = []
        for item in items:
            reason = _reason_to_leave_out(item)
            if reason is None:
                kept.append(item)
            else:
                summary.left_out[reason] += 1
        ids = [item["id"] for item in kept]
        photos = _photos(session, ids)
        reviewers = _reviewer_counts(session, ids)

    records: list[PhotoRecord] = []
    images = out.parent / "images"
    for item in kept:
        rows = _usable_photos(photos.get(item["id"], []), summary)
        written = []
        for region, sha256 in rows:
            try:
                data = store.get(sha256)
            except PhotoStoreError as exc:
                summary.photos_left_out["missing" if exc.code == "not_found" else "unreadable"] += 1
                continue
            path = images / item["id"] / f"{sha256}.{_extension(data)}"
            _write_file(path, data)
            written.append(
                PhotoRecord(
                    line=0,
                    image=path.relative_to(out.parent).as_posix(),
                    path=path,
                    item_id=item["id"],
                    region=region,
                    label=item["outcome"],
                    category=item["category"] or None,
                    brand=item["brand"] or None,
                    source="review",
                    extra={
                        "finalized_at": iso_utc(item["finalized_at"]) or "",
                        "reviewers": str(reviewers.get(item["id"], 0)),
                    },
                )
            )
        if not written:
            summary.left_out["no_usable_photos"] += 1
            continue
        records.extend(written)
        summary.items[item["outcome"]] += 1
        summary.photos[item["outcome"]] += len(written)

    if records:
        info = DatasetInfo(
            name="touchstone-reviews",
            description="Photos of items whose final verdict came from certified reviewers "
            "(touchstone data export-reviews)"
            + (f", finalized since {iso_utc(since)}" if since else ""),
            regions=_vocabulary(r.region for r in records),
        )
        summary.manifest = write_manifest(out, records, info, EXTRA_COLUMNS)
    return summary


def _finalized_items(
    session: Session, since: dt.datetime | None, summary: ExportSummary
) -> list[dict[str, Any]]:
    inspector = inspect(session.connection())
    # Read what the database has, not what the ORM model declares: the gold flag and the
    # erasure list arrive in later migrations, and this must run before and after them.
    summary.gold_column = "is_gold" in {c["name"] for c in inspector.get_columns("appraisals")}
    summary.erasure_table = inspector.has_table("erased_members")
    columns = [
        Appraisal.id,
        Appraisal.member_id,
        Appraisal.category,
        Appraisal.brand,
        Appraisal.outcome,
        Appraisal.finalized_at,
    ]
    if summary.gold_column:
        columns.append(literal_column("appraisals.is_gold").label("is_gold"))
    query = (
        select(*columns)
        .where(Appraisal.status == "finalized", Appraisal.path == "human")
        .order_by(Appraisal.finalized_at, Appraisal.id)
    )
    if since is not None:
        query = query.where(Appraisal.finalized_at >= since)
    erased: set[str] = set()
    if summary.erasure_table:
        erased_members = table("erased_members", column("member_id"))
        erased = {str(m) for m in session.scalars(select(erased_members.c.member_id))}
    items = []
    for row in session.execute(query).mappings():
        item = dict(row)
        item["erased"] = item["member_id"] in erased
        item["is_gold"] = bool(item.get("is_gold"))  # None (not set) counts as not gold
        items.append(item)
    return items


def _reason_to_leave_out(item: dict[str, Any]) -> str | None:
    if item["erased"]:
        return "erased_member"
    if item["is_gold"]:
        return "gold"
    if item["outcome"] not in LABELS:
        return "inconclusive"
    return None


def _photos(session: Session, ids: Sequence[str]) -> dict[str, list[tuple[str, str, bool]]]:
    """(region, sha256, usable) of each appraisal's photos, in upload order, every round."""
    found: dict[str, list[tuple[str, str, bool]]] = {}
    for chunk in _chunks(ids):
        query = (
            select(Photo.appraisal_id, Photo.region, Photo.sha256, Photo.usable)
            .where(Photo.appraisal_id.in_(chunk))
            .order_by(Photo.appraisal_id, Photo.id)
        )
        for appraisal_id, region, sha256, usable in session.execute(query):
            found.setdefault(appraisal_id, []).append((region, sha256, bool(usable)))
    return found


def _reviewer_counts(session: Session, ids: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for chunk in _chunks(ids):
        query = (
            select(Verdict.appraisal_id, func.count(distinct(Verdict.reviewer)))
            .where(Verdict.appraisal_id.in_(chunk))
            .group_by(Verdict.appraisal_id)
        )
        counts.update({appraisal_id: int(n) for appraisal_id, n in session.execute(query)})
    return counts


def _usable_photos(
    photos: list[tuple[str, str, bool]], summary: ExportSummary
) -> list[tuple[str, str]]:
    kept: list[tuple[str, str]] = []
    seen: set[str] = set()
    for region, sha256, usable in photos:
        if not usable:
            # A photo people were asked to replace (too dark, blurred...) is not evidence
            # they judged by.
            summary.photos_left_out["unusable"] += 1
        elif sha256 in seen:
            summary.photos_left_out["duplicate"] += 1
        else:
            seen.add(sha256)
            kept.append((region, sha256))
    return kept


def _vocabulary(regions: Iterable[str]) -> tuple[str, ...]:
    """The default regions, plus any other a model in service accepted, in order of first use,
    so that a manifest of default regions merges with the synthetic one."""
    extra: list[str] = []
    for region in regions:
        if region not in DEFAULT_REGIONS and region not in extra:
            extra.append(region)
    return (*DEFAULT_REGIONS, *extra)


def _extension(data: bytes) -> str:
    # The store keeps JPEG uploads as JPEG and everything else as PNG.
    return "jpg" if data.startswith(b"\xff\xd8\xff") else "png"


def _write_file(path: Path, data: bytes) -> None:
    # Temp file and rename: an interrupted export never leaves half an image under a real name.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
