"""Certificates: each final outcome of an appraisal gets one, a link in a hash chain.

A listener on `appraisal.finalized` (added by `serving.lifecycle`) issues the certificate in the
transaction of the verdict, so the verdict and its certificate commit together or not at all.
Gold items get none. Every later change of the final outcome (`appraisal.overturned`: a senior's
correction, an appeal) issues a new certificate whose body names the one it supersedes; the old
one stays in the chain (nothing in the chain is ever edited) and its public view names the new.

The body (version 2) holds only what a buyer needs, so that anyone holding the code sees it all
and can recompute its link: the item (its appraisal id), category and brand, the photo hashes
(sha256 of the clean stored bytes, per region and round), the model's name and version, the
final outcome and path (auto: the model alone; human: a person decided), the submission,
finalization and issue times, and the code it supersedes. Never the member id or tier (the chain
outlives erasure), a reviewer's key id, the routing rule or the model's scores (they would teach
a counterfeiter where the model is unsure). Version 1 bodies (before this) also held reviewer ids,
scores and the rule; they stay as they were, hashed, and the public view shows only the fields
above (`redacted`).

The chain, exactly (so that anyone can recompute it):

    hash = sha256(canonical({"seq": seq, "code": code, "body": body, "prev_hash": prev_hash}))

where `canonical(x)` is `json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
encoded as UTF-8 (keys sorted at every level, no whitespace, non-ASCII as itself), and the hash is
written as 64 lowercase hex digits. `seq` counts from 1 without gaps; `prev_hash` is the previous
certificate's `hash`, and 64 zeros for the first. Numbers in bodies are JSON numbers as Python
writes them (`repr` of a float); timestamps are ISO 8601 strings in UTC. The head of the chain is
signed and checked in `serving.certificate_head`.

Linearity: on PostgreSQL the issuer takes a transaction-level advisory lock before it reads the
head, so concurrent finalizations append one after another; on SQLite the verdict's transaction
already holds the database's write lock when it gets here. `seq` is the primary key, so a race
could only fail a transaction, never fork the chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from serving.db import Appraisal, Certificate, Photo, iso_utc, utcnow
from serving.schemas.certificates import CertificateView

GENESIS = "0" * 64
VERSION = 2
# What a buyer sees of any body, old or new (version 2 bodies hold exactly these).
PUBLIC_FIELDS = (
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
)
CODE_LENGTH = 12  # base32: 60 random bits
_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ0123456789"  # Crockford-like, no I/L/O/U
# pg_advisory_xact_lock key for "the certificate chain": any constant, the same everywhere.
ADVISORY_LOCK_KEY = 0x7C3E_71F1


def canonical(value: Any) -> bytes:
    """The canonical JSON the chain hashes (see the module's doc)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def link_hash(seq: int, code: str, body: dict[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(
        canonical({"seq": seq, "code": code, "body": body, "prev_hash": prev_hash})
    ).hexdigest()


def new_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(CODE_LENGTH))


def body_for(session: Session, appraisal: Appraisal, issued_at: dt.datetime) -> dict[str, Any]:
    photos = session.execute(
        select(Photo.region, Photo.round, Photo.sha256)
        .where(Photo.appraisal_id == appraisal.id)
        .order_by(Photo.id)
    ).all()
    previous = _latest_of(session, appraisal.id)
    return {
        "version": VERSION,
        "item_id": appraisal.id,  # an item is appraised once: its id is the appraisal's
        "appraisal_id": appraisal.id,
        "category": appraisal.category,
        "brand": appraisal.brand,
        "photos": [
            {"region": region, "round": round_, "sha256": sha256}
            for region, round_, sha256 in photos
        ],
        "model": {"name": appraisal.model_name, "version": appraisal.model_version},
        "outcome": appraisal.outcome,
        "path": appraisal.path,
        "submitted_at": iso_utc(appraisal.created_at),
        "finalized_at": iso_utc(appraisal.finalized_at),
        "issued_at": iso_utc(issued_at),
        "supersedes": previous.code if previous is not None else None,
    }


def _latest_of(session: Session, appraisal_id: str) -> Certificate | None:
    return session.scalar(
        select(Certificate)
        .where(Certificate.appraisal_id == appraisal_id)
        .order_by(Certificate.seq.desc())
        .limit(1)
    )


def lock_chain(session: Session) -> None:
    """Serialize appenders until this transaction ends (PostgreSQL; SQLite already is)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})


def issue(session: Session, appraisal: Appraisal) -> Certificate | None:
    """Append the appraisal's certificate to the chain, in the caller's transaction."""
    if appraisal.is_gold:
        return None
    now = utcnow()
    body = body_for(session, appraisal, now)
    lock_chain(session)
    head = session.scalar(select(Certificate).order_by(Certificate.seq.desc()).limit(1))
    seq = head.seq + 1 if head is not None else 1
    prev_hash = head.hash if head is not None else GENESIS
    code = new_code()
    certificate = Certificate(
        seq=seq,
        code=code,
        appraisal_id=appraisal.id,
        body=body,
        prev_hash=prev_hash,
        hash=link_hash(seq, code, body, prev_hash),
        created_at=now,
    )
    session.add(certificate)
    session.flush()
    return certificate


def issue_on_finalized(session: Session, appraisal: Appraisal, _: dict[str, Any]) -> None:
    """The `appraisal.finalized` listener."""
    issue(session, appraisal)


def issue_on_overturned(session: Session, appraisal: Appraisal, _: dict[str, Any]) -> None:
    """The `appraisal.overturned` listener: the final outcome changed, so a new certificate
    supersedes the standing one. A person's verdict over the model's is announced as finalized
    and then as overturned; the finalization's certificate already says the new outcome, so
    none is added for the overturn then."""
    standing = _latest_of(session, appraisal.id)
    if standing is not None and standing.body.get("outcome") == appraisal.outcome:
        return
    issue(session, appraisal)


# -- reading and checking ---------------------------------------------------------------------


def public_body(body: dict[str, Any]) -> dict[str, Any]:
    """What a buyer sees of a body: `PUBLIC_FIELDS`, each photo's region, round and hash, the
    model's name and version. A version 2 body comes back whole (equal to itself)."""
    shown = {name: body[name] for name in PUBLIC_FIELDS if name in body}
    shown["photos"] = [
        {"region": p.get("region"), "round": p.get("round"), "sha256": p.get("sha256")}
        for p in body.get("photos") or []
    ]
    model = body.get("model") or {}
    shown["model"] = {"name": model.get("name"), "version": model.get("version")}
    return shown


def public_view(session: Session, code: str) -> CertificateView | None:
    """What anyone holding the code may see: the certificate's public fields, its link, and the
    certificate of the same appraisal that supersedes it, if any."""
    certificate = session.scalar(select(Certificate).where(Certificate.code == code))
    if certificate is None:
        return None
    successor = session.scalar(
        select(Certificate.code)
        .where(
            Certificate.appraisal_id == certificate.appraisal_id,
            Certificate.seq > certificate.seq,
        )
        .order_by(Certificate.seq)
        .limit(1)
    )
    intact = certificate.hash == link_hash(
        certificate.seq, certificate.code, certificate.body, certificate.prev_hash
    )
    shown = public_body(certificate.body)
    return CertificateView(
        seq=certificate.seq,
        code=certificate.code,
        body=shown,
        redacted=shown != certificate.body,
        prev_hash=certificate.prev_hash,
        hash=certificate.hash,
        created_at=iso_utc(certificate.created_at),
        hash_matches=intact,
        superseded_by=successor,
    )


@dataclass(frozen=True)
class Link:
    seq: int
    code: str
    body: dict[str, Any]
    prev_hash: str
    hash: str
    created_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "code": self.code,
            "body": self.body,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Break:
    seq: int
    code: str
    problem: str  # body_edited, prev_hash_mismatch, seq_gap
    message: str


@dataclass(frozen=True)
class Verification:
    links: int
    head: Link | None
    broken: Break | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def links_from_db(session: Session, batch: int = 1000) -> Iterator[Link]:
    query = select(Certificate).order_by(Certificate.seq).execution_options(yield_per=batch)
    for c in session.scalars(query):
        yield Link(c.seq, c.code, c.body, c.prev_hash, c.hash, iso_utc(c.created_at))


def links_from_jsonl(lines: Iterable[str]) -> Iterator[Link]:
    for line in lines:
        if line.strip():
            row = json.loads(line)
            yield Link(
                int(row["seq"]),
                str(row["code"]),
                row["body"],
                str(row["prev_hash"]),
                str(row["hash"]),
                row.get("created_at"),
            )


def verify(links: Iterable[Link]) -> Verification:
    """Walk the chain from seq 1 and name the first broken link."""
    expected_seq, expected_prev, count, head = 1, GENESIS, 0, None
    for link in links:
        if link.seq != expected_seq:
            return Verification(
                count,
                head,
                Break(
                    link.seq,
                    link.code,
                    "seq_gap",
                    f"expected seq {expected_seq}, found {link.seq}",
                ),
            )
        if link.prev_hash != expected_prev:
            return Verification(
                count,
                head,
                Break(
                    link.seq,
                    link.code,
                    "prev_hash_mismatch",
                    f"prev_hash {link.prev_hash} is not the previous link's hash {expected_prev}",
                ),
            )
        recomputed = link_hash(link.seq, link.code, link.body, link.prev_hash)
        if recomputed != link.hash:
            return Verification(
                count,
                head,
                Break(
                    link.seq,
                    link.code,
                    "body_edited",
                    f"the stored hash {link.hash} does not match its content ({recomputed}): "
                    "the body, code or seq was changed",
                ),
            )
        count, head = count + 1, link
        expected_seq, expected_prev = link.seq + 1, link.hash
    return Verification(count, head, None)
