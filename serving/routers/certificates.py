"""`/v1/certificates`: anyone holding a certificate code can see and check it, and anyone can
read the chain's signed head."""

from __future__ import annotations

import re
from asyncio import to_thread

from fastapi import APIRouter

from serving import certificate_head, certificates
from serving.deps import SessionsDep, SettingsDep
from serving.errors import ApiError
from serving.schemas.certificates import CertificateView, ChainHead

router = APIRouter(prefix="/v1/certificates", tags=["certificates"])

_CODE = re.compile(r"[0-9A-Za-z]{1,32}")


# Before `/{code}`, which would take "head" for a code.
@router.get("/head", response_model=ChainHead)
async def show_head(sessions: SessionsDep, settings: SettingsDep) -> ChainHead:
    """The newest link's seq, code and hash, signed now with the service's key (unsigned when
    none is configured). Public: keep one elsewhere, and `touchstone certificates verify
    --head` later proves that nothing up to it was rewritten."""
    key = settings.certificate_signing_key()

    def read() -> ChainHead:
        with sessions() as session:
            return ChainHead(**certificate_head.chain_head(session, key))

    return await to_thread(read)


@router.get("/{code}", response_model=CertificateView)
async def show_certificate(code: str, sessions: SessionsDep) -> CertificateView:
    """What a buyer needs of the certificate (outcome, item, photo hashes, dates, model
    version), its link in the chain (prev_hash, hash), whether its hash still matches its
    content, and the certificate that supersedes it. Public: no key needed; it names no
    member, reviewer or routing rule."""
    if not _CODE.fullmatch(code):
        raise ApiError(404, "not_found", "no such certificate")

    def read() -> CertificateView | None:
        with sessions() as session:
            return certificates.public_view(session, code.upper())

    view = await to_thread(read)
    if view is None:
        raise ApiError(404, "not_found", "no such certificate")
    return view
