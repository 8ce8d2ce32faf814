"""`DELETE /v1/members/{member_id}/data`: erase a member's photos and derived data (admin)."""

from __future__ import annotations

from asyncio import to_thread

from fastapi import APIRouter, Path

from serving.deps import Admin, SessionsDep, StoreDep
from serving.erasure import erase_member
from serving.schemas.erasure import ErasureResult

router = APIRouter(prefix="/v1/members", tags=["members"])


@router.delete("/{member_id}/data", response_model=ErasureResult)
async def erase_member_data(
    sessions: SessionsDep,
    store: StoreDep,
    caller: Admin,
    member_id: str = Path(..., min_length=1, max_length=64),
) -> ErasureResult:
    """Delete the member's photos (files no other member's appraisal holds) and what was
    derived from them; keep appraisal ids, outcomes and timestamps for the ledger and the
    certificates; leave the member out of every future training export. Safe to repeat."""
    return await to_thread(erase_member, sessions, store, member_id, caller.key_id)
