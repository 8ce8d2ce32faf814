"""Who may call what, through real HTTP: member tokens bind the app to one member, reviewers
see appraisals only through their tasks, members never see scores or thresholds, submissions
per member are rate-limited, and keys can be listed, revoked and made to expire."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from sqlalchemy import select, update
from typer.testing import CliRunner

from cli import app as touchstone
from tests.serving_support import (
    Server,
    deciding_model,
    form,
    item_photos,
    start_server,
    stop,
)

# No audit draw: with a card whose thresholds the tiny model reaches, decisions are automatic.
AUTO_POLICY = "audit_share: 0.0\n"
SCORE_WORDS = ("p_authentic", "log_odds", "score", "threshold", "calibration")


@pytest.fixture
def humans_only(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    """No model: every upload goes to people; on both databases."""
    server = start_server(tmp_path / "data", None, database_url)
    yield server
    stop(server)


@pytest.fixture
def scored(tmp_path: Path, tiny_model: Path) -> Iterator[Server]:
    """The tiny model deciding alone."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(AUTO_POLICY)
    model = deciding_model(tiny_model, tmp_path / "deciding-model")
    server = start_server(tmp_path / "data", model, policy=policy)
    yield server
    stop(server)


def submit(client: httpx.Client, manifest: Path, index: int = 0, **fields: str) -> httpx.Response:
    photos = item_photos(manifest, index)
    if fields.pop("one_photo", None):
        photos = photos[:1]  # fewer than the policy's minimum: the item waits for photos
    data = {"member_tier": "explorer", "category": "bag", **fields}
    return client.post("/v1/appraisals", data=data, files=photos)


def created(answer: httpx.Response) -> dict:
    assert answer.status_code == 201, answer.text
    return answer.json()


def refused(answer: httpx.Response, status: int, code: str) -> None:
    assert (answer.status_code, answer.json().get("code")) == (status, code), answer.text


def test_an_app_key_acts_only_for_the_member_its_token_names(
    humans_only: Server, tiny_synthetic: Path
) -> None:
    server = humans_only
    app = server.key("app")
    with server.member_client("member-b", app) as b:
        waiting = created(submit(b, tiny_synthetic, 0, member_id="member-b", one_photo="yes"))
        reviewed = created(submit(b, tiny_synthetic, 1, member_id="member-b"))
        assert waiting["status"] == "awaiting_photos" and reviewed["status"] == "in_review"
    with server.member_client("member-a", app) as a:
        refused(submit(a, tiny_synthetic, 2, member_id="member-b"), 403, "member_mismatch")
        mine = created(submit(a, tiny_synthetic, 2, member_id="member-a"))
        for other in (waiting, reviewed):
            refused(a.get(f"/v1/appraisals/{other['id']}"), 404, "not_found")
        refused(a.post(f"/v1/appraisals/{reviewed['id']}/human-review"), 404, "not_found")
        more = a.post(
            f"/v1/appraisals/{waiting['id']}/photos", files=item_photos(tiny_synthetic, 0)
        )
        refused(more, 404, "not_found")
        refused(a.get("/v1/appraisals", params={"member_id": "member-b"}), 403, "member_mismatch")
        refused(a.get("/v1/members/member-b/benefits"), 403, "member_mismatch")
        assert a.get("/v1/members/member-a/benefits").status_code == 200
        assert a.get(f"/v1/appraisals/{mine['id']}").status_code == 200
        # Without a member named, the token's member is meant.
        implied = created(submit(a, tiny_synthetic, 3))
        assert implied["member_id"] == "member-a"
        listed = a.get("/v1/appraisals")
        assert {x["id"] for x in listed.json()["items"]} == {mine["id"], implied["id"]}
    with server.member_client("member-b", app) as b:  # the owner still may
        more = b.post(f"/v1/appraisals/{waiting['id']}/photos", files=item_photos(tiny_synthetic))
        assert more.status_code == 200, more.text
    # The trusted back end acts for many members, naming one per call, as before.
    with server.client(server.key("member_backend")) as backend:
        assert created(submit(backend, tiny_synthetic, 3, member_id="member-c"))
        refused(submit(backend, tiny_synthetic, 3), 422, "missing_field")
        listed = backend.get("/v1/appraisals", params={"member_id": "member-b"}).json()
        assert {x["id"] for x in listed["items"]} == {waiting["id"], reviewed["id"]}
        refused(backend.get("/v1/appraisals"), 422, "missing_field")
        assert backend.get(f"/v1/appraisals/{mine['id']}").status_code == 200


def _hs256(payload: dict, secret: bytes) -> str:
    """A token signed with HMAC, the public key as its secret (the algorithm-confusion
    attack): PyJWT refuses to make one, so it is made by hand."""

    def part(value: dict | bytes) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


def test_member_tokens_missing_expired_or_forged_are_refused(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    server = start_server(tmp_path / "data", None)
    try:
        assert server.member_tokens is not None
        now = time.time()
        stranger = Ed25519PrivateKey.generate()
        claims = {"sub": "member-a", "iat": int(now), "exp": int(now + 600)}
        bad = {
            "member_token_expired": [server.member_token("member-a", issued_at=now - 3600)],
            "member_token_invalid": [
                "not-a-token",
                server.member_token("member-a", signing_key=stranger),
                jwt.encode(claims, None, algorithm="none"),  # type: ignore[arg-type]
                _hs256(claims, server.member_tokens.public_file.read_bytes()),
                server.member_token("member-a", lifetime=7 * 24 * 3600),  # far too long
                jwt.encode(
                    {"iat": int(now), "exp": int(now + 600)},
                    server.member_tokens.private_key,  # type: ignore[arg-type]
                    algorithm="EdDSA",
                ),  # no member
            ],
        }
        app, mine = server.key("app"), {"member_id": "member-a"}
        with server.client(app) as client:
            refused(client.get("/v1/appraisals", params=mine), 401, "member_token_required")
            answer = submit(client, tiny_synthetic, member_id="member-a")
            refused(answer, 401, "member_token_required")
            for code, tokens in bad.items():
                for token in tokens:
                    headers = {"X-Member-Token": token}
                    refused(client.get("/v1/appraisals", params=mine, headers=headers), 401, code)
            good = {"X-Member-Token": server.member_token("member-a")}
            assert client.get("/v1/appraisals", params=mine, headers=good).status_code == 200
        with server.client() as anonymous:  # a token is no key
            answer = anonymous.get("/v1/appraisals", params=mine, headers=good)
            refused(answer, 401, "unauthenticated")
    finally:
        stop(server)


def test_reviewers_see_appraisals_only_through_their_tasks(
    humans_only: Server, tiny_synthetic: Path
) -> None:
    server = humans_only
    with server.member_client("member-8841") as app:
        two_blind = {"member_id": "member-8841", "declared_value": "80000"}
        item = created(submit(app, tiny_synthetic, 0, **two_blind))
    for role in ("reviewer", "senior"):
        with server.client(server.key(role)) as staff:
            refused(staff.get(f"/v1/appraisals/{item['id']}"), 403, "forbidden")
            answer = staff.get("/v1/appraisals", params={"member_id": "member-8841"})
            refused(answer, 403, "forbidden")
    with server.client(server.key("reviewer")) as alice:
        task = alice.post("/v1/review/claim").json()
        assert task["task"]["blind"] and task["appraisal"]["p_authentic"] is None
        done = alice.post(
            f"/v1/review/tasks/{task['task']['id']}/verdict", json={"outcome": "authentic"}
        )
        assert done.status_code == 200, done.text
        # The task's answer, not the appraisal: no member, no decision, no other verdict.
        assert set(done.json()) == {"task_id", "appraisal_id", "status"}
        assert done.json()["status"] == "done"
    with server.client(server.key("platform")) as platform:
        full = platform.get(f"/v1/appraisals/{item['id']}").json()
        assert full["member_id"] == "member-8841" and "p_authentic" in full["decision"]


def test_members_see_outcomes_in_words_and_staff_see_scores(
    scored: Server, tiny_synthetic: Path
) -> None:
    server = scored
    with server.member_client("member-a") as app:
        body = created(submit(app, tiny_synthetic, member_id="member-a"))
        assert body["status"] == "decided" and body["decision"]["outcome"] in (
            "authentic",
            "counterfeit",
        )
        assert body["decision"]["path"] == "auto" and body["findings"]
        assert {f["region"] for f in body["findings"]} <= {"hardware", "stitching", "logo"}
        shown = [body, app.get(f"/v1/appraisals/{body['id']}").json()]
        shown.append(app.get("/v1/appraisals", params={"member_id": "member-a"}).json()["items"][0])
        shown.append(app.post(f"/v1/appraisals/{body['id']}/human-review").json())
        assert shown[-1]["status"] == "in_review"
        card = app.get("/v1/models").json()
        assert card["card"]["regions"] == ["hardware", "stitching", "logo"]
        assert "thresholds" not in card["card"] and "calibration" not in card["card"]
    with server.client(server.key("member_backend")) as backend:
        shown.append(backend.get(f"/v1/appraisals/{body['id']}").json())
        assert "thresholds" not in backend.get("/v1/models").json()["card"]
    for view in shown:
        text = json.dumps(view)
        assert not any(word in text for word in SCORE_WORDS), text
        assert "rule" not in view["decision"], text
        assert not re.search(r"\d\.\d", json.dumps(view["decision"])), text
    for role in ("platform", "admin"):
        with server.client(server.key(role)) as staff:
            full = staff.get(f"/v1/appraisals/{body['id']}").json()
            assert 0.0 <= full["decision"]["p_authentic"] <= 1.0
            assert full["findings"][0]["log_odds"] is not None
            assert "targets" in staff.get("/v1/models").json()["card"]["thresholds"]


def test_submissions_per_member_are_rate_limited(
    tmp_path: Path, database_url: str | None, tiny_synthetic: Path
) -> None:
    env = {"TOUCHSTONE_MEMBER_SUBMISSIONS_PER_HOUR": "2"}
    server = start_server(tmp_path / "data", None, database_url, env=env)
    try:
        retry = {"Idempotency-Key": "retry-me-0001"}
        with server.member_client("member-a") as a:
            first = created(
                a.post(
                    "/v1/appraisals",
                    data=form("member-a"),
                    files=item_photos(tiny_synthetic, 0),
                    headers=retry,
                )
            )
            created(submit(a, tiny_synthetic, 1, member_id="member-a"))
            third = submit(a, tiny_synthetic, 2, member_id="member-a")
            refused(third, 429, "rate_limited")
            assert 1 <= int(third.headers["Retry-After"]) <= 3600
            # A retry of an upload already taken is no new submission.
            again = a.post(
                "/v1/appraisals",
                data=form("member-a"),
                files=item_photos(tiny_synthetic, 0),
                headers=retry,
            )
            assert again.status_code == 201 and again.json()["id"] == first["id"]
        with server.client(server.key("member_backend")) as backend:  # per member, any key
            refused(submit(backend, tiny_synthetic, 3, member_id="member-a"), 429, "rate_limited")
            created(submit(backend, tiny_synthetic, 3, member_id="member-b"))
    finally:
        stop(server)


def _admin(server: Server, *args: str) -> tuple[int, str]:
    env = {"TOUCHSTONE_DATABASE_URL": server.database_url} if server.database_url else {}
    result = CliRunner().invoke(
        touchstone, ["admin", *args, "--data-dir", str(server.data_dir)], env=env
    )
    return result.exit_code, " ".join(result.output.split())


def _web_sign_in(server: Server, key: str) -> httpx.Client:
    browser = httpx.Client(base_url=server.url, headers={"Accept": "text/html"})
    form_page = browser.get("/review/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form_page)
    assert csrf, form_page
    signed = browser.post("/review/login", data={"key": key, "csrf_token": csrf.group(1)})
    assert signed.status_code == 303, signed.text
    assert browser.get("/review").status_code == 200
    return browser


def _signed_out(browser: httpx.Client) -> bool:
    answer = browser.get("/review")
    return answer.status_code == 303 and "/review/login" in answer.headers["location"]


def test_revoked_and_expired_keys_fail_at_once(humans_only: Server) -> None:
    server = humans_only
    platform, reviewer = server.key("platform"), server.key("reviewer")
    _, platform_prefix, platform_secret = platform.split("_", 2)
    _, reviewer_prefix, _ = reviewer.split("_", 2)
    browser = _web_sign_in(server, reviewer)
    with server.client(platform) as client:
        assert client.get("/v1/models").status_code == 200
        code, listed = _admin(server, "list-keys")
        assert code == 0 and platform_prefix in listed and reviewer_prefix in listed
        assert platform_secret not in listed and "platform" in listed
        assert _admin(server, "revoke-key", platform_prefix)[0] == 0
        refused(client.get("/v1/models"), 401, "unauthenticated")
        code, listed = _admin(server, "list-keys")
        assert "revoked" in listed
    assert _admin(server, "revoke-key", reviewer_prefix)[0] == 0
    assert _signed_out(browser)
    assert _admin(server, "revoke-key", "000000000000")[0] != 0  # no such key

    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with server.client(server.key("platform", expires_at=past)) as client:
        answer = client.get("/v1/models")
        refused(answer, 401, "unauthenticated")
        assert "expired" in answer.json()["message"]
    # A signed-in reviewer whose key expires is signed out at the next request.
    senior = server.key("senior", expires_at=past + dt.timedelta(hours=1))
    browser = _web_sign_in(server, senior)
    from serving.db import ApiKey, default_database_url, make_engine, make_sessionmaker

    engine = make_engine(server.database_url or default_database_url(server.data_dir))
    with make_sessionmaker(engine)() as session, session.begin():
        session.execute(
            update(ApiKey).where(ApiKey.prefix == senior.split("_", 2)[1]).values(expires_at=past)
        )
    engine.dispose()
    assert _signed_out(browser)


def test_keys_are_made_with_an_expiry_and_listed_without_secrets(tmp_path: Path) -> None:
    from serving.db import ApiKey, as_utc, default_database_url, make_engine, make_sessionmaker

    data = tmp_path / "data"

    def admin(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(touchstone, ["admin", *args, "--data-dir", str(data)])
        return result.exit_code, result.output

    code, output = admin("create-key", "--role", "member_backend", "--expires-in", "2h")
    assert code == 0, output
    key = output.strip().splitlines()[-1]
    code, output = admin("create-key", "--role", "reviewer", "--expires-at", "2030-01-02T03:04Z")
    assert code == 0, output
    assert admin("create-key", "--role", "app", "--expires-at", "2001-01-01T00:00Z")[0] == 2
    both = admin("create-key", "--role", "app", "--expires-in", "1h", "--expires-at", "2030-01-01")
    assert both[0] == 2
    assert admin("create-key", "--role", "app", "--expires-in", "soon")[0] == 2
    assert admin("create-key", "--role", "nobody")[0] == 2
    engine = make_engine(default_database_url(data))
    with make_sessionmaker(engine)() as session:
        rows = {k.role: k for k in session.scalars(select(ApiKey))}
    engine.dispose()
    left = as_utc(rows["member_backend"].expires_at) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=1, minutes=59) < left <= dt.timedelta(hours=2)
    assert as_utc(rows["reviewer"].expires_at) == dt.datetime(2030, 1, 2, 3, 4, tzinfo=dt.UTC)
    code, output = admin("list-keys")
    assert code == 0 and key.split("_", 2)[1] in output and "2030-01-02" in output
    assert key.split("_", 2)[2] not in output
    assert rows["member_backend"].secret_sha256 not in output


def test_member_token_keys_from_a_jwks_file(tmp_path: Path) -> None:
    from serving.errors import ApiError
    from serving.settings import SettingsError, load_settings

    signing = generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "platform-1", "use": "sig"}]}))
    settings = load_settings(
        data_dir=tmp_path, member_token_jwks=jwks, member_token_issuer="membership"
    )
    now = time.time()
    claims = {"sub": "member-a", "iss": "membership", "iat": int(now), "exp": int(now + 300)}

    def token(kid: str, **changes: object) -> str:
        return jwt.encode({**claims, **changes}, signing, "RS256", headers={"kid": kid})

    verifier = settings.member_tokens
    assert verifier is not None
    assert verifier.member_of(token("platform-1"), now) == "member-a"
    for forged in (token("platform-2"), token("platform-1", iss="someone-else")):
        with pytest.raises(ApiError) as refusal:
            verifier.member_of(forged, now)
        assert refusal.value.code == "member_token_invalid"
    with pytest.raises(ApiError) as refusal:  # a clock past the expiry and its leeway
        verifier.member_of(token("platform-1"), now + 300 + 31)
    assert refusal.value.code == "member_token_expired"

    pem = tmp_path / "key.pem"
    pem.write_text("not a key")
    for wrong in (
        {"member_token_public_key": pem},
        {"member_token_jwks": jwks, "member_token_public_key": pem},
        {"member_token_jwks": jwks, "member_token_algorithms": ["HS256"]},
        {"member_token_jwks": tmp_path / "missing.json"},
    ):
        with pytest.raises(SettingsError, match="member_token"):
            load_settings(data_dir=tmp_path, **wrong)
