"""What an erasure answers: counts of what was erased and kept, and the training exports that
hold the member's photos (the same on a repeated call)."""

from __future__ import annotations

from pydantic import BaseModel


class ExportHeld(BaseModel):
    """A training export written while the member's photos were in it: purge or rebuild it."""

    id: str
    exported_at: str
    destination: str  # the manifest's path on the machine that ran the export
    rows: int  # photos the export wrote, all members together


class ErasureResult(BaseModel):
    member_id: str
    erased_at: str
    appraisals: int  # the member's appraisals, kept in outline
    photos: int  # photo rows stripped of derived data
    photo_files_erased: int  # content addresses only this member held: gone from the store
    photo_files_shared: int  # content addresses another member's appraisal also holds: kept
    verdicts: int  # verdicts stripped of notes and findings
    outbox_events: int  # events about the member's appraisals stripped of member and scores
    exports: list[ExportHeld]  # oldest first
