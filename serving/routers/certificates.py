"""`/v1/certificates/{code}`: anyone holding a certificate code can see and check it."""

from __future__ import annotations

import re
from asyncio import to_thread

from fastapi import APIRouter

from serving import certificates
from serving.deps import SessionsDep
from serving.errors import ApiError
from serving.schemas.certificates import CertificateView

router = APIRouter(prefix="/v1/certificates", tags=["certificates"])

_CODE = re.compile(r"[0-9A-Za-z]{1,32}")


@router.get("/{code}", response_model=CertificateView)
async def show_certificate(code: str, sessions: SessionsDep) -> CertificateView:
    """The certificate, its link in the chain (prev_hash, hash) and whether its hash still
    matches its content. Public: no key needed; it names no member."""
    if not _CODE.fullmatch(code):
        raise ApiError(404, "not_found", "no such certificate")

    def read() -> CertificateView | None:
        with sessions() as session:
            return certificates.public_view(session, code.upper())

    view = await to_thread(read)
    if view is None:
        raise ApiError(404, "not_found", "no such certificate")
    return view
