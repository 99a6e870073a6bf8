"""Probes for process managers: alive, and ready to decide."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from decider.profiles.sources.base import ProfileSource
from decider.service import Decider


class Liveness(msgspec.Struct, frozen=True):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, frozen=True):
    """Ready when the rules are loaded (always, once started) and the profile source answers."""

    status: Literal["ready", "not ready"]
    ruleset: str
    profile_source: Literal["ok", "failing"]


class ReadyCheck:
    """The profile source's answer to "ready?", asked at most once a second however many
    probes come (they need no key: a flood of them must not flood the source, nor wait
    behind each other's checks); probes at once share one check."""

    TTL_S = 1.0

    def __init__(self, source: ProfileSource) -> None:
        self.source = source
        self._answer: tuple[float, bool] | None = None
        self._asking: asyncio.Future[bool] | None = None

    async def ready(self) -> bool:
        if self._answer is not None and time.monotonic() - self._answer[0] < self.TTL_S:
            return self._answer[1]
        if self._asking is None or self._asking.done():
            self._asking = asyncio.ensure_future(self._ask())
        return await asyncio.shield(self._asking)

    async def _ask(self) -> bool:
        ok = await self.source.ready()
        self._answer = (time.monotonic(), ok)
        return ok


@get("/healthz", operation_id="healthz", summary="Liveness")
async def healthz() -> Liveness:
    return Liveness()


@get(
    "/readyz",
    operation_id="readyz",
    summary="Readiness: rules loaded and profile source answering",
    responses={
        503: ResponseSpec(
            Readiness, generate_examples=False, description="The profile source is not answering"
        )
    },
)
async def readyz(
    decider: NamedDependency[Decider], readiness: NamedDependency[ReadyCheck]
) -> Response[Readiness]:
    ok = await readiness.ready()
    body = Readiness(
        "ready" if ok else "not ready", decider.ruleset.version, "ok" if ok else "failing"
    )
    return Response(body, status_code=200 if ok else 503)
