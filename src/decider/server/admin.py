"""Admin endpoints for rule authors: the loaded rules, reload, and segment governance.

Every call needs an API key with the admin scope. With several workers, each answers for all
of them (decider.server.peers): rules per worker, usage and traffic added up.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Response, Router, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.types import Middleware

from decider.reload import Reloader, ReloadRecord, RulesState
from decider.server.auth import REFUSED, REQUIREMENT
from decider.server.peers import Peers, WorkerReport
from decider.server.report import Governance, Traffic, combined_segments, combined_traffic, governed
from decider.usage.keeper import UsageKeeper


class WorkerRules(msgspec.Struct, frozen=True):
    """One worker's rules: with several, a reload reaches each on its own."""

    worker: int
    pid: int
    version: str
    loaded_at: datetime
    last_reload: ReloadRecord | None
    reloads: int
    failed_reloads: int


class ServiceRules(RulesState, frozen=True):
    """The rules of the worker answering (`answered_by`), and every worker's (`workers`, in
    order); after a reload, the workers that did not confirm theirs (`unconfirmed`)."""

    answered_by: int = 0
    workers: tuple[WorkerRules, ...] = ()
    unconfirmed: tuple[int, ...] = ()


def _service_rules(
    state: RulesState,
    peers: Peers,
    reports: list[WorkerReport],
    unconfirmed: tuple[int, ...] = (),
) -> ServiceRules:
    workers = tuple(
        WorkerRules(
            worker=report.worker,
            pid=report.pid,
            version=report.rules.version,
            loaded_at=report.rules.loaded_at,
            last_reload=report.rules.last_reload,
            reloads=report.rules.reloads,
            failed_reloads=report.rules.failed_reloads,
        )
        for report in reports
    )
    return ServiceRules(
        **msgspec.structs.asdict(state),
        answered_by=peers.index,
        workers=workers,
        unconfirmed=unconfirmed,
    )


@get(
    "/rules",
    operation_id="rules",
    summary="The loaded ruleset and the last reload, of every worker",
    responses=REFUSED,
)
async def rules_state(
    reloader: NamedDependency[Reloader], peers: NamedDependency[Peers]
) -> ServiceRules:
    return _service_rules(reloader.state(), peers, await peers.reports())


@post(
    "/reload",
    operation_id="reload",
    summary="Reload the rules now, on every worker; 422 if they are refused",
    status_code=200,
    responses={
        422: ResponseSpec(
            ServiceRules,
            generate_examples=False,
            description="Refused: `last_reload.errors` says why; the last good ruleset serves on",
        ),
        503: ResponseSpec(
            ServiceRules,
            generate_examples=False,
            description="Workers named in `unconfirmed` did not confirm their reload in time "
            "(stopped, slow, or gone): they may serve the rules before it",
        ),
        **REFUSED,
    },
)
async def reload_rules(
    reloader: NamedDependency[Reloader], peers: NamedDependency[Peers]
) -> Response[ServiceRules]:
    # the reloads that began after this request, here and on every other worker
    record, reports, unconfirmed = await peers.reload(reloader)
    ok = record.ok and all(_ok(report.rules.last_reload) for report in reports)
    status = 422 if not ok else 503 if unconfirmed else 200
    state = _service_rules(reloader.state(record), peers, reports, unconfirmed)
    return Response(state, status_code=status)


def _ok(record: ReloadRecord | None) -> bool:
    return record is None or record.ok


@get(
    "/segments",
    operation_id="segments",
    summary="Segment governance: owner, purpose, wins and last match, since start and ever",
    responses=REFUSED,
)
async def segments(
    peers: NamedDependency[Peers], usage: NamedDependency[UsageKeeper]
) -> Governance:
    reports = await peers.reports()  # each worker has written its counts to the usage file
    own = next(r.segments for r in reports if r.worker == peers.index)
    report = combined_segments(own, [r.segments for r in reports if r.worker != peers.index])
    return governed(report, await usage.snapshot(), usage.idle_days)


@get(
    "/traffic",
    operation_id="traffic",
    summary="Load, degraded answers and shed requests",
    responses=REFUSED,
)
async def traffic(peers: NamedDependency[Peers]) -> Traffic:
    return combined_traffic([report.traffic for report in await peers.reports()])


def admin_router(door: Middleware) -> Router:
    """The admin routes behind `door`."""
    return Router(
        path="/admin",
        route_handlers=[rules_state, reload_rules, segments, traffic],
        middleware=[door],
        security=REQUIREMENT,
        tags=["admin"],
    )
