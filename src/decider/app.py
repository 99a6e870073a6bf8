"""The HTTP layer: litestar routes over a Decider, errors mapped to JSON that names the field.

The decide body is read as bytes and decoded once by our own strict msgspec decoder (litestar's
own binding coerces "12" into 12); the OpenAPI document still describes it, from the same type.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from decider import __version__
from decider.admin import admin_router
from decider.cel import new_engine
from decider.compiler import CompiledRuleset
from decider.errors import InvalidRequest
from decider.model import DecideRequest, Decision, ErrorBody, ErrorDetail, decode_request
from decider.reload import Reloader
from decider.resolver import Resolver
from decider.service import Decider, utcnow
from decider.settings import Settings
from decider.sources import HttpProfileSource, ProfileSource
from decider.store import SqliteProfileStore
from decider.suites import compile_and_test

log = logging.getLogger("decider")


def _inline_schema(kind: type) -> dict[str, Any]:
    """msgspec's JSON Schema for `kind`, its $defs inlined: litestar rewrites
    components/schemas from its own registry, so the body schema must stand alone."""
    schema = msgspec.json.schema(kind)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


_REQUEST_SCHEMA = _inline_schema(DecideRequest)


@dataclass
class _DecideOperation(Operation):
    """Documents the body the handler decodes itself."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            content={
                # msgspec writes the JSON Schema; litestar serializes plain dicts as they are
                "application/json": OpenAPIMediaType(schema=_REQUEST_SCHEMA)  # type: ignore[arg-type]
            },
        )


def _decider(request: Request[Any, Any, Any]) -> Decider:
    decider: Decider = request.app.state.decider
    return decider


_ERRORS = {
    400: ResponseSpec(ErrorBody, description="The body is not JSON, or nested too deeply"),
    413: ResponseSpec(ErrorBody, description="The body is larger than DECIDER_MAX_BODY_BYTES"),
    422: ResponseSpec(ErrorBody, description="A field is wrong; `error.field` names it"),
}


@post(
    "/v1/decide",
    status_code=200,
    operation_class=_DecideOperation,
    summary="Decide",
    responses=_ERRORS,
)
async def decide_endpoint(request: Request[Any, Any, Any]) -> Decision:
    """One decision: who is asking, consent and suppression, segment, variant, and why."""
    body = decode_request(await request.body())
    gpc = request.headers.get("sec-gpc", "").strip() == "1"
    return await _decider(request).decide(body, gpc=gpc)


@get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="Readiness: rules loaded and profile source answering")
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    decider = _decider(request)
    source_ok = await decider.resolver.source.ready()
    body = {
        "status": "ready" if source_ok else "not ready",
        "ruleset": decider.ruleset.version,
        "profile_source": "ok" if source_ok else "failing",
    }
    return Response(body, status_code=200 if source_ok else 503)


def _error(status: int, detail: ErrorDetail) -> Response[bytes]:
    return Response(
        msgspec.json.encode(ErrorBody(detail)), status_code=status, media_type=MediaType.JSON
    )


def _invalid_request(_: Request[Any, Any, Any], exc: InvalidRequest) -> Response[bytes]:
    return _error(exc.status, ErrorDetail(exc.code, exc.message, exc.field))


def _http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    field = "body" if exc.status_code == 413 else None
    code = "body_too_large" if exc.status_code == 413 else "http_error"
    response = _error(exc.status_code, ErrorDetail(code, str(exc.detail), field))
    response.headers.update(exc.headers or {})
    return response


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unexpected error", exc_info=exc)
    return _error(
        HTTP_500_INTERNAL_SERVER_ERROR,
        ErrorDetail("internal_error", "the decision could not be made; see the service log"),
    )


def build_source(settings: Settings, http_client: httpx.AsyncClient | None) -> ProfileSource:
    if settings.profile_source == "http":
        client = http_client or httpx.AsyncClient(
            base_url=settings.profile_api_url or "",
            timeout=settings.profile_api_timeout,
            headers=(
                {"Authorization": f"Bearer {settings.profile_api_token}"}
                if settings.profile_api_token
                else {}
            ),
        )
        return HttpProfileSource(client)
    if settings.seed_samples:
        return SqliteProfileStore.open_seeded(settings.profile_db, utcnow())
    return SqliteProfileStore(settings.profile_db)


def create_app(
    settings: Settings,
    *,
    ruleset: CompiledRuleset | None = None,
    source: ProfileSource | None = None,
    http_client: httpx.AsyncClient | None = None,
    decider: Decider | None = None,
) -> Litestar:
    """Build the service. Rules are compiled and their suites run here, so broken rules stop
    it before it listens."""
    if decider is None:
        ruleset = ruleset or compile_and_test(settings.rules_dir, new_engine(settings.engine))
        resolver = Resolver(
            source or build_source(settings, http_client),
            budget=settings.profile_budget_ms / 1000,
            cache=settings.cache,
        )
        decider = Decider(ruleset, resolver)
    service = decider
    reloader = Reloader(service, settings.rules_dir, utcnow)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        stop = asyncio.Event()
        watcher = None
        if settings.watch_rules:
            watcher = asyncio.create_task(
                reloader.watch(stop, debounce_ms=settings.reload_debounce_ms)
            )
        pending: set[asyncio.Task[object]] = set()

        def on_sighup() -> None:
            task: asyncio.Task[object] = asyncio.ensure_future(reloader.reload("sighup"))
            pending.add(task)  # held until done, or it could be collected mid-reload
            task.add_done_callback(pending.discard)

        hangup = _on_sighup(on_sighup)
        try:
            yield
        finally:
            hangup()
            stop.set()
            if watcher is not None:
                await watcher
            await service.resolver.source.aclose()

    handlers: list[Any] = [decide_endpoint, healthz, readyz]
    if settings.admin_token:
        handlers.append(admin_router(settings.admin_token))
    app = Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        exception_handlers={
            InvalidRequest: _invalid_request,
            HTTPException: _http_exception,
            Exception: _unexpected,
        },
        openapi_config=OpenAPIConfig(
            title="Decider",
            version=__version__,
            description="Personalization decisions: identity, consent first, segment, variant.",
        ),
    )
    app.state.decider = service
    app.state.reloader = reloader
    return app


def _on_sighup(reload: Callable[[], object]) -> Callable[[], object]:
    """Reload on SIGHUP where signals can be had (the main thread); returns the undo."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or Windows
        return lambda: False
    return lambda: loop.remove_signal_handler(signal.SIGHUP)
