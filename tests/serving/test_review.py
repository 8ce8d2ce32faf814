"""The human review queue through real HTTP: leases, verdicts, double review, escalation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.serving_support import (
    Server,
    deciding_model,
    form,
    item_photos,
    postgres_database,
    start_server,
    stop,
)

HIGH_VALUE = {"declared_value": "80000"}


def _start(tmp_path: Path, model: Path | None, database_url: str | None = None) -> Server:
    return start_server(
        tmp_path / "data",
        model,
        database_url,
        extra=["--review-lease-seconds", "2", "--sla-sweep-seconds", "0.5"],
    )


@pytest.fixture
def humans_only(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    """No model: every upload goes to people."""
    server = _start(tmp_path, None, database_url)
    yield server
    stop(server)


def submit(server: Server, key: str, manifest: Path, index: int = 0, **fields: str) -> dict:
    """Submitted with `key` (a member back end's): the whole appraisal, as the platform sees
    it (members see no scores)."""
    with server.client(key) as client:
        answer = client.post(
            "/v1/appraisals", data=form(**fields), files=item_photos(manifest, index)
        )
        assert answer.status_code == 201, answer.text
    return whole(server, answer.json()["id"])


def whole(server: Server, appraisal_id: str) -> dict:
    """The whole appraisal, as the platform reads it (a verdict's answer is the task's)."""
    with server.client(server.key("platform")) as platform:
        return platform.get(f"/v1/appraisals/{appraisal_id}").json()


def test_claim_view_verdict_and_finalize(humans_only: Server, tiny_synthetic: Path) -> None:
    server = humans_only
    app, alice = server.key("member_backend"), server.key("reviewer")
    appraisal = submit(server, app, tiny_synthetic, member="member-8841")
    assert appraisal["status"] == "in_review"
    with server.client(alice) as client:
        task = client.post("/v1/review/claim").json()
        assert task["appraisal"]["id"] == appraisal["id"]
        assert task["appraisal"]["member"] == "me***41"  # masked
        assert task["task"]["stage"] == "review" and task["task"]["lease_expires_at"]
        assert client.post("/v1/review/claim").json()["task"]["id"] == task["task"]["id"]
        photo = task["photos"][0]
        image = client.get(f"/v1/review/tasks/{task['task']['id']}/photos/{photo['sha256']}")
        assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff"
        done = client.post(
            f"/v1/review/tasks/{task['task']['id']}/verdict",
            json={
                "outcome": "authentic",
                "notes": "engraving depth and stitch pitch as the brand's",
                "findings": [{"region": "hardware", "note": "crisp serial"}],
            },
        )
        assert done.status_code == 200, done.text
        done = whole(server, appraisal["id"])
        assert done["status"] == "finalized" and done["decision"]["outcome"] == "authentic"
        assert client.post("/v1/review/claim").status_code == 204
        again = client.post(
            f"/v1/review/tasks/{task['task']['id']}/verdict", json={"outcome": "counterfeit"}
        )
        assert again.status_code == 409 and again.json()["code"] == "lease_lost"
        bad = client.post(f"/v1/review/tasks/{task['task']['id']}/verdict", json={"outcome": "?"})
        assert bad.status_code == 422
    with server.client(app) as client:
        shown = client.get(f"/v1/appraisals/{appraisal['id']}").json()
        assert shown["status"] == "finalized" and shown["decision"]["outcome"] == "authentic"
        assert client.post("/v1/review/claim").status_code == 403  # the app is no reviewer

    from serving.db import AuditEntry, default_database_url, make_engine, make_sessionmaker

    engine = make_engine(server.database_url or default_database_url(server.data_dir))
    with make_sessionmaker(engine)() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.appraisal_id == appraisal["id"])
        ).all()
    engine.dispose()
    assert {"claim", "view_photos", "view_photo", "verdict"} <= set(actions)


def test_an_expired_lease_goes_to_the_next_reviewer(
    humans_only: Server, tiny_synthetic: Path
) -> None:
    server = humans_only
    app, alice, bob = server.key("member_backend"), server.key("reviewer"), server.key("reviewer")
    first = submit(server, app, tiny_synthetic, 0)
    second = submit(server, app, tiny_synthetic, 1)
    with server.client(alice) as a, server.client(bob) as b:
        held = a.post("/v1/review/claim").json()["task"]["id"]
        other = b.post("/v1/review/claim").json()["task"]["id"]
        assert held != other
        # Alice keeps her lease alive; Bob walks away from his.
        for _ in range(3):
            time.sleep(1.0)
            assert a.post(f"/v1/review/tasks/{held}/heartbeat").status_code == 200
        taken = a.post(f"/v1/review/tasks/{held}/verdict", json={"outcome": "counterfeit"})
        assert taken.status_code == 200
        reassigned = a.post("/v1/review/claim").json()
        assert reassigned["task"]["id"] == other  # Bob's lease ran out
        late = b.post(f"/v1/review/tasks/{other}/verdict", json={"outcome": "authentic"})
        assert late.status_code == 409 and late.json()["code"] == "lease_lost"
        assert b.post(f"/v1/review/tasks/{other}/heartbeat").status_code == 409
        a.post(f"/v1/review/tasks/{other}/release")
        assert b.post("/v1/review/claim").json()["task"]["id"] == other
        b.post(f"/v1/review/tasks/{other}/verdict", json={"outcome": "authentic"})
        assert {whole(server, x["id"])["status"] for x in (first, second)} == {"finalized"}
    with server.client(app) as client:
        assert {
            client.get(f"/v1/appraisals/{x['id']}").json()["decision"]["outcome"]
            for x in (first, second)
        } == {"counterfeit", "authentic"}


def test_blind_double_review_and_senior_escalation(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    server = _start(tmp_path, tiny_model)
    try:
        app = server.key("member_backend")
        alice, bob, carol, senior = (server.key(r) for r in ("reviewer",) * 3 + ("senior",))
        item = submit(server, app, tiny_synthetic, 0, **HIGH_VALUE)
        assert item["decision"]["reviews_required"] == 2
        assert item["decision"]["p_authentic"] is not None
        with server.client(alice) as a, server.client(bob) as b, server.client(carol) as c:
            first = a.post("/v1/review/claim").json()
            assert first["task"]["stage"] == "double" and first["task"]["blind"]
            assert first["appraisal"]["p_authentic"] is None
            assert all(p["score"] is None for p in first["photos"])
            a.post(f"/v1/review/tasks/{first['task']['id']}/verdict", json={"outcome": "authentic"})
            assert whole(server, item["id"])["status"] == "in_review"  # one of two
            assert a.post("/v1/review/claim").status_code == 204  # not both halves
            second = b.post("/v1/review/claim").json()
            assert second["task"]["stage"] == "double" and second["other_verdicts"] == []
            assert second["appraisal"]["p_authentic"] is None
            b.post(
                f"/v1/review/tasks/{second['task']['id']}/verdict",
                json={"outcome": "counterfeit", "notes": "letter spacing off"},
            )
            assert c.post("/v1/review/claim").status_code == 204  # escalations are for seniors
        with server.client(senior) as s:
            escalation = s.post("/v1/review/claim").json()
            assert escalation["task"]["stage"] == "escalation"
            assert sorted(v["outcome"] for v in escalation["other_verdicts"]) == [
                "authentic",
                "counterfeit",
            ]
            assert escalation["appraisal"]["p_authentic"] is not None
            s.post(
                f"/v1/review/tasks/{escalation['task']['id']}/verdict",
                json={"outcome": "counterfeit"},
            )
            final = whole(server, item["id"])
            assert final["status"] == "finalized" and final["decision"]["outcome"] == "counterfeit"
    finally:
        stop(server)


def test_needs_more_photos_rounds_end_inconclusive(
    humans_only: Server, tiny_synthetic: Path
) -> None:
    server = humans_only
    app, alice = server.key("member_backend"), server.key("reviewer")
    appraisal = submit(server, app, tiny_synthetic)
    with server.client(alice) as reviewer, server.client(app) as member:
        for round_ in (1, 2, 3):
            task = reviewer.post("/v1/review/claim").json()
            assert task["appraisal"]["photo_rounds"] == round_
            reviewer.post(
                f"/v1/review/tasks/{task['task']['id']}/verdict",
                json={"outcome": "needs_more_photos", "notes": "logo out of focus"},
            )
            after = whole(server, appraisal["id"])
            if round_ < 3:
                assert after["status"] == "awaiting_photos"
                more = member.post(
                    f"/v1/appraisals/{appraisal['id']}/photos",
                    files=item_photos(tiny_synthetic, round_)[:2],
                )
                assert more.status_code == 200 and more.json()["status"] == "in_review"
                assert whole(server, appraisal["id"])["decision"]["rule"] == "photos_for_reviewer"
        assert after["status"] == "finalized" and after["decision"]["outcome"] == "inconclusive"


def test_an_overdue_task_is_flagged_once(humans_only: Server, tiny_synthetic: Path) -> None:
    import datetime as dt

    from sqlalchemy import update

    from serving.db import (
        AppraisalEvent,
        ReviewTask,
        default_database_url,
        make_engine,
        make_sessionmaker,
    )

    server = humans_only
    appraisal = submit(server, server.key("member_backend"), tiny_synthetic)
    engine = make_engine(server.database_url or default_database_url(server.data_dir))
    sessions = make_sessionmaker(engine)
    with sessions() as session, session.begin():
        session.execute(
            update(ReviewTask).values(due_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        )
    time.sleep(2.0)  # a few sweeps
    with sessions() as session:
        events = session.scalar(
            select(func.count(AppraisalEvent.id)).where(
                AppraisalEvent.appraisal_id == appraisal["id"],
                AppraisalEvent.kind == "sla_breached",
            )
        )
    engine.dispose()
    assert events == 1
    with server.client(server.key("reviewer")) as client:
        assert client.get("/v1/review/queue").json()["overdue"] == 1
        assert "touchstone_review_sla_breaches_total 1.0" in client.get("/metrics").text


def test_32_reviewers_on_postgresql_never_share_a_task(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    with postgres_database() as url:
        server = _start(tmp_path, None, url)
        try:
            app = server.key("member_backend")
            appraisals = [submit(server, app, tiny_synthetic, n % 8)["id"] for n in range(64)]
            keys = [server.key("reviewer") for _ in range(32)]
            seen: list[tuple[int, int]] = []
            errors: list[str] = []
            start = threading.Barrier(32)

            def work(index: int) -> None:
                with server.client(keys[index]) as client:
                    start.wait()
                    while True:
                        claimed = client.post("/v1/review/claim")
                        if claimed.status_code == 204:
                            return
                        task = claimed.json()["task"]["id"]
                        seen.append((task, index))
                        answer = client.post(
                            f"/v1/review/tasks/{task}/verdict", json={"outcome": "authentic"}
                        )
                        if answer.status_code != 200:
                            errors.append(answer.text)

            threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
            assert errors == []
            tasks = [task for task, _ in seen]
            assert len(tasks) == len(set(tasks)) == 64  # no task claimed twice, none missed
            with server.client(app) as client:
                for appraisal_id in appraisals:
                    shown = client.get(f"/v1/appraisals/{appraisal_id}").json()
                    assert shown["status"] == "finalized", appraisal_id
        finally:
            stop(server)


def test_gold_items_audit_sample_and_quality_numbers(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    from serving.review.quality import cohen_kappa

    assert cohen_kappa([("a", "a"), ("c", "c"), ("a", "c"), ("c", "c")]) == pytest.approx(0.5)
    # Every item the model may judge goes to the audit sample, from a card whose thresholds the
    # tiny model reaches (so what the model alone would have said is a verdict).
    policy = tmp_path / "policy.yaml"
    policy.write_text("audit_share: 1.0\naudit_share_while_unsupported: 1.0\n")
    model = deciding_model(tiny_model, tmp_path / "deciding-model")
    server = start_server(tmp_path / "data", model, policy=policy)
    try:
        app, admin = server.key("member_backend"), server.key("admin")
        alice, senior = server.key("reviewer"), server.key("senior")
        audited = submit(server, app, tiny_synthetic, 0)
        assert audited["decision"]["rule"] == "audit_sample"
        with server.client(admin) as client:
            gold = client.post(
                "/v1/review/gold",
                data={"truth": "counterfeit", "category": "bag"},
                files=item_photos(tiny_synthetic, 1),
            )
            assert gold.status_code == 201, gold.text
            assert gold.json()["member_id"].startswith("m-")
            unsure = client.post(
                "/v1/review/gold", data={"truth": "maybe"}, files=item_photos(tiny_synthetic, 2)
            )
            assert unsure.status_code == 422 and unsure.json()["code"] == "invalid_field"
        with server.client(alice) as client:
            for _ in range(2):
                task = client.post("/v1/review/claim").json()
                # Gold or not, the task looks the same to the reviewer.
                assert "gold" not in str(task).lower()
                client.post(
                    f"/v1/review/tasks/{task['task']['id']}/verdict", json={"outcome": "authentic"}
                )
        with server.client(senior) as client:
            numbers = client.get("/v1/review/quality").json()
        assert numbers["gold_verdicts"] == 1 and numbers["gold_accuracy"] == 0.0
        assert numbers["audit_sample_reviewed"] == 1
        model_said = audited["decision"]["p_authentic"] >= 0.5
        assert numbers["audit_error_rate"] == (0.0 if model_said else 1.0)
        assert numbers["queue_open"] == 0
        with server.client(alice) as client:
            assert client.get("/v1/review/quality").status_code == 403
    finally:
        stop(server)


# -- the SLA clock: stopped while the member is to send photos -------------------------------------

# No audit draw: with a card whose thresholds the tiny model reaches (`deciding_model`),
# decisions are automatic.
AUTO_POLICY = "audit_share: 0.0\n"


def _age(server: Server, appraisal_id: str, hours: float) -> None:
    """Move every timestamp of an appraisal back, as if all it went through happened `hours`
    earlier (the server's clock is the machine's: the appraisal travels in time instead)."""
    import datetime as dt

    from sqlalchemy import DateTime, update

    from serving.db import Appraisal, as_utc, default_database_url, make_engine

    table = Appraisal.__table__
    stamps = [c for c in table.columns if isinstance(c.type, DateTime)]
    engine = make_engine(server.database_url or default_database_url(server.data_dir))
    with engine.begin() as connection:
        row = connection.execute(select(*stamps).where(table.c.id == appraisal_id)).one()
        earlier = {
            c.name: as_utc(value) - dt.timedelta(hours=hours)
            for c, value in zip(stamps, row, strict=True)
            if value is not None
        }
        connection.execute(update(table).where(table.c.id == appraisal_id).values(**earlier))
    engine.dispose()


def _compensation(server: Server, member: str) -> int:
    with server.client(server.key("platform")) as platform:
        answer = platform.get(f"/v1/members/{member}/benefits")
        assert answer.status_code == 200, answer.text
        return answer.json()["coupons"]["compensation_cny"]


def _decide(server: Server, reviewer: str, outcome: str = "authentic") -> str:
    """The next task's verdict; the status its appraisal is in then."""
    with server.client(reviewer) as client:
        task = client.post("/v1/review/claim").json()
        answer = client.post(
            f"/v1/review/tasks/{task['task']['id']}/verdict", json={"outcome": outcome}
        )
        assert answer.status_code == 200, answer.text
    with server.client(server.key("platform")) as platform:
        return platform.get(f"/v1/appraisals/{task['appraisal']['id']}").json()["status"]


def test_waiting_for_the_members_photos_earns_no_sla_coupon(
    humans_only: Server, tiny_synthetic: Path
) -> None:
    import datetime as dt

    server = humans_only
    alice = server.key("reviewer")
    photos = item_photos(tiny_synthetic, 0)
    with server.member_client("m-wait") as member:
        # One photo, then the member waits two days (past the 48-hour SLA) before the rest.
        first = member.post("/v1/appraisals", data=form(member="m-wait"), files=photos[:1])
        assert first.json()["status"] == "awaiting_photos", first.text
        _age(server, first.json()["id"], 49)
        more = member.post(f"/v1/appraisals/{first.json()['id']}/photos", files=photos[1:])
        assert more.status_code == 200 and more.json()["status"] == "in_review", more.text
        due = dt.datetime.fromisoformat(more.json()["sla_due_at"])
        assert due > dt.datetime.now(dt.UTC) + dt.timedelta(hours=47)  # the clock restarted
    with server.member_client("m-late") as member:
        # The control: an item that waited on the service past its SLA is compensated.
        late = member.post("/v1/appraisals", data=form(member="m-late"), files=photos)
        assert late.json()["status"] == "in_review", late.text
        _age(server, late.json()["id"], 49)
    assert _decide(server, alice) == _decide(server, alice) == "finalized"
    assert _compensation(server, "m-late") == 500
    assert _compensation(server, "m-wait") == 0


def test_a_decision_the_model_takes_when_the_photos_arrive_is_never_late(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(AUTO_POLICY)
    model = deciding_model(tiny_model, tmp_path / "deciding-model")
    server = start_server(tmp_path / "data", model, policy=policy)
    try:
        photos = item_photos(tiny_synthetic, 0)
        with server.member_client("m-auto") as member:
            first = member.post("/v1/appraisals", data=form(member="m-auto"), files=photos[:1])
            assert first.json()["status"] == "awaiting_photos", first.text
            _age(server, first.json()["id"], 49)
            more = member.post(f"/v1/appraisals/{first.json()['id']}/photos", files=photos[1:])
            assert more.status_code == 200 and more.json()["status"] == "decided", more.text
        assert _compensation(server, "m-auto") == 0
    finally:
        stop(server)


def test_photos_a_reviewer_asked_for_go_back_to_a_reviewer_even_after_a_bad_round(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    """The model never decides alone an item a reviewer is waiting to see again, however many
    rounds the member's photos take."""
    from tests.serving_support import jpeg

    policy = tmp_path / "policy.yaml"
    policy.write_text(AUTO_POLICY)
    model = deciding_model(tiny_model, tmp_path / "deciding-model")
    server = start_server(tmp_path / "data", model, policy=policy)
    dark = ("logo", ("dark.jpg", jpeg(color=(5, 5, 5), noise=False), "image/jpeg"))
    try:
        alice = server.key("reviewer")
        with server.member_client("m-1") as member:
            item = member.post(
                "/v1/appraisals", data=form(), files=item_photos(tiny_synthetic, 0)
            ).json()
            assert item["status"] == "decided"
            member.post(f"/v1/appraisals/{item['id']}/human-review")
            assert _decide(server, alice, "needs_more_photos") == "awaiting_photos"
            bad = member.post(f"/v1/appraisals/{item['id']}/photos", files=[dark]).json()
            assert bad["status"] == "awaiting_photos"
            good = member.post(
                f"/v1/appraisals/{item['id']}/photos", files=item_photos(tiny_synthetic, 1)
            ).json()
            assert good["status"] == "in_review", good["decision"]
        with server.client(server.key("platform")) as platform:
            shown = platform.get(f"/v1/appraisals/{item['id']}").json()
            assert shown["decision"]["rule"] == "photos_for_reviewer"
    finally:
        stop(server)
