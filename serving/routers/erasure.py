"""`DELETE /v1/members/{member_id}/data`: erase a member's photos and derived data (admin)."""

from __future__ import annotations

from asyncio import to_thread
from typing import Any

from fastapi import APIRouter, Depends, Path, Request

from serving.auth import Caller, require
from serving.erasure import erase_member

router = APIRouter(prefix="/v1/members", tags=["members"])


@router.delete("/{member_id}/data")
async def erase_member_data(
    request: Request,
    member_id: str = Path(..., min_length=1, max_length=64),
    caller: Caller = Depends(require("admin")),
) -> dict[str, Any]:
    """Delete the member's photos (files no other member's appraisal holds) and what was
    derived from them; keep appraisal ids, outcomes and timestamps for the ledger and the
    certificates; leave the member out of every future training export. Safe to repeat."""
    state = request.app.state
    result = await to_thread(
        erase_member, state.sessions, state.appraisals.store, member_id, caller.key_id
    )
    return result.as_dict()
