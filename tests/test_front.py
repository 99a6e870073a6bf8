"""The decide front answers POST /v1/decide exactly as litestar's own path does: the same
status, headers (in order) and body, byte for byte, for every kind of request and refusal,
under each configuration of keys, CORS and limits; and it leaves everything else to
litestar. Requests are raw ASGI calls, so what is compared is what a server would send."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from litestar import Litestar
from litestar.types import HTTPScope as Scope

from decider.profiles.jsonl import sample_profiles
from decider.profiles.sources.memory import MemoryProfileSource
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.ruleset import CompiledRuleset
from decider.server.app import DeciderApp, create_app
from decider.settings import Settings
from decider.wiring import Service, build_service

from .conftest import NOW, RULES, api_key

EDGE = "edge-0123456789"  # decide
ANALYST = "analyst-0123456789"  # decide, explain
CMP = "cmp-0123456789"  # decide, consent
OPS = "ops-0123456789"  # admin
KEYS = ",".join(
    [
        api_key(EDGE, "decide", name="edge"),
        api_key(ANALYST, "decide", "explain", name="analyst"),
        api_key(CMP, "decide", "consent", name="cmp"),
        api_key(OPS, "admin", name="ops"),
    ]
)
CONFIGS: dict[str, dict[str, Any]] = {
    "loopback": {},
    "keys": {"api_keys": KEYS},
    "keys, anonymous": {"api_keys": KEYS, "allow_anonymous": True},
    "cors": {"api_keys": KEYS, "cors_origins": "https://shop.example,https://b.example"},
    "cors, credentials": {"cors_origins": "https://shop.example", "cors_credentials": True},
    "cors, any origin": {"cors_origins": "*"},
    "small limits": {"max_body_bytes": 256, "max_header_bytes": 1024},
}
ADA = b'{"placement": "home_hero", "identity": {"visitor_id": "anon-1", "user_id": "u-ada"}}'
EXPLAIN = ADA[:-1] + b', "explain": true}'
CONSENT = (
    b'{"placement": "home_hero", "identity": {"visitor_id": "v-1"}, '
    b'"consent": {"purposes": ["personalization"]}}'
)
NO_CONSENT = (
    b'{"placement": "home_hero", "identity": {"visitor_id": "v-1"}, "consent": {"purposes": []}}'
)
ORIGIN = (b"origin", b"https://shop.example")
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def bearer(secret: str) -> tuple[bytes, bytes]:
    return b"authorization", f"Bearer {secret}".encode()


# a body in chunks and headers; each goes out under every configuration
REQUESTS = [
    pytest.param([ADA], [], id="a decision"),
    pytest.param([EXPLAIN], [], id="explain"),
    pytest.param([CONSENT], [], id="the consent signal"),
    pytest.param([NO_CONSENT], [], id="consent withdrawn"),
    pytest.param([ADA], [(b"sec-gpc", b" 1 ")], id="Sec-GPC"),
    pytest.param([b""], [], id="an empty body"),
    pytest.param([b"{"], [], id="not JSON"),
    pytest.param([b"[]"], [], id="not an object"),
    pytest.param([b'{"placment": "home_hero"}'], [], id="a field misspelled"),
    pytest.param(
        [b'{"placement": "a", "placement": "b", "identity": {"user_id": "u"}}'],
        [],
        id="a key twice",
    ),
    pytest.param(
        [b'{"placement": "nope", "identity": {"visitor_id": "v"}}'], [], id="an unknown placement"
    ),
    pytest.param(
        [b'{"placement": "home_hero", "identity": {"user_id": "a@b.example"}}'],
        [],
        id="an email as an id",
    ),
    pytest.param([ADA[:30], ADA[30:60], ADA[60:]], [], id="a body in pieces"),
    pytest.param([b" " * 300 + ADA], [], id="a body over the limit"),
    pytest.param([b" " * 200, b" " * 200, ADA], [], id="a body over the limit in pieces"),
    pytest.param([ADA], [(b"x-request-id", b"req-7")], id="a request id"),
    pytest.param([ADA], [(b"x-request-id", b"has space")], id="a request id that is not sane"),
    pytest.param([ADA], [ORIGIN], id="an allowed origin"),
    pytest.param([ADA], [ORIGIN, (b"cookie", b"a=b")], id="an allowed origin, with a cookie"),
    pytest.param([ADA], [(b"origin", b"https://evil.example")], id="another origin"),
    pytest.param([b"{"], [(b"origin", b"https://evil.example")], id="another origin, refused"),
    pytest.param([ADA], [(b"x-forwarded-for", b"203.0.113.9")], id="a forwarded request"),
    pytest.param([ADA], [(b"host", b"rebound.example")], id="a page's own Host"),
    pytest.param([ADA], [bearer(EDGE)], id="a key"),
    pytest.param([EXPLAIN], [bearer(EDGE)], id="a key asking for explain"),
    pytest.param([EXPLAIN], [bearer(ANALYST)], id="an explain key"),
    pytest.param([CONSENT], [bearer(EDGE)], id="a key sending consent"),
    pytest.param([CONSENT], [(b"x-api-key", CMP.encode())], id="a consent key"),
    pytest.param([ADA], [(b"x-api-key", OPS.encode())], id="a key of another scope"),
    pytest.param([ADA], [bearer("wrong"), ORIGIN], id="a wrong key"),
    pytest.param([ADA], [bearer(EDGE), (b"x-api-key", ANALYST.encode())], id="two keys"),
]
# announced lengths (none, wrong, lying), for bodies within DECIDER_MAX_BODY_BYTES and past
# it, in one piece or several: litestar trusts no length beyond the limit
LENGTHS = [None, b"abc", b" 1_0 ", b"-1", b"3", b"100000"]
BODIES = {"small": [ADA], "large": [b" " * 300 + ADA], "large, in pieces": [b" " * 200] * 3}


def service_for(ruleset: CompiledRuleset, settings: dict[str, Any]) -> Service:
    options = Settings(rules_dir=RULES, watch_rules=False, **settings)
    source = MemoryProfileSource(sample_profiles(NOW))
    return build_service(
        options, source=source, ruleset=ruleset, clock=lambda: NOW, ids=lambda: "d"
    )


def scope_of(
    headers: list[tuple[bytes, bytes]],
    *,
    method: str = "POST",
    path: str = "/v1/decide",
    root_path: str = "",
) -> Scope:
    named = {name for name, _ in headers}
    given = [] if b"host" in named else [(b"host", b"127.0.0.1:8080")]
    return cast(
        "Scope",
        {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"explain=true",
            "root_path": root_path,
            "headers": [*given, (b"content-type", b"application/json"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "state": {},
            "extensions": {},
        },
    )


async def exchange(
    app: ASGIApp, scope: Scope, chunks: list[bytes], *, gone: bool = False
) -> list[Message]:
    """What `app` sends for the request of `scope` with its body in `chunks` (the client
    gone before the last one, if `gone`)."""
    events: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    if gone:
        events[-1] = {"type": "http.disconnect"}
    sent: list[Message] = []

    async def receive() -> Message:
        if events:
            return events.pop(0)
        await asyncio.Event().wait()  # a client that sends nothing more
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    await app(cast("Scope", {**scope, "state": {}}), receive, send)  # each its own state
    return sent


def fresh_ids_masked(messages: list[Message]) -> list[Message]:
    """The messages, a request id the app made up (16 random hex digits) masked."""
    for message in messages:
        if message["type"] == "http.response.start":
            message["headers"] = [
                (
                    k,
                    b"<made up>"
                    if k == b"x-request-id" and re.fullmatch(rb"[0-9a-f]{16}", v)
                    else v,
                )
                for k, v in message["headers"]
            ]
    return messages


def litestar_path(app: Litestar) -> ASGIApp:
    """The app without its front: litestar's routing, middleware and handler."""

    async def call(scope: Any, receive: Any, send: Any) -> None:
        await Litestar.__call__(app, scope, receive, send)

    return call


@pytest.fixture(scope="module")
def rules() -> CompiledRuleset:
    return compile_ruleset(RULES, new_engine("cel-expr"))


@pytest.fixture(scope="module", params=list(CONFIGS))
def served(request: pytest.FixtureRequest, rules: CompiledRuleset) -> DeciderApp:
    return create_app(service_for(rules, CONFIGS[request.param]))


def both(
    app: DeciderApp, scope: Scope, chunks: list[bytes], *, gone: bool = False
) -> tuple[list[Message], list[Message]]:
    """The front's answer and litestar's, to the same request."""

    async def main() -> tuple[list[Message], list[Message]]:
        front = await exchange(app, scope, chunks, gone=gone)
        other = await exchange(litestar_path(app), scope, chunks, gone=gone)
        return fresh_ids_masked(front), fresh_ids_masked(other)

    return asyncio.run(main())


@pytest.mark.parametrize(("chunks", "headers"), REQUESTS)
def test_the_front_answers_as_litestar_does(
    served: DeciderApp, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> None:
    length = (b"content-length", str(sum(map(len, chunks))).encode())
    scope = scope_of([*headers, length])
    assert served.front.serves(scope)
    front, other = both(served, scope, chunks)
    assert front == other
    assert front[0]["status"] != 500, front


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize("length", LENGTHS)
def test_a_body_is_read_as_litestar_reads_it(
    served: DeciderApp, length: bytes | None, body: str
) -> None:
    scope = scope_of([] if length is None else [(b"content-length", length)])
    front, other = both(served, scope, BODIES[body])
    assert front == other


def test_a_client_gone_before_its_body_ends_is_answered_as_litestar_does(
    served: DeciderApp,
) -> None:
    front, other = both(served, scope_of([]), [ADA[:20], b""], gone=True)
    assert front == other


def test_under_a_root_path_the_front_serves_what_litestar_routes_here(served: DeciderApp) -> None:
    for path in ("/api/v1/decide", "/v1/decide"):
        scope = scope_of([], path=path, root_path="/api")
        assert served.front.serves(scope)
        front, other = both(served, scope, [ADA])
        assert front == other


def test_past_the_in_flight_limit_the_front_sheds_as_litestar_does(
    rules: CompiledRuleset,
) -> None:
    app = create_app(service_for(rules, {"max_in_flight": 1}))

    async def main() -> tuple[list[Message], list[Message]]:
        # a decision holding the one place (a body still coming holds none)
        with app.front._deciding.admission:
            front = await exchange(app, scope_of([]), [ADA])
            other = await exchange(litestar_path(app), scope_of([]), [ADA])
        return fresh_ids_masked(front), fresh_ids_masked(other)

    front, other = asyncio.run(main())
    assert front[0]["status"] == 503
    assert front == other


@pytest.mark.parametrize(
    ("scope", "status"),
    [
        (scope_of([], method="GET"), 405),
        (scope_of([], method="HEAD"), 405),
        (scope_of([ORIGIN, (b"access-control-request-method", b"POST")], method="OPTIONS"), 204),
        (scope_of([], path="/v1/decide/"), 200),
        (scope_of([], path="//v1/decide"), 200),
        (scope_of([], path="/v1/Decide"), 404),
        (scope_of([(b"host", b"bad host")]), 400),
        (scope_of([(b"x-padding", b"x" * 20_000)]), 431),
    ],
    ids=["GET", "HEAD", "preflight", "trailing slash", "double slash", "case", "host", "431"],
)
def test_the_front_leaves_the_rest_to_litestar(
    rules: CompiledRuleset, scope: Scope, status: int
) -> None:
    app = create_app(service_for(rules, {"cors_origins": "https://shop.example"}))
    assert not app.front.serves(scope)
    answer = asyncio.run(exchange(app, scope, [ADA]))
    assert answer[0]["status"] == status
    if status == 200:  # litestar's route decides as the front does
        assert answer[1] == asyncio.run(exchange(app, scope_of([]), [ADA]))[1]
