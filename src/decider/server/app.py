"""The litestar app over a built Service: routes, keys at the door, dependency injection, and
errors as RFC 9457 problem details.

Handlers receive their collaborators (decider, source, reloader, stats) as parameters, by
name, from the Service the app was made with; nothing is read from `app.state`. A process
manager can serve it from an import string with no arguments:

    uvicorn --factory decider.server.app:app_from_env
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import Message, Scope

from decider import __version__
from decider.access import Scope as Needs
from decider.errors import (
    DeciderError,
    InvalidRequest,
    ProfileConflict,
    ProfileSourceError,
    ReadOnlySource,
)
from decider.logs import configure_logging
from decider.model import PROBLEM_JSON, ErrorCode, problem
from decider.server.admin import admin_router
from decider.server.admission import Admission
from decider.server.auth import REQUIREMENT, SECURITY, Authenticator, authorize
from decider.server.decide import Deciding, decide
from decider.server.health import healthz, readyz
from decider.server.metrics import Metrics
from decider.server.metrics import metrics as metrics_route
from decider.server.peers import Peers, Place, WorkerReport
from decider.server.profiles import profiles_router
from decider.server.protocol import header_limit
from decider.server.report import segments_of, traffic_of
from decider.server.request_id import request_id
from decider.settings import Settings, SettingsError, unknown_variables
from decider.wiring import Service, build_service

log = logging.getLogger("decider")


def create_app(service: Service, place: Place | None = None) -> Litestar:
    """The HTTP app of `service`; its lifespan holds the service running (reloads, close).
    `place`: where this process stands among several workers, if it is one of them."""
    settings = service.settings

    door = Authenticator(service.keys, allow_anonymous=settings.allow_anonymous)
    admission = Admission(settings.max_in_flight)
    metrics = Metrics(
        decider=service.decider,
        stats=service.stats,
        resolver=service.resolver,
        reloader=service.reloader,
        admission=admission,
        source=settings.profile_source,
    )

    def report(reloaded_for: float) -> WorkerReport:
        return WorkerReport(
            worker=place.index if place else 0,
            pid=os.getpid(),
            written_at=time.time(),
            reloaded_for=reloaded_for,
            rules=service.reloader.state(),
            segments=segments_of(service.decider, service.stats),
            traffic=traffic_of(service.stats, service.resolver, admission),
            metrics=metrics.families(),
        )

    peers = Peers(place, report)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with service.running():
            with peers.answering(service.reloader):
                yield

    handlers: list[Any] = [
        Router(
            path="/",
            route_handlers=[decide],
            middleware=[authorize(door, Needs.DECIDE)],
            security=REQUIREMENT,
        ),
        healthz,
        readyz,
        admin_router(authorize(door, Needs.ADMIN)),
        Router(path="/", route_handlers=[metrics_route], middleware=[authorize(door, Needs.ADMIN)]),
        profiles_router(authorize(door, Needs.PROFILES_READ, Needs.PROFILES_WRITE)),
    ]
    origins = settings.allowed_origins
    return Litestar(
        route_handlers=handlers,
        logging_config=None,  # logging is the process's to configure (decider.logs)
        dependencies={
            "decider": _provide(service.decider),
            "source": _provide(service.source),
            "reloader": _provide(service.reloader),
            "stats": _provide(service.stats),
            "resolver": _provide(service.resolver),
            "admission": _provide(admission),
            "metrics": _provide(metrics),
            "peers": _provide(peers),
            "deciding": _provide(Deciding(service.decider, admission, metrics)),
        },
        lifespan=[lifespan],
        before_send=[_echo_request_id, *([_vary_by_origin] if origins else [])],
        middleware=[header_limit(settings.max_header_bytes)],
        request_max_body_size=settings.max_body_bytes,
        cors_config=CORSConfig(
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["authorization", "x-api-key", "content-type", "x-request-id", "sec-gpc"],
            allow_credentials=settings.cors_credentials,
            expose_headers=["x-request-id"],
        )
        if origins
        else None,
        exception_handlers={
            InvalidRequest: _invalid_request,
            ProfileConflict: _refused(409, "conflict"),
            ReadOnlySource: _refused(409, "read_only"),
            ProfileSourceError: _refused(503, "unavailable"),
            HTTPException: _http_exception,
            Exception: _unexpected,
        },
        openapi_config=OpenAPIConfig(
            title="Decider",
            version=__version__,
            description="Personalization decisions: identity, consent first, segment, variant.",
            components=Components(security_schemes=dict(SECURITY)),
        ),
    )


def app_from_env() -> Litestar:
    """The app on settings read from the environment (DECIDER_*), for process managers.
    A bad setting, rules that fail or a source that cannot open stop the process, saying why."""
    try:
        settings = Settings.from_env(os.environ)
        configure_logging(settings.log_format)
        for warning in unknown_variables(os.environ):
            log.warning("%s", warning)
        for listener in ("DECIDER_HOST", "DECIDER_PORT"):
            if os.environ.get(listener):
                log.warning(
                    "%s is read by `decider serve` only: the process manager listens", listener
                )
        return create_app(build_service(settings))
    except (SettingsError, DeciderError) as exc:
        raise SystemExit(f"decider: refusing to start: {exc}") from None


def _provide(value: object) -> Provide:
    def dependency() -> object:
        return value

    return Provide(dependency, use_cache=True, sync_to_thread=False)


def _error(status: int, code: ErrorCode, detail: str, field: str | None = None) -> Response[bytes]:
    return Response(
        msgspec.json.encode(problem(status, code, detail, field)),
        status_code=status,
        media_type=PROBLEM_JSON,
    )


def _invalid_request(_: Request[Any, Any, Any], exc: InvalidRequest) -> Response[bytes]:
    return _error(exc.status, exc.code, exc.message, exc.field)


def _refused(
    status: int, code: ErrorCode
) -> Callable[[Request[Any, Any, Any], DeciderError], Response[bytes]]:
    """An answer for a DeciderError raised while writing profiles; its message carries no
    personal data (decider.errors)."""

    def answer(_: Request[Any, Any, Any], exc: DeciderError) -> Response[bytes]:
        return _error(status, code, str(exc))

    return answer


_HTTP_CODES: dict[int, ErrorCode] = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    431: "headers_too_large",
    503: "overloaded",
}


def _http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    field = "body" if exc.status_code == 413 else None
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    response = _error(exc.status_code, code, str(exc.detail), field)
    response.headers.update(exc.headers or {})
    return response


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error(
        "unexpected error: %s",
        type(exc).__name__,
        exc_info=exc,
        extra={"request_id": request_id(request.scope)},
    )
    return _error(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal_error",
        "the decision could not be made; see the service log",
    )


async def _vary_by_origin(message: Message, scope: Scope) -> None:
    """With CORS on, every answer depends on the Origin header, refused ones too: a cache
    must not give one origin's answer to another."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers", ()))
        if not any(k.lower() == b"vary" and b"origin" in v.lower() for k, v in headers):
            headers.append((b"vary", b"Origin"))
        message["headers"] = headers


async def _echo_request_id(message: Message, scope: Scope) -> None:
    if message["type"] == "http.response.start":
        headers = list(message.get("headers", ()))
        headers.append((b"x-request-id", request_id(scope).encode()))
        message["headers"] = headers
