"""POST /v1/decide served straight from ASGI, in front of litestar, whose routing,
dependency injection, middleware and response machinery cost more than the decision
itself. The front does what litestar's path does for this route, in one place and in the
same order: the door, then `Deciding.decide` (admission, the body, the decision), the answer
encoded, errors as problem details (decider.server.problems), CORS headers and the app's
finishers (the request id); the answers are litestar's, byte for byte (tests/test_front.py).

Every other request goes to litestar untouched: other routes and methods (a GET or HEAD
here is litestar's 405, an OPTIONS preflight its CORS answer), a path litestar would only
normalize to this one (a trailing slash: its route serves it with `Deciding.decide` too), a
Host header litestar refuses, and headers over DECIDER_MAX_HEADER_BYTES (its middleware
answers 431).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache, partial

import msgspec

# litestar's own check, so that a Host its router refuses is still refused by it
from litestar._asgi.utils import is_valid_host
from litestar.exceptions import ClientException, InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import (
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Message,
    Receive,
    Scope,
    Send,
)

from decider.access import Scope as Needs
from decider.model import PROBLEM_JSON
from decider.server.auth import Authenticator
from decider.server.cors import Headers
from decider.server.decide import Deciding
from decider.server.problems import refusal, too_large

PATH = "/v1/decide"
Finisher = Callable[[Message, Scope], None]
_JSON = (b"content-type", b"application/json")
_PROBLEM = (b"content-type", PROBLEM_JSON.encode())
_encoder = msgspec.json.Encoder()
_valid_host = lru_cache(maxsize=64)(is_valid_host)  # a regex: ~0.6 µs; callers send a few


class DecideFront:
    """Serves the requests `serves` says are its, POST /v1/decide, with `deciding`."""

    def __init__(
        self,
        deciding: Deciding,
        door: Authenticator,
        *,
        max_body_bytes: int,
        max_header_bytes: int,
        cors: Callable[[str, bool], Headers] | None,
        finishers: Sequence[Finisher],
    ) -> None:
        self._deciding = deciding
        self._door = door
        self._max_body_bytes = max_body_bytes
        self._max_header_bytes = max_header_bytes
        self._cors = cors
        self._finishers = tuple(finishers)

    def serves(self, scope: HTTPScope) -> bool:
        """Whether litestar would route the request of `scope` to POST /v1/decide (the path
        as its router reads it under a root path; a Host it takes) and pass it on to the
        handler (headers within protocol.header_limit's bound, counted as it counts)."""
        if scope["method"] != "POST":
            return False
        path = scope["path"]
        if root_path := scope.get("root_path", ""):
            path = path.split(root_path, maxsplit=1)[-1]
        if path != PATH:
            return False
        size, host = 0, None
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4
            if host is None and name == b"host":
                host = value
        return size <= self._max_header_bytes and (host is None or _valid_host(host))

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        try:
            caller = self._door.admit(scope, Needs.DECIDE)
            body = partial(_body, scope, receive, self._max_body_bytes)
            decision = await self._deciding.decide(scope, body, caller)
        except Exception as exc:  # every error is answered, as litestar's handler would
            status, content, own = refusal(exc, scope)
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in own.items()]
            headers.append(_PROBLEM)
        else:
            status, content, headers = 200, _encoder.encode(decision), [_JSON]
        headers.append((b"content-length", str(len(content)).encode()))
        if self._cors is not None:
            headers += self._cors_headers(scope, self._cors)
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": status,
            "headers": headers,
        }
        for finish in self._finishers:
            finish(start, scope)
        await send(start)
        end: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": content,
            "more_body": False,
        }
        await send(end)

    @staticmethod
    def _cors_headers(scope: HTTPScope, cors: Callable[[str, bool], Headers]) -> Headers:
        """What litestar's CORS middleware adds for a request naming its Origin."""
        origin = next((v for k, v in scope["headers"] if k == b"origin"), b"")
        if not origin:
            return ()
        cookie = any(k == b"cookie" for k, _ in scope["headers"])
        return cors(origin.decode("latin-1"), cookie)


async def _body(scope: HTTPScope, receive: Receive, limit: int) -> bytes:
    """The request's body, as litestar reads it: refused (413) as soon as its announced
    length or the bytes received pass `limit`."""
    length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if length is not None:
        try:
            announced = int(length.decode("latin-1"))
        except ValueError:
            raise ClientException(f"Invalid content-length: {length.decode('latin-1')!r}") from None
        if announced > limit:
            raise RequestEntityTooLarge(too_large(limit))
    chunks: list[bytes] = []
    received = 0
    while True:
        event = await receive()
        if event["type"] == "http.request":
            chunk = event.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise RequestEntityTooLarge(too_large(limit))
            chunks.append(chunk)
            if not event.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif event["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")
