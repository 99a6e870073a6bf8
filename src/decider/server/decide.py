"""POST /v1/decide: one decision, its body decoded once by our own strict decoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIType, Parameter, Schema

from decider.access import Scope
from decider.errors import Forbidden
from decider.model import (
    PROBLEM_JSON,
    DecideRequest,
    Decision,
    ProblemDetails,
    decode_request,
    minimal,
    problem,
)
from decider.server.admission import Admission
from decider.server.auth import REFUSED, caller_of
from decider.server.metrics import Metrics
from decider.server.openapi import body_operation
from decider.service import Decider

_GPC = Parameter(
    name="Sec-GPC",
    param_in=ParamType.HEADER,
    required=False,
    schema=Schema(type=OpenAPIType.STRING, enum=["1"]),
    description="Global Privacy Control: `1` withdraws what the channel's policy lists under "
    "`gpc_revokes`",
)


@dataclass(frozen=True, slots=True)
class Deciding:
    """What POST /v1/decide needs, as one dependency: litestar resolves several in a task
    group, which costs more than the decision itself (~40 µs)."""

    decider: Decider
    admission: Admission
    metrics: Metrics


def _error(description: str, example: ProblemDetails) -> ResponseSpec:
    return ResponseSpec(
        ProblemDetails,
        generate_examples=False,
        description=description,
        media_type=PROBLEM_JSON,
        examples=[Example(summary=example.code, value=msgspec.to_builtins(example))],
    )


@post(
    "/v1/decide",
    status_code=200,
    operation_class=body_operation(DecideRequest, _GPC),
    operation_id="decide",
    summary="Decide",
    response_description="The decision, and why",
    responses={
        400: _error(
            "The body is not JSON, or nested too deeply",
            problem(400, "malformed_body", "not valid JSON: malformed number", "body"),
        ),
        413: _error(
            "The body is larger than DECIDER_MAX_BODY_BYTES",
            problem(413, "body_too_large", "Request Entity Too Large", "body"),
        ),
        422: _error(
            "A field is wrong; `field` names it",
            problem(422, "invalid_request", "Object contains unknown field `placment`", "placment"),
        ),
        **REFUSED,
        503: _error(
            "Too many decisions in flight (DECIDER_MAX_IN_FLIGHT): show the default content, "
            "retry after Retry-After",
            problem(503, "overloaded", "256 decisions in flight, the most this process takes"),
        ),
    },
)
async def decide(request: Request[Any, Any, Any], deciding: NamedDependency[Deciding]) -> Decision:
    """One decision: who is asking, consent and suppression, segment, variant, and why.
    Reasons name ids, accounts and flags only for a caller with the explain scope."""
    with deciding.admission, deciding.metrics.timing():
        return await _decide(request, deciding.decider)


async def _decide(request: Request[Any, Any, Any], decider: Decider) -> Decision:
    body = decode_request(await request.body())
    caller = caller_of(request)
    if body.explain and not caller.may(Scope.EXPLAIN):
        raise Forbidden("explain", "explain: true needs an API key with the explain scope")
    # granting takes the scope; withdrawing everything (an empty list) is anyone's right
    if body.consent is not None and body.consent.purposes and not caller.may(Scope.CONSENT):
        raise Forbidden(
            "consent", "sending the consent signal needs an API key with the consent scope"
        )
    gpc = request.headers.get("sec-gpc", "").strip() == "1"
    decision = await decider.decide(body, gpc=gpc)
    return decision if caller.may(Scope.EXPLAIN) else minimal(decision)
