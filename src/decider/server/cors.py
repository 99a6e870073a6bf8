"""CORS for browser callers (DECIDER_CORS_ORIGINS): litestar's configuration, and the
headers its middleware adds to a simple request's answer, for the decide front to add the
same (tests/test_front.py compares them byte for byte)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from litestar.config.cors import CORSConfig
from litestar.types import Message, Scope

from decider.settings import Settings

Headers = tuple[tuple[bytes, bytes], ...]


def cors_config(settings: Settings) -> CORSConfig | None:
    origins = settings.allowed_origins
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        # If-None-Match and ETag: an OFREP web provider's bulk evaluation caches by them
        allow_headers=[
            "authorization",
            "x-api-key",
            "content-type",
            "x-request-id",
            "sec-gpc",
            "if-none-match",
        ],
        allow_credentials=settings.cors_credentials,
        expose_headers=["x-request-id", "etag"],
    )


def simple_headers(config: CORSConfig) -> Callable[[str, bool], Headers]:
    """What litestar's CORS middleware adds to the answer to a request from `origin` (with
    a cookie or not); kept per origin, for the few that ask (64 at most: callers choose it)."""

    @functools.lru_cache(maxsize=64)
    def added(origin: str, cookie: bool) -> Headers:
        # a dict replaces a header in its place, as litestar's MutableScopeHeaders does
        headers = {name.lower(): value for name, value in config.simple_headers.items()}
        everyone = config.is_allow_all_origins
        if (everyone and cookie) or (not everyone and config.is_origin_allowed(origin)):
            headers["access-control-allow-origin"] = origin
            headers["vary"] = "Origin"
        headers["access-control-allow-headers"] = ", ".join(sorted(set(config.allow_headers)))
        headers["access-control-allow-methods"] = ", ".join(sorted(set(config.allow_methods)))
        return tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())

    return added


def vary_by_origin(message: Message, scope: Scope) -> None:
    """With CORS on, every answer depends on the Origin header, refused ones too: a cache
    must not give one origin's answer to another (a finisher: decider.server.app)."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers", ()))
        if not any(k.lower() == b"vary" and b"origin" in v.lower() for k, v in headers):
            headers.append((b"vary", b"Origin"))
        message["headers"] = headers
