"""uvicorn's HTTP/1.1 (httptools), with the limits a service on a network needs.

uvicorn arms its idle timer only once a response is sent and cancels it on any byte, so a
connection that never sends a request, or sends its head a byte at a time (slowloris), stays
open for ever; and httptools bounds no head. Here a connection has the idle timeout
(DECIDER_IDLE_TIMEOUT_S) to send a whole request, head and body, however slowly it trickles:
the clock runs while the client owes something (a request, the rest of one, or reading what
it is sent) and stops while the app works on a request it has whole. A head still unfinished
past DECIDER_MAX_HEADER_BYTES is answered 431, and a request that is not HTTP/1.1 a 400, both
with problem details and after the answers owed to requests pipelined before it. An upgrade
(WebSocket, h2c) is declined: the request is answered in HTTP/1.1, and the connection closed.
uvicorn writes a response's head and its body apart; here what is written in one pass of the
loop goes out in one write (one system call, one TCP segment): +15% requests/s for a small
JSON answer on this machine.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from decider.model import PROBLEM_JSON, problem

_TOO_LARGE = msgspec.json.encode(
    problem(431, "headers_too_large", "the request's headers are over DECIDER_MAX_HEADER_BYTES")
)
_MALFORMED = msgspec.json.encode(
    problem(400, "http_error", "the request is not well-formed HTTP/1.1")
)
_CLOSE = (b"connection", b"close")


def _problem_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", b"%d" % len(body))]


_TOO_LARGE_HEADERS = _problem_headers(_TOO_LARGE)


def header_limit(max_bytes: int) -> type:
    """ASGI middleware refusing requests whose headers, together, are over `max_bytes`: the
    HTTP layer bounds only heads still unfinished when a read ends."""

    class HeaderLimit:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > max_bytes:
                start: HTTPResponseStartEvent = {
                    "type": "http.response.start",
                    "status": 431,
                    "headers": _TOO_LARGE_HEADERS,
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


class _Corked:
    """A transport whose writes in one pass of the event loop are sent as one, at its end;
    closing sends them first, aborting drops them. All else is the transport's own."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 16 * 1024
    _deadline: asyncio.TimerHandle | None = None
    _refusal: tuple[int, bytes] | None = None  # a 400 or 431, and its body
    _answering: RequestResponseCycle | None = None  # the app's; self.cycle is the last read
    _in_message = False  # from a request's first byte to its last
    _in_body = False  # from the end of its head to its last byte
    _head_bytes = 0  # of reads that were all head, since a head last ended

    @staticmethod
    def limited(max_bytes: int) -> type[GuardedHttpToolsProtocol]:
        """The protocol answering 431 to a head still unfinished past `max_bytes`."""

        class Limited(GuardedHttpToolsProtocol):
            max_header_bytes = max_bytes

        return Limited

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ws_protocol_class = None  # no WebSockets here: an upgrade is declined

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _Corked(transport, self.loop)  # type: ignore[assignment]
        self._arm()

    def data_received(self, data: bytes) -> None:
        # a read that begins outside a body is head, unless a head ends in it (the count is
        # reset there): the start of a head read with the end of the request before it goes
        # uncounted, but no body or earlier request is ever taken for head
        if not self._in_body:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes > self.max_header_bytes:
            self._refuse(431, _TOO_LARGE)
        self._watch()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, _MALFORMED)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()  # may raise (a path not ASCII, say): a 400, in turn
        self._head_bytes = 0
        self._in_body = True
        if not self.pipeline:  # started, not queued
            self._answering = self.cycle
        if self.parser.should_upgrade():
            # declined (RFC 9110 section 7.8): what follows the head, a body too, is in the
            # other protocol, so this answer is the connection's last
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self._in_message = self._in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.pipeline:
            self._answering = self.pipeline[-1][0]  # the next one, which uvicorn starts
        super().on_response_complete()  # may start a pipelined request, already received
        idle = self.timeout_keep_alive_task  # uvicorn's; any byte would cancel it
        if idle is not None:  # the deadline's instead: one timer, not two
            self.timeout_keep_alive_task = None
            if self._deadline is None:
                self._deadline = idle
            else:
                idle.cancel()
        if self._refusal is not None:
            self._refuse(*self._refusal)
        self._watch()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        # uvicorn tells only the last request read, so one answering while others queue
        # would write to the closed transport (uvloop raises) and log an error
        if self._answering is not None and not self._answering.response_complete:
            self._answering.disconnected = True
            self._answering.message_event.set()
        super().connection_lost(exc)

    def _unsupported_upgrade_warning(self) -> None:
        """Nothing: a declined upgrade is ordinary here, and uvicorn's warning would advise
        installing a WebSocket library."""

    def _refuse(self, status: int, body: bytes) -> None:
        """Answer `status` with problem details `body`, and close; once the answers owed to
        requests before this one are sent (reading waits meanwhile)."""
        if self.transport.is_closing():
            return
        self._refusal = self._refusal or (status, body)
        # a request queued, or one answering while this one's head came (in a body, this
        # one is the last request begun, self.cycle, and the answer owed is its own)
        if self.pipeline or (
            not self._in_body and self.cycle is not None and not self.cycle.response_complete
        ):
            self.flow.pause_reading()
            return
        status, body = self._refusal
        content = [STATUS_LINE[status]]
        for name, value in [*self.server_state.default_headers, *_problem_headers(body), _CLOSE]:
            content += [name, b": ", value, b"\r\n"]
        content += [b"\r\n", body]
        self.transport.write(b"".join(content))
        self.transport.close()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _watch(self) -> None:
        """The deadline runs while the client owes something, from when it began to: a request
        or the rest of one (not of one queued behind another, whose body is not read until its
        turn), or room to write into (it does not read what it is sent); not while the app
        works on a request."""
        owed = self.flow.write_paused or (
            not self.pipeline
            and (self._in_message or self.cycle is None or self.cycle.response_complete)
        )
        if not owed:
            self._disarm()
        elif self._deadline is None:
            self._arm()

    def timeout_keep_alive_handler(self) -> None:
        """The deadline: the client has owed something for the idle timeout."""
        self._deadline = None
        if self.transport.get_write_buffer_size():  # closing would wait for it to be read
            self.transport.abort()
        else:
            super().timeout_keep_alive_handler()
