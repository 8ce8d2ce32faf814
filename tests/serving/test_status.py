"""An appraisal's state machine (`serving.appraisals.status`) on SQLite and PostgreSQL: every
transition in the table, what each one records and announces, the SLA clock it keeps, and every
transition outside the table refused without a write."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from serving.appraisals.status import TRANSITIONS, InvalidTransition, Status, move
from serving.db import (
    ApiKey,
    Appraisal,
    AppraisalEvent,
    ReviewTask,
    as_utc,
    default_database_url,
    make_engine,
    make_sessionmaker,
    upgrade,
)
from serving.errors import ApiError
from serving.lifecycle import EVENTS, Lifecycle, Listener

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
SLA = dt.timedelta(hours=48)

# What each transition must record and announce, written out here rather than read from the
# table, so that the table is checked, not copied.
EXPECTED: dict[tuple[str, Status | None, Status], list[str]] = {
    ("created", None, Status.AWAITING_PHOTOS): ["appraisal.created"],
    ("created", None, Status.IN_REVIEW): ["appraisal.created"],
    ("created", None, Status.DECIDED): [
        "appraisal.created",
        "appraisal.decided",
        "appraisal.finalized",
    ],
    ("photos_added", Status.AWAITING_PHOTOS, Status.AWAITING_PHOTOS): [],
    ("photos_added", Status.AWAITING_PHOTOS, Status.IN_REVIEW): [],
    ("photos_added", Status.AWAITING_PHOTOS, Status.DECIDED): [
        "appraisal.decided",
        "appraisal.finalized",
    ],
    ("human_review_requested", Status.DECIDED, Status.IN_REVIEW): [],
    ("photos_requested", Status.IN_REVIEW, Status.AWAITING_PHOTOS): [],
    ("escalated", Status.IN_REVIEW, Status.IN_REVIEW): [],
    ("finalized", Status.IN_REVIEW, Status.FINALIZED): ["appraisal.finalized"],
    ("overturned", Status.DECIDED, Status.FINALIZED): ["appraisal.overturned"],
    ("overturned", Status.FINALIZED, Status.FINALIZED): ["appraisal.overturned"],
}
# The outcome and path each target carries in these tests.
CARRIES = {
    Status.AWAITING_PHOTOS: (None, None),
    Status.IN_REVIEW: (None, "human"),
    Status.DECIDED: ("authentic", "auto"),
    Status.FINALIZED: ("counterfeit", "human"),
}


def carried(event: str, source: Status | None, target: Status) -> tuple[str | None, str | None]:
    """The outcome and path a move gives: an overturn changes the outcome it finds."""
    if event == "overturned" and source is Status.FINALIZED:
        return "authentic", "human"
    return CARRIES[target]


@pytest.fixture
def sessions(tmp_path: Path, database_url: str | None) -> Iterator[sessionmaker]:
    engine = make_engine(database_url or default_database_url(tmp_path))
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


class Heard:
    """A lifecycle whose every event is written down, in order."""

    def __init__(self) -> None:
        self.lifecycle = Lifecycle()
        self.events: list[tuple[str, dict[str, Any]]] = []
        for event in EVENTS:
            self.lifecycle.on(event, self._listener(event))

    def _listener(self, event: str) -> Listener:
        def listener(_: Session, __: Appraisal, detail: dict[str, Any]) -> None:
            self.events.append((event, detail))

        return listener

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def new_appraisal(tier_due: dt.datetime = T0 + SLA) -> Appraisal:
    return Appraisal(
        id=str(uuid.uuid4()),
        member_id="m-status",
        member_tier="explorer",
        category="bag",
        rule="test",
        reasons=[],
        reviews_required=1,
        created_at=T0,
        updated_at=T0,
        sla_due_at=tier_due,
    )


def stored_in(sessions: sessionmaker, status: Status) -> str:
    """An appraisal put straight into `status` (set up by hand, not by a transition)."""
    appraisal = new_appraisal()
    appraisal.status = status
    appraisal.outcome, appraisal.path = CARRIES[status]
    if status is Status.AWAITING_PHOTOS:
        appraisal.sla_paused_at = T0
    with sessions() as session, session.begin():
        session.add(appraisal)
    return appraisal.id


def events_of(session: Session, appraisal_id: str) -> list[AppraisalEvent]:
    return list(
        session.scalars(
            select(AppraisalEvent)
            .where(AppraisalEvent.appraisal_id == appraisal_id)
            .order_by(AppraisalEvent.id)
        )
    )


def tasks_of(session: Session, appraisal_id: str) -> list[ReviewTask]:
    return list(session.scalars(select(ReviewTask).where(ReviewTask.appraisal_id == appraisal_id)))


def test_every_transition_records_its_event_and_announces_what_follows(
    sessions: sessionmaker,
) -> None:
    table = {(t.event, t.source, t.target) for t in TRANSITIONS}
    assert table == set(EXPECTED), "each transition in the table needs its expectation here"
    now = T0 + dt.timedelta(hours=5)
    for event, source, target in sorted(EXPECTED, key=str):
        heard = Heard()
        outcome, path = carried(event, source, target)
        with sessions() as session, session.begin():
            if source is None:
                appraisal = new_appraisal()
            else:
                appraisal = session.get(Appraisal, stored_in(sessions, source))
                if source is Status.IN_REVIEW:
                    session.add(
                        ReviewTask(
                            appraisal_id=appraisal.id,
                            stage="review",
                            required_role="reviewer",
                            status="open",
                            due_at=appraisal.sla_due_at,
                        )
                    )
                    session.flush()
            move(
                session,
                heard.lifecycle,
                appraisal,
                target,
                event=event,
                rule="a_rule",
                outcome=outcome,
                path=path,
                detail={"note": "n"},
                now=now,
            )
            appraisal_id = appraisal.id
        case = (event, source, target)
        assert heard.names == EXPECTED[case], case
        with sessions() as session:
            row = session.get(Appraisal, appraisal_id)
            assert (row.status, row.outcome, row.path) == (target, outcome, path), case
            assert as_utc(row.updated_at) == now, case
            recorded = events_of(session, appraisal_id)
            assert [(e.kind, e.rule) for e in recorded] == [(event, "a_rule")], case
            assert recorded[0].detail["note"] == "n"
            assert recorded[0].detail["status"] == target
            assert recorded[0].detail["from"] == source
            if target is Status.FINALIZED and event == "finalized":
                assert as_utc(row.finalized_at) == now, case
            # Review tasks: opened on entering review, closed on leaving it.
            open_tasks = [t for t in tasks_of(session, appraisal_id) if t.status == "open"]
            entering = target is Status.IN_REVIEW and source is not Status.IN_REVIEW
            staying = target is Status.IN_REVIEW and source is Status.IN_REVIEW
            assert len(open_tasks) == (1 if entering or staying else 0), case
            # The SLA clock: paused while the member is to send photos.
            if target is Status.AWAITING_PHOTOS:
                paused = now if source is not Status.AWAITING_PHOTOS else T0
                assert as_utc(row.sla_paused_at) == paused, case
            else:
                assert row.sla_paused_at is None, case


def test_a_persons_verdict_over_the_models_announces_an_overturn(sessions: sessionmaker) -> None:
    """The member asked a person to check the model's "authentic"; the person says otherwise."""
    appraisal_id = stored_in(sessions, Status.IN_REVIEW)
    with sessions() as session, session.begin():
        session.get(Appraisal, appraisal_id).outcome = "authentic"
    heard = Heard()
    with sessions() as session, session.begin():
        appraisal = session.get(Appraisal, appraisal_id)
        move(
            session,
            heard.lifecycle,
            appraisal,
            Status.FINALIZED,
            event="finalized",
            rule="review_verdict",
            outcome="counterfeit",
            path="human",
        )
    assert heard.names == ["appraisal.finalized", "appraisal.overturned"]
    assert heard.events[1][1]["previous"] == "authentic"


def test_a_transition_outside_the_table_is_refused_and_writes_nothing(
    sessions: sessionmaker,
) -> None:
    table = {(t.event, t.source, t.target) for t in TRANSITIONS}
    kinds = sorted({t.event for t in TRANSITIONS})
    sources: list[Status | None] = [None, *Status]
    stored = {status: stored_in(sessions, status) for status in Status}
    refused = 0
    for event, source, target in itertools.product(kinds, sources, list(Status)):
        if (event, source, target) in table:
            continue
        heard = Heard()
        outcome, path = carried(event, source, target)
        with sessions() as session, session.begin():
            appraisal = (
                new_appraisal() if source is None else session.get(Appraisal, stored[source])
            )
            with pytest.raises(InvalidTransition) as refusal:
                move(
                    session,
                    heard.lifecycle,
                    appraisal,
                    target,
                    event=event,
                    rule="a_rule",
                    outcome=outcome,
                    path=path,
                )
            # Refused before any write: nothing pending in the session, nothing announced.
            assert not session.new and not session.dirty, (event, source, target)
            assert appraisal.status == source
        assert heard.events == []
        assert isinstance(refusal.value, ApiError)
        assert (refusal.value.status, refusal.value.code) == (409, "invalid_state")
        refused += 1
    assert refused == len(kinds) * len(sources) * len(Status) - len(table)
    with sessions() as session:
        assert session.scalar(select(func.count(AppraisalEvent.id))) == 0
        assert session.scalar(select(func.count(ReviewTask.id))) == 0
        for status, appraisal_id in stored.items():
            assert session.get(Appraisal, appraisal_id).status == status


def test_the_sla_clock_stops_while_the_member_is_to_send_photos(sessions: sessionmaker) -> None:
    heard = Heard()
    at = [T0]

    def step(appraisal_id: str | None, to: Status, event: str, hours: float) -> str:
        at[0] = T0 + dt.timedelta(hours=hours)
        outcome, path = CARRIES[to]
        with sessions() as session, session.begin():
            appraisal = (
                new_appraisal() if appraisal_id is None else session.get(Appraisal, appraisal_id)
            )
            move(
                session,
                heard.lifecycle,
                appraisal,
                to,
                event=event,
                rule="r",
                outcome=outcome,
                path=path,
                now=at[0],
            )
            return appraisal.id

    def due(appraisal_id: str) -> dt.datetime:
        with sessions() as session:
            return as_utc(session.get(Appraisal, appraisal_id).sla_due_at)

    # Submitted at T0 with too few photos: due T0 + 48 h, but the clock is stopped.
    appraisal_id = step(None, Status.AWAITING_PHOTOS, "created", 0)
    step(appraisal_id, Status.AWAITING_PHOTOS, "photos_added", 30)  # still not enough
    # The photos that do arrive 49 hours on: the full 48 hours from then.
    step(appraisal_id, Status.IN_REVIEW, "photos_added", 49)
    assert due(appraisal_id) == T0 + dt.timedelta(hours=49) + SLA
    with sessions() as session:
        assert [as_utc(t.due_at) for t in tasks_of(session, appraisal_id)] == [due(appraisal_id)]
    # 10 hours in review, a reviewer asks for photos, they come 20 hours later: 20 more hours.
    step(appraisal_id, Status.AWAITING_PHOTOS, "photos_requested", 59)
    step(appraisal_id, Status.IN_REVIEW, "photos_added", 79)
    assert due(appraisal_id) == T0 + dt.timedelta(hours=49 + 20) + SLA
    with sessions() as session:
        tasks = tasks_of(session, appraisal_id)
        assert sorted(t.status for t in tasks) == ["cancelled", "open"]
        assert [as_utc(t.due_at) for t in tasks if t.status == "open"] == [due(appraisal_id)]


def test_an_unexpected_integrity_error_is_a_clear_conflict(tmp_path: Path) -> None:
    """A write that breaks a constraint other than the idempotency key's (here a listener's
    duplicate row) is a 409 with a code, not a failed assert, and leaves no photo behind."""
    from serving.app import build_services
    from serving.appraisals.uploads import AppraisalRequest, PhotoUpload
    from serving.settings import Settings
    from tests.serving_support import jpeg

    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    services = build_services(settings, engine)

    def duplicate(session: Session, _: Appraisal, __: dict[str, Any]) -> None:
        row = {"prefix": "dup", "secret_sha256": "0" * 64, "role": "app"}
        session.execute(insert(ApiKey).values(**row))
        session.execute(insert(ApiKey).values(**row))

    services.lifecycle.on("appraisal.created", duplicate)
    request = AppraisalRequest(
        "m-1",
        "explorer",
        "bag",
        None,
        None,
        [PhotoUpload("logo", jpeg()), PhotoUpload("hardware", jpeg((30, 140, 90)))],
        "upload-integrity-1",
    )
    try:
        with pytest.raises(ApiError) as refusal:
            asyncio.run(services.appraisals.create(request))
        assert (refusal.value.status, refusal.value.code) == (409, "write_conflict")
        assert [p for p in (tmp_path / "data" / "photos").rglob("*") if p.is_file()] == []
    finally:
        engine.dispose()
