"""POST /v1/decide: one decision, its body decoded once by our own strict decoder."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIType, Parameter, Schema

from decider.model import DecideRequest, Decision, ErrorBody, ErrorDetail, decode_request
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


def _error(description: str, example: ErrorDetail) -> ResponseSpec:
    return ResponseSpec(
        ErrorBody,
        generate_examples=False,
        description=description,
        examples=[Example(summary=example.code, value=msgspec.to_builtins(ErrorBody(example)))],
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
            ErrorDetail("malformed_body", "not valid JSON: malformed number", "body"),
        ),
        413: _error(
            "The body is larger than DECIDER_MAX_BODY_BYTES",
            ErrorDetail("body_too_large", "Request Entity Too Large", "body"),
        ),
        422: _error(
            "A field is wrong; `error.field` names it",
            ErrorDetail("invalid_request", "Object contains unknown field `placment`", "placment"),
        ),
    },
)
async def decide(request: Request[Any, Any, Any], decider: NamedDependency[Decider]) -> Decision:
    """One decision: who is asking, consent and suppression, segment, variant, and why."""
    body = decode_request(await request.body())
    gpc = request.headers.get("sec-gpc", "").strip() == "1"
    return await decider.decide(body, gpc=gpc)
