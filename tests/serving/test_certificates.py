"""Certificates (a hash chain over finalized appraisals) and member erasure, through a real
server with no model: every upload goes to people, who finalize it."""

from __future__ import annotations

import base64
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from cli import app as cli
from tests.serving_support import (
    Server,
    announce,
    form,
    item_photos,
    postgres_database,
    start_server,
    stop,
)

runner = CliRunner()
# What a buyer needs, and all a certificate body holds from version 2 on.
PUBLIC_BODY = {
    "version",
    "item_id",
    "appraisal_id",
    "category",
    "brand",
    "photos",
    "model",
    "outcome",
    "path",
    "submitted_at",
    "finalized_at",
    "issued_at",
    "supersedes",
}


def _start(tmp_path: Path, database_url: str | None = None) -> Server:
    return start_server(tmp_path / "data", None, database_url, extra=["--sla-sweep-seconds", "5"])


@pytest.fixture
def humans_only(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    server = _start(tmp_path, database_url)
    yield server
    stop(server)


def _submit(server: Server, key: str, manifest: Path, index: int, member: str) -> dict:
    with server.client(key) as client:
        answer = client.post(
            "/v1/appraisals", data=form(member=member), files=item_photos(manifest, index)
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "in_review"
        return answer.json()


def _review_all(server: Server, key: str, outcome: str = "authentic") -> list[str]:
    """Claim and decide until the queue is empty; the appraisal ids, in order."""
    done = []
    with server.client(key) as client:
        while True:
            claimed = client.post("/v1/review/claim")
            if claimed.status_code == 204:
                return done
            task = claimed.json()
            answer = client.post(
                f"/v1/review/tasks/{task['task']['id']}/verdict",
                json={
                    "outcome": outcome,
                    "notes": "stitch pitch and engraving as the brand's",
                    "findings": [{"region": "hardware", "note": "serial crisp"}],
                },
            )
            assert answer.status_code == 200, answer.text
            with server.client(server.key("platform")) as platform:  # the verdict's is the task's
                shown = platform.get(f"/v1/appraisals/{task['appraisal']['id']}").json()
            assert shown["status"] == "finalized"
            done.append(task["appraisal"]["id"])


def _certificates(server: Server) -> list[Any]:
    from serving.db import Certificate

    engine, sessions = server.database()
    with sessions() as session:
        found = list(session.scalars(select(Certificate).order_by(Certificate.seq)))
    engine.dispose()
    return found


def _execute(server: Server, statement: Any) -> None:
    engine, sessions = server.database()
    with sessions() as session, session.begin():
        session.execute(statement)
    engine.dispose()


def test_finalized_appraisals_get_certificates_in_a_verifiable_chain(
    humans_only: Server, tiny_synthetic: Path, tmp_path: Path
) -> None:
    from serving.certificates import GENESIS, link_hash
    from serving.db import Certificate

    server = humans_only
    app, alice, admin = server.key("member_backend"), server.key("reviewer"), server.key("admin")
    submitted = [_submit(server, app, tiny_synthetic, i, f"member-88{i}41") for i in range(3)]
    with server.client(admin) as client:
        gold = client.post(
            "/v1/review/gold",
            data={"truth": "authentic", "category": "bag"},
            files=item_photos(tiny_synthetic, 5),
        )
        assert gold.status_code == 201, gold.text
    finalized = _review_all(server, alice)
    assert len(finalized) == 4 and gold.json()["id"] in finalized

    chain = _certificates(server)
    assert [c.seq for c in chain] == [1, 2, 3]  # no certificate for the gold item
    assert {c.appraisal_id for c in chain} == {a["id"] for a in submitted}
    assert chain[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(chain):
        assert after.prev_hash == before.hash
    for c in chain:
        assert c.hash == link_hash(c.seq, c.code, c.body, c.prev_hash)
        assert len(c.code) == 12

    # Public: no key, and no member id in what it shows.
    by_appraisal = {a["id"]: a for a in submitted}
    with server.client() as anyone:
        for c in chain:
            shown = anyone.get(f"/v1/certificates/{c.code.lower()}")
            assert shown.status_code == 200, shown.text
            view = shown.json()
            appraisal = by_appraisal[view["body"]["appraisal_id"]]
            assert appraisal["member_id"] not in shown.text
            assert "member" not in json.dumps(view["body"])
            assert view["hash_matches"] and view["superseded_by"] is None
            assert view["hash"] == c.hash and view["seq"] == c.seq
            body = view["body"]
            assert body["item_id"] == appraisal["id"]
            assert body["outcome"] == "authentic" and body["path"] == "human"
            assert [p["sha256"] for p in body["photos"]] == [
                f["sha256"] for f in appraisal["findings"]
            ]
            assert set(body) == PUBLIC_BODY and not view["redacted"]
            assert body["model"] == {"name": None, "version": None}  # no model: people decided
            assert body["finalized_at"] and body["submitted_at"] and body["issued_at"]
            # The whole hashed body is public: anyone can recompute the link.
            assert link_hash(c.seq, c.code, body, view["prev_hash"]) == view["hash"]
        missing = anyone.get("/v1/certificates/NOSUCHCODE00")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"

    verified = server.touchstone("certificates", "verify")
    assert verified.exit_code == 0, verified.output
    assert "intact" in verified.output and "3 certificate(s)" in verified.output

    head_file = tmp_path / "head.json"
    exported = server.touchstone("certificates", "head", "--out", str(head_file))
    assert exported.exit_code == 0, exported.output
    head = json.loads(head_file.read_text())
    assert head["seq"] == 3 and head["code"] == chain[2].code and head["hash"] == chain[2].hash
    assert head["created_at"]

    jsonl = tmp_path / "chain.jsonl"
    assert server.touchstone("certificates", "export", "--out", str(jsonl)).exit_code == 0
    offline = runner.invoke(cli, ["certificates", "verify", "--file", str(jsonl)])
    assert offline.exit_code == 0, offline.output

    # Tamper with the body of certificate 2.
    second = chain[1]
    edited = {**second.body, "outcome": "counterfeit"}
    _execute(server, update(Certificate).where(Certificate.seq == 2).values(body=edited))
    broken = server.touchstone("certificates", "verify")
    assert broken.exit_code == 1, broken.output
    assert "seq 2" in broken.output and second.code in broken.output
    assert "body_edited" in broken.output
    with server.client() as anyone:
        assert not anyone.get(f"/v1/certificates/{second.code}").json()["hash_matches"]
    _execute(server, update(Certificate).where(Certificate.seq == 2).values(body=second.body))
    assert server.touchstone("certificates", "verify").exit_code == 0

    # Separately: point certificate 2 at another previous hash.
    _execute(server, update(Certificate).where(Certificate.seq == 2).values(prev_hash="f" * 64))
    broken = server.touchstone("certificates", "verify")
    assert broken.exit_code == 1
    assert "seq 2" in broken.output and "prev_hash_mismatch" in broken.output
    _execute(
        server, update(Certificate).where(Certificate.seq == 2).values(prev_hash=second.prev_hash)
    )
    assert server.touchstone("certificates", "verify").exit_code == 0

    # The exported file, edited, fails offline at the same link.
    lines = jsonl.read_text().splitlines()
    row = json.loads(lines[1])
    row["body"]["photos"][0]["sha256"] = "0" * 64
    lines[1] = json.dumps(row)
    jsonl.write_text("\n".join(lines) + "\n")
    offline = runner.invoke(cli, ["certificates", "verify", "--file", str(jsonl)])
    assert offline.exit_code == 1 and "seq 2" in offline.output


def test_a_gap_in_the_chain_is_named(tmp_path: Path) -> None:
    from serving.certificates import GENESIS, Link, link_hash, verify

    links, prev = [], GENESIS
    for seq in (1, 2, 3):
        body = {"appraisal_id": f"a-{seq}"}
        digest = link_hash(seq, f"C{seq}", body, prev)
        links.append(Link(seq, f"C{seq}", body, prev, digest))
        prev = digest
    assert verify(links).ok and verify(links).links == 3
    result = verify([links[0], links[2]])
    assert not result.ok and result.broken is not None
    assert (result.broken.seq, result.broken.problem) == (3, "seq_gap")


def _auto_authentic(now: Any) -> Any:
    """An item the model decided authentic alone, decided and finalized at `now`: the first link
    of the supersession tests."""
    from serving.db import Appraisal

    return Appraisal(
        id="a-1",
        member_id="member-1",
        member_tier="explorer",
        category="bag",
        status="decided",
        outcome="authentic",
        path="auto",
        rule="auto_authentic",
        reasons=[],
        sla_due_at=now,
        finalized_at=now,
    )


def test_a_second_finalization_supersedes_the_certificate(tmp_path: Path) -> None:
    """An appraisal finalized again (an overturn) gets a new link naming the old one."""
    import datetime as dt

    from serving import certificates
    from serving.db import default_database_url, make_engine, make_sessionmaker
    from serving.db import upgrade as migrate

    engine = make_engine(default_database_url(tmp_path))
    migrate(engine)
    sessions = make_sessionmaker(engine)
    now = dt.datetime.now(dt.UTC)
    with sessions() as session, session.begin():
        appraisal = _auto_authentic(now)
        session.add(appraisal)
        session.flush()
        first = certificates.issue(session, appraisal)
        appraisal.status, appraisal.outcome, appraisal.path = "finalized", "counterfeit", "human"
        second = certificates.issue(session, appraisal)
        assert first is not None and second is not None
        codes = first.code, second.code
    with sessions() as session:
        old = certificates.public_view(session, codes[0])
        new = certificates.public_view(session, codes[1])
        assert old is not None and new is not None
        assert old.superseded_by == codes[1] and new.superseded_by is None
        assert new.body["supersedes"] == codes[0] and new.body["outcome"] == "counterfeit"
        assert certificates.verify(certificates.links_from_db(session)).links == 2
    engine.dispose()


def test_erasure_removes_photos_and_derived_data_and_keeps_the_chain(
    humans_only: Server, tiny_synthetic: Path, tmp_path: Path
) -> None:
    from serving.db import AuditEntry, ErasedMember, Photo, Verdict

    server = humans_only
    app, alice, admin = server.key("member_backend"), server.key("reviewer"), server.key("admin")
    own = _submit(server, app, tiny_synthetic, 1, "member-erase")
    shared = _submit(server, app, tiny_synthetic, 0, "member-erase")
    other = _submit(server, app, tiny_synthetic, 0, "member-stays")  # the same photos
    _review_all(server, alice)
    photos_dir = server.data_dir / "photos"

    def stored(appraisal: dict) -> list[bool]:
        return [(photos_dir / f[:2] / f[2:4] / f).is_file() for f in _hashes(appraisal)]

    assert all(stored(own)) and all(stored(shared))

    with server.client(alice) as reviewer:
        assert reviewer.delete("/v1/members/member-erase/data").status_code == 403
    with server.client(admin) as client:
        answer = client.delete("/v1/members/member-erase/data")
        assert answer.status_code == 200, answer.text
        counts = answer.json()
        assert counts["member_id"] == "member-erase" and counts["appraisals"] == 2
        assert counts["photos"] == len(_hashes(own)) + len(_hashes(shared))
        assert counts["photo_files_erased"] == len(set(_hashes(own)))
        assert counts["photo_files_shared"] == len(set(_hashes(shared)))
        assert counts["verdicts"] == 2
        again = client.delete("/v1/members/member-erase/data")
        assert again.status_code == 200 and again.json() == counts  # idempotent
    assert not any(stored(own))
    assert all(stored(shared)) and all(stored(other))  # another member holds them

    engine, sessions = server.database()
    with sessions() as session:
        ids = [own["id"], shared["id"]]
        for photo in session.scalars(select(Photo).where(Photo.appraisal_id.in_(ids))):
            assert photo.p_authentic is None and photo.log_odds is None and photo.problems == []
            assert photo.sha256  # the address stays: certificates name it
        for verdict in session.scalars(select(Verdict).where(Verdict.appraisal_id.in_(ids))):
            assert verdict.notes == "" and verdict.findings == []
            assert verdict.outcome == "authentic"
        kept = session.scalars(select(Verdict).where(Verdict.appraisal_id == other["id"])).one()
        assert kept.notes  # another member's verdicts are untouched
        assert session.get(ErasedMember, "member-erase") is not None
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "erase_member")).all()
        assert len(audit) == 2 and audit[0].detail["first_time"]
    engine.dispose()

    # The chain is untouched and still verifies; the certificates still show the hashes.
    assert server.touchstone("certificates", "verify").exit_code == 0
    chain = {c.appraisal_id: c for c in _certificates(server)}
    with server.client() as anyone:
        view = anyone.get(f"/v1/certificates/{chain[own['id']].code}").json()
        assert [p["sha256"] for p in view["body"]["photos"]] == _hashes(own)
        assert view["hash_matches"]

    # The training export leaves the member out.
    out = tmp_path / "export" / "reviews.csv"
    exported = server.touchstone("data", "export-reviews", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    text = out.read_text()
    assert other["id"] in text
    assert own["id"] not in text and shared["id"] not in text
    assert "erased_member" in exported.output


def _hashes(appraisal: dict) -> list[str]:
    return [f["sha256"] for f in appraisal["findings"]]


def test_the_chain_stays_linear_under_concurrent_finalizations(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    """Several reviewers finalize at once on PostgreSQL: the advisory lock appends one link
    after another, never two on the same head."""
    from serving import certificates

    with postgres_database() as url:
        server = _start(tmp_path, url)
        try:
            app = server.key("member_backend")
            reviewers = [server.key("reviewer") for _ in range(6)]
            submitted = [
                _submit(server, app, tiny_synthetic, i % 20, f"member-{i}") for i in range(18)
            ]
            errors: list[BaseException] = []
            finalized: list[str] = []
            start = threading.Barrier(len(reviewers))

            def work(key: str) -> None:
                try:
                    start.wait()
                    finalized.extend(_review_all(server, key))
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=work, args=(k,)) for k in reviewers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
            assert not errors, errors
            assert sorted(finalized) == sorted(a["id"] for a in submitted)
            chain = _certificates(server)
            assert [c.seq for c in chain] == list(range(1, len(submitted) + 1))
            assert len({c.appraisal_id for c in chain}) == len(submitted)
            assert len({c.prev_hash for c in chain}) == len(chain)  # no fork
            engine, sessions = server.database()
            with sessions() as session:
                assert certificates.verify(certificates.links_from_db(session)).ok
            engine.dispose()
            assert server.touchstone("certificates", "verify").exit_code == 0
        finally:
            stop(server)


# -- overturns, the public view, the signed head ----------------------------------------------


def _view(server: Server, code: str) -> dict:
    with server.client() as anyone:
        shown = anyone.get(f"/v1/certificates/{code}")
    assert shown.status_code == 200, shown.text
    return shown.json()


def _overturn(server: Server, key: str, appraisal_id: str, outcome: str) -> None:
    with server.client(key) as client:
        answer = client.post(
            f"/v1/appraisals/{appraisal_id}/overturn",
            json={"outcome": outcome, "reason": "the brand's archive says otherwise"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == outcome


def test_an_overturn_issues_a_certificate_that_supersedes_the_old(
    humans_only: Server, tiny_synthetic: Path
) -> None:
    server = humans_only
    app, alice, senior = server.key("member_backend"), server.key("reviewer"), server.key("senior")
    item = _submit(server, app, tiny_synthetic, 0, "member-4410")
    _review_all(server, alice, "authentic")
    (first,) = _certificates(server)

    _overturn(server, senior, item["id"], "counterfeit")
    chain = _certificates(server)
    assert [c.seq for c in chain] == [1, 2]
    second = chain[1]
    old, new = _view(server, first.code), _view(server, second.code)
    assert old["superseded_by"] == second.code
    assert old["body"]["outcome"] == "authentic" and old["hash_matches"]  # history stays
    assert new["superseded_by"] is None and new["hash_matches"]
    assert new["body"]["outcome"] == "counterfeit" and new["body"]["supersedes"] == first.code
    assert new["body"]["item_id"] == item["id"] and new["body"]["path"] == "human"

    _overturn(server, senior, item["id"], "authentic")  # and back, on appeal
    third = _certificates(server)[2]
    assert _view(server, second.code)["superseded_by"] == third.code
    assert _view(server, third.code)["body"]["supersedes"] == second.code
    assert server.touchstone("certificates", "verify").exit_code == 0


def test_a_final_verdict_that_overturns_the_model_issues_one_certificate(
    tmp_path: Path,
) -> None:
    """A person deciding after the model (the member asked) both finalizes and overturns: the
    finalization's certificate already says the new outcome, so the overturn adds none."""
    import datetime as dt

    from serving import certificates
    from serving.db import (
        Certificate,
        default_database_url,
        make_engine,
        make_sessionmaker,
    )
    from serving.db import upgrade as migrate
    from serving.lifecycle import Lifecycle

    engine = make_engine(default_database_url(tmp_path))
    migrate(engine)
    lifecycle = Lifecycle()
    lifecycle.on("appraisal.finalized", certificates.issue_on_finalized)
    lifecycle.on("appraisal.overturned", certificates.issue_on_overturned)
    now = dt.datetime.now(dt.UTC)
    with make_sessionmaker(engine)() as session, session.begin():
        appraisal = _auto_authentic(now)
        session.add(appraisal)
        session.flush()
        lifecycle.emit(session, "appraisal.finalized", appraisal)
        appraisal.status, appraisal.outcome, appraisal.path = "finalized", "counterfeit", "human"
        lifecycle.emit(session, "appraisal.finalized", appraisal)
        lifecycle.emit(session, "appraisal.overturned", appraisal, previous="authentic")
        outcomes = [c.body["outcome"] for c in session.scalars(select(Certificate))]
    assert outcomes == ["authentic", "counterfeit"]
    engine.dispose()


def _v1_body(appraisal_id: str) -> dict:
    """A body as version 1 wrote it, before the public fields were narrowed."""
    return {
        "version": 1,
        "item_id": appraisal_id,
        "appraisal_id": appraisal_id,
        "category": "bag",
        "brand": "Hermès",
        "anchor": True,
        "photos": [
            {"region": "logo", "round": 1, "sha256": "a" * 64, "usable": True, "p_authentic": 0.4}
        ],
        "model": {"name": "m", "version": "3", "p_authentic": 0.41, "outcome": "human"},
        "verdicts": [
            {"reviewer": 7, "stage": "double", "outcome": "authentic", "at": "2026-01-02T00:00:00Z"}
        ],
        "outcome": "authentic",
        "path": "human",
        "rule": "vip_tier",
        "submitted_at": "2026-01-01T00:00:00Z",
        "finalized_at": "2026-01-02T00:00:00Z",
        "issued_at": "2026-01-02T00:00:00Z",
        "supersedes": None,
    }


def test_the_public_view_names_no_reviewer_rule_or_tier(
    humans_only: Server, tiny_synthetic: Path
) -> None:
    """New bodies hold only what a buyer needs; an old (version 1) body is shown without its
    reviewer ids and rule, still verifies, and the chain goes on after it."""
    from serving.certificates import link_hash
    from serving.db import Certificate

    server = humans_only
    app, alice = server.key("member_backend"), server.key("reviewer")
    _submit(server, app, tiny_synthetic, 0, "member-7731")
    announce(server, "member-7732", "master")
    with server.client(app) as client:  # a VIP's, of high value: both named by the routing
        answer = client.post(
            "/v1/appraisals",
            data=form(member="member-7732", tier="master", declared_value="90000"),
            files=item_photos(tiny_synthetic, 1),
        )
        assert answer.status_code == 201, answer.text
    with server.client(server.key("reviewer")) as bob, server.client(alice) as client:
        for reviewer in (client, bob, client):  # single, then the double review's pair
            task = reviewer.post("/v1/review/claim").json()
            answer = reviewer.post(
                f"/v1/review/tasks/{task['task']['id']}/verdict", json={"outcome": "authentic"}
            )
            assert answer.status_code == 200, answer.text
    for c in _certificates(server):
        view = _view(server, c.code)
        text = json.dumps(view)
        assert set(view["body"]) == PUBLIC_BODY and not view["redacted"]
        assert {"reviewer", "verdicts", "rule", "member_tier", "anchor"}.isdisjoint(_keys(view))
        assert "master" not in text and "vip" not in text and "high_value" not in text
        assert "p_authentic" not in text  # the model's scores would teach counterfeiters
        assert set(view["body"]["photos"][0]) == {"region", "round", "sha256"}

    # An old certificate, appended as version 1 wrote it.
    engine, sessions = server.database()
    with sessions() as session, session.begin():
        head = session.scalar(select(Certificate).order_by(Certificate.seq.desc()).limit(1))
        assert head is not None
        body, seq = _v1_body("old-item"), head.seq + 1
        session.add(
            Certificate(
                seq=seq,
                code="OLDCERT00001",
                appraisal_id="old-item",
                body=body,
                prev_hash=head.hash,
                hash=link_hash(seq, "OLDCERT00001", body, head.hash),
            )
        )
    engine.dispose()
    old = _view(server, "OLDCERT00001")
    assert old["redacted"] and old["hash_matches"]
    assert {"reviewer", "verdicts", "rule", "anchor", "p_authentic", "usable"}.isdisjoint(
        _keys(old)
    )
    assert old["body"]["outcome"] == "authentic" and old["body"]["version"] == 1
    assert old["body"]["photos"] == [{"region": "logo", "round": 1, "sha256": "a" * 64}]
    assert old["body"]["model"] == {"name": "m", "version": "3"}
    _submit(server, app, tiny_synthetic, 2, "member-7733")
    _review_all(server, alice)
    assert _certificates(server)[-1].prev_hash == old["hash"]
    verified = server.touchstone("certificates", "verify")
    assert verified.exit_code == 0 and "4 certificate(s)" in verified.output, verified.output


def _keys(value: Any) -> set[str]:
    """Every key of a JSON value, at every level."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _new_key(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture
def signing(
    tmp_path: Path, database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    """A server whose chain head is signed with a key from the configuration; the commands
    run here read the same variable."""
    key = _new_key(tmp_path / "chain-key.pem")
    monkeypatch.setenv("TOUCHSTONE_CERTIFICATE_KEY", str(key))
    server = _start(tmp_path, database_url)
    yield server
    stop(server)


def _rewrite(server: Server, seq: int, outcome: str) -> None:
    """What someone who can write the database can do: change one body and recompute every
    hash from there on, so that each link checks out again."""
    from serving.certificates import link_hash
    from serving.db import Certificate

    engine, sessions = server.database()
    with sessions() as session, session.begin():
        chain = list(session.scalars(select(Certificate).order_by(Certificate.seq)))
        prev = chain[seq - 2].hash
        for c in chain[seq - 1 :]:
            if c.seq == seq:
                c.body = {**c.body, "outcome": outcome}
            c.prev_hash, c.hash = prev, link_hash(c.seq, c.code, c.body, prev)
            prev = c.hash
    engine.dispose()


def test_a_rewritten_chain_fails_against_a_signed_head_exported_earlier(
    signing: Server, tiny_synthetic: Path, tmp_path: Path
) -> None:
    from serving.db import Certificate

    server = signing
    app, alice = server.key("member_backend"), server.key("reviewer")
    for i in range(3):
        _submit(server, app, tiny_synthetic, i, f"member-62{i}")
    _review_all(server, alice)
    chain = _certificates(server)
    with server.client() as anyone:  # public, no key
        answer = anyone.get("/v1/certificates/head")
    assert answer.status_code == 200, answer.text
    head = answer.json()
    assert head["signed"] and head["signature"] and head["key_id"] and head["signed_at"]
    assert (head["seq"], head["code"], head["hash"]) == (3, chain[2].code, chain[2].hash)
    head_file = tmp_path / "head.json"
    head_file.write_text(json.dumps(head))

    public = tmp_path / "chain-key.pub"
    shown = server.touchstone("certificates", "public-key", "--out", str(public))
    assert shown.exit_code == 0, shown.output
    assert head["key_id"] in shown.output and "PUBLIC KEY" in public.read_text()
    exported = tmp_path / "head-cli.json"
    assert server.touchstone("certificates", "head", "--out", str(exported)).exit_code == 0
    assert json.loads(exported.read_text())["signed"]  # the command signs as the API does

    checked = server.touchstone("certificates", "verify", "--head", str(head_file))
    assert checked.exit_code == 0, checked.output
    assert "head seq 3" in checked.output and "signature" in checked.output
    # The chain grows past the head: the head still holds for its part.
    _submit(server, app, tiny_synthetic, 3, "member-623")
    _review_all(server, alice)
    jsonl = tmp_path / "chain.jsonl"
    assert server.touchstone("certificates", "export", "--out", str(jsonl)).exit_code == 0
    offline = ["certificates", "verify", "--file", str(jsonl), "--head", str(head_file)]
    answer = runner.invoke(cli, [*offline, "--public-key", str(public)])
    assert answer.exit_code == 0, answer.output

    # Rewrite from seq 2 on: every link checks out, only the head tells.
    _rewrite(server, 2, "counterfeit")
    assert server.touchstone("certificates", "verify").exit_code == 0
    broken = server.touchstone("certificates", "verify", "--head", str(head_file))
    assert broken.exit_code == 1, broken.output
    assert "head_mismatch" in broken.output and "seq 3" in broken.output
    jsonl_after = tmp_path / "chain-after.jsonl"
    assert server.touchstone("certificates", "export", "--out", str(jsonl_after)).exit_code == 0
    offline = ["certificates", "verify", "--file", str(jsonl_after), "--head", str(head_file)]
    assert runner.invoke(cli, [*offline, "--public-key", str(public)]).exit_code == 1

    # Cut the chain back to before the head: links are missing.
    _execute(server, delete(Certificate).where(Certificate.seq >= 3))
    assert server.touchstone("certificates", "verify").exit_code == 0
    cut = server.touchstone("certificates", "verify", "--head", str(head_file))
    assert cut.exit_code == 1 and "head_missing" in cut.output, cut.output


def test_a_head_with_a_bad_signature_fails(
    signing: Server, tiny_synthetic: Path, tmp_path: Path
) -> None:
    server = signing
    _submit(server, server.key("member_backend"), tiny_synthetic, 0, "member-5150")
    _review_all(server, server.key("reviewer"))
    with server.client() as anyone:
        head = anyone.get("/v1/certificates/head").json()

    def check(name: str, changed: dict, *more: str) -> Any:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**head, **changed}))
        return server.touchstone("certificates", "verify", "--head", str(path), *more)

    assert check("genuine", {}).exit_code == 0
    signature = bytearray(base64.b64decode(head["signature"]))
    signature[0] ^= 1
    forged = check("flipped", {"signature": base64.b64encode(bytes(signature)).decode()})
    assert forged.exit_code == 1 and "bad_signature" in forged.output, forged.output
    # A head that claims another time (or seq, or hash) than was signed.
    assert check("retimed", {"signed_at": "2020-01-01T00:00:00Z"}).exit_code == 1
    other = _new_key(tmp_path / "other-key.pem")
    wrong = check("genuine-other-key", {}, "--public-key", str(other))
    assert wrong.exit_code == 1 and "wrong_key" in wrong.output, wrong.output
    unsigned = check("unsigned", {"signed": False, "signature": None, "key_id": None})
    assert unsigned.exit_code == 1 and "unsigned" in unsigned.output, unsigned.output
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    answer = server.touchstone("certificates", "verify", "--head", str(garbled))
    assert answer.exit_code == 2, answer.output


def test_without_a_key_the_head_is_served_unsigned(humans_only: Server, tmp_path: Path) -> None:
    from serving.certificates import GENESIS

    server = humans_only
    with server.client() as anyone:
        empty = anyone.get("/v1/certificates/head")
        assert empty.status_code == 200, empty.text
        head = empty.json()
    assert head["seq"] == 0 and head["hash"] == GENESIS and head["code"] is None
    assert head["signed"] is False and head["signature"] is None and head["key_id"] is None
    path = tmp_path / "head.json"
    path.write_text(json.dumps(head))
    refused = server.touchstone("certificates", "verify", "--head", str(path))
    assert refused.exit_code == 1 and "unsigned" in refused.output, refused.output
    accepted = server.touchstone("certificates", "verify", "--head", str(path), "--unsigned")
    assert accepted.exit_code == 0, accepted.output
    nokey = server.touchstone("certificates", "public-key")
    assert nokey.exit_code == 2 and "TOUCHSTONE_CERTIFICATE_KEY" in nokey.output


def test_a_bad_certificate_key_stops_the_start(tmp_path: Path) -> None:
    from serving.settings import SettingsError, load_settings

    not_a_key = tmp_path / "chain-key.pem"
    not_a_key.write_text("-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SettingsError, match=r"chain-key\.pem"):
        load_settings(data_dir=tmp_path, certificate_key=not_a_key)
    with pytest.raises(SettingsError, match=r"missing\.pem"):
        load_settings(data_dir=tmp_path, certificate_key=tmp_path / "missing.pem")
    good = load_settings(data_dir=tmp_path, certificate_key=_new_key(tmp_path / "good.pem"))
    assert good.certificate_signing_key() is not None
