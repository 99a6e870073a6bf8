"""One bearer-token guard, for every route family that has its own token (admin, profiles)."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.types import Guard

from decider.model import ErrorBody

UNAUTHORIZED = {
    401: ResponseSpec(
        ErrorBody, generate_examples=False, description="No bearer token, or a wrong one"
    )
}


def bearer_guard(token: str, variable: str) -> Guard:
    """A guard letting through only `Authorization: Bearer <token>`; `variable` names the
    setting that holds the token, for the 401's message."""
    expected = token.encode()

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        scheme, _space, given = connection.headers.get("authorization", "").partition(" ")
        # the scheme is case-insensitive (RFC 7235); the token is compared in constant time
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("latin-1", "replace"), expected
        ):
            raise NotAuthorizedException(
                f"this endpoint needs Authorization: Bearer <{variable}>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return guard
