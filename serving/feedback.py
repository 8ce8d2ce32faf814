"""The feedback loop: items that people finalized, exported as a training manifest.

An appraisal becomes training data when its final verdict came from people (status `finalized`,
path `human`) and says `authentic` or `counterfeit`. Each usable photo becomes one manifest row,
its image the clean bytes from the photo store (decrypted when the store is encrypted), written
to `images/<appraisal_id>/<sha256>.<ext>` beside the manifest. The item id is the appraisal id;
no split is written, so the next `touchstone data split` assigns one (and links a review item to
any near-duplicate already in a frozen split).

Each export is recorded (`training_exports`, migration 0009) before any photo is written, with
the members whose photos it holds, so that an erasure names the exports that held the member.
A member erased while the photos were being written is left out as well: the check is made
again before the manifest is written.

Left out, and counted:
- `erased_member`: the member asked for erasure (PIPL; `DELETE /v1/members/{id}/data` records
  them in `erased_members`).
- `gold`: items with known answers planted in the review queue to check reviewers; their
  labels are not the reviewers' work.
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
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, distinct, func, inspect, select, update
from sqlalchemy.orm import Session, sessionmaker

from serving.appraisals.status import Status
from serving.db import (
    Appraisal,
    ErasedMember,
    Photo,
    TrainingExport,
    TrainingExportMember,
    Verdict,
    iso_utc,
    utcnow,
)
from serving.photos import PhotoStore, PhotoStoreError
from touchstone.data.manifest import DatasetInfo, PhotoRecord, write_manifest
from touchstone.imaging import sniff_format
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
    export_id: str = ""  # the record in `training_exports`


class ExportError(Exception):
    """The export cannot run on this database."""


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
    Raises ExportError on a database that cannot record exports yet.
    """
    out = Path(out).resolve()
    summary = ExportSummary(manifest=None)
    with sessions() as session:
        if not inspect(session.connection()).has_table(TrainingExport.__tablename__):
            # An export erasure cannot find is the hole the record closes: refuse instead.
            raise ExportError(
                "this database cannot record exports yet (migration 0009_training_exports): "
                "start `touchstone serve` on it once, which migrates it, then export again"
            )
        items = _finalized_items(session, since)
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
    # Recorded (and committed) before the first photo is written: an erasure from now on
    # finds this export, and one that came earlier is caught by the check below.
    summary.export_id = _record_export(sessions, out, {item["member_id"] for item in kept})

    written: dict[str, list[PhotoRecord]] = {}
    images = out.parent / "images"
    for item in kept:
        rows = _usable_photos(photos.get(item["id"], []), summary)
        for region, sha256 in rows:
            try:
                data = store.get(sha256)
            except PhotoStoreError as exc:
                summary.photos_left_out["missing" if exc.code == "not_found" else "unreadable"] += 1
                continue
            path = images / item["id"] / f"{sha256}.{_extension(data)}"
            _write_file(path, data)
            written.setdefault(item["id"], []).append(
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

    with sessions() as session:
        erased_since = _erased_members(session)
    records: list[PhotoRecord] = []
    members: set[str] = set()
    for item in kept:
        rows = written.get(item["id"], [])
        if item["member_id"] in erased_since:
            summary.left_out["erased_member"] += 1
            _remove_files(rows)
            continue
        if not rows:
            summary.left_out["no_usable_photos"] += 1
            continue
        records.extend(rows)
        members.add(item["member_id"])
        summary.items[item["outcome"]] += 1
        summary.photos[item["outcome"]] += len(rows)

    if records:
        info = DatasetInfo(
            name="touchstone-reviews",
            description="Photos of items whose final verdict came from certified reviewers "
            "(touchstone data export-reviews)"
            + (f", finalized since {iso_utc(since)}" if since else ""),
            regions=_vocabulary(r.region for r in records),
        )
        summary.manifest = write_manifest(out, records, info, EXTRA_COLUMNS)
    _finish_export(sessions, summary.export_id, len(records), members)
    return summary


def erased_items(sessions: sessionmaker, item_ids: Iterable[str]) -> set[str]:
    """Those of these appraisal ids (a review manifest's item ids) whose member was erased:
    `touchstone train` leaves their rows out."""
    found: set[str] = set()
    with sessions() as session:
        for chunk in _chunks(sorted(set(item_ids))):
            query = (
                select(Appraisal.id)
                .join(ErasedMember, ErasedMember.member_id == Appraisal.member_id)
                .where(Appraisal.id.in_(chunk))
            )
            found.update(session.scalars(query))
    return found


def _record_export(sessions: sessionmaker, out: Path, members: set[str]) -> str:
    export_id = str(uuid.uuid4())
    with sessions() as session, session.begin():
        session.add(TrainingExport(id=export_id, created_at=utcnow(), destination=str(out), rows=0))
        session.flush()
        session.add_all(TrainingExportMember(export_id=export_id, member_id=m) for m in members)
    return export_id


def _finish_export(sessions: sessionmaker, export_id: str, rows: int, members: set[str]) -> None:
    """The rows written, and only the members whose photos the export holds in the end."""
    with sessions() as session, session.begin():
        session.execute(
            update(TrainingExport).where(TrainingExport.id == export_id).values(rows=rows)
        )
        listed = set(
            session.scalars(
                select(TrainingExportMember.member_id).where(
                    TrainingExportMember.export_id == export_id
                )
            )
        )
        for chunk in _chunks(sorted(listed - members)):
            session.execute(
                delete(TrainingExportMember).where(
                    TrainingExportMember.export_id == export_id,
                    TrainingExportMember.member_id.in_(chunk),
                )
            )


def _erased_members(session: Session) -> set[str]:
    return {str(m) for m in session.scalars(select(ErasedMember.member_id))}


def _finalized_items(session: Session, since: dt.datetime | None) -> list[dict[str, Any]]:
    query = (
        select(
            Appraisal.id,
            Appraisal.member_id,
            Appraisal.category,
            Appraisal.brand,
            Appraisal.outcome,
            Appraisal.finalized_at,
            Appraisal.is_gold,
        )
        .where(Appraisal.status == Status.FINALIZED, Appraisal.path == "human")
        .order_by(Appraisal.finalized_at, Appraisal.id)
    )
    if since is not None:
        query = query.where(Appraisal.finalized_at >= since)
    erased = _erased_members(session)
    items = []
    for row in session.execute(query).mappings():
        item = dict(row)
        item["erased"] = item["member_id"] in erased
        item["is_gold"] = bool(item["is_gold"])  # None (not set) counts as not gold
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
    # The store keeps JPEG, PNG and WebP uploads in their own format (stripped) and HEIC as PNG.
    return {"JPEG": "jpg", "WEBP": "webp"}.get(sniff_format(data[:64]) or "", "png")


def _remove_files(records: list[PhotoRecord]) -> None:
    for record in records:
        record.path.unlink(missing_ok=True)
    for folder in {record.path.parent for record in records}:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


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
