"""A bare litestar endpoint, the yardstick for Decider's HTTP numbers: the same server stack
(uvicorn with Decider's protocol and uvloop, one worker, no access log), a decide-sized JSON
POST decoded by msgspec and a decision-sized JSON answer (the shape and length of Decider's
answer to loadtests/bench_http.py's request, ~900 bytes), and nothing else. Serve:

    uvicorn loadtests.bare_app:app --http decider.server.protocol:GuardedHttpToolsProtocol \
        --loop uvloop --no-access-log
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Request, post


class Variant(msgspec.Struct, frozen=True):
    id: str
    content: dict[str, str]


class Reason(msgspec.Struct, frozen=True):
    code: str
    message: str


class Answer(msgspec.Struct, frozen=True):
    decision_id: str
    ruleset: str
    placement: str
    channel: str
    segment: str
    variant: Variant
    personalized: bool
    suppressed: bool
    reasons: tuple[Reason, ...]


_VARIANT = Variant(
    "home_named_account",
    {
        "hero": "Built for teams like yours, with your whole buying committee in mind",
        "cta": "Book an executive briefing",
        "proof": "How a peer in your industry cut time-to-pipeline by 40%",
    },
)
_REASONS = (
    Reason("identity.stitched", "user_id is linked to visitor v-ada"),
    Reason(
        "identity.merged",
        "visitor_id anon-cookie-123 is read as v-ada: the known user_id wins over the anonymous id",
    ),
    Reason("identity.account", "account acc-northwind"),
    Reason("consent.granted", "personalization granted by stored consent records"),
    Reason(
        "segment.matched",
        "b2b_top_tier_evaluation is the highest-priority match; its variant is served",
    ),
)
_decoder = msgspec.json.Decoder(dict[str, Any])


@post("/v1/decide", status_code=200)
async def decide(request: Request[Any, Any, Any]) -> Answer:
    body = _decoder.decode(await request.body())
    return Answer(
        "b8eb7f9cec87c4dd4ff3fe231238ccc9",
        "8bf87d604a31",
        str(body.get("placement")),
        "web",
        "b2b_top_tier_evaluation",
        _VARIANT,
        True,
        False,
        _REASONS,
    )


app = Litestar(route_handlers=[decide])
