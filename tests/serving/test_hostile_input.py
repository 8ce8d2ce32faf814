"""Hostile input through real HTTP (uvicorn in its own process): corrupt and odd photos, text
fields too long for their columns, racing uploads, and clients that stall mid-request."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.serving_support import Server, form, jpeg, start_server, stop
from tests.touchstone.test_imaging import (
    hostile_corpus,
    odd_photos,
    other_formats,
    oversized_photos,
    sample_photos,
)

REGIONS = ("logo", "hardware")
UNLIMITED = {"TOUCHSTONE_MEMBER_SUBMISSIONS_PER_HOUR": "1000000"}


def _log_of(server: Server) -> str:
    return (server.data_dir.parent / f"server-{server.url.rsplit(':', 1)[1]}.log").read_text()


def _upload(server: Server, cases: list[tuple[str, bytes]]) -> list[tuple[str, object]]:
    """Post each file as the only photo of an appraisal, four at a time; (name, status and code,
    or the error that ended the connection) for each."""
    local = threading.local()
    key = server.key("app")

    def post(case: tuple[str, bytes]) -> tuple[str, object]:
        name, data = case
        if not hasattr(local, "client"):  # one client a thread: a new one costs ~20 ms
            local.client = server.member_client("m-fuzz", key)
        try:
            answer = local.client.post(
                "/v1/appraisals",
                data=form(member="m-fuzz"),
                files=[("logo", ("photo", data, "application/octet-stream"))],
            )
        except httpx.HTTPError as exc:
            local.client = server.member_client("m-fuzz", key)
            return name, exc
        try:
            return name, (answer.status_code, answer.json().get("code"))
        except ValueError:  # not JSON: no handler of ours answered
            return name, (answer.status_code, None)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(post, cases))


def test_no_photo_gets_a_5xx_or_a_dropped_connection(tmp_path: Path) -> None:
    expected: dict[str, tuple[int, str | None]] = {}
    cases: list[tuple[str, bytes]] = []
    for name, data in {**sample_photos(), **odd_photos()}.items():
        expected[name] = (201, None)
        cases.append((name, data))
    for name, data in oversized_photos().items():
        expected[name] = (413, "too_many_pixels")
        cases.append((name, data))
    for name, data in other_formats().items():
        expected[name] = (415, "unsupported_image_format")
        cases.append((name, data))
    for name, data in [("text", b"this is not a photo"), ("empty", b"")]:
        expected[name] = (422, "not_an_image" if data else "empty_file")
        cases.append((name, data))
    cases += hostile_corpus()

    # No model: the decoding is what is tested. No submission limit: thousands are posted.
    server = start_server(tmp_path / "data", None, env=UNLIMITED)
    try:
        started = time.monotonic()
        answers = _upload(server, cases)
        took = time.monotonic() - started
        wrong = []
        for name, answer in answers:
            if name in expected:
                ok = answer == expected[name] or (
                    expected[name][0] == 201 and isinstance(answer, tuple) and answer[0] == 201
                )
            else:  # corrupted: a photo after all, or refused with a 4xx and a code
                ok = isinstance(answer, tuple) and (
                    answer[0] == 201 or (400 <= answer[0] < 500 and answer[1])
                )
            if not ok:
                wrong.append(f"{name}: {answer!r}")
        assert not wrong, f"{len(wrong)} of {len(cases)} wrong:\n" + "\n".join(wrong[:30])
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        assert "Traceback" not in _log_of(server)
        print(f"{len(cases)} uploads in {took:.1f} s")
    finally:
        stop(server)


def test_text_fields_fit_their_columns(tmp_path: Path, database_url: str | None) -> None:
    """PostgreSQL refuses a value longer than its column: validation must refuse it first."""
    server = start_server(tmp_path / "data", None, database_url, env=UNLIMITED)
    photo = [("logo", ("a.jpg", jpeg(), "image/jpeg"))]
    too_long = [
        {"category": "c" * 33},  # String(32)
        {"category": "\u0130" * 17},  # 17 letters that lower-case to 34 characters
        {"brand": "b" * 65},  # String(64)
        {"member_tier": "t" * 33},  # String(32)
    ]
    try:
        with server.member_client("m-fields") as client:
            for fields in too_long:
                answer = client.post(
                    "/v1/appraisals", data={**form("m-fields"), **fields}, files=photo
                )
                assert (answer.status_code, answer.json()["code"]) == (422, "invalid_field"), (
                    fields,
                    answer.text,
                )
            longest = {"category": "c" * 32, "brand": "b" * 64}
            answer = client.post(
                "/v1/appraisals", data={**form("m-fields"), **longest}, files=photo
            )
            assert answer.status_code == 201, answer.text
        assert "Traceback" not in _log_of(server)
    finally:
        stop(server)


def test_racing_photo_rounds_record_one(tmp_path: Path, database_url: str | None) -> None:
    """Eight add-photos calls at once on one appraisal awaiting photos: one round is recorded,
    the others are told the appraisal changed (409). On SQLite this needs the write lock taken
    at the start of each write transaction: FOR UPDATE does nothing there."""
    server = start_server(tmp_path / "data", None, database_url, env=UNLIMITED)
    dark = ("logo", ("dark.jpg", jpeg(color=(5, 5, 5), noise=False), "image/jpeg"))
    try:
        with server.member_client("m-race") as client:
            created = client.post("/v1/appraisals", data=form("m-race"), files=[dark, dark])
            assert created.json()["status"] == "awaiting_photos", created.text
            url = f"/v1/appraisals/{created.json()['id']}/photos"
            barrier = threading.Barrier(8)
            key = server.key("app")

            # The same photos each time, as from an app that sent its upload again.
            photos = [(region, (f"{region}.jpg", jpeg(), "image/jpeg")) for region in REGIONS]

            def add(_: int) -> int:
                with server.member_client("m-race", key) as racer:
                    barrier.wait()
                    return racer.post(url, files=photos).status_code

            with ThreadPoolExecutor(8) as pool:
                statuses = sorted(pool.map(add, range(8)))
            assert statuses == [200] + [409] * 7, statuses
            after = client.get(f"/v1/appraisals/{created.json()['id']}").json()
            assert after["photo_rounds"] == 2
            assert after["status"] == "in_review"  # enough usable photos; no model: a person
            assert len(after["findings"]) == 4  # two dark photos, then one round of two
        assert "Traceback" not in _log_of(server)
    finally:
        stop(server)


def _receive_all(connection: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection; and when it closed it."""
    connection.settimeout(within)
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except TimeoutError:
        return received, float("inf")  # still open
    return received, time.monotonic()


def test_stalled_requests_do_not_hold_the_server(tmp_path: Path) -> None:
    """Headers and half a body, then nothing: a 408 and a closed connection within the body
    deadline, while other requests are served; headers that never end: closed at the head
    deadline; and past the concurrency limit, a 503 rather than a queue."""
    server = start_server(
        tmp_path / "data",
        None,
        extra=["--request-body-timeout", "2", "--request-head-timeout", "2"],
        env={**UNLIMITED, "TOUCHSTONE_LIMIT_CONCURRENCY": "6"},
    )
    host, port = server.url.removeprefix("http://").split(":")
    key = server.key("app")
    upload = httpx.Request(
        "POST",
        f"{server.url}/v1/appraisals",
        data=form("m-stall"),
        files=[(region, ("a.jpg", jpeg(), "image/jpeg")) for region in REGIONS],
    )
    body = upload.read()
    head = (
        f"POST /v1/appraisals HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"X-Member-Token: {server.member_token('m-stall')}\r\n"
        f"Content-Type: {upload.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        stalled_body = socket.create_connection((host, int(port)))
        stalled_body.sendall(head + body[: len(body) // 2])
        stalled_head = socket.create_connection((host, int(port)))
        stalled_head.sendall(head[:40])
        sent = time.monotonic()
        with server.member_client("m-other", key) as client:  # served meanwhile
            files = [(region, ("b.jpg", jpeg(), "image/jpeg")) for region in REGIONS]
            answer = client.post("/v1/appraisals", data=form("m-other"), files=files)
            assert answer.status_code == 201, answer.text

        answered, closed = _receive_all(stalled_body, within=10)
        assert answered.startswith(b"HTTP/1.1 408"), answered[:200]
        assert b'"code":"request_timeout"' in answered
        assert closed - sent < 2 + 4  # the deadline, and time to spare on a busy machine
        nothing, closed = _receive_all(stalled_head, within=10)
        assert nothing == b"" and closed - sent < 2 + 4

        # Six idle connections fill the limit (new connections wait at most the head deadline).
        idle = [socket.create_connection((host, int(port))) for _ in range(6)]
        refused = httpx.get(server.url + "/healthz", timeout=5)
        assert refused.status_code == 503
        for connection in idle:
            connection.close()
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        assert "Traceback" not in _log_of(server)
    finally:
        stop(server)


def test_racing_rounds_of_unusable_photos_stay_distinct(
    tmp_path: Path, database_url: str | None
) -> None:
    """Eight add-photos calls at once of photos too dark to use, so the appraisal stays
    awaiting photos whichever commits first: each round is recorded once, with its own number;
    a call that read the appraisal before another's round committed gets a 409."""
    server = start_server(tmp_path / "data", None, database_url, env=UNLIMITED)
    dark = ("logo", ("dark.jpg", jpeg(color=(5, 5, 5), noise=False), "image/jpeg"))
    try:
        with server.member_client("m-dark") as client:
            created = client.post("/v1/appraisals", data=form("m-dark"), files=[dark, dark])
            assert created.json()["status"] == "awaiting_photos", created.text
            url = f"/v1/appraisals/{created.json()['id']}/photos"
            barrier = threading.Barrier(8)
            key = server.key("app")
            still_dark = [(region, dark[1]) for region in REGIONS]

            def add(_: int) -> tuple[int, str | None]:
                with server.member_client("m-dark", key) as racer:
                    barrier.wait()
                    answer = racer.post(url, files=still_dark)
                    return answer.status_code, answer.json().get("code")

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(add, range(8)))
            added = sum(1 for answer in answers if answer == (200, None))
            assert added >= 1 and added + answers.count((409, "invalid_state")) == 8, answers
            after = client.get(f"/v1/appraisals/{created.json()['id']}").json()
            rounds = Counter(finding["round"] for finding in after["findings"])
            # Round 1: the two photos it was created with; then two photos a round, each once.
            assert rounds == {n: 2 for n in range(1, added + 2)}, (rounds, answers)
            assert after["photo_rounds"] == added + 1
        assert "Traceback" not in _log_of(server)
    finally:
        stop(server)


def test_a_chunked_body_over_the_limit_gets_413(tmp_path: Path) -> None:
    """No Content-Length: the body is counted as it streams in, and past --max-request-mb the
    upload is answered 413 with the API's error shape, without waiting for the rest."""
    server = start_server(tmp_path / "data", None, extra=["--max-request-mb", "1"])
    host, port = server.url.removeprefix("http://").split(":")
    key = server.key("app")
    head = (
        f"POST /v1/appraisals HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"X-Member-Token: {server.member_token('m-chunked')}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    part = (
        b'--xyz\r\nContent-Disposition: form-data; name="logo"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n"
    )
    chunks = [part.ljust(65536, b"x")] + [b"x" * 65536] * 16
    try:
        with socket.create_connection((host, int(port))) as connection:
            # 17 chunks of 64 KiB: the last one crosses the 1 MiB, and the body never ends.
            # (Nothing is sent past it: the server reads all that was sent, so its closing the
            # connection cannot reset it before the answer is read.)
            connection.sendall(head)
            for chunk in chunks:
                connection.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            answered, _ = _receive_all(connection, within=10)
        assert answered.startswith(b"HTTP/1.1 413"), answered[:300]
        assert b'"code":"request_too_large"' in answered
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        assert "Traceback" not in _log_of(server)
    finally:
        stop(server)


def test_a_request_over_the_decode_memory_gets_413(tmp_path: Path) -> None:
    """The photos of a request reserve the memory their decoding holds before any is decoded:
    one that needs more than the whole budget is refused from the headers alone."""
    server = start_server(tmp_path / "data", None, extra=["--decode-memory-mb", "1"])
    small = ("logo", ("small.jpg", jpeg(size=96), "image/jpeg"))  # 96x96: ~0.1 MiB decoded
    large = ("logo", ("large.jpg", jpeg(size=400), "image/jpeg"))  # 400x400: ~1.8 MiB
    try:
        with server.member_client("m-memory") as client:
            answer = client.post("/v1/appraisals", data=form("m-memory"), files=[small])
            assert answer.status_code == 201, answer.text
            answer = client.post("/v1/appraisals", data=form("m-memory"), files=[large])
            assert (answer.status_code, answer.json()["code"]) == (413, "over_decode_memory")
            # A request's photos count together: two of 220x220 (~0.55 MiB each) are over.
            files = [(region, ("mid.jpg", jpeg(size=220), "image/jpeg")) for region in REGIONS]
            answer = client.post("/v1/appraisals", data=form("m-memory"), files=files[:1])
            assert answer.status_code == 201, answer.text
            answer = client.post("/v1/appraisals", data=form("m-memory"), files=files)
            assert (answer.status_code, answer.json()["code"]) == (413, "over_decode_memory")
        assert "Traceback" not in _log_of(server)
    finally:
        stop(server)


def test_the_decode_memory_budget_makes_requests_wait() -> None:
    """A reservation that does not fit waits (on the event loop, no thread held) until enough
    is given back, in the order they came: a large one is not starved by small ones."""
    from serving.appraisals.memory import MemoryBudget, OverBudget

    async def scenario() -> list[str]:
        budget = MemoryBudget(100)
        order: list[str] = []
        first = budget.reserve(60)
        await first.__aenter__()

        async def take(name: str, size: int) -> None:
            async with budget.reserve(size):
                order.append(name)
                await asyncio.sleep(0)

        large = asyncio.create_task(take("large", 80))
        await asyncio.sleep(0.01)
        small = asyncio.create_task(take("small", 10))  # fits now, but comes after the large
        await asyncio.sleep(0.01)
        assert order == [] and budget.free == 40
        await first.__aexit__(None, None, None)
        await asyncio.gather(large, small)
        assert budget.free == 100
        with pytest.raises(OverBudget):
            async with budget.reserve(101):
                pass
        # A waiting request that is cancelled (its client went away) gives its place back.
        held = budget.reserve(100)
        await held.__aenter__()
        gone = asyncio.create_task(take("gone", 50))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        await held.__aexit__(None, None, None)
        async with budget.reserve(100):
            pass
        assert budget.free == 100
        return order

    assert asyncio.run(scenario()) == ["large", "small"]
