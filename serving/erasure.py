"""Member erasure (PIPL): `erase_member` deletes a member's photos and what was derived from
them, and keeps only what the ledger and the certificates need.

- Photo files go from the store, unless another member's appraisal holds the same content address
  (the store keeps one file per address).
- Photo rows keep their region, round and content address (the certificates name the hashes;
  a hash is not personal data) and lose the derived data: scores and quality problems.
- Verdicts keep reviewer, outcome and time and lose the reviewers' notes and findings about the
  member's photos.
- Appraisals keep ids, outcomes, paths and timestamps (the ledger and the certificates refer to
  them); the certificate chain is not touched, so it stays verifiable.
- Events for the membership platform about the member's appraisals lose the member and the
  photos' derived data (serving/outbox/events.py `scrub_member_events`); they keep their ids.
- The member is listed in `erased_members`: the training export leaves them out for good, and
  `touchstone train` leaves out their rows from manifests exported before.
- The answer names the training exports already written with the member's photos (recorded by
  serving/feedback.py): they lie outside the service, so operators purge them.

Safe to repeat: a second call changes nothing more and answers the same counts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from serving.db import (
    Appraisal,
    AuditEntry,
    ErasedMember,
    Photo,
    TrainingExport,
    TrainingExportMember,
    Verdict,
    iso_utc,
    utcnow,
)
from serving.outbox.events import scrub_member_events
from serving.photos import PhotoStore
from serving.schemas.erasure import ErasureResult, ExportHeld


def erase_member(
    sessions: sessionmaker, store: PhotoStore, member_id: str, actor: int
) -> ErasureResult:
    with sessions() as session, session.begin():
        ids = list(
            session.scalars(
                select(Appraisal.id).where(
                    Appraisal.member_id == member_id, Appraisal.is_gold.is_not(True)
                )
            )
        )
        photos = _in(session, Photo, Photo.appraisal_id, ids)
        for photo in photos:
            photo.p_authentic = None
            photo.log_odds = None
            photo.problems = []
        verdicts = _in(session, Verdict, Verdict.appraisal_id, ids)
        for verdict in verdicts:
            verdict.notes = ""
            verdict.findings = []
        events = scrub_member_events(session, ids)
        addresses = sorted({p.sha256 for p in photos})
        shared = _shared(session, addresses, member_id)
        erased = session.get(ErasedMember, member_id)
        first_time = erased is None
        if erased is None:
            erased = ErasedMember(member_id=member_id, erased_at=utcnow())
            session.add(erased)
        counts = {
            "member_id": member_id,
            "erased_at": iso_utc(erased.erased_at),
            "appraisals": len(ids),
            "photos": len(photos),
            "photo_files_erased": len(addresses) - len(shared),
            "photo_files_shared": len(shared),
            "verdicts": len(verdicts),
            "outbox_events": events,
        }
    # The exports are read after the member's row is committed: an export records itself
    # before it reads the erased members again, so it is either found here or leaves the
    # member out (serving/feedback.py).
    with sessions() as session, session.begin():
        result = ErasureResult(**counts, exports=_exports_holding(session, member_id))
        session.add(
            AuditEntry(
                actor=actor,
                action="erase_member",
                appraisal_id=None,
                detail={**result.model_dump(), "first_time": first_time},
            )
        )
    # After the commit: the member is already out of every export, so a crash here leaves
    # files that a second call (idempotent) removes.
    for address in addresses:
        if address not in shared:
            store.delete(address)
    return result


def _exports_holding(session: Session, member_id: str) -> list[ExportHeld]:
    query = (
        select(TrainingExport)
        .join(TrainingExportMember, TrainingExportMember.export_id == TrainingExport.id)
        .where(TrainingExportMember.member_id == member_id)
        .order_by(TrainingExport.created_at, TrainingExport.id)
    )
    return [
        ExportHeld(
            id=export.id,
            exported_at=iso_utc(export.created_at) or "",
            destination=export.destination,
            rows=export.rows,
        )
        for export in session.scalars(query)
    ]


def _in(session: Session, entity: Any, column: Any, ids: list[str]) -> list[Any]:
    found: list[Any] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.extend(session.scalars(select(entity).where(column.in_(chunk)).order_by(entity.id)))
    return found


def _shared(session: Session, addresses: list[str], member_id: str) -> set[str]:
    """Addresses that an appraisal of another member (or a gold item) also holds."""
    shared: set[str] = set()
    for start in range(0, len(addresses), 500):
        chunk = addresses[start : start + 500]
        query = (
            select(Photo.sha256)
            .join(Appraisal, Appraisal.id == Photo.appraisal_id)
            .where(
                Photo.sha256.in_(chunk),
                (Appraisal.member_id != member_id) | Appraisal.is_gold.is_(True),
            )
            .distinct()
        )
        shared.update(session.scalars(query))
    return shared
