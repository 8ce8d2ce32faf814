"""`/v1/members`: the membership platform sets a member's tier; the app and the platform read
the member's benefits. `POST /v1/appraisals/{id}/overturn`: a senior reviewer or an admin
corrects a final verdict (appeal, dispute, QC), which compensates the member."""

from __future__ import annotations

from asyncio import to_thread
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from serving import benefits, lifecycle
from serving.auth import Caller, require
from serving.db import Appraisal, AppraisalEvent, AuditEntry, utcnow
from serving.errors import ApiError

router = APIRouter(tags=["members"])

MemberId = Path(..., min_length=1, max_length=64)


class TierBody(BaseModel):
    tier: str = Field(..., min_length=1, max_length=32)


class OverturnBody(BaseModel):
    outcome: Literal["authentic", "counterfeit", "inconclusive"]
    reason: str = Field(..., min_length=1, max_length=2000)


@router.put("/v1/members/{member_id}")
async def set_tier(
    body: TierBody,
    request: Request,
    member_id: str = MemberId,
    _: Caller = Depends(require("platform")),
) -> dict[str, Any]:
    """Set the member's tier (it decides their next submissions; each appraisal keeps the tier
    it was submitted at)."""
    tiers = request.app.state.appraisals.policy.tiers
    if body.tier not in tiers:
        raise ApiError(422, "invalid_field", f"tier must be one of {', '.join(tiers)}")
    member = await to_thread(benefits.set_tier, request.app.state.sessions, member_id, body.tier)
    return {
        "member_id": member.id,
        "tier": member.tier,
        "updated_at": benefits._iso(member.updated_at),
    }


@router.get("/v1/members/{member_id}/benefits")
async def member_benefits(
    request: Request,
    member_id: str = MemberId,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    _: Caller = Depends(require("app", "platform", "admin")),
) -> dict[str, Any]:
    """This month's free appraisals left, coupons, points (and what expires next), and the
    ledger, newest first."""
    answer = await to_thread(benefits.summary, request.app.state.sessions, member_id, limit, offset)
    if answer is None:
        raise ApiError(404, "not_found", f"no member {member_id}")
    return answer


def overturn(sessions: Any, appraisal_id: str, body: OverturnBody, caller: Caller) -> None:
    with sessions() as session, session.begin():
        appraisal = session.get(Appraisal, appraisal_id, with_for_update=True)
        if appraisal is None:
            raise ApiError(404, "not_found", f"no appraisal {appraisal_id}")
        if appraisal.status not in ("finalized", "decided") or appraisal.outcome is None:
            raise ApiError(
                409,
                "invalid_state",
                f"appraisal {appraisal_id} is {appraisal.status}; only a final verdict can be "
                "overturned",
            )
        previous = appraisal.outcome
        if previous == body.outcome:
            raise ApiError(409, "invalid_state", f"the verdict is already {previous}")
        now = utcnow()
        appraisal.outcome, appraisal.status, appraisal.path = body.outcome, "finalized", "human"
        appraisal.finalized_at = appraisal.finalized_at or now
        appraisal.updated_at = now
        detail = {"previous": previous, "outcome": body.outcome, "reason": body.reason}
        session.add(
            AppraisalEvent(
                appraisal_id=appraisal.id,
                kind="overturned",
                rule="overturn",
                detail={**detail, "by": caller.key_id},
            )
        )
        session.add(
            AuditEntry(
                actor=caller.key_id, action="overturn", appraisal_id=appraisal.id, detail=detail
            )
        )
        session.flush()
        lifecycle.emit(
            session, "appraisal.overturned", appraisal, previous=previous, reason=body.reason
        )


@router.post("/v1/appraisals/{appraisal_id}/overturn")
async def overturn_verdict(
    body: OverturnBody,
    request: Request,
    appraisal_id: str = Path(..., min_length=1, max_length=36),
    caller: Caller = Depends(require("senior", "admin")),
) -> dict[str, Any]:
    """Correct a final verdict (appeal, dispute, QC re-review): the outcome changes, the change
    is logged, and the member is compensated by policy (`configs/benefits.yaml`)."""
    await to_thread(overturn, request.app.state.sessions, appraisal_id, body, caller)
    appraisal = await to_thread(request.app.state.appraisals.get, appraisal_id)
    return {"id": appraisal.id, "status": appraisal.status, "outcome": appraisal.outcome}
