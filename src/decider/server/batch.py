"""POST /v1/decide/batch: decisions for up to MAX_RECIPIENTS recipients of one send, in one
request (decider.batch), each as POST /v1/decide answers it, or refused on its own.

It needs the decide scope, as a decision does; reasons name ids only for a key with the
explain scope, and a consent signal that grants takes the consent scope. A batch holds one
place among the decisions in flight, and one of the places for batches (server.admission)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIResponse
from litestar.types import Scope as ASGIScope

from decider.access import Caller, Scope
from decider.batch import (
    MAX_BODY_BYTES,
    MAX_RECIPIENTS,
    BatchAnswer,
    BatchRequest,
    Recipient,
    Refused,
    read_batch,
)
from decider.model import Decision, minimal, problem
from decider.server.admission import Admission
from decider.server.auth import REFUSED, caller_of
from decider.server.decide import GPC_HEADER, error_spec, gpc, permit
from decider.server.openapi import body_operation, inline_schema, json_schema
from decider.server.problems import too_large
from decider.service import Decider

_encode = msgspec.json.Encoder().encode
# msgspec makes no schema of a union of untagged structs: each result is one of the two
_ANSWER = OpenAPIResponse(
    description="Each recipient's decision, or why it was refused, in the order sent",
    content={
        "application/json": json_schema(
            {
                "type": "object",
                "properties": {
                    "results": {
                        "type": "array",
                        "maxItems": MAX_RECIPIENTS,
                        "items": {"anyOf": [inline_schema(Decision), inline_schema(Refused)]},
                    }
                },
                "required": ["results"],
            }
        )
    },
)


@dataclass(frozen=True, slots=True)
class Batching:
    """What POST /v1/decide/batch needs, and the endpoint's work."""

    decider: Decider
    admission: Admission

    async def decide(
        self, scope: ASGIScope, body: Callable[[], Awaitable[bytes]], caller: Caller
    ) -> BatchAnswer:
        """The batch of the request of `scope`, admitted once its `body` is read."""
        content = await body()
        with self.admission.batch():
            batch = await read_batch(content)
            permit(batch.shared, caller)
            requests = [r for r in batch.requests if not isinstance(r, Refused)]
            decided = iter(await self.decider.decide_batch(batch.shared, requests, gpc=gpc(scope)))
            told = (lambda d: d) if caller.may(Scope.EXPLAIN) else minimal
            return BatchAnswer(
                [r if isinstance(r, Refused) else told(next(decided)) for r in batch.requests]
            )


@post(
    "/v1/decide/batch",
    status_code=200,
    operation_class=body_operation(BatchRequest[Recipient], GPC_HEADER, answers={"200": _ANSWER}),
    operation_id="decideBatch",
    request_max_body_size=MAX_BODY_BYTES,  # a full batch weighs more than one decision
    summary="Decide for a batch of recipients",
    responses={
        400: error_spec(
            "The body is not JSON, not UTF-8, or gives a key twice",
            problem(400, "malformed_body", "not valid JSON: malformed number", "body"),
        ),
        413: error_spec(
            f"The body is larger than {MAX_BODY_BYTES:,} bytes",
            problem(413, "body_too_large", too_large(MAX_BODY_BYTES), "body"),
        ),
        422: error_spec(
            "A shared field is wrong (placement, channel, consent, context), or more than "
            f"{MAX_RECIPIENTS} recipients; `field` names it",
            problem(
                422,
                "invalid_request",
                f"Expected `array` of length <= {MAX_RECIPIENTS}",
                "recipients",
            ),
        ),
        **REFUSED,
        503: error_spec(
            "Too many decisions or batches in flight (DECIDER_MAX_IN_FLIGHT): retry after "
            "Retry-After",
            problem(503, "overloaded", "8 batches in flight, the most this process takes"),
        ),
    },
)
async def decide_batch(
    request: Request[Any, Any, Any], batching: NamedDependency[Batching]
) -> Response[bytes]:
    """Up to 1,000 recipients of one placement: each recipient's identity (and context, over
    the shared one), each answered as POST /v1/decide answers it, or refused on its own
    (`error`, problem details naming its field under `recipients.<n>`), in order."""
    answer = await batching.decide(request.scope, request.body, caller_of(request))
    return Response(_encode(answer), media_type="application/json")
