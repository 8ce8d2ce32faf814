"""What a reviewer sees of a task: the item with its member masked, its photos, the model's
scores unless the review is blind, and both earlier verdicts on an escalation. Every view of a
member's photos is written to the audit log, in the caller's transaction."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.auth import Caller
from serving.db import Appraisal, AuditEntry, Photo, ReviewTask, Verdict, as_utc, utcnow
from serving.errors import ApiError
from serving.photos import PhotoStore, PhotoStoreError
from serving.schemas.review import OtherVerdict, TaskInfo, TaskItem, TaskPhoto, TaskView
from serving.stripping import MEDIA_TYPES
from touchstone.imaging import sniff_format


def mask_member(member_id: str) -> str:
    """Reviewers see members masked (PIPL): enough to tell two apart on one page, no more."""
    if len(member_id) <= 4:
        return member_id[:1] + "***"
    return member_id[:2] + "***" + member_id[-2:]


def task_view(session: Session, caller: Caller, task_id: int, blind_scores: bool) -> TaskView:
    """The work page's data. Blind tasks hide the model's scores and every other verdict;
    an escalation shows the senior both verdicts. Logged: a view of a member's photos."""
    task = session.get(ReviewTask, task_id)
    if task is None:
        raise ApiError(404, "not_found", f"no review task {task_id}")
    if caller.role not in ("senior", "admin") and task.claimed_by != caller.key_id:
        raise ApiError(403, "forbidden", "claim this task to see it")
    appraisal = session.get(Appraisal, task.appraisal_id)
    assert appraisal is not None
    photos = session.scalars(
        select(Photo).where(Photo.appraisal_id == appraisal.id).order_by(Photo.id)
    ).all()
    hide_scores = task.blind and blind_scores
    others = []
    if task.stage == "escalation":
        others = [
            OtherVerdict(outcome=v.outcome, notes=v.notes, findings=v.findings)
            for v in session.scalars(
                select(Verdict).where(
                    Verdict.appraisal_id == appraisal.id, Verdict.task_id != task.id
                )
            )
        ]
    session.add(
        AuditEntry(
            actor=caller.key_id,
            action="view_photos",
            appraisal_id=appraisal.id,
            detail={"task": task.id, "photos": len(photos)},
        )
    )
    now = utcnow()
    due = as_utc(task.due_at)
    return TaskView(
        task=TaskInfo(
            id=task.id,
            stage=task.stage,
            blind=task.blind,
            status=task.status,
            due_at=due,
            overdue=due is not None and due < now,
            lease_expires_at=as_utc(task.lease_expires_at),
        ),
        appraisal=TaskItem(
            id=appraisal.id,
            member=mask_member(appraisal.member_id),
            member_tier=appraisal.member_tier,
            category=appraisal.category,
            brand=appraisal.brand,
            declared_value=appraisal.declared_value_cny,
            photo_rounds=appraisal.photo_rounds,
            routed_because=list(appraisal.reasons or []),
            p_authentic=None if hide_scores else appraisal.p_authentic,
        ),
        photos=[
            TaskPhoto(
                sha256=p.sha256,
                region=p.region,
                round=p.round,
                usable=p.usable,
                problems=list(p.problems or []),
                score=None if hide_scores else p.p_authentic,
            )
            for p in photos
        ],
        other_verdicts=others,
    )


def check_photo_access(session: Session, caller: Caller, task_id: int, sha256: str) -> str:
    """Check the caller may see this photo through this task; log the view."""
    task = session.get(ReviewTask, task_id)
    if task is None:
        raise ApiError(404, "not_found", f"no review task {task_id}")
    if caller.role not in ("senior", "admin") and task.claimed_by != caller.key_id:
        raise ApiError(403, "forbidden", "claim this task to see its photos")
    found = session.scalar(
        select(Photo.id).where(Photo.appraisal_id == task.appraisal_id, Photo.sha256 == sha256)
    )
    if found is None:
        raise ApiError(404, "not_found", "no such photo in this task")
    session.add(
        AuditEntry(
            actor=caller.key_id,
            action="view_photo",
            appraisal_id=task.appraisal_id,
            detail={"task": task.id, "sha256": sha256},
        )
    )
    return task.appraisal_id


def stored_photo(store: PhotoStore, sha256: str) -> tuple[bytes, str]:
    """A task's photo from the store, and its media type. Its row names it, so a file that is
    not there was erased since the task was made (the member asked): 410 `photo_erased`; one
    that cannot be read back (damaged, or the wrong photo key) is a 404. Check access first
    (`check_photo_access`)."""
    try:
        data = store.get(sha256)
    except PhotoStoreError as exc:
        if exc.code == "not_found":
            raise ApiError(
                410, "photo_erased", "this photo was erased at the member's request"
            ) from exc
        raise ApiError(404, "not_found", f"the photo cannot be read: {exc.message}") from exc
    # What the store holds is the member's own JPEG, PNG or WebP, less its metadata.
    return data, MEDIA_TYPES.get(sniff_format(data[:64]) or "", "application/octet-stream")
