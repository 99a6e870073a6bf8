"""POST /v1/decide: one decision, its body decoded once by our own strict decoder.

`Deciding.decide` is the endpoint's one implementation. The front (decider.server.front)
serves POST /v1/decide with it, straight from ASGI; the litestar route below documents the
operation in the OpenAPI document and serves, with it too, what the front leaves to
litestar (a trailing slash, say)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIType, Parameter, Schema
from litestar.types import Scope as ASGIScope

from decider.access import Caller, Scope
from decider.errors import Forbidden, InvalidRequest
from decider.model import (
    PROBLEM_JSON,
    DecideRequest,
    Decision,
    ProblemDetails,
    decode_request,
    minimal,
    problem,
)
from decider.ruleset import CompiledRuleset
from decider.server.admission import Admission
from decider.server.auth import REFUSED, caller_of
from decider.server.metrics import Metrics
from decider.server.openapi import body_operation
from decider.server.problems import too_large
from decider.service import Decider
from decider.settings import Settings

GPC_HEADER = Parameter(
    name="Sec-GPC",
    param_in=ParamType.HEADER,
    required=False,
    schema=Schema(type=OpenAPIType.STRING, enum=["1"]),
    description="Global Privacy Control: `1` withdraws what the channel's policy lists under "
    "`gpc_revokes`",
)


@dataclass(frozen=True, slots=True)
class Deciding:
    """What POST /v1/decide needs, and the endpoint's work. One dependency for the litestar
    route: litestar resolves several in a task group, which costs more than the decision
    itself (~40 µs)."""

    decider: Decider
    admission: Admission
    metrics: Metrics

    async def decide(
        self, scope: ASGIScope, body: Callable[[], Awaitable[bytes]], caller: Caller
    ) -> Decision:
        """One decision for the request of `scope`, admitted once its `body` is read (a client
        sending slowly holds a connection, bounded by the idle timeout, but no place among
        the decisions in flight); `caller` passed the door with the decide scope. Reasons
        name ids, accounts and flags only for a caller with the explain scope."""
        content = await body()
        with self.admission, self.metrics.timing():
            return await self._decided(scope, decode_request(content), caller)

    async def answer(self, scope: ASGIScope, request: DecideRequest, caller: Caller) -> Decision:
        """`decide` for a request decoded elsewhere (from OFREP's evaluation context)."""
        with self.admission, self.metrics.timing():
            return await self._decided(scope, request, caller)

    async def answer_channel(
        self, scope: ASGIScope, request: DecideRequest, channel: str, caller: Caller
    ) -> tuple[CompiledRuleset, list[tuple[str, Decision | InvalidRequest]]]:
        """A decision for each placement of `channel` (Decider.decide_channel), admitted
        and timed as one request, each told as `decide` tells it."""
        with self.admission, self.metrics.timing():
            permit(request, caller)
            ruleset, decided = await self.decider.decide_channel(request, channel, gpc=gpc(scope))
        if caller.may(Scope.EXPLAIN):
            return ruleset, decided
        return ruleset, [
            (key, d if isinstance(d, InvalidRequest) else minimal(d)) for key, d in decided
        ]

    async def _decided(self, scope: ASGIScope, request: DecideRequest, caller: Caller) -> Decision:
        permit(request, caller)
        decision = await self.decider.decide(request, gpc=gpc(scope))
        return decision if caller.may(Scope.EXPLAIN) else minimal(decision)


def permit(request: DecideRequest, caller: Caller) -> None:
    """Refuse (403) what `request` asks beyond the caller's scopes: explain, and granting
    consent (withdrawing everything, an empty list, is anyone's right)."""
    if request.explain and not caller.may(Scope.EXPLAIN):
        raise Forbidden("explain", "explain: true needs an API key with the explain scope")
    consent = request.consent
    if consent is not None and consent.purposes and not caller.may(Scope.CONSENT):
        raise Forbidden(
            "consent", "sending the consent signal needs an API key with the consent scope"
        )


def gpc(scope: ASGIScope) -> bool:
    """Whether the request says Sec-GPC: 1, in any of its Sec-GPC headers: an opt-out is
    never overruled by another header."""
    return any(name == b"sec-gpc" and value.strip() == b"1" for name, value in scope["headers"])


def error_spec(description: str, example: ProblemDetails) -> ResponseSpec:
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
    operation_class=body_operation(DecideRequest, GPC_HEADER),
    operation_id="decide",
    summary="Decide",
    response_description="The decision, and why",
    responses={
        400: error_spec(
            "The body is not JSON, or nested too deeply",
            problem(400, "malformed_body", "not valid JSON: malformed number", "body"),
        ),
        413: error_spec(
            "The body is larger than DECIDER_MAX_BODY_BYTES",
            problem(413, "body_too_large", too_large(Settings().max_body_bytes), "body"),
        ),
        422: error_spec(
            "A field is wrong; `field` names it",
            problem(422, "invalid_request", "Object contains unknown field `placment`", "placment"),
        ),
        **REFUSED,
        503: error_spec(
            "Too many decisions in flight (DECIDER_MAX_IN_FLIGHT): show the default content, "
            "retry after Retry-After",
            problem(503, "overloaded", "256 decisions in flight, the most this process takes"),
        ),
    },
)
async def decide(request: Request[Any, Any, Any], deciding: NamedDependency[Deciding]) -> Decision:
    """One decision: who is asking, consent and suppression, segment, variant, and why.
    Reasons name ids, accounts and flags only for a caller with the explain scope."""
    return await deciding.decide(request.scope, request.body, caller_of(request))
