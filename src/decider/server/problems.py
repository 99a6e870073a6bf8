"""Errors as RFC 9457 problem details: the one mapping from an exception to the answer, for
litestar's exception handler and for the decide front (decider.server.front) alike.

A DeciderError says what the caller did wrong (its message carries no personal data:
decider.errors); litestar's HTTPException is a refusal at the door or by the framework;
anything else is a bug, logged with its request id (the log formatters keep no exception
message: decider.logs) and answered 500."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import Scope

from decider.errors import (
    InvalidRequest,
    NotStored,
    ProfileConflict,
    ProfileSourceError,
    ReadOnlySource,
)
from decider.model import PROBLEM_JSON, ErrorCode, problem
from decider.server.request_id import request_id

log = logging.getLogger("decider")

_HTTP_CODES: dict[int, ErrorCode] = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    431: "headers_too_large",
    503: "overloaded",
}


class Refusal(NamedTuple):
    """What an error is answered with: status, problem+json body, and headers of its own
    (Retry-After, WWW-Authenticate, Allow)."""

    status: int
    body: bytes
    headers: dict[str, str]


def refusal(exc: Exception, scope: Scope) -> Refusal:
    """The answer to `exc`, raised while serving the request of `scope`."""
    if isinstance(exc, InvalidRequest):
        return _refused(exc.status, exc.code, exc.message, exc.field)
    if isinstance(exc, ProfileConflict):
        return _refused(409, "conflict", str(exc))
    if isinstance(exc, ReadOnlySource):
        return _refused(409, "read_only", str(exc))
    if isinstance(exc, ProfileSourceError):
        return _refused(503, "unavailable", str(exc))
    if isinstance(exc, NotStored):
        return _refused(503, "not_stored", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, HTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        if exc.status_code == 413:
            limit = _body_limit(scope)
            detail = str(exc.detail) if limit is None else too_large(limit)
            return _refused(413, code, detail, "body", exc.headers)
        return _refused(exc.status_code, code, str(exc.detail), None, exc.headers)
    log.error(
        "unexpected error: %s",
        type(exc).__name__,
        exc_info=exc,
        extra={"request_id": request_id(scope)},
    )
    return _refused(500, "internal_error", "the decision could not be made; see the service log")


def too_large(limit: int) -> str:
    """Why a body is refused (413): the limit it passed, so the caller knows what fits."""
    return f"the body is larger than {limit:,} bytes, the most this endpoint takes"


def _body_limit(scope: Scope) -> int | None:
    """The most bytes the route of `scope` reads (its request_max_body_size), if known."""
    limit = getattr(scope.get("route_handler"), "resolve_request_max_body_size", lambda: None)()
    return limit if isinstance(limit, int) else None


def problem_response(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """litestar's exception handler, for every exception."""
    status, body, headers = refusal(exc, request.scope)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _refused(
    status: int,
    code: ErrorCode,
    detail: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Refusal:
    body = msgspec.json.encode(problem(status, code, detail, field))
    return Refusal(status, body, dict(headers or {}))
