"""Certificates (a hash chain over finalized appraisals) and member erasure, through a real
server with no model: every upload goes to people, who finalize it."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from cli import app as cli
from tests.serving_support import Server, form, item_photos, postgres_database, start_server, stop

runner = CliRunner()


def _start(tmp_path: Path, database_url: str | None = None) -> Server:
    return start_server(tmp_path / "data", None, database_url, extra=["--sla-sweep-seconds", "5"])


@pytest.fixture
def humans_only(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    server = _start(tmp_path, database_url)
    yield server
    stop(server)


def _sessions(server: Server):  # -> tuple[Engine, sessionmaker]
    from serving.db import default_database_url, make_engine, make_sessionmaker

    engine = make_engine(server.database_url or default_database_url(server.data_dir))
    return engine, make_sessionmaker(engine)


def _touchstone(server: Server, *args: str) -> Any:
    return runner.invoke(
        cli,
        [*args, "--data-dir", str(server.data_dir)],
        env={"TOUCHSTONE_DATABASE_URL": server.database_url},  # None: unset, SQLite
    )


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
            assert answer.json()["status"] == "finalized"
            done.append(task["appraisal"]["id"])


def _certificates(server: Server) -> list[Any]:
    from serving.db import Certificate

    engine, sessions = _sessions(server)
    with sessions() as session:
        found = list(session.scalars(select(Certificate).order_by(Certificate.seq)))
    engine.dispose()
    return found


def _execute(server: Server, statement: Any) -> None:
    engine, sessions = _sessions(server)
    with sessions() as session, session.begin():
        session.execute(statement)
    engine.dispose()


def test_finalized_appraisals_get_certificates_in_a_verifiable_chain(
    humans_only: Server, tiny_synthetic: Path, tmp_path: Path
) -> None:
    from serving.certificates import GENESIS, link_hash
    from serving.db import Certificate

    server = humans_only
    app, alice, admin = server.key("app"), server.key("reviewer"), server.key("admin")
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
            assert body["verdicts"][0]["outcome"] == "authentic"
            assert body["verdicts"][0]["stage"] == "review"
            assert isinstance(body["verdicts"][0]["reviewer"], int)
            assert body["model"]["name"] is None  # no model: people decided
            assert body["finalized_at"] and body["submitted_at"] and body["issued_at"]
        missing = anyone.get("/v1/certificates/NOSUCHCODE00")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"

    verified = _touchstone(server, "certificates", "verify")
    assert verified.exit_code == 0, verified.output
    assert "intact" in verified.output and "3 certificate(s)" in verified.output

    head_file = tmp_path / "head.json"
    exported = _touchstone(server, "certificates", "head", "--out", str(head_file))
    assert exported.exit_code == 0, exported.output
    head = json.loads(head_file.read_text())
    assert head["seq"] == 3 and head["code"] == chain[2].code and head["hash"] == chain[2].hash
    assert head["created_at"]

    jsonl = tmp_path / "chain.jsonl"
    assert _touchstone(server, "certificates", "export", "--out", str(jsonl)).exit_code == 0
    offline = runner.invoke(cli, ["certificates", "verify", "--file", str(jsonl)])
    assert offline.exit_code == 0, offline.output

    # Tamper with the body of certificate 2.
    second = chain[1]
    edited = {**second.body, "outcome": "counterfeit"}
    _execute(server, update(Certificate).where(Certificate.seq == 2).values(body=edited))
    broken = _touchstone(server, "certificates", "verify")
    assert broken.exit_code == 1, broken.output
    assert "seq 2" in broken.output and second.code in broken.output
    assert "body_edited" in broken.output
    with server.client() as anyone:
        assert not anyone.get(f"/v1/certificates/{second.code}").json()["hash_matches"]
    _execute(server, update(Certificate).where(Certificate.seq == 2).values(body=second.body))
    assert _touchstone(server, "certificates", "verify").exit_code == 0

    # Separately: point certificate 2 at another previous hash.
    _execute(server, update(Certificate).where(Certificate.seq == 2).values(prev_hash="f" * 64))
    broken = _touchstone(server, "certificates", "verify")
    assert broken.exit_code == 1
    assert "seq 2" in broken.output and "prev_hash_mismatch" in broken.output
    _execute(
        server, update(Certificate).where(Certificate.seq == 2).values(prev_hash=second.prev_hash)
    )
    assert _touchstone(server, "certificates", "verify").exit_code == 0

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


def test_a_second_finalization_supersedes_the_certificate(tmp_path: Path) -> None:
    """An appraisal finalized again (an overturn) gets a new link naming the old one."""
    import datetime as dt

    from serving import certificates
    from serving.db import Appraisal, default_database_url, make_engine, make_sessionmaker
    from serving.db import upgrade as migrate

    engine = make_engine(default_database_url(tmp_path))
    migrate(engine)
    sessions = make_sessionmaker(engine)
    now = dt.datetime.now(dt.UTC)
    with sessions() as session, session.begin():
        appraisal = Appraisal(
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
    app, alice, admin = server.key("app"), server.key("reviewer"), server.key("admin")
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

    engine, sessions = _sessions(server)
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
    assert _touchstone(server, "certificates", "verify").exit_code == 0
    chain = {c.appraisal_id: c for c in _certificates(server)}
    with server.client() as anyone:
        view = anyone.get(f"/v1/certificates/{chain[own['id']].code}").json()
        assert [p["sha256"] for p in view["body"]["photos"]] == _hashes(own)
        assert view["hash_matches"]

    # The training export leaves the member out.
    out = tmp_path / "export" / "reviews.csv"
    exported = _touchstone(server, "data", "export-reviews", "--out", str(out))
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
            app = server.key("app")
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
            engine, sessions = _sessions(server)
            with sessions() as session:
                assert certificates.verify(certificates.links_from_db(session)).ok
            engine.dispose()
            assert _touchstone(server, "certificates", "verify").exit_code == 0
        finally:
            stop(server)
