"""The benefits ledger: property-based tests on the service layer (SQLite), concurrent
submissions on PostgreSQL, and the member routes through a real server."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from serving.benefits.config import BenefitsConfig
from serving.benefits.ledger import Ledger, balance, point_lots
from serving.benefits.month import MonthNotOver
from serving.benefits.service import BenefitsService
from serving.db import (
    Appraisal,
    AppraisalPayment,
    LedgerEntry,
    Member,
    make_engine,
    make_sessionmaker,
    upgrade,
)
from serving.lifecycle import Lifecycle, standard_lifecycle
from tests.serving_support import postgres_database, start_server, stop

TIERS = ("explorer", "connoisseur", "collector", "master", "brand_confidant")
OUTCOMES = ("authentic", "counterfeit", "inconclusive")
START = dt.datetime(2026, 1, 10, 4, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('benefits') / 'ledger.db'}")
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@dataclass
class Bank:
    """The benefits side of the service on one database, as the app wires it, with the
    default configuration and a clock the test moves (`ledger.clock`)."""

    sessions: sessionmaker
    ledger: Ledger
    lifecycle: Lifecycle
    service: BenefitsService


def bank_on(sessions: sessionmaker) -> Bank:
    ledger = Ledger(BenefitsConfig())
    return Bank(sessions, ledger, standard_lifecycle(ledger), BenefitsService(sessions, ledger))


@pytest.fixture
def bank(sessions: sessionmaker) -> Bank:
    return bank_on(sessions)


# -- helpers: the events the appraisal and review services send --------------------------------


def submit(bank: Bank, member: str, tier: str, at: dt.datetime, gold: bool = False) -> str:
    with bank.sessions() as session, session.begin():
        appraisal = Appraisal(
            id=str(uuid.uuid4()),
            member_id=member,
            member_tier=tier,
            category="bag",
            status="in_review",
            path="human",
            rule="test",
            reasons=[],
            created_at=at,
            updated_at=at,
            sla_due_at=at + dt.timedelta(hours=24),
            is_gold=gold,
        )
        session.add(appraisal)
        session.flush()
        bank.lifecycle.emit(session, "appraisal.created", appraisal)
        return appraisal.id


def finalize(bank: Bank, appraisal_id: str, outcome: str, at: dt.datetime) -> bool:
    """A person's final verdict; False if the appraisal was final already."""
    with bank.sessions() as session, session.begin():
        appraisal = session.get(Appraisal, appraisal_id, with_for_update=True)
        if appraisal.status == "finalized":
            return False
        appraisal.status, appraisal.outcome, appraisal.finalized_at = "finalized", outcome, at
        session.flush()
        bank.lifecycle.emit(session, "appraisal.finalized", appraisal)
        return True


def overturn(bank: Bank, appraisal_id: str, outcome: str) -> str | None:
    with bank.sessions() as session, session.begin():
        appraisal = session.get(Appraisal, appraisal_id, with_for_update=True)
        previous = appraisal.outcome
        if appraisal.status != "finalized" or previous == outcome:
            return None
        appraisal.outcome = outcome
        session.flush()
        bank.lifecycle.emit(session, "appraisal.overturned", appraisal, previous=previous)
        return previous


def replay(bank: Bank, cause: tuple) -> None:
    """Send a cause's event again, as a retry or a redelivery would."""
    if cause[0] == "close":
        bank.service.close_month(cause[1], member_ids=cause[2])
        return
    with bank.sessions() as session, session.begin():
        appraisal = session.get(Appraisal, cause[1])
        extra = {"previous": cause[2]} if cause[0] == "appraisal.overturned" else {}
        bank.lifecycle.emit(session, cause[0], appraisal, **extra)


def summary_of(bank: Bank, member: str, now: dt.datetime) -> dict:
    """What `GET /v1/members/{id}/benefits` answers, as JSON."""
    answer = bank.service.summary(member, now=now)
    assert answer is not None
    return answer.model_dump(mode="json")


def ledger(sessions, members: list[str]) -> list[LedgerEntry]:
    with sessions() as session:
        return list(session.scalars(select(LedgerEntry).where(LedgerEntry.member_id.in_(members))))


def grant(bank: Bank, member: str, tier: str, asset: str, amount: int) -> None:
    with bank.sessions() as session, session.begin():
        bank.ledger.lock_member(session, member)
        expires = bank.ledger.clock() + dt.timedelta(days=730) if asset == "points" else None
        bank.ledger.post(
            session, member, asset, amount, "test", f"test:{uuid.uuid4()}", expires_at=expires
        )


# -- the property --------------------------------------------------------------------------------

operations = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 2), st.booleans(), st.integers(0, 19)),
    st.tuples(st.just("verdict"), st.integers(0, 50), st.sampled_from(OUTCOMES), st.booleans()),
    st.tuples(st.just("overturn"), st.integers(0, 50), st.sampled_from(OUTCOMES)),
    st.tuples(st.just("tier"), st.integers(0, 2), st.sampled_from(TIERS)),
    st.tuples(st.just("tick"), st.sampled_from([1, 9, 31, 200, 400])),
    st.tuples(st.just("close")),
    st.tuples(st.just("expire")),
    st.tuples(st.just("replay"), st.integers(0, 50)),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tiers=st.lists(st.sampled_from(TIERS), min_size=3, max_size=3),
    steps=st.lists(operations, min_size=1, max_size=40),
)
def test_the_ledger_never_goes_negative_never_pays_twice_and_sums(
    sessions, bank: Bank, tiers: list[str], steps: list[tuple]
) -> None:
    run = uuid.uuid4().hex[:8]
    members = [f"{run}-{i}" for i in range(3)]
    tier_of = dict(zip(members, tiers, strict=True))
    now = [START]
    bank.ledger.clock = lambda: now[0]
    for member, tier in tier_of.items():
        bank.service.set_tier(member, tier)
    appraisals: list[tuple[str, dt.datetime, bool]] = []  # id, submitted at, gold
    causes: list[tuple] = []
    late_first_verdicts: set[str] = set()
    for step in steps:
        kind = step[0]
        if kind == "submit":
            member = members[step[1]]
            gold = step[3] == 0  # now and then an admin's gold item
            appraisal_id = submit(bank, member, tier_of[member], now[0], gold)
            appraisals.append((appraisal_id, now[0], gold))
            causes.append(("appraisal.created", appraisal_id))
        elif kind == "verdict" and appraisals:
            appraisal_id, submitted, gold = appraisals[step[1] % len(appraisals)]
            at = submitted + dt.timedelta(hours=30 if step[3] else 2)  # due after 24 h
            if finalize(bank, appraisal_id, step[2], at):
                causes.append(("appraisal.finalized", appraisal_id))
                if step[3] and not gold:
                    late_first_verdicts.add(appraisal_id)
        elif kind == "overturn" and appraisals:
            appraisal_id = appraisals[step[1] % len(appraisals)][0]
            previous = overturn(bank, appraisal_id, step[2])
            if previous is not None:
                causes.append(("appraisal.overturned", appraisal_id, previous))
        elif kind == "tier":
            member = members[step[1]]
            tier_of[member] = step[2]
            bank.service.set_tier(member, step[2])
        elif kind == "tick":
            now[0] += dt.timedelta(days=step[1])
        elif kind == "close":
            start, _ = bank.ledger.month_bounds(bank.ledger.month_of(now[0]))
            month = bank.ledger.month_of(start - dt.timedelta(days=1))
            bank.service.close_month(month, member_ids=members)
            causes.append(("close", month, members))
        elif kind == "expire":
            bank.service.expire_points(member_ids=members)
        elif kind == "replay" and causes:
            before = _movements(ledger(sessions, members))
            payments_before = _payments(sessions, members)
            replay(bank, causes[step[1] % len(causes)])
            assert _movements(ledger(sessions, members)) == before
            assert _payments(sessions, members) == payments_before

    entries = ledger(sessions, members)
    sums: dict[tuple[str, str], int] = defaultdict(int)
    month_sums: dict[tuple[str, str], int] = defaultdict(int)
    for entry in entries:
        sums[entry.member_id, entry.asset] += entry.amount
        if entry.month:
            month_sums[entry.member_id, entry.month] += entry.amount
    assert all(value >= 0 for value in sums.values()), dict(sums)
    assert all(value >= 0 for value in month_sums.values()), dict(month_sums)
    # Never paid twice: one payment and at most one charge and one return per appraisal (a
    # free appraisal returned after its month closed is banked: one entry of each asset).
    payments = {p.appraisal_id: p for p in _payment_rows(sessions, members)}
    per_appraisal: dict[tuple[str, str], int] = defaultdict(int)
    per_asset: dict[tuple[str, str, str], int] = defaultdict(int)
    for entry in entries:
        if entry.appraisal_id:
            per_appraisal[entry.appraisal_id, entry.reason] += 1
            per_asset[entry.appraisal_id, entry.reason, entry.asset] += 1
    assert all(count == 1 for count in per_asset.values())
    assert all(count == 1 for (_, reason), count in per_appraisal.items() if reason != "bank")
    for appraisal_id, _, gold in appraisals:
        if gold:
            assert appraisal_id not in payments
            assert not [e for e in entries if e.appraisal_id == appraisal_id]
            continue
        payment = payments[appraisal_id]
        reserved = per_appraisal.get((appraisal_id, "reserve"), 0)
        released = per_appraisal.get((appraisal_id, "release"), 0)
        assert released <= reserved
        assert released == (1 if payment.status == "released" and reserved else 0)
    # The SLA coupon: once for each appraisal whose first final verdict came late.
    coupons = [e for e in entries if e.reason == "sla_compensation"]
    assert {e.appraisal_id for e in coupons} == late_first_verdicts
    assert all(e.amount == 500 for e in coupons)
    # What the service answers is the sum of the entries.
    for member in members:
        summary = bank.service.summary(member, limit=500, now=now[0])
        assert summary is not None
        answer = summary.model_dump()
        assert answer["points"]["balance"] == sums[member, "points"]
        assert answer["coupons"] == {
            "appraisal": sums[member, "appraisal_coupon"],
            "discount": sums[member, "discount_coupon"],
            "compensation_cny": sums[member, "compensation_cny"],
        }
        assert answer["history"]["total"] == len([e for e in entries if e.member_id == member])
        with sessions() as session:
            lots = point_lots(session, member)
        assert sum(lot.left for lot in lots) == sums[member, "points"]
        assert all(lot.left >= 0 for lot in lots)


def _movements(entries: list[LedgerEntry]) -> list[tuple]:
    """Entries that move balances because of a cause (expiries depend on the clock alone)."""
    return sorted(
        (e.idempotency_key, e.amount)
        for e in entries
        if e.reason not in ("expired", "expiry_reminder")
    )


def _payment_rows(sessions, members: list[str]) -> list[AppraisalPayment]:
    with sessions() as session:
        return list(
            session.scalars(select(AppraisalPayment).where(AppraisalPayment.member_id.in_(members)))
        )


def _payments(sessions, members: list[str]) -> list[tuple]:
    return sorted((p.appraisal_id, p.method, p.status) for p in _payment_rows(sessions, members))


# -- examples ---------------------------------------------------------------------------------


def test_the_order_of_payment_and_what_a_verdict_does(sessions, bank: Bank) -> None:
    now = [START]
    bank.ledger.clock = lambda: now[0]
    member = f"order-{uuid.uuid4().hex[:6]}"
    grant(bank, member, "connoisseur", "appraisal_coupon", 1)
    grant(bank, member, "connoisseur", "points", 1500)
    ids = [submit(bank, member, "connoisseur", now[0]) for _ in range(4)]
    methods = {p.appraisal_id: p.method for p in _payment_rows(sessions, [member])}
    assert [methods[i] for i in ids] == ["free_quota", "coupon", "points", "paid"]
    paid = next(p for p in _payment_rows(sessions, [member]) if p.method == "paid")
    assert paid.price_cny == 99.0  # no joining coupon: the member joined as a connoisseur
    # inconclusive returns the free appraisal; a late verdict earns the coupon once.
    assert finalize(bank, ids[0], "inconclusive", now[0] + dt.timedelta(hours=25))
    assert finalize(bank, ids[2], "counterfeit", now[0] + dt.timedelta(hours=1))
    replay(bank, ("appraisal.finalized", ids[0]))
    answer = summary_of(bank, member, now[0])
    assert answer["free_appraisals"]["left"] == 1
    assert answer["coupons"] == {"appraisal": 0, "discount": 0, "compensation_cny": 500}
    assert answer["points"]["balance"] == 1500 - 1000 + 100  # the verdict's reward
    # overturned: the points come back, plus the compensation
    assert overturn(bank, ids[2], "authentic") == "counterfeit"
    assert summary_of(bank, member, now[0])["points"]["balance"] == 600 + 1000 + 2000
    # month close banks the unused free appraisal, once
    now[0] = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    first = bank.service.close_month("2026-01", member_ids=[member])
    again = bank.service.close_month("2026-01", member_ids=[member])
    assert first.points_banked == 500 and again.points_banked == 0
    with pytest.raises(MonthNotOver):
        bank.service.close_month("2026-02", member_ids=[member])


def test_points_expire_after_two_years_with_a_reminder(sessions, bank: Bank) -> None:
    now = [START]
    bank.ledger.clock = lambda: now[0]
    member = f"expiry-{uuid.uuid4().hex[:6]}"
    grant(bank, member, "explorer", "points", 700)
    now[0] = START + dt.timedelta(days=365)
    grant(bank, member, "explorer", "points", 400)
    now[0] = START + dt.timedelta(days=710)  # 20 days before the first lot expires
    assert summary_of(bank, member, now[0])["points"]["expiring_next"] == {
        "points": 700,
        "at": (START + dt.timedelta(days=730)).isoformat().replace("+00:00", "Z"),
    }
    submit(bank, member, "explorer", now[0])  # 1,000 points: 700 old, 300 new
    now[0] = START + dt.timedelta(days=740)
    totals = bank.service.expire_points(member_ids=[member])
    assert totals.points_expired == 0  # the old lot was spent first
    now[0] = START + dt.timedelta(days=1100)
    totals = bank.service.expire_points(member_ids=[member])
    assert totals.points_expired >= 100
    assert summary_of(bank, member, now[0])["points"]["balance"] == 0


def test_concurrent_submissions_on_postgresql_spend_a_free_appraisal_once() -> None:
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        pg = make_sessionmaker(engine)
        on_pg = bank_on(pg)
        on_pg.ledger.clock = lambda: START
        member = "racer-1"
        on_pg.service.set_tier(member, "connoisseur")
        grant(on_pg, member, "connoisseur", "appraisal_coupon", 1)
        grant(on_pg, member, "connoisseur", "points", 1000)
        threads, barrier, errors = 8, threading.Barrier(8), []

        def one() -> None:
            try:
                with pg() as session, session.begin():
                    appraisal = Appraisal(
                        id=str(uuid.uuid4()),
                        member_id=member,
                        member_tier="connoisseur",
                        category="bag",
                        status="in_review",
                        rule="test",
                        reasons=[],
                        created_at=START,
                        updated_at=START,
                        sla_due_at=START + dt.timedelta(hours=24),
                    )
                    session.add(appraisal)
                    session.flush()
                    barrier.wait(timeout=30)  # all inside their transactions, then pay
                    on_pg.lifecycle.emit(session, "appraisal.created", appraisal)
            except Exception as exc:  # pragma: no cover - shown by the assertion
                errors.append(exc)

        workers = [threading.Thread(target=one) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not errors, errors
        methods = sorted(p.method for p in _payment_rows(pg, [member]))
        assert methods == sorted(["free_quota", "coupon", "points"] + ["paid"] * 5)
        with pg() as session:
            assert balance(session, member, "free_appraisal", "2026-01") == 0
            assert balance(session, member, "appraisal_coupon") == 0
            assert balance(session, member, "points") == 0
            assert session.get(Member, member).tier == "connoisseur"
        engine.dispose()


def test_member_tier_and_benefits_over_http(tmp_path: Path, tiny_synthetic: Path) -> None:
    from tests.serving_support import form, item_photos

    server = start_server(tmp_path / "data", None)
    try:
        platform, senior = server.key("platform"), server.key("senior")
        app, reviewer = server.key("member_backend"), server.key("reviewer")
        with server.client(platform) as client:
            answer = client.put("/v1/members/m-77", json={"tier": "connoisseur"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["tier"] == "connoisseur"
            assert client.put("/v1/members/m-77", json={"tier": "gold"}).status_code == 422
            fresh = client.get("/v1/members/m-77/benefits").json()
            assert fresh["free_appraisals"] == {"allowance": 1, "left": 1, "unlimited": False}
            assert client.get("/v1/members/nobody/benefits").status_code == 404
        with server.client(app) as client:
            assert client.put("/v1/members/m-77", json={"tier": "master"}).status_code == 403
            created = client.post(
                "/v1/appraisals",
                data=form("m-77", "connoisseur"),
                files=item_photos(tiny_synthetic),
            )
            assert created.status_code == 201, created.text
            appraisal_id = created.json()["id"]
            after = client.get("/v1/members/m-77/benefits").json()
            assert after["free_appraisals"]["left"] == 0
            assert after["history"]["entries"][0]["reason"] == "reserve"
        with server.client(reviewer) as client:
            assert client.get("/v1/members/m-77/benefits").status_code == 403
            task = client.post("/v1/review/claim").json()["task"]["id"]
            done = client.post(f"/v1/review/tasks/{task}/verdict", json={"outcome": "authentic"})
            assert done.status_code == 200, done.text
            refused = client.post(
                f"/v1/appraisals/{appraisal_id}/overturn",
                json={"outcome": "counterfeit", "reason": "?"},
            )
            assert refused.status_code == 403
        with server.client(senior) as client:
            overturned = client.post(
                f"/v1/appraisals/{appraisal_id}/overturn",
                json={"outcome": "counterfeit", "reason": "QC: the serial font is wrong"},
            )
            assert overturned.status_code == 200, overturned.text
            assert overturned.json()["outcome"] == "counterfeit"
        with server.client(app) as client:
            final = client.get("/v1/members/m-77/benefits", params={"limit": 2}).json()
            assert final["points"]["balance"] == 100 + 2000
            assert final["coupons"]["appraisal"] == 1  # the free appraisal, refunded in kind
            assert len(final["history"]["entries"]) == 2 and final["history"]["total"] == 5
    finally:
        stop(server)


# -- the tier is the platform's, months are strict (issue 12) ------------------------------------


def _photos(manifest: Path) -> list:
    from tests.serving_support import item_photos

    return item_photos(manifest)


def test_a_form_tier_that_disagrees_with_the_platform_is_refused(
    tmp_path: Path, tiny_synthetic: Path, database_url: str | None
) -> None:
    from tests.serving_support import form

    server = start_server(tmp_path / "data", None, database_url)
    try:
        with server.client(server.key("platform")) as platform:
            assert platform.put("/v1/members/m-ex", json={"tier": "explorer"}).status_code == 200
        with server.client(server.key("member_backend")) as app:
            for member in ("m-ex", "m-never-announced"):
                claimed = app.post(
                    "/v1/appraisals",
                    data=form(member, "brand_confidant"),
                    files=_photos(tiny_synthetic),
                )
                assert claimed.status_code == 409, claimed.text
                assert claimed.json()["code"] == "tier_mismatch"
                listed = app.get("/v1/appraisals", params={"member_id": member}).json()
                assert listed["items"] == []
            # Nothing paid, nothing granted: the explorer holds only the joining coupon.
            history = app.get("/v1/members/m-ex/benefits").json()["history"]
            assert [e["reason"] for e in history["entries"]] == ["joining"]
            assert app.get("/v1/members/m-never-announced/benefits").status_code == 404
            # A tier the service does not know is still a bad field.
            platinum = app.post(
                "/v1/appraisals", data=form("m-ex", "platinum"), files=_photos(tiny_synthetic)
            )
            assert (platinum.status_code, platinum.json()["code"]) == (422, "invalid_field")
    finally:
        stop(server)


def test_a_member_never_announced_is_paid_and_routed_as_an_explorer_without_a_coupon(
    tmp_path: Path, tiny_synthetic: Path, database_url: str | None
) -> None:
    from tests.serving_support import form

    server = start_server(tmp_path / "data", None, database_url)
    try:
        with server.client(server.key("member_backend")) as app:
            for fields in (form("ghost-1"), {"member_id": "ghost-1", "category": "bag"}):
                created = app.post("/v1/appraisals", data=fields, files=_photos(tiny_synthetic))
                assert created.status_code == 201, created.text  # member_tier may be left out
                body = created.json()
                assert body["member_tier"] == "explorer"
                submitted = dt.datetime.fromisoformat(body["created_at"])
                due = dt.datetime.fromisoformat(body["sla_due_at"])
                assert due - submitted == dt.timedelta(hours=48)  # the explorer's SLA
                assert not [r for r in body["decision"]["reasons"] if "members" in r]  # no VIP
                # An app naming an unknown id mints no joining coupon: it pays the full price.
                benefits = app.get("/v1/members/ghost-1/benefits").json()
                assert benefits["tier"] == "explorer"
                assert benefits["coupons"]["discount"] == 0
                assert "joining" not in [e["reason"] for e in benefits["history"]["entries"]]
        with server.client(server.key("platform")) as platform:
            # The platform announcing the member grants it, once.
            for tier in ("explorer", "connoisseur", "explorer"):
                assert platform.put("/v1/members/ghost-1", json={"tier": tier}).status_code == 200
            benefits = platform.get("/v1/members/ghost-1/benefits").json()
            reasons = [e["reason"] for e in benefits["history"]["entries"]]
            assert reasons.count("joining") == 1 and benefits["coupons"]["discount"] == 1
    finally:
        stop(server)


def _sessions_on(database_url: str | None, tmp_path: Path) -> tuple:
    url = database_url or f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url)
    upgrade(engine)
    return engine, make_sessionmaker(engine)


def test_a_month_is_closed_with_the_tier_held_then(
    tmp_path: Path, database_url: str | None
) -> None:
    engine, sessions = _sessions_on(database_url, tmp_path)
    try:
        bank = bank_on(sessions)
        now = [dt.datetime(2026, 1, 5, tzinfo=dt.UTC)]
        bank.ledger.clock = lambda: now[0]
        bank.service.set_tier("m-held", "connoisseur")
        now[0] = dt.datetime(2026, 2, 3, tzinfo=dt.UTC)
        bank.service.set_tier("m-held", "master")  # after January ended
        now[0] = dt.datetime(2026, 2, 4, tzinfo=dt.UTC)
        closed = bank.service.close_month("2026-01")
        assert (closed.free_appraisals_banked, closed.points_banked) == (1, 500)
        summary = bank.service.summary("m-held", month="2026-01")
        assert summary is not None and summary.tier == "master"
        assert summary.free_appraisals.allowance == 1 and summary.free_appraisals.left == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("month", ["2026-1", "2026-001", "26-01", "2026-13", "2026-00", "2026-1 "])
def test_a_month_not_written_yyyy_mm_is_refused(month: str) -> None:
    from serving.benefits.ledger import InvalidMonth, parse_month

    with pytest.raises(InvalidMonth, match="YYYY-MM"):
        parse_month(month)
    assert parse_month("2026-01") == "2026-01"


def test_close_month_refuses_a_sloppy_month_and_closes_one_once(
    tmp_path: Path, database_url: str | None
) -> None:
    import json
    import os
    import subprocess

    from tests.serving_support import TOUCHSTONE

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    engine, sessions = _sessions_on(database_url, data_dir.parent)
    if database_url is None:  # the command's SQLite database lives in its data directory
        engine.dispose()
        engine, sessions = _sessions_on(f"sqlite:///{data_dir / 'touchstone.db'}", tmp_path)
    try:
        bank = bank_on(sessions)
        bank.ledger.clock = lambda: dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
        bank.service.set_tier("m-cli", "connoisseur")
    finally:
        engine.dispose()
    env = {k: v for k, v in os.environ.items() if k != "TOUCHSTONE_DATABASE_URL"}
    if database_url:
        env["TOUCHSTONE_DATABASE_URL"] = database_url

    def close(month: str) -> subprocess.CompletedProcess:
        command = [TOUCHSTONE, "benefits", "close-month", "--month", month, "--data-dir"]
        return subprocess.run(
            [*command, str(data_dir)], capture_output=True, text=True, env=env, timeout=120
        )

    for sloppy in ("2026-1", "2026-001"):
        refused = close(sloppy)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "YYYY-MM" in refused.stdout + refused.stderr
    first, again = close("2026-01"), close("2026-01")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.splitlines()[-1])["points_banked"] == 500
    assert json.loads(again.stdout.splitlines()[-1])["closed_now"] == 0


def test_the_benefits_route_refuses_a_sloppy_month(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", None)
    try:
        with server.client(server.key("platform")) as platform:
            assert platform.put("/v1/members/m-5", json={"tier": "collector"}).status_code == 200
            for month in ("2026-1", "2026-001", "january"):
                answer = platform.get("/v1/members/m-5/benefits", params={"month": month})
                assert answer.status_code == 422, answer.text
                assert answer.json()["code"] == "invalid_month"
            past = platform.get("/v1/members/m-5/benefits", params={"month": "2026-01"}).json()
            assert past["month"] == "2026-01"
            assert past["free_appraisals"]["allowance"] == 0  # not a member yet in January
    finally:
        stop(server)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "free_appraisals_per_month: {explorer: 0, connoisseur: 1, collector: 2, master: 4,"
            " brand_confidant: null, platinum: 9}\n",
            "platinum",
        ),
        (
            "free_appraisals_per_month: {explorer: 0, connoisseur: 1, collector: 2,"
            " brand_confidant: null}\n",
            "master",
        ),
        ("joining_discount_tiers: [explorer, gold]\n", "gold"),
    ],
)
def test_a_benefits_file_naming_an_unknown_or_missing_tier_is_refused(
    tmp_path: Path, text: str, named: str
) -> None:
    from serving.benefits.config import BenefitsError, load_benefits
    from touchstone.vocabulary import TIERS

    path = tmp_path / "benefits.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BenefitsError, match=named):
        load_benefits(path)
    shipped = load_benefits(Path(__file__).resolve().parents[2] / "configs" / "benefits.yaml")
    assert tuple(shipped.free_appraisals_per_month) == TIERS
    with pytest.raises(ValueError, match="gold"):
        shipped.free_per_month("gold")  # never silently nothing


def test_the_service_does_not_start_on_a_benefits_file_with_an_unknown_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "benefits.yaml"
    path.write_text("joining_discount_tiers: [explorer, platinum]\n", encoding="utf-8")
    monkeypatch.setenv("TOUCHSTONE_BENEFITS", str(path))
    with pytest.raises(RuntimeError, match="platinum"):
        stop(start_server(tmp_path / "data", None))


def test_the_tier_history_is_backfilled_from_the_members(
    tmp_path: Path, database_url: str | None
) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from serving.benefits.tiers import tier_at
    from serving.db import MIGRATIONS

    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005_certificates")
        connection.execute(
            text("INSERT INTO members VALUES (:id, :tier, :at, :at)"),  # id, tier, created, updated
            {"id": "m-old", "tier": "master", "at": START},
        )
    upgrade(engine)
    try:
        with make_sessionmaker(engine)() as session:
            assert tier_at(session, "m-old", START) == "master"
            assert tier_at(session, "m-old", START - dt.timedelta(seconds=1)) == "explorer"
    finally:
        engine.dispose()
