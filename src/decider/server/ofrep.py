"""OFREP, the OpenFeature Remote Evaluation Protocol, served over decisions (decider.ofrep says
how the protocol is read): any OpenFeature SDK with an OFREP provider evaluates a placement
as a flag.

Every flag is decided as POST /v1/decide decides (decider.server.decide.Deciding): the same
keys and scopes at the door (a key that may decide may evaluate), admission, consent,
suppression, stats, the exposure log and metrics, one decision per flag. Errors are in
OFREP's shape, `{key, errorCode, errorDetails}` (`{errorCode, errorDetails}` for the bulk
request), never problem details: an OFREP client reads those.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, Router, post
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Example,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Parameter,
    Schema,
)
from litestar.params import FromPath
from litestar.types import Middleware
from litestar.types import Scope as ASGIScope

from decider.errors import Forbidden, InvalidRequest, UnknownPlacement
from decider.model import ProblemDetails
from decider.ofrep import (
    Bulk,
    BulkFailure,
    Evaluation,
    EvaluationRequest,
    FailureCode,
    FlagFailure,
    FlagNotFound,
    OfrepRefusal,
    details,
    echoed,
    etag,
    evaluation,
    none_match,
    read_context,
    request_for,
)
from decider.server.auth import REQUIREMENT, caller_of
from decider.server.decide import GPC_HEADER, Deciding, gpc
from decider.server.openapi import body_operation, inline_schema
from decider.server.problems import refusal

PREFIX = "/ofrep/v1/evaluate/flags"
_JSON = "application/json"
_IF_NONE_MATCH = Parameter(
    name="If-None-Match",
    param_in=ParamType.HEADER,
    required=False,
    schema=Schema(type=OpenAPIType.STRING),
    description="the ETag of a bulk answer the caller holds: 304 while it is current",
)


# litestar makes no schema of a list holding two kinds of struct, and documents no ETag
_BULK_200 = OpenAPIResponse(
    description="Every placement's decision, in id order, or why it was not made",
    headers={
        "ETag": OpenAPIHeader(
            schema=Schema(type=OpenAPIType.STRING),
            required=True,
            description="covers the ruleset, the context and every evaluation (not the "
            "decision ids): a changed context or profile never gets a stale 304",
        )
    },
    content={
        _JSON: OpenAPIMediaType(
            schema={  # type: ignore[arg-type]
                "type": "object",
                "required": ["flags"],
                "properties": {
                    "flags": {
                        "type": "array",
                        "items": {"anyOf": [inline_schema(Evaluation), inline_schema(FlagFailure)]},
                    }
                },
            }
        )
    },
)


@post(
    f"{PREFIX}/{{key:str}}",
    status_code=200,
    operation_class=body_operation(EvaluationRequest, GPC_HEADER, required=False),
    operation_id="ofrepEvaluateFlag",
    summary="OFREP: evaluate one flag (a placement)",
    response_description="The placement's decision as an OpenFeature evaluation",
    responses={
        400: ResponseSpec(
            FlagFailure,
            generate_examples=False,
            description="PARSE_ERROR (the body), TARGETING_KEY_MISSING or INVALID_CONTEXT",
            examples=[
                Example(
                    summary="TARGETING_KEY_MISSING",
                    value={
                        "key": "home_hero",
                        "errorCode": "TARGETING_KEY_MISSING",
                        "errorDetails": "context.targetingKey: a targetingKey ... is required",
                    },
                )
            ],
        ),
        404: ResponseSpec(
            FlagNotFound, generate_examples=False, description="No placement of that id"
        ),
        **{
            status: ResponseSpec(FlagFailure, generate_examples=False, description=words)
            for status, words in (
                (401, "No API key, or a wrong one (GENERAL)"),
                (403, "The API key lacks the decide scope, or the consent scope (GENERAL)"),
                (413, "The body is larger than DECIDER_MAX_BODY_BYTES (GENERAL)"),
                (503, "Too many decisions in flight; retry after Retry-After (GENERAL)"),
            )
        },
    },
)
async def evaluate_flag(
    key: FromPath[str], request: Request[Any, Any, Any], deciding: NamedDependency[Deciding]
) -> Evaluation:
    """One placement, decided for the evaluation context: `targetingKey` is the visitor id
    unless `visitor_id`, `user_id`, `email_sha256` or `account_id` name the identity;
    `consent` lists the purposes the consent banner grants; other keys are the rules'
    `context`."""
    context = read_context(await request.body())
    if key not in deciding.decider.ruleset.placements:
        raise UnknownPlacement("key", "no placement of this id in the loaded rules")
    decided = await deciding.answer(request.scope, request_for(key, context), caller_of(request))
    return evaluation(decided)


@post(
    PREFIX,
    status_code=200,
    operation_class=body_operation(
        EvaluationRequest, GPC_HEADER, _IF_NONE_MATCH, required=False, answers={"200": _BULK_200}
    ),
    operation_id="ofrepEvaluateFlags",
    summary="OFREP: evaluate every flag (every placement)",
    responses={
        304: ResponseSpec(None, description="If-None-Match names the current ETag"),
        **{
            status: ResponseSpec(BulkFailure, generate_examples=False, description=words)
            for status, words in (
                (400, "PARSE_ERROR (the body), TARGETING_KEY_MISSING or INVALID_CONTEXT"),
                (401, "No API key, or a wrong one (GENERAL)"),
                (403, "The API key lacks the decide scope, or the consent scope (GENERAL)"),
                (413, "The body is larger than DECIDER_MAX_BODY_BYTES (GENERAL)"),
                (503, "Too many decisions in flight; retry after Retry-After (GENERAL)"),
            )
        },
    },
)
async def evaluate_flags(
    request: Request[Any, Any, Any], deciding: NamedDependency[Deciding]
) -> Response[bytes]:
    """Every placement of the context's `channel` (the web unless it names another), each
    decided as the single evaluation decides it (a flag whose decision is refused is a
    failure of its own), all on one ruleset, the one the ETag names; 304 when If-None-Match
    names the answer's ETag."""
    if _no_key(request.scope):
        raise UnknownPlacement("key", "no flag key: a key follows the last slash")
    context = read_context(await request.body())
    common = request_for("", context)
    # the web's placements, a page's, unless the context names another channel
    channel = common.channel or "web"
    try:
        ruleset, decided = await deciding.answer_channel(
            request.scope, common, channel, caller_of(request)
        )
    except InvalidRequest as exc:
        if exc.field != "channel":
            raise
        raise OfrepRefusal("INVALID_CONTEXT", "context.channel", exc.message) from None
    refused = [d for _, d in decided if isinstance(d, InvalidRequest)]
    if refused and len(refused) == len(decided) and len({details(d) for d in refused}) == 1:
        raise refused[0]  # the context is wrong for every flag alike: one 400, not one a flag
    answer = Bulk(
        tuple(
            FlagFailure(key, "INVALID_CONTEXT", details(d))
            if isinstance(d, InvalidRequest)
            else evaluation(d)
            for key, d in decided
        )
    )
    tag = etag(ruleset.version, context, gpc(request.scope), answer)
    if none_match(request.headers.getall("if-none-match", []), tag):
        return Response(b"", status_code=304, headers={"ETag": tag})
    return Response(msgspec.json.encode(answer), media_type=_JSON, headers={"ETag": tag})


def ofrep_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Any error on the OFREP routes, or on a path under /ofrep/ that none serves, in OFREP's
    shape: the code OFREP names for it (bad input is a 400, an unknown flag a 404, a key
    with a slash too), else GENERAL with the status and headers decider.server.problems
    gives it (401, 403, 404, 405, 413, 503, and a logged 500)."""
    key = _flag_key(request.scope)
    headers: dict[str, str] = {}
    code: FailureCode = "GENERAL"
    if isinstance(exc, UnknownPlacement | NotFoundException) and key is not None:
        shown, why = echoed(key), "no placement of this id in the loaded rules"
        body = FlagNotFound(shown, "FLAG_NOT_FOUND", why)
        return Response(msgspec.json.encode(body), status_code=404, media_type=_JSON)
    if isinstance(exc, OfrepRefusal):
        status, code, why = 400, exc.error_code, details(exc)
    elif isinstance(exc, Forbidden):  # the consent signal, without the consent scope
        status, why = 403, details(exc)
    elif isinstance(exc, InvalidRequest):
        status, code, why = 400, "INVALID_CONTEXT", details(exc)
    else:
        status, problem, headers = refusal(exc, request.scope)
        why = msgspec.json.decode(problem, type=ProblemDetails).detail
        if status == 405:
            why = f"{request.method} is not allowed: OFREP evaluates flags with POST"
    failure: FlagFailure | BulkFailure = (
        FlagFailure(echoed(key), code, why) if key is not None else BulkFailure(code, why)
    )
    return Response(
        msgspec.json.encode(failure), status_code=status, media_type=_JSON, headers=headers
    )


def under_ofrep(scope: ASGIScope) -> bool:
    """Whether the request of `scope` is to a path under /ofrep/ (so its errors are OFREP's)."""
    return _path(scope).startswith("/ofrep/")


def _flag_key(scope: ASGIScope) -> str | None:
    """The flag a request is about: the route's key, else what follows PREFIX/ in a path no
    route serves (a key with a slash, `a%2Fb` too); None for the bulk request."""
    key: str | None = scope.get("path_params", {}).get("key")
    if key is not None:
        return key
    path = _path(scope)
    if path.startswith(f"{PREFIX}/"):
        return path.removeprefix(f"{PREFIX}/")
    return "" if path == PREFIX and _no_key(scope) else None


def _no_key(scope: ASGIScope) -> bool:
    """Whether the request is to PREFIX/, a flag with an empty key: the router strips the
    slash and would route it to the bulk evaluation."""
    raw: bytes = scope.get("raw_path") or b""
    return raw.endswith(b"/")


def _path(scope: ASGIScope) -> str:
    """The path as the router reads it, under the app's root path."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path.removeprefix(root) if root else path


def ofrep_router(door: Middleware) -> Router:
    """The OFREP routes behind `door` (the decide scope), answering errors as OFREP does."""
    return Router(
        path="/",
        route_handlers=[evaluate_flag, evaluate_flags],
        middleware=[door],
        security=REQUIREMENT,
        tags=["OFREP"],
        exception_handlers={Exception: ofrep_error},
    )
