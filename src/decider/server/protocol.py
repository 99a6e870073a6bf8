"""uvicorn's HTTP/1.1, with the limits a service on a network needs.

uvicorn arms its idle timer only once a response is sent and cancels it on any byte, so a
connection that never sends a request, or sends its headers a byte at a time (slowloris),
stays open for ever. Here a connection has the idle timeout (DECIDER_IDLE_TIMEOUT_S) to send
a whole request, headers and body, counted from the connection or from the first byte after
a response, however slowly it trickles (pipelined requests too); and a client that stops
reading what it is sent has as long before the connection is dropped. Headers over the
limit (DECIDER_MAX_HEADER_BYTES) are answered 431 with problem details, where uvicorn says
only "Invalid HTTP request received".
"""

from __future__ import annotations

import asyncio

import h11
import msgspec
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)
from uvicorn.protocols.http.h11_impl import H11Protocol

from decider.model import problem

_TOO_LARGE = msgspec.json.encode(
    problem(431, "headers_too_large", "the request's headers are over DECIDER_MAX_HEADER_BYTES")
)


def header_limit(max_bytes: int) -> type:
    """ASGI middleware refusing requests whose headers, together, are over `max_bytes`: the
    HTTP layer bounds only headers that arrive in pieces."""

    class HeaderLimit:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > max_bytes:
                start: HTTPResponseStartEvent = {
                    "type": "http.response.start",
                    "status": 431,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(_TOO_LARGE)).encode()),
                    ],
                }
                await send(start)
                body: HTTPResponseBodyEvent = {
                    "type": "http.response.body",
                    "body": _TOO_LARGE,
                    "more_body": False,
                }
                await send(body)
                return
            await self.app(scope, receive, send)

    return HeaderLimit


class GuardedH11Protocol(H11Protocol):
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request, already received
        self._watch()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        buffered = len(getattr(self.conn, "_receive_buffer", b""))
        if buffered <= (self.config.h11_max_incomplete_event_size or 16 * 1024):
            super().send_400_response(msg)
            return
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/problem+json\r\n"
            b"connection: close\r\n"
            b"content-length: " + str(len(_TOO_LARGE)).encode() + b"\r\n\r\n"
        )
        self.transport.write(head + _TOO_LARGE)
        self.transport.close()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.timeout_keep_alive, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _waiting(self) -> bool:
        """Between requests: none yet, or the last one answered."""
        return self.cycle is None or self.cycle.response_complete

    def _owed(self) -> bool:
        """Whether the client owes something: a request (its headers, or a body begun), or
        room to write into (it does not read what it is sent)."""
        return self._waiting() or self.conn.their_state is h11.SEND_BODY or self.flow.write_paused

    def _watch(self) -> None:
        """The deadline runs while the client owes something, from when it began to; not while
        the app works on a request."""
        if not self._owed():
            self._disarm()
        elif self._deadline is None:
            self._arm()

    def _expire(self) -> None:
        self._deadline = None
        if self._waiting() and not self.flow.write_paused:
            self.timeout_keep_alive_handler()
        elif self._owed():  # a body never finished, or a reader that never reads
            self.transport.abort()
