"""A collector's month of benefits, step by step: the walk-through in docs/benefits.md.

    .venv/bin/python experiments/benefits-month/walk.py

Runs the benefits service on a temporary SQLite database with a moving clock, driven by the same
lifecycle events the appraisal and review services send (`appraisal.created`,
`appraisal.finalized`), and prints `GET /v1/members/{id}/benefits`'s answer after each step
(history: only the entries the step added).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

from serving.benefits.ledger import Ledger
from serving.benefits.service import BenefitsService
from serving.db import Appraisal, make_engine, make_sessionmaker, upgrade
from serving.lifecycle import standard_lifecycle
from serving.settings import Settings

MEMBER = "m-2048"


def main() -> None:
    engine = make_engine(f"sqlite:///{Path(tempfile.mkdtemp()) / 'walk.db'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    now = [dt.datetime(2026, 11, 2, 1, tzinfo=dt.UTC)]
    # configs/benefits.yaml, as the service reads it, on a clock this walk moves.
    ledger = Ledger(Settings().benefits_config, clock=lambda: now[0])
    lifecycle = standard_lifecycle(ledger)
    benefits = BenefitsService(sessions, ledger)
    seen = [0]

    def show(step: str) -> None:
        summary = benefits.summary(MEMBER, limit=100, now=now[0])
        assert summary is not None
        answer = summary.model_dump(mode="json")
        new = answer["history"]["total"] - seen[0]
        seen[0] = answer["history"]["total"]
        answer["history"] = [
            {k: e[k] for k in ("asset", "amount", "reason", "month", "expires_at") if e[k]}
            for e in reversed(answer["history"]["entries"][:new])
        ]
        print(f"## {now[0]:%Y-%m-%d %H:%M} UTC: {step}")
        print(json.dumps(answer, indent=1))

    def submit() -> Appraisal:
        with sessions() as session, session.begin():
            appraisal = Appraisal(
                id=str(uuid.uuid4()),
                member_id=MEMBER,
                member_tier="collector",
                category="bag",
                status="in_review",
                path="human",
                rule="vip_dual_channel",
                reasons=[],
                created_at=now[0],
                updated_at=now[0],
                sla_due_at=now[0] + dt.timedelta(hours=24),
            )
            session.add(appraisal)
            session.flush()
            lifecycle.emit(session, "appraisal.created", appraisal)
            return appraisal

    def verdict(appraisal: Appraisal, outcome: str) -> None:
        with sessions() as session, session.begin():
            row = session.get(Appraisal, appraisal.id)
            assert row is not None
            row.status, row.outcome, row.finalized_at = "finalized", outcome, now[0]
            lifecycle.emit(session, "appraisal.finalized", row)

    benefits.set_tier(MEMBER, "collector")
    show('the platform sets the tier: PUT /v1/members/m-2048 {"tier": "collector"}')
    first = submit()
    show("first submission: paid from the month's free quota")
    now[0] += dt.timedelta(hours=2)
    second = submit()
    show("second submission: the last free appraisal of the month")
    now[0] += dt.timedelta(hours=3)
    verdict(first, "authentic")
    show("a reviewer's final verdict on the first, within its 24 h SLA: the reward")
    now[0] += dt.timedelta(hours=25)
    verdict(second, "inconclusive")
    show(
        "the second's verdict, 28 h after submission: inconclusive (the free appraisal "
        "comes back) and past the SLA (the compensation coupon)"
    )
    now[0] = dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC)
    print("## close:", json.dumps(asdict(benefits.close_month("2026-11"))))
    print("## again:", json.dumps(asdict(benefits.close_month("2026-11"))))
    show("after `touchstone benefits close-month --month 2026-11` (run twice)")
    engine.dispose()


if __name__ == "__main__":
    main()
