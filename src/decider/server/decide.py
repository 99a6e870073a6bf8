"""POST /v1/decide: one decision, its body decoded once by our own strict decoder.

litestar's own body binding would coerce "12" into 12, so the handler reads the bytes; the
OpenAPI document still describes the body, from the same msgspec type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Example,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

from decider.model import DecideRequest, Decision, ErrorBody, ErrorDetail, decode_request
from decider.service import Decider


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
        self.parameters = [
            Parameter(
                name="Sec-GPC",
                param_in=ParamType.HEADER,
                required=False,
                schema=Schema(type=OpenAPIType.STRING, enum=["1"]),
                description="Global Privacy Control: `1` withdraws what the channel's policy "
                "lists under `gpc_revokes`",
            )
        ]
        self.request_body = RequestBody(
            required=True,
            content={
                # msgspec writes the JSON Schema; litestar serializes plain dicts as they are
                "application/json": OpenAPIMediaType(schema=_REQUEST_SCHEMA)  # type: ignore[arg-type]
            },
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
    operation_class=_DecideOperation,
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
