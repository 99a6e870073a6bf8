"""Probes for process managers: alive, and ready to decide."""

from __future__ import annotations

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
    decider: NamedDependency[Decider], source: NamedDependency[ProfileSource]
) -> Response[Readiness]:
    ok = await source.ready()
    body = Readiness(
        "ready" if ok else "not ready", decider.ruleset.version, "ok" if ok else "failing"
    )
    return Response(body, status_code=200 if ok else 503)
