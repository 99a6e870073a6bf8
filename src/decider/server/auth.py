"""Authentication at the door: an API key names the caller and its scopes; a route family
needs a scope.

With keys configured, every call but the probes and the OpenAPI document needs a key (as
`Authorization: Bearer <key>` or `X-API-Key: <key>`). With none, the service answers callers
as the quickstart needs, but only on a loopback address and not through a proxy (a process
manager may bind anything, so this is checked on each request, from the address the request
arrived on and its forwarding headers), unless DECIDER_ALLOW_ANONYMOUS=true opens decisions,
and nothing more, to the network.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import SecurityScheme
from litestar.types import ASGIApp, Receive, Send
from litestar.types import Scope as ASGIScope

from decider.access import ANONYMOUS_SCOPES, LOCAL_SCOPES, Caller, KeyRing, Scope
from decider.model import PROBLEM_JSON, ProblemDetails

SECURITY = {
    "apiKey": SecurityScheme(
        type="apiKey", name="X-API-Key", security_scheme_in="header", description="an API key"
    ),
    "bearer": SecurityScheme(type="http", scheme="bearer", description="an API key"),
}
REQUIREMENT: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]
REFUSED = {
    401: ResponseSpec(
        ProblemDetails,
        generate_examples=False,
        media_type=PROBLEM_JSON,
        description="No API key, or a wrong one",
    ),
    403: ResponseSpec(
        ProblemDetails,
        generate_examples=False,
        media_type=PROBLEM_JSON,
        description="The API key lacks the scope this needs",
    ),
}
_ANONYMOUS_LOCAL = Caller(None, LOCAL_SCOPES)
_ANONYMOUS = Caller(None, ANONYMOUS_SCOPES)
_NOBODY = Caller(None, frozenset())
_CALLER = "decider.caller"


class Authenticator:
    """Who a request comes from, given the configured keys and whether callers without a key
    are let in from the network."""

    def __init__(self, keys: KeyRing, *, allow_anonymous: bool) -> None:
        self.keys = keys
        self.allow_anonymous = allow_anonymous

    def caller(self, scope: ASGIScope) -> Caller:
        secret = _secret(scope)
        if self.keys:
            if secret is None:
                if self.allow_anonymous:
                    return _ANONYMOUS
                raise _unauthorized(
                    "an API key is required: Authorization: Bearer <key> or X-API-Key"
                )
            caller = self.keys.caller(secret)
            if caller is None:
                raise _unauthorized("unknown API key")
            return caller
        if _local(scope):
            return _ANONYMOUS_LOCAL
        if self.allow_anonymous:
            return _ANONYMOUS
        raise PermissionDeniedException(
            "no API keys are configured, so Decider answers on a loopback address only; "
            "configure keys (DECIDER_API_KEYS or DECIDER_API_KEYS_FILE) or set "
            "DECIDER_ALLOW_ANONYMOUS=true"
        )

    def admit(self, scope: ASGIScope, read: Scope, write: Scope | None = None) -> Caller:
        """The caller, if it holds `read` (for GET, HEAD, OPTIONS) or `write` (any other
        method; `read` when None); else 401 or 403. A writer may also read."""
        caller = self.caller(scope)
        reading = write is None or scope.get("method") in ("GET", "HEAD", "OPTIONS")
        needed = read if reading else write
        assert needed is not None
        if not caller.may(needed) and not (reading and write and caller.may(write)):
            raise PermissionDeniedException(f"this needs an API key with the {needed} scope")
        return caller


def authorize(
    authenticator: Authenticator, read: Scope, write: Scope | None = None
) -> Callable[[ASGIApp], ASGIApp]:
    """Middleware for a route family admitting callers as `Authenticator.admit` does; the
    caller is kept in the request's state for the handler. Plain ASGI, not a litestar guard:
    a guard costs a copy of the route handler on every request."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def door(scope: ASGIScope, receive: Receive, send: Send) -> None:
            scope.setdefault("state", {})[_CALLER] = authenticator.admit(scope, read, write)
            await app(scope, receive, send)

        return door

    return middleware


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """The caller `authorize` admitted (nobody, if it did not run)."""
    caller: Caller = connection.scope.get("state", {}).get(_CALLER, _NOBODY)
    return caller


def _secret(scope: ASGIScope) -> str | None:
    key = authorization = ""
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            if key:  # a proxy reading the other one would disagree about who this is
                raise _unauthorized("X-API-Key given twice: send one key")
            key = value.decode("latin-1").strip() or " "
        elif name == b"authorization":
            if authorization:
                raise _unauthorized("Authorization given twice: send one key")
            authorization = value.decode("latin-1") or " "
    key = key.strip()
    scheme, _space, given = authorization.partition(" ")
    # the scheme is case-insensitive (RFC 7235)
    bearer = given.strip() if scheme.lower() == "bearer" and given.strip() else None
    if key and authorization.strip() and key != bearer:
        raise _unauthorized("two different API keys: send one, as a bearer token or X-API-Key")
    return key or bearer or None


# what proxies add naming the client they pass on (or themselves)
_FORWARDING = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"via",
    }
)


def _local(scope: ASGIScope) -> bool:
    """Whether a request comes from this machine: it arrived on a loopback address, no proxy
    passed it on (a proxy here forwards everyone to 127.0.0.1), and it names a loopback host
    (a web page that rebinds its own name to 127.0.0.1 sends that name as Host)."""
    server = scope.get("server")
    host = server[0] if server else None
    if not is_loopback(host):
        return False
    if host is None or not _is_ip(host):
        return True  # a Unix socket, or an in-process test client: no network in between
    for name, value in scope["headers"]:
        if name in _FORWARDING:
            return False
        if name == b"host" and not _loopback_host(value.decode("latin-1")):
            return False
    return True


@functools.lru_cache(maxsize=64)
def _loopback_host(header: str) -> bool:
    """Whether a Host header names this machine: localhost or a loopback address, any port."""
    name = header.rsplit("]", 1)[0].lstrip("[") if header.startswith("[") else header
    if not header.startswith("["):
        name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.lower() in ("localhost", "localhost.") or (_is_ip(name) and is_loopback(name))


@functools.lru_cache(maxsize=64)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=64)
def is_loopback(host: str | None) -> bool:
    """Whether a request arriving on the server address `host` stays on this machine; one
    that is not an IP (a Unix socket, an in-process test client) does."""
    if host is None:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback


def _unauthorized(message: str) -> NotAuthorizedException:
    return NotAuthorizedException(message, headers={"WWW-Authenticate": "Bearer"})
