"""POST /v1/outcomes: conversions and other events after decisions, for the lift report
(decider.measure.outcomes). Needs an API key with the outcomes scope."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.types import Middleware

from decider.access import Caller, Scope
from decider.errors import Forbidden
from decider.measure.outcomes import (
    MAX_BODY_BYTES,
    MAX_EVENTS,
    Invalid,
    OutcomeBatch,
    OutcomeEvent,
    OutcomeIntake,
    OutcomesAnswer,
    parse_body,
)
from decider.model import PROBLEM_JSON, ProblemDetails
from decider.server.auth import REFUSED, REQUIREMENT, caller_of
from decider.server.decide import gpc
from decider.server.openapi import inline_schema, schema_operation

# one event, or a batch of them; msgspec makes no schema of a union of untagged structs
_BODY = {"anyOf": [inline_schema(OutcomeEvent), inline_schema(OutcomeBatch)]}


def _refused(description: str) -> ResponseSpec:
    return ResponseSpec(
        ProblemDetails, generate_examples=False, media_type=PROBLEM_JSON, description=description
    )


@post(
    "/v1/outcomes",
    status_code=200,
    operation_class=schema_operation(_BODY),
    operation_id="reportOutcomes",
    request_max_body_size=MAX_BODY_BYTES,  # a full batch weighs more than a decide request
    summary="Report outcomes",
    response_description="Each event's result, in order: accepted, duplicate, invalid (with "
    "the field at fault) or unavailable",
    responses={
        400: _refused("The body is not JSON, or not UTF-8"),
        413: _refused(f"The body is larger than {MAX_BODY_BYTES:,} bytes"),
        422: _refused(
            f"Not one event nor a batch of at most {MAX_EVENTS}, or the one event sent is "
            "wrong; `field` names what"
        ),
        **REFUSED,
        503: _refused("The outcome log cannot take or write events now: nothing was stored"),
    },
)
async def report_outcomes(
    request: Request[Any, Any, Any], intake: NamedDependency[OutcomeIntake]
) -> OutcomesAnswer:
    """One outcome event, or `{"events": [...]}`, each with `event_id`, `name`, an optional
    `value` and `at`, and either the `decision_id` it followed or the `identity` the decision
    was asked for. An event id seen before is a `duplicate`, stored once; a bad event is
    `invalid` on its own, naming its field."""
    parsed = parse_body(await request.body(), intake.now())
    caller = caller_of(request)
    if not parsed.batch:
        _may_grant(parsed.events[0], caller)
        return await intake.take(parsed.events, gpc=gpc(request.scope))
    checked = [_granting(event, caller, i) for i, event in enumerate(parsed.events)]
    return await intake.take(checked, gpc=gpc(request.scope))


GRANTING = "granting consent by the banner needs an API key with the consent scope"


def _grants(event: OutcomeEvent | Invalid) -> bool:
    return isinstance(event, OutcomeEvent) and bool(event.consent and event.consent.purposes)


def _may_grant(event: OutcomeEvent | Invalid, caller: Caller) -> None:
    """A lone event granting consent by the banner takes the consent scope, as a decision
    does. Raises Forbidden."""
    if _grants(event) and not caller.may(Scope.CONSENT):
        raise Forbidden("consent", GRANTING)


def _granting(event: OutcomeEvent | Invalid, caller: Caller, index: int) -> OutcomeEvent | Invalid:
    """A batch's `event`, or invalid if it grants consent and `caller` may not."""
    if _grants(event) and not caller.may(Scope.CONSENT):
        return Invalid(f"events.{index}.consent", GRANTING)
    return event


def outcomes_router(door: Middleware) -> Router:
    """The outcome intake behind `door`."""
    return Router(
        path="/",
        route_handlers=[report_outcomes],
        middleware=[door],
        security=REQUIREMENT,
        tags=["outcomes"],
    )
