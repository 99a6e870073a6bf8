"""The litestar app over a built Service: routes, keys at the door, dependency injection, and
errors as RFC 9457 problem details (decider.server.problems). POST /v1/decide, the hot
path, is answered by its front (decider.server.front) before litestar's machinery runs.

Handlers receive their collaborators (decider, source, reloader, stats) as parameters, by
name, from the Service the app was made with; nothing is read from `app.state`. A process
manager can serve it from an import string with no arguments:

    uvicorn --factory decider.server.app:app_from_env
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from litestar.types import BeforeMessageSendHookHandler, Message, Scope

from decider import __version__
from decider.access import Scope as Needs
from decider.errors import DeciderError
from decider.logs import configure_logging
from decider.model import Identity
from decider.server.admin import admin_router
from decider.server.admission import Admission
from decider.server.auth import REQUIREMENT, SECURITY, Authenticator, authorize
from decider.server.batch import Batching, decide_batch
from decider.server.cors import cors_config, simple_headers, vary_by_origin
from decider.server.decide import Deciding, decide
from decider.server.front import DecideFront, Finisher
from decider.server.health import ReadyCheck, healthz, readyz
from decider.server.metrics import Metrics
from decider.server.metrics import metrics as metrics_route
from decider.server.ofrep import ofrep_error, ofrep_router, under_ofrep
from decider.server.outcomes import outcomes_router
from decider.server.peers import Peers, Place, WorkerReport
from decider.server.problems import problem_response
from decider.server.profiles import profiles_router
from decider.server.protocol import header_limit
from decider.server.report import segments_of, traffic_of
from decider.server.request_id import echo_request_id
from decider.settings import Settings, SettingsError, unknown_variables
from decider.wiring import Service, build_service

log = logging.getLogger("decider")


class DeciderApp(Litestar):
    """The litestar app, with POST /v1/decide answered by its front first."""

    front: DecideFront

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # litestar's own signature takes lifespan events too; those go to it
        if scope["type"] == "http" and self.front.serves(scope):
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(service: Service, place: Place | None = None) -> DeciderApp:
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
        measuring=service.measuring,
        usage=service.usage,
        source=settings.profile_source,
    )
    deciding = Deciding(service.decider, admission, metrics)

    def report(reloaded_for: float, notes_seen: int) -> WorkerReport:
        return WorkerReport(
            worker=place.index if place else 0,
            pid=os.getpid(),
            written_at=time.time(),
            reloaded_for=reloaded_for,
            notes_seen=notes_seen,
            rules=service.reloader.state(),
            segments=segments_of(service.decider, service.stats),
            traffic=traffic_of(
                service.stats, service.resolver, admission, service.measuring, service.usage
            ),
            metrics=metrics.families(),
        )

    def forget(note: bytes) -> None:  # another worker was told a profile changed
        service.resolver.forget(msgspec.json.decode(note, type=Identity))

    peers = Peers(
        place,
        report,
        reload_wait_s=settings.reload_wait_s,
        on_note=forget,
        before_report=service.usage.flush,
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with service.running():
            with peers.answering(service.reloader):
                yield

    handlers: list[Any] = [
        Router(
            path="/",
            route_handlers=[decide, decide_batch],
            middleware=[authorize(door, Needs.DECIDE)],
            security=REQUIREMENT,
        ),
        healthz,
        readyz,
        admin_router(authorize(door, Needs.ADMIN)),
        Router(path="/", route_handlers=[metrics_route], middleware=[authorize(door, Needs.ADMIN)]),
        profiles_router(authorize(door, Needs.PROFILES_READ, Needs.PROFILES_WRITE)),
        outcomes_router(authorize(door, Needs.OUTCOMES)),
        ofrep_router(authorize(door, Needs.DECIDE)),
    ]
    cors = cors_config(settings)
    # what every answer gets on its way out, litestar's and the front's
    finishers = [echo_request_id, *([vary_by_origin] if cors else [])]
    app = DeciderApp(
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
            "readiness": _provide(ReadyCheck(service.source)),
            "deciding": _provide(deciding),
            "batching": _provide(Batching(service.decider, admission)),
            "intake": _provide(service.measuring.outcomes),
            "usage": _provide(service.usage),
        },
        lifespan=[lifespan],
        before_send=[_before_send(finish) for finish in finishers],
        middleware=[header_limit(settings.max_header_bytes)],
        request_max_body_size=settings.max_body_bytes,
        cors_config=cors,
        exception_handlers={Exception: _answer_error},
        openapi_config=OpenAPIConfig(
            title="Decider",
            version=__version__,
            description="Personalization decisions: identity, consent first, segment, variant.",
            components=Components(security_schemes=dict(SECURITY)),
        ),
    )
    app.front = DecideFront(
        deciding,
        door,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        cors=simple_headers(cors) if cors else None,
        finishers=finishers,
    )
    return app


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


def _answer_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Errors as problem details; under /ofrep/ (a path no route serves, a method no route
    takes there too) in OFREP's shape, which an OFREP client reads."""
    if under_ofrep(request.scope):
        return ofrep_error(request, exc)
    return problem_response(request, exc)


def _provide(value: object) -> Provide:
    def dependency() -> object:
        return value

    return Provide(dependency, use_cache=True, sync_to_thread=False)


def _before_send(finish: Finisher) -> BeforeMessageSendHookHandler:
    """`finish` as a litestar hook: async, for litestar runs a plain function in a thread."""

    async def hook(message: Message, scope: Scope) -> None:
        finish(message, scope)

    return hook
