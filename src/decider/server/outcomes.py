"""POST /v1/outcomes: conversions and other events after decisions, for the lift report
(decider.measure.outcomes). Needs an API key with the outcomes scope."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.types import Middleware

from decider.access import Caller, Scope
from decider.errors import Forbidden, InvalidRequest
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
    body = await request.body()
    parsed = parse_body(body, intake.now(), retention_days=intake.retention_days)
    caller = caller_of(request)
    if not parsed.batch:
        refused = _refused_part(parsed.events[0], caller, intake)
        if refused is not None:
            raise refused
        return await intake.take(parsed.events, gpc=gpc(request.scope))
    checked = [
        _checked(event, caller, intake, f"events.{i}") for i, event in enumerate(parsed.events)
    ]
    return await intake.take(checked, gpc=gpc(request.scope))


def _refused_part(
    event: OutcomeEvent | Invalid, caller: Caller, intake: OutcomeIntake
) -> Forbidden | InvalidRequest | None:
    """What of `event` the service refuses once it is parsed, if anything: granting consent
    by the banner without the consent scope (as in a decision), or an identity on a channel
    the loaded rules do not define."""
    if not isinstance(event, OutcomeEvent):
        return None
    if event.consent and event.consent.purposes and not caller.may(Scope.CONSENT):
        return Forbidden("consent", GRANTING)
    refused = intake.consented.refused(event) if event.identity else None
    return InvalidRequest(refused.field, refused.detail) if refused else None


def _checked(
    event: OutcomeEvent | Invalid, caller: Caller, intake: OutcomeIntake, where: str
) -> OutcomeEvent | Invalid:
    """A batch's `event`, or invalid (its field under `where`) if part of it is refused."""
    refused = _refused_part(event, caller, intake)
    if refused is None:
        return event
    return Invalid(f"{where}.{refused.field}", refused.message)


GRANTING = "granting consent by the banner needs an API key with the consent scope"


def outcomes_router(door: Middleware) -> Router:
    """The outcome intake behind `door`."""
    return Router(
        path="/",
        route_handlers=[report_outcomes],
        middleware=[door],
        security=REQUIREMENT,
        tags=["outcomes"],
    )
