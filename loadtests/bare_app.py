"""A bare litestar endpoint, the yardstick for Decider's HTTP numbers: the same server stack
(uvicorn with Decider's protocol and uvloop, one worker, no access log), a JSON POST decoded
by msgspec and a small JSON answer, and nothing else. Serve:

    uvicorn loadtests.bare_app:app --http decider.server.protocol:GuardedHttpToolsProtocol \
        --loop uvloop --no-access-log
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Request, post


class Answer(msgspec.Struct, frozen=True):
    placement: str
    variant: str


_decoder = msgspec.json.Decoder(dict[str, Any])


@post("/v1/decide", status_code=200)
async def decide(request: Request[Any, Any, Any]) -> Answer:
    body = _decoder.decode(await request.body())
    return Answer(str(body.get("placement")), "default")


app = Litestar(route_handlers=[decide])
