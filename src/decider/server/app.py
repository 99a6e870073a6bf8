"""The litestar app over a built Service: routes, dependency injection, errors as JSON.

Handlers receive their collaborators (decider, source, reloader, stats) as parameters, by
name, from the Service the app was made with; nothing is read from `app.state`. A process
manager can serve it from an import string with no arguments:

    uvicorn --factory decider.server.app:app_from_env
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, MediaType, Request, Response
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from decider import __version__
from decider.errors import (
    DeciderError,
    InvalidRequest,
    ProfileConflict,
    ProfileSourceError,
    ReadOnlySource,
)
from decider.model import ErrorBody, ErrorCode, ErrorDetail
from decider.server.admin import SECURITY_SCHEME as ADMIN_SCHEME
from decider.server.admin import admin_router
from decider.server.decide import decide
from decider.server.health import healthz, readyz
from decider.server.profiles import SECURITY_SCHEME as PROFILES_SCHEME
from decider.server.profiles import profiles_router
from decider.settings import Settings, SettingsError, unknown_variables
from decider.wiring import Service, build_service

log = logging.getLogger("decider")


def create_app(service: Service) -> Litestar:
    """The HTTP app of `service`; its lifespan holds the service running (reloads, close)."""
    settings = service.settings

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with service.running():
            yield

    handlers: list[Any] = [decide, healthz, readyz]
    schemes: dict[str, Any] = {}
    if settings.admin_token:
        handlers.append(admin_router(settings.admin_token))
        schemes[ADMIN_SCHEME] = SecurityScheme(
            type="http", scheme="bearer", description="DECIDER_ADMIN_TOKEN"
        )
    if settings.profiles_token:
        handlers.append(profiles_router(settings.profiles_token))
        schemes[PROFILES_SCHEME] = SecurityScheme(
            type="http", scheme="bearer", description="DECIDER_PROFILES_TOKEN"
        )
    return Litestar(
        route_handlers=handlers,
        logging_config=None,  # logging is the process's to configure (configure_logging)
        dependencies={
            "decider": _provide(service.decider),
            "source": _provide(service.source),
            "reloader": _provide(service.reloader),
            "stats": _provide(service.stats),
            "resolver": _provide(service.resolver),
        },
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
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
            components=Components(security_schemes=schemes or None),
        ),
    )


def app_from_env() -> Litestar:
    """The app on settings read from the environment (DECIDER_*), for process managers.
    A bad setting, rules that fail or a source that cannot open stop the process, saying why."""
    configure_logging()
    # no access log: it would write client IP addresses (and any query string) to the log
    logging.getLogger("uvicorn.access").addFilter(lambda _: False)
    for problem in unknown_variables(os.environ):
        log.warning("%s", problem)
    for listener in ("DECIDER_HOST", "DECIDER_PORT"):
        if os.environ.get(listener):
            log.warning("%s is read by `decider serve` only: the process manager listens", listener)
    try:
        return create_app(build_service(Settings.from_env(os.environ)))
    except (SettingsError, DeciderError) as exc:
        raise SystemExit(f"decider: refusing to start: {exc}") from None


def configure_logging() -> None:
    """Decider's own messages (reloads, warnings) at INFO, in uvicorn's style; never ids or
    profile data (see the Privacy section of the README)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")


def _provide(value: object) -> Provide:
    def dependency() -> object:
        return value

    return Provide(dependency, use_cache=True, sync_to_thread=False)


def _error(status: int, detail: ErrorDetail) -> Response[bytes]:
    return Response(
        msgspec.json.encode(ErrorBody(detail)), status_code=status, media_type=MediaType.JSON
    )


def _invalid_request(_: Request[Any, Any, Any], exc: InvalidRequest) -> Response[bytes]:
    return _error(exc.status, ErrorDetail(exc.code, exc.message, exc.field))


def _refused(
    status: int, code: ErrorCode
) -> Callable[[Request[Any, Any, Any], DeciderError], Response[bytes]]:
    """An answer for a DeciderError raised while writing profiles; its message carries no
    personal data (decider.errors)."""

    def answer(_: Request[Any, Any, Any], exc: DeciderError) -> Response[bytes]:
        return _error(status, ErrorDetail(code, str(exc)))

    return answer


_HTTP_CODES: dict[int, ErrorCode] = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


def _http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    field = "body" if exc.status_code == 413 else None
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    response = _error(exc.status_code, ErrorDetail(code, str(exc.detail), field))
    response.headers.update(exc.headers or {})
    return response


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unexpected error", exc_info=exc)
    return _error(
        HTTP_500_INTERNAL_SERVER_ERROR,
        ErrorDetail("internal_error", "the decision could not be made; see the service log"),
    )
