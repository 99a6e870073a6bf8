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

from decider.reload import Reloader, RulesState
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


def admin_router(door: Middleware) -> Router:
    """The admin routes behind `door`."""
    return Router(
        path="/admin",
        route_handlers=[rules_state, reload_rules, segments],
        middleware=[door],
        security=REQUIREMENT,
        tags=["admin"],
    )
