"""One id per request, for the logs: the caller's X-Request-ID when it is a sane one, else
a new random one; echoed on every response, so a caller can quote it when reporting."""

from __future__ import annotations

import os
import re

from litestar.types import Message, Scope

_SANE = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def request_id(scope: Scope) -> str:
    """The request's id, chosen once and kept in its scope's state."""
    state = scope.setdefault("state", {})
    found: str | None = state.get("request_id")
    if found is None:
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
        found = given.decode() if _SANE.match(given) else os.urandom(8).hex()
        state["request_id"] = found
    return found


def echo_request_id(message: Message, scope: Scope) -> None:
    """The id goes out with the answer (a finisher: decider.server.app)."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers", ()))
        headers.append((b"x-request-id", request_id(scope).encode()))
        message["headers"] = headers
