"""The chain's head, signed, and checking a chain against a head kept from earlier.

`verify` alone catches an edit that leaves later links alone; someone who can write the
database can recompute every hash from the edit to the end, and the chain checks out again. A
head kept outside the database anchors it: the chain must still hold that seq with that hash,
so a rewrite of anything up to it (or a cut before it) shows. The signature (Ed25519, the key
from the service's configuration) proves the head came from the service, so whoever rewrote the
database cannot also hand over a head that fits the rewritten chain.

Signed, exactly: the UTF-8 bytes of `canonical({"purpose": PURPOSE, "seq": seq, "code": code,
"hash": hash, "signed_at": signed_at})` (see `serving.certificates.canonical`); the signature is
written in base64, and `key_id` is the first 16 hex digits of sha256 of the raw 32-byte public
key. An empty chain's head is seq 0 with 64 zeros for its hash.

With no key configured the head is served unsigned (`signed: false`) rather than signed with a
key the service makes itself: such a key would live beside the database, where whoever rewrites
the one can read the other.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.certificates import GENESIS, Break, Link, Verification, canonical, verify
from serving.db import Certificate, iso_utc, utcnow

PURPOSE = "touchstone certificate chain head"
_HEX64 = frozenset("0123456789abcdef")


class CertificateKeyError(ValueError):
    """A key file that cannot be used; the message says why."""


@functools.lru_cache(maxsize=8)
def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file (unencrypted PKCS#8, as `openssl genpkey
    -algorithm ed25519` writes it). Read once per path: a new key needs a restart."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateKeyError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise CertificateKeyError(f"{path} holds no Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM file; a private key's file gives its public half."""
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateKeyError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise CertificateKeyError(f"{path} holds no Ed25519 public key")
    return key


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateKeyError(f"cannot read the key file {path}: {exc.strerror}") from exc


def new_signing_key() -> bytes:
    """A fresh Ed25519 private key as PEM (PKCS#8, unencrypted: protect the file instead)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signed_form(head: dict[str, Any]) -> bytes:
    """The bytes a head's signature covers (see the module's doc)."""
    return canonical(
        {
            "purpose": PURPOSE,
            "seq": head["seq"],
            "code": head["code"],
            "hash": head["hash"],
            "signed_at": head["signed_at"],
        }
    )


def chain_head(session: Session, key: Ed25519PrivateKey | None) -> dict[str, Any]:
    """The newest link (seq 0 and 64 zeros when there is none), signed now when `key` is
    given."""
    newest = session.scalar(select(Certificate).order_by(Certificate.seq.desc()).limit(1))
    head: dict[str, Any] = {
        "seq": newest.seq if newest is not None else 0,
        "code": newest.code if newest is not None else None,
        "hash": newest.hash if newest is not None else GENESIS,
        "created_at": iso_utc(newest.created_at) if newest is not None else None,
        "signed_at": iso_utc(utcnow()),
        "signed": key is not None,
        "key_id": None,
        "signature": None,
    }
    if key is not None:
        head["key_id"] = key_id(key.public_key())
        head["signature"] = base64.b64encode(key.sign(signed_form(head))).decode("ascii")
    return head


def read_head(text: str) -> dict[str, Any]:
    """A head as `GET /v1/certificates/head` or `touchstone certificates head` wrote it;
    ValueError names what is missing or malformed."""
    head = json.loads(text)
    if not isinstance(head, dict):
        raise ValueError("a head is a JSON object")
    seq, digest, code = head.get("seq"), head.get("hash"), head.get("code")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError("the head's seq must be a whole number >= 0")
    if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX64:
        raise ValueError("the head's hash must be 64 lowercase hex digits")
    if code is not None and not isinstance(code, str):
        raise ValueError("the head's code must be text")
    if not isinstance(head.get("signed_at"), str):
        raise ValueError("the head has no signed_at time")
    return head


def signature_problem(
    head: dict[str, Any], public_key: Ed25519PublicKey | None, allow_unsigned: bool
) -> Break | None:
    """Why the head's signature does not hold, or None. `public_key` may be None only for an
    unsigned head."""
    seq, code = head["seq"], head.get("code") or "-"
    signature = head.get("signature")
    if not signature:
        if allow_unsigned:
            return None
        return Break(
            seq,
            code,
            "unsigned",
            "the head carries no signature, so it does not show who wrote it; "
            "--unsigned checks its seq and hash alone",
        )
    if public_key is None:
        raise CertificateKeyError("a signed head needs a public key to check it with")
    expected = key_id(public_key)
    if head.get("key_id") != expected:
        return Break(
            seq,
            code,
            "wrong_key",
            f"the head names key {head.get('key_id')}; the public key given is {expected}",
        )
    try:
        public_key.verify(base64.b64decode(signature, validate=True), signed_form(head))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return Break(
            seq,
            code,
            "bad_signature",
            f"the signature does not match the head's seq, code, hash and time under key "
            f"{expected}: the head was altered or forged",
        )
    return None


def verify_with_head(
    links: Iterable[Link],
    head: dict[str, Any],
    public_key: Ed25519PublicKey | None,
    allow_unsigned: bool = False,
) -> Verification:
    """`verify`, and then: the head's signature holds, and the chain still has the head's seq
    with the head's code and hash. The first problem is the result's `broken`."""
    forged = signature_problem(head, public_key, allow_unsigned)
    if forged is not None:
        return Verification(0, None, forged)
    seen: list[Link] = []

    def watch(chain: Iterable[Link]) -> Iterator[Link]:
        for link in chain:
            if link.seq == head["seq"]:
                seen.append(link)
            yield link

    result = verify(watch(links))
    if not result.ok or head["seq"] == 0:
        return result
    at, signed_at = head["seq"], head["signed_at"]
    if not seen:
        end = result.head.seq if result.head is not None else 0
        return Verification(
            result.links,
            result.head,
            Break(
                at,
                head.get("code") or "-",
                "head_missing",
                f"the chain ends at seq {end}, before the head's seq {at} (signed at "
                f"{signed_at}): links were deleted",
            ),
        )
    link = seen[0]
    if link.hash != head["hash"] or link.code != head.get("code"):
        return Verification(
            result.links,
            result.head,
            Break(
                at,
                link.code,
                "head_mismatch",
                f"seq {at} is now code {link.code} hash {link.hash}; the head signed at "
                f"{signed_at} says code {head.get('code')} hash {head['hash']}: the chain up "
                "to it was rewritten",
            ),
        )
    return result
