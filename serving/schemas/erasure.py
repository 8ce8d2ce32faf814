"""What an erasure answers: counts of what was erased and kept (the same on a repeated call)."""

from __future__ import annotations

from pydantic import BaseModel


class ErasureResult(BaseModel):
    member_id: str
    erased_at: str
    appraisals: int  # the member's appraisals, kept in outline
    photos: int  # photo rows stripped of derived data
    photo_files_erased: int  # content addresses only this member held: gone from the store
    photo_files_shared: int  # content addresses another member's appraisal also holds: kept
    verdicts: int  # verdicts stripped of notes and findings
