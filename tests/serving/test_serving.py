"""The appraisal API through real HTTP (uvicorn in its own process), on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.serving_support import (
    Server,
    announce,
    deciding_model,
    form,
    item_photos,
    jpeg,
    start_server,
    stop,
)

# No audit draw: with a card whose thresholds the tiny model reaches, decisions are automatic.
AUTO_POLICY = "audit_share: 0.0\n"


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(AUTO_POLICY)
    return path


@pytest.fixture
def deciding(tmp_path: Path, tiny_model: Path) -> Path:
    """The tiny model with a card that lets it decide every item it may judge."""
    return deciding_model(tiny_model, tmp_path / "deciding-model")


@pytest.fixture
def server(
    tmp_path: Path, deciding: Path, database_url: str | None, policy: Path
) -> Iterator[Server]:
    running = start_server(tmp_path / "data", deciding, database_url, policy)
    yield running
    stop(running)


def test_the_appraisal_api(server: Server, tiny_synthetic: Path) -> None:
    app, platform, reviewer = server.key("app"), server.key("platform"), server.key("reviewer")
    with server.member_client("m-1", app) as client, server.client(platform) as staff:

        def whole(answer: httpx.Response) -> dict:  # the app sees no scores: the platform does
            return staff.get(f"/v1/appraisals/{answer.json()['id']}").json()

        created = client.post("/v1/appraisals", data=form(), files=item_photos(tiny_synthetic))
        assert created.status_code == 201, created.text
        body = whole(created)
        assert body["status"] == "decided" and body["decision"]["path"] == "auto"
        assert body["decision"]["outcome"] in ("authentic", "counterfeit")
        assert body["decision"]["rule"] in ("auto_authentic", "auto_counterfeit")
        assert 0.0 <= body["decision"]["p_authentic"] <= 1.0
        assert body["model"]["version"] and body["sla_due_at"]
        assert {f["region"] for f in body["findings"]} <= {"hardware", "stitching", "logo"}
        assert all(len(f["sha256"]) == 64 and f["score"] is not None for f in body["findings"])

        # A person on request (PIPL art. 24), once.
        asked = client.post(f"/v1/appraisals/{body['id']}/human-review")
        assert asked.status_code == 200 and asked.json()["status"] == "in_review"
        assert whole(asked)["decision"]["rule"] == "member_requested"
        again = client.post(f"/v1/appraisals/{body['id']}/human-review")
        assert again.status_code == 409 and again.json()["code"] == "invalid_state"

        # A VIP item always goes to a person; a high-value one needs two blind reviews. The
        # member's tier is the membership platform's word.
        announce(server, "m-1", "collector")
        vip = whole(
            client.post(
                "/v1/appraisals",
                data=form(tier="collector", declared_value="80000"),
                files=item_photos(tiny_synthetic, 1),
            )
        )
        assert vip["status"] == "in_review" and vip["decision"]["path"] == "human"
        assert vip["decision"]["rule"] == "high_value" and vip["decision"]["reviews_required"] == 2
        unknown = whole(
            client.post(
                "/v1/appraisals",
                data={**form(tier="collector"), "category": "handkerchief"},
                files=item_photos(tiny_synthetic, 2),
            )
        )
        assert unknown["decision"]["rule"] == "unknown_category"

    with server.client(platform) as client:
        assert client.get(f"/v1/appraisals/{body['id']}").json()["id"] == body["id"]
        first = client.get("/v1/appraisals", params={"member_id": "m-1", "limit": 2}).json()
        assert len(first["items"]) == 2 and first["next_offset"] == 2
        rest = client.get("/v1/appraisals", params={"member_id": "m-1", "offset": 2}).json()
        assert len(rest["items"]) == 1 and rest["next_offset"] is None
        ids = {a["id"] for a in first["items"] + rest["items"]}
        assert body["id"] in ids and len(ids) == 3
        missing = client.get("/v1/appraisals/nope")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"

    with server.client(reviewer) as client:  # reviewers read, never submit
        refused = client.post("/v1/appraisals", data=form(), files=item_photos(tiny_synthetic))
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        assert client.get("/v1/models").json()["card"]["regions"] == [
            "hardware",
            "stitching",
            "logo",
        ]
    with server.client() as anonymous:
        assert anonymous.get(f"/v1/appraisals/{body['id']}").status_code == 401
        bad = anonymous.get("/v1/models", headers={"Authorization": "Bearer tsk_nope_nope"})
        assert bad.status_code == 401 and bad.json()["code"] == "unauthenticated"
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/readyz").json()["ready"] is True
        metrics = anonymous.get("/metrics").text
        assert "touchstone_batch_size_count" in metrics
        assert 'touchstone_decisions_total{outcome="none",path="human",rule="high_value"}' in (
            metrics
        )
        assert "touchstone_batch_queue_seconds" in metrics
        assert "touchstone_model_info" in metrics


def test_idempotent_retries_under_concurrency_create_one_appraisal(
    server: Server, tiny_synthetic: Path
) -> None:
    key = server.key("member_backend")
    photos = item_photos(tiny_synthetic)

    def submit(_: int) -> httpx.Response:
        with server.client(key) as client:
            return client.post(
                "/v1/appraisals",
                data=form(member="m-idem"),
                files=photos,
                headers={"Idempotency-Key": "upload-7f3a9c"},
            )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, range(8)))
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 7
    with server.client(key) as client:
        listed = client.get("/v1/appraisals", params={"member_id": "m-idem"}).json()
        assert len(listed["items"]) == 1
        other = client.post(
            "/v1/appraisals",
            data=form(member="m-idem", brand="aurel"),
            files=photos,
            headers={"Idempotency-Key": "upload-7f3a9c"},
        )
        assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_every_bad_upload_gets_its_own_4xx(tmp_path: Path, deciding: Path, policy: Path) -> None:
    server = start_server(
        tmp_path / "data",
        deciding,
        policy=policy,
        extra=["--max-request-mb", "2", "--max-photo-mb", "1"],
    )
    good = ("logo", ("a.jpg", jpeg(), "image/jpeg"))
    truncated = jpeg()[:300]
    cases = [
        ({}, [("logo", ("a.jpg", b"this is not an image", "image/jpeg"))], {}, 422, "not_an_image"),
        ({}, [("logo", ("a.jpg", truncated, "image/jpeg"))], {}, 422, "truncated_image"),
        ({}, [("logo", ("a.jpg", b"", "image/jpeg"))], {}, 422, "empty_file"),
        ({}, [("logo", ("a.png", _png(20000, 20000), "image/png"))], {}, 413, "too_many_pixels"),
        (
            {},
            [("logo", ("big.bin", b"\xff" * (1024 * 1024 + 10), "image/jpeg"))],
            {},
            413,
            "photo_too_large",
        ),
        (
            {},
            [("logo", ("huge.bin", b"\xff" * (3 * 1024 * 1024), "image/jpeg"))],
            {},
            413,
            "request_too_large",
        ),
        ({}, [good] * 13, {}, 422, "too_many_photos"),
        ({}, [("logo", ("a.jpg", jpeg(), "image/jpeg"))] * 5, {}, 422, "too_many_photos"),
        ({}, [("strap", ("a.jpg", jpeg(), "image/jpeg"))], {}, 422, "unknown_region"),
        ({}, [], {}, 422, "no_photos"),
        ({"member_id": ""}, [good], {}, 422, "missing_field"),
        ({"member_tier": "platinum"}, [good], {}, 422, "invalid_field"),
        ({"declared_value": "lots"}, [good], {}, 422, "invalid_field"),
        ({"colour": "red"}, [good], {}, 422, "invalid_field"),
        ({}, [good], {"Idempotency-Key": "bad key!"}, 422, "invalid_idempotency_key"),
    ]
    try:
        key = server.key("member_backend")
        with server.client(key) as client:
            for fields, files, headers, status, code in cases:
                data = {k: v for k, v in {**form(), **fields}.items() if v}
                if files:
                    answer = client.post("/v1/appraisals", data=data, files=files, headers=headers)
                else:  # httpx sends fields alone urlencoded: build the multipart body by hand
                    answer = client.post(
                        "/v1/appraisals",
                        content=_multipart_fields_only(data),
                        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
                    )
                assert (answer.status_code, answer.json().get("code")) == (status, code), (
                    code,
                    answer.text,
                )
            as_json = client.post("/v1/appraisals", json=form())
            assert as_json.status_code == 415
            assert as_json.json()["code"] == "unsupported_media_type"
            broken = client.post(
                "/v1/appraisals",
                content=b"--xyz\r\nnonsense",
                headers={"Content-Type": "multipart/form-data; boundary=xyz"},
            )
            assert broken.status_code in (400, 422) and "code" in broken.json()
            # None of these created anything.
            assert client.get("/v1/appraisals", params={"member_id": "m-1"}).json()["items"] == []
        assert (
            "Traceback" not in (tmp_path / f"server-{server.url.rsplit(':', 1)[1]}.log").read_text()
        )
    finally:
        stop(server)


def _multipart_fields_only(fields: dict[str, str]) -> bytes:
    parts = [
        f'--xyz\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    return ("".join(parts) + "--xyz--\r\n").encode()


def test_an_unusable_photo_asks_for_more_photos(server: Server, tiny_synthetic: Path) -> None:
    key = server.key("member_backend")
    dark = ("logo", ("dark.jpg", jpeg(color=(5, 5, 5), noise=False), "image/jpeg"))
    with server.client(key) as client, server.client(server.key("platform")) as staff:

        def whole(appraisal_id: str) -> dict:  # with the rule and the problems' codes
            return staff.get(f"/v1/appraisals/{appraisal_id}").json()

        first = client.post(
            "/v1/appraisals", data=form(), files=[*item_photos(tiny_synthetic)[:2], dark]
        )
        assert first.status_code == 201
        assert [f["problems"] for f in first.json()["findings"] if not f["usable"]] == [
            ["too dark"]  # in words for the member
        ]
        body = whole(first.json()["id"])
        assert body["status"] == "awaiting_photos" and body["decision"]["rule"] == (
            "needs_more_photos"
        )
        assert any("too dark" in reason for reason in body["decision"]["reasons"])
        assert [f["problems"] for f in body["findings"] if not f["usable"]] == [["too_dark"]]
        more = client.post(
            f"/v1/appraisals/{body['id']}/photos", files=item_photos(tiny_synthetic, 3)[-1:]
        )
        assert more.status_code == 200, more.text
        assert more.json()["status"] in ("decided", "in_review")
        assert more.json()["photo_rounds"] == 2
        late = client.post(
            f"/v1/appraisals/{body['id']}/photos", files=item_photos(tiny_synthetic, 3)[-1:]
        )
        assert late.status_code == 409 and late.json()["code"] == "invalid_state"

        # Three rounds of unusable photos: a person decides from what there is.
        stuck = client.post("/v1/appraisals", data=form(member="m-dark"), files=[dark, dark])
        assert stuck.json()["status"] == "awaiting_photos"
        rounds = [
            client.post(f"/v1/appraisals/{stuck.json()['id']}/photos", files=[dark]).json()
            for _ in range(2)
        ]
        assert [r["status"] for r in rounds] == ["awaiting_photos", "in_review"]
        assert whole(rounds[-1]["id"])["decision"]["rule"] == "photos_exhausted"
        assert rounds[-1]["photo_rounds"] == 3


def test_without_a_model_uploads_are_kept_and_go_to_people(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    server = start_server(tmp_path / "data", None)
    try:
        with server.client() as anonymous:
            ready = anonymous.get("/readyz")
            assert ready.status_code == 503 and ready.json()["model"] is False
        with server.client(server.key("member_backend")) as client:
            answer = client.post("/v1/appraisals", data=form(), files=item_photos(tiny_synthetic))
            assert answer.status_code == 201
        with server.client(server.key("platform")) as staff:
            body = staff.get(f"/v1/appraisals/{answer.json()['id']}").json()
            assert body["status"] == "in_review" and body["decision"]["rule"] == (
                "model_unavailable"
            )
            assert body["model"] == {"name": None, "version": None}
            stored = list((tmp_path / "data" / "photos").rglob("*"))
            assert sum(p.is_file() for p in stored) == len(body["findings"])
    finally:
        stop(server)


def test_a_full_queue_answers_503_with_retry_after(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    # A queue smaller than one item's photos can never take them: every scoring is refused.
    server = start_server(tmp_path / "data", tiny_model, extra=["--max-queue", "2"])
    try:
        with server.client(server.key("member_backend")) as client:
            answer = client.post("/v1/appraisals", data=form(), files=item_photos(tiny_synthetic))
            assert answer.status_code == 503 and answer.json()["code"] == "overloaded"
            assert int(answer.headers["Retry-After"]) >= 1
            assert "touchstone_overloaded_total 1.0" in client.get("/metrics").text
    finally:
        stop(server)


def test_a_killed_server_keeps_every_acknowledged_appraisal(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path, database_url: str | None
) -> None:
    import threading
    import time

    server = start_server(tmp_path / "data", tiny_model, database_url)
    key = server.key("member_backend")
    acknowledged: list[str] = []
    stop_sending = threading.Event()

    def keep_submitting(worker: int) -> None:
        with server.client(key, timeout=10) as client:
            for n in range(1000):
                if stop_sending.is_set():
                    return
                try:
                    answer = client.post(
                        "/v1/appraisals",
                        data=form(member=f"m-kill-{worker}"),
                        files=item_photos(tiny_synthetic, n % 8),
                    )
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if answer.status_code == 201:
                    acknowledged.append(answer.json()["id"])

    workers = [threading.Thread(target=keep_submitting, args=(w,)) for w in range(8)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()  # SIGKILL: no shutdown, no flush
    stop_sending.set()
    for worker in workers:
        worker.join(timeout=30)
    assert len(acknowledged) >= 20

    restarted = start_server(tmp_path / "data", tiny_model, database_url)
    try:
        with restarted.client(key) as client:
            for appraisal_id in acknowledged:
                answer = client.get(f"/v1/appraisals/{appraisal_id}")
                assert answer.status_code == 200, appraisal_id
                assert answer.json()["findings"], appraisal_id
    finally:
        stop(restarted)


def test_schema_matches_the_migrations(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from serving.db import Base, make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_admins_switch_models_without_dropping_requests(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    import shutil
    import threading

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model, other)
    card = json.loads((other / "model.json").read_text())
    card["version"] = "switched"
    (other / "model.json").write_text(json.dumps(card))
    server = start_server(tmp_path / "data", tiny_model, extra=["--max-wait-ms", "20"])
    try:
        app, admin = server.key("member_backend"), server.key("admin")
        answers: list[httpx.Response] = []
        done = threading.Event()

        def keep_submitting(worker: int) -> None:
            with server.client(app) as client:
                n = 0
                while not done.is_set() or n < 3:
                    answers.append(
                        client.post(
                            "/v1/appraisals",
                            data=form(member=f"m-switch-{worker}"),
                            files=item_photos(tiny_synthetic, n % 8),
                        )
                    )
                    n += 1

        workers = [threading.Thread(target=keep_submitting, args=(w,)) for w in range(4)]
        for worker in workers:
            worker.start()
        with server.client(admin) as client:
            refused = client.post("/v1/models", json={"source": str(tmp_path / "nowhere")})
            assert refused.status_code == 422 and refused.json()["code"] == "model_unusable"
            switched = client.post("/v1/models", json={"source": str(other)})
            assert switched.status_code == 200, switched.text
            assert switched.json()["version"] == "switched"
        done.set()
        for worker in workers:
            worker.join(timeout=120)
        assert answers and all(a.status_code == 201 for a in answers), [
            a.text for a in answers if a.status_code != 201
        ]
        versions = [a.json()["model"]["version"] for a in answers]
        assert versions[-1] == "switched" and versions[0] != "switched"
        with server.client(app) as client:
            assert client.get("/v1/models").json()["card"]["version"] == "switched"
            forbidden = client.post("/v1/models", json={"source": str(other)})
            assert forbidden.status_code == 403
    finally:
        stop(server)


def test_photos_are_encrypted_at_rest_when_a_key_is_set(
    tmp_path: Path, tiny_synthetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64
    import os

    monkeypatch.setenv("TOUCHSTONE_PHOTO_KEY", base64.b64encode(os.urandom(32)).decode())
    server = start_server(tmp_path / "data", None)
    try:
        with server.client(server.key("member_backend")) as client:
            answer = client.post("/v1/appraisals", data=form(), files=item_photos(tiny_synthetic))
            assert answer.status_code == 201
        stored = [p for p in (tmp_path / "data" / "photos").rglob("*") if p.is_file()]
        assert stored and not any(p.read_bytes().startswith(b"\xff\xd8") for p in stored)
    finally:
        stop(server)


def _stored_photos(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "photos").rglob("*") if p.is_file()]


def test_a_refused_upload_leaves_no_photo_in_the_store(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    """Photos are written only once the upload is accepted: an upload refused after its photos
    were decoded (a bad photo among good ones, a full model queue) leaves no file that no
    appraisal points at, which erasure would never find."""
    # A queue smaller than one item's photos: every scoring is refused with a 503.
    server = start_server(tmp_path / "data", tiny_model, extra=["--max-queue", "2"])
    try:
        with server.member_client("m-1") as client:
            mixed = [*item_photos(tiny_synthetic, 0)[:2], ("logo", ("x.jpg", b"no", "image/jpeg"))]
            answer = client.post("/v1/appraisals", data=form(), files=mixed)
            assert answer.status_code == 422 and answer.json()["code"] == "not_an_image"
            answer = client.post("/v1/appraisals", data=form(), files=item_photos(tiny_synthetic))
            assert answer.status_code == 503 and answer.json()["code"] == "overloaded"
    finally:
        stop(server)  # waits for the worker threads, so no late write is missed
    assert _stored_photos(tmp_path / "data") == []
