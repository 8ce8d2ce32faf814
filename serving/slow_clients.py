"""Deadlines for slow or stalled clients. uvicorn waits for a request's head and body as long
as the client likes, so a client that sends part of a request, then stalls, would hold its
connection (and, with uvicorn's concurrency limit, a place among the connections served)
forever. `touchstone serve` runs the app with both deadlines:

- `RequestBodyTimeout` (ASGI): the body must arrive within its deadline, else 408;
- `head_deadline_protocol` (uvicorn's HTTP protocol): the head of each request (its line and
  headers) must arrive within its deadline of the connection opening or of the previous
  response, else the connection is closed. uvicorn's keep-alive timeout alone stops at the
  first byte of a request, so a client sending headers a byte at a time was never cut off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import error_body

log = logging.getLogger("touchstone.serving")


class RequestBodyTimeout:
    """Answer 408 `request_timeout` and close the connection when a request body has not fully
    arrived `seconds` after the app first asks for it.

    The whole body counts, not the gap between its pieces: a client dripping a byte now and
    then is cut off too. Once the body is in, waiting for a disconnect is not limited."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        body_done = False
        timed_out = False
        answered = False

        async def receive_in_time() -> Message:
            nonlocal deadline, body_done, timed_out
            if body_done:
                return await receive()
            if timed_out:
                return {"type": "http.disconnect"}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.seconds if deadline is None else deadline
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                # To the app, the client is gone: it stops reading (serving/routers/forms.py
                # answers a 400, which is replaced below) and nothing half-read is used.
                timed_out = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def send_or_replace(message: Message) -> None:
            # After a timeout, whatever the app answers (its routes map a failed body read in
            # their own ways) becomes this one 408, which also closes the connection.
            nonlocal answered
            if not timed_out:
                await send(message)
            elif not answered and message["type"] == "http.response.start":
                answered = True
                await self._answer_408(send)

        await self.app(scope, receive_in_time, send_or_replace)
        if timed_out and not answered:
            await self._answer_408(send)
        if timed_out:
            log.warning(
                "a request body did not arrive within %ss: 408, connection closed", self.seconds
            )

    def _message(self) -> str:
        return f"the request body did not arrive within {self.seconds:g} s"

    async def _answer_408(self, send: Send) -> None:
        response = JSONResponse(
            error_body("request_timeout", self._message()),
            status_code=408,
            headers={"Connection": "close"},
        )
        await response({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def head_deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools, else h11), closing a connection whose next request
    head has not arrived `seconds` after the connection opened or the last response ended."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeadDeadline(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._expect_head()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._expect_head()

        def _expect_head(self) -> None:
            # A request whose head has arrived has a cycle of its own; if the cycle is still
            # the one of now when time is up, no head came: close.
            before = self.cycle

            def expire() -> None:
                if self.cycle is before and not self.transport.is_closing():
                    log.warning("no request head within %ss: connection closed", seconds)
                    self.transport.close()

            self.loop.call_later(seconds, expire)

    return HeadDeadline
