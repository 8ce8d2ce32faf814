"""Erasure reaches every place a member's data sits: files no row names (orphans), the outbox's
payloads, the training exports; and an erased photo reads as gone, not as a server error.
Through a real server with no model (every upload goes to people), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.serving_support import Server, form, item_photos, jpeg, start_server, stop

DAY = 24 * 3600


@pytest.fixture
def humans_only(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    server = start_server(tmp_path / "data", None, database_url)
    yield server
    stop(server)


def _submit(server: Server, key: str, manifest: Path, index: int, member: str) -> dict:
    with server.client(key) as client:
        answer = client.post(
            "/v1/appraisals", data=form(member=member), files=item_photos(manifest, index)
        )
        assert answer.status_code == 201, answer.text
        return answer.json()


def _review_all(server: Server, key: str) -> None:
    with server.client(key) as client:
        while (claimed := client.post("/v1/review/claim")).status_code != 204:
            task = claimed.json()["task"]["id"]
            answer = client.post(
                f"/v1/review/tasks/{task}/verdict",
                json={"outcome": "authentic", "notes": "stitching as the brand's"},
            )
            assert answer.status_code == 200, answer.text


def _erase(server: Server, member: str) -> dict:
    with server.client(server.key("admin")) as client:
        answer = client.delete(f"/v1/members/{member}/data")
        assert answer.status_code == 200, answer.text
        return answer.json()


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


# -- orphans ----------------------------------------------------------------------------------


def test_orphan_files_past_the_grace_period_are_collected(
    humans_only: Server, tiny_synthetic: Path
) -> None:
    """A crash between the file write and the row's commit leaves a file no row names: the
    sweep deletes it once it is older than the grace period, and keeps every file a row names
    and every fresh one (an upload in flight)."""
    from serving.photos import PhotoStore

    server = humans_only
    appraisal = _submit(server, server.key("member_backend"), tiny_synthetic, 0, "member-1")
    store = PhotoStore(server.data_dir / "photos")
    named = [store.path_for(f["sha256"]) for f in appraisal["findings"]]
    old_orphan = store.path_for(store.put(jpeg((200, 40, 40))).sha256)
    fresh_orphan = store.path_for(store.put(jpeg((40, 200, 40))).sha256)
    half_written = old_orphan.parent / ".tmp-crashed"
    half_written.write_bytes(b"\xff\xd8\xff half a photo")
    for path in [*named, old_orphan, half_written]:
        _age(path, 2 * DAY)

    dry = server.touchstone("photos", "collect-orphans", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert old_orphan.exists() and half_written.exists()
    assert re.search(r"orphans\W+1\b", dry.output), dry.output

    done = server.touchstone("photos", "collect-orphans", "--older-than-hours", "24")
    assert done.exit_code == 0, done.output
    assert not old_orphan.exists() and not half_written.exists()
    assert fresh_orphan.exists() and all(p.exists() for p in named)
    assert re.search(r"orphans\W+1\b", done.output) and re.search(
        rf"named\W+{len(set(named))}\b", done.output
    )

    # A shorter grace period reaches the fresh one too.
    _age(fresh_orphan, 3 * 3600)
    assert server.touchstone("photos", "collect-orphans", "--older-than-hours", "2").exit_code == 0
    assert not fresh_orphan.exists() and all(p.exists() for p in named)


def test_the_service_collects_orphans_on_its_own(
    tmp_path: Path, database_url: str | None, tiny_synthetic: Path
) -> None:
    """At start (then every few hours). A store that is mostly orphans is more likely a service
    pointed at the wrong database: then nothing is deleted, and the log says why."""
    from serving.photos import PhotoStore

    store = PhotoStore(tmp_path / "data" / "photos")
    orphan = store.path_for(store.put(jpeg((10, 120, 200))).sha256)
    _age(orphan, 2 * DAY)
    server = start_server(tmp_path / "data", None, database_url)
    try:
        log = tmp_path / f"server-{server.url.rsplit(':', 1)[1]}.log"
        assert _eventually(lambda: "the orphan sweep deleted nothing" in log.read_text())
        assert orphan.exists()
        _submit(server, server.key("member_backend"), tiny_synthetic, 0, "member-1")
    finally:
        stop(server)
    server = start_server(tmp_path / "data", None, database_url)
    try:
        assert _eventually(lambda: not orphan.exists())
    finally:
        stop(server)


def _eventually(condition: Callable[[], bool], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_storing_a_photo_again_renews_its_grace_period(tmp_path: Path) -> None:
    """An upload whose photo is already stored (an orphan, say) must not lose the file to a
    sweep before its row commits: storing it again makes the file fresh."""
    from serving.photos import PhotoStore

    store = PhotoStore(tmp_path / "photos")
    photo = jpeg((90, 90, 160))
    path = store.path_for(store.put(photo).sha256)
    _age(path, 2 * DAY)
    store.put(photo)
    assert time.time() - path.stat().st_mtime < 3600


# -- the outbox -------------------------------------------------------------------------------


def test_erasure_scrubs_the_member_from_events_not_yet_sent(
    humans_only: Server, tiny_synthetic: Path
) -> None:
    """Events about the member's appraisals keep their id (receivers drop duplicates by it),
    kind and appraisal, and lose the member and the photos' derived data, whether pending or
    dead; an item still in review when the member was erased is told of without them too.
    Benefit events keep the member: the ledger outlives an erasure."""
    from serving.db import OutboxEvent
    from serving.outbox.delivery import envelope

    server = humans_only
    app, alice = server.key("member_backend"), server.key("reviewer")
    decided = _submit(server, app, tiny_synthetic, 0, "member-gone")
    stays = _submit(server, app, tiny_synthetic, 1, "member-stays")
    _review_all(server, alice)  # no webhooks: every event is still pending
    in_review = _submit(server, app, tiny_synthetic, 2, "member-gone")
    engine, sessions = server.database()
    with sessions() as session, session.begin():
        dead = session.scalars(
            select(OutboxEvent).where(
                OutboxEvent.appraisal_id == decided["id"],
                OutboxEvent.kind == "appraisal.finalized",
            )
        ).one()
        dead.status = "dead"

    answer = _erase(server, "member-gone")
    assert answer["outbox_events"] == 1
    assert _erase(server, "member-gone") == answer  # the same answer when repeated
    _review_all(server, alice)  # the item in review is finalized after the erasure

    scrubbed = 0
    with sessions() as session:
        for event in session.scalars(select(OutboxEvent).order_by(OutboxEvent.created_at)):
            body = json.loads(envelope(event))
            if event.appraisal_id in (decided["id"], in_review["id"]) and event.kind.startswith(
                "appraisal."
            ):
                scrubbed += 1
                assert "member-gone" not in json.dumps(body)
                assert body["member_id"] is None and body["data"]["member_erased"] is True
                for field in ("member_id", "member_tier", "p_authentic", "reasons"):
                    assert field not in body["data"]
                assert body["data"]["appraisal_id"] == event.appraisal_id
                assert body["data"]["outcome"] == "authentic"
            elif event.kind.startswith("benefit.") and event.appraisal_id == decided["id"]:
                assert body["member_id"] == "member-gone"
            elif event.appraisal_id == stays["id"]:
                assert body["member_id"] == "member-stays"
                assert body["data"].get("member_id", "member-stays") == "member-stays"
        assert scrubbed == 2
        assert session.get(OutboxEvent, dead.id).status == "dead"  # scrubbed, not dropped
    engine.dispose()


# -- training exports -------------------------------------------------------------------------


def test_erasure_names_the_exports_that_held_the_member(
    humans_only: Server, tiny_synthetic: Path, tmp_path: Path
) -> None:
    from serving.db import TrainingExport
    from serving.feedback import erased_items

    server = humans_only
    app, alice = server.key("member_backend"), server.key("reviewer")
    gone = _submit(server, app, tiny_synthetic, 0, "member-gone")
    stays = _submit(server, app, tiny_synthetic, 1, "member-stays")
    _review_all(server, alice)
    both = tmp_path / "first" / "reviews.csv"
    done = server.touchstone("data", "export-reviews", "--out", str(both))
    assert done.exit_code == 0, done.output
    later = _submit(server, app, tiny_synthetic, 2, "member-stays")
    _review_all(server, alice)
    only_stays = tmp_path / "second" / "reviews.csv"
    engine, sessions = server.database()
    with sessions() as session:
        first_id = session.scalars(select(TrainingExport.id)).one()
    done = server.touchstone(
        "data",
        "export-reviews",
        "--out",
        str(only_stays),
        "--since",
        _after(server, gone, stays),
    )
    assert done.exit_code == 0, done.output
    assert "recorded as export " in done.output and first_id not in done.output

    with sessions() as session:
        exports = {e.id: e for e in session.scalars(select(TrainingExport))}
    assert len(exports) == 2
    first = exports[first_id]
    assert first.destination == str(both.resolve()) and first.rows == len(gone["findings"]) + len(
        stays["findings"]
    )
    assert erased_items(sessions, [gone["id"], stays["id"], later["id"], "no-such-item"]) == set()

    answer = _erase(server, "member-gone")
    assert [e["id"] for e in answer["exports"]] == [first_id]
    assert answer["exports"][0]["destination"] == str(both.resolve())
    assert answer["exports"][0]["rows"] == first.rows
    assert _erase(server, "member-gone") == answer
    assert _erase(server, "member-stays")["exports"] != []  # both exports held them
    assert erased_items(sessions, [gone["id"], stays["id"], later["id"]]) == {
        gone["id"],
        stays["id"],
        later["id"],
    }
    engine.dispose()

    # The next export leaves the erased members out, and its record holds none of them.
    after = tmp_path / "after" / "reviews.csv"
    done = server.touchstone("data", "export-reviews", "--out", str(after))
    assert done.exit_code == 0, done.output
    assert "nothing to export" in done.output and not after.exists()


def _after(server: Server, *appraisals: dict) -> str:
    """An ISO time just after these appraisals were finalized."""
    from serving.db import Appraisal, iso_utc

    engine, sessions = server.database()
    with sessions() as session:
        last = max(session.get(Appraisal, a["id"]).finalized_at for a in appraisals)
    engine.dispose()
    return iso_utc(last + dt.timedelta(milliseconds=1))


# -- an erased photo --------------------------------------------------------------------------


def test_an_erased_photo_reads_as_gone(humans_only: Server, tiny_synthetic: Path) -> None:
    """A reviewer holding a task whose member was erased meanwhile gets a 410 with a code, from
    the API and from the web app, never a 500."""
    server = humans_only
    appraisal = _submit(server, server.key("member_backend"), tiny_synthetic, 0, "member-gone")
    alice = server.key("reviewer")
    with server.client(alice) as client:
        task = client.post("/v1/review/claim").json()
        sha256 = task["photos"][0]["sha256"]
        url = f"/v1/review/tasks/{task['task']['id']}/photos/{sha256}"
        assert client.get(url).status_code == 200
        _erase(server, "member-gone")
        answer = client.get(url)
        assert answer.status_code == 410, answer.text
        assert answer.json()["code"] == "photo_erased"
        assert client.get(f"/v1/review/tasks/{task['task']['id']}").status_code == 200
    with server.client() as browser:
        form_page = browser.get("/review/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form_page.text).group(1)
        signed_in = browser.post(
            "/review/login", data={"key": alice, "csrf_token": csrf, "next": "/review"}
        )
        assert signed_in.status_code in (200, 303), signed_in.text
        answer = browser.get(f"/review/tasks/{task['task']['id']}/photos/{sha256}")
        assert answer.status_code == 410, answer.text
        assert "photo_erased" in answer.text or "erased" in answer.text
    assert appraisal["id"] == task["appraisal"]["id"]
