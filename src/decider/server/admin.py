"""Admin endpoints for rule authors: the loaded rules, reload, and segment governance.

Every call needs an API key with the admin scope.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Response, Router, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.types import Middleware

from decider.profiles.resolver import Resolver
from decider.reload import Reloader, RulesState
from decider.server.admission import Admission
from decider.server.auth import REFUSED, REQUIREMENT
from decider.service import Decider
from decider.stats import Stats


class SegmentUsage(msgspec.Struct, frozen=True):
    id: str
    owner: str
    description: str
    priority: int
    file: str
    line: int
    wins: int
    errors: int
    last_matched: datetime | None


class SuppressionUsage(msgspec.Struct, frozen=True):
    id: str
    description: str
    hits: int
    errors: int


class SegmentsReport(msgspec.Struct, frozen=True):
    """Which segments earn their keep: wins and last match since the service started; and
    how often each suppression held (errors: held only because it failed to evaluate)."""

    since: datetime
    decisions: int
    segments: tuple[SegmentUsage, ...]
    suppressions: tuple[SuppressionUsage, ...]


@get(
    "/rules",
    operation_id="rules",
    summary="The loaded ruleset and the last reload",
    responses=REFUSED,
)
async def rules_state(reloader: NamedDependency[Reloader]) -> RulesState:
    return reloader.state()


@post(
    "/reload",
    operation_id="reload",
    summary="Reload the rules now; 422 if they are refused",
    status_code=200,
    responses={
        422: ResponseSpec(
            RulesState,
            generate_examples=False,
            description="Refused: `last_reload.errors` says why; the last good ruleset serves on",
        ),
        **REFUSED,
    },
)
async def reload_rules(reloader: NamedDependency[Reloader]) -> Response[RulesState]:
    record = await reloader.reload("admin")  # the reload that began after this request
    return Response(reloader.state(record), status_code=200 if record.ok else 422)


@get(
    "/segments",
    operation_id="segments",
    summary="Segment governance: owner, purpose, wins, last match",
    responses=REFUSED,
)
async def segments(
    decider: NamedDependency[Decider], stats: NamedDependency[Stats]
) -> SegmentsReport:
    ruleset = decider.ruleset
    usage = []
    for segment in ruleset.segments:
        counted = stats.segments.get(segment.id)
        usage.append(
            SegmentUsage(
                id=segment.id,
                owner=segment.owner,
                description=segment.description,
                priority=segment.priority,
                file=segment.file,
                line=segment.line,
                wins=counted.wins if counted else 0,
                errors=counted.errors if counted else 0,
                last_matched=counted.last_matched if counted else None,
            )
        )
    suppressions = []
    for rule in ruleset.suppressions:
        held = stats.suppressions.get(rule.id)
        suppressions.append(
            SuppressionUsage(
                rule.id, rule.description, held.hits if held else 0, held.errors if held else 0
            )
        )
    return SegmentsReport(stats.started_at, stats.decisions, tuple(usage), tuple(suppressions))


class Traffic(msgspec.Struct, frozen=True):
    """What this process has been through since it started: decisions, those made on stale
    data, without a profile or with an id left unchecked; profile lookups and those past
    their budget; decisions in flight now, and requests turned away (503) for being too many."""

    since: datetime
    decisions: int
    stale: int
    unavailable: int
    unchecked: int
    lookups: int
    lookups_over_budget: int
    in_flight: int
    max_in_flight: int
    shed: int


@get(
    "/traffic",
    operation_id="traffic",
    summary="Load, degraded answers and shed requests",
    responses=REFUSED,
)
async def traffic(
    stats: NamedDependency[Stats],
    resolver: NamedDependency[Resolver],
    admission: NamedDependency[Admission],
) -> Traffic:
    lookups, late = resolver.lookups
    return Traffic(
        since=stats.started_at,
        decisions=stats.decisions,
        stale=stats.degraded["stale"],
        unavailable=stats.degraded["unavailable"],
        unchecked=stats.degraded["unchecked"],
        lookups=lookups,
        lookups_over_budget=late,
        in_flight=admission.in_flight,
        max_in_flight=admission.limit,
        shed=admission.shed,
    )


def admin_router(door: Middleware) -> Router:
    """The admin routes behind `door`."""
    return Router(
        path="/admin",
        route_handlers=[rules_state, reload_rules, segments, traffic],
        middleware=[door],
        security=REQUIREMENT,
        tags=["admin"],
    )
