"""The decide front answers POST /v1/decide exactly as litestar's own path does: the same
status, headers (in order) and body, byte for byte, for every kind of request and refusal,
under each configuration of keys, CORS and limits; and it leaves everything else to
litestar. Requests are raw ASGI calls, so what is compared is what a server would send."""

from __future__ import annotations

import asyncio
import hashlib
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

from .conftest import NOW, RULES

EDGE, ANALYST, CMP, ADMIN = (
    "edge-0123456789",
    "analyst-0123456789",
    "cmp-0123456789",
    "ops-01234567",
)


def _key(name: str, secret: str, *scopes: str) -> str:
    return f"{name}:{'+'.join(scopes)}:{hashlib.sha256(secret.encode()).hexdigest()}"


KEYS = ",".join(
    [
        _key("edge", EDGE, "decide"),
        _key("analyst", ANALYST, "decide", "explain"),
        _key("cmp", CMP, "decide", "consent"),
        _key("ops", ADMIN, "admin"),
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


# (what, body in chunks, headers); every request goes out once per configuration and key
REQUESTS: list[tuple[str, list[bytes], list[tuple[bytes, bytes]]]] = [
    ("a decision", [ADA], []),
    ("explain", [EXPLAIN], []),
    ("the consent signal", [CONSENT], []),
    ("consent withdrawn", [NO_CONSENT], []),
    ("Sec-GPC", [ADA], [(b"sec-gpc", b" 1 ")]),
    ("an empty body", [b""], []),
    ("not JSON", [b"{"], []),
    ("not an object", [b"[]"], []),
    ("a field misspelled", [b'{"placment": "home_hero"}'], []),
    ("a key twice", [b'{"placement": "a", "placement": "b", "identity": {"user_id": "u"}}'], []),
    ("an unknown placement", [b'{"placement": "nope", "identity": {"visitor_id": "v"}}'], []),
    (
        "an email as an id",
        [b'{"placement": "home_hero", "identity": {"user_id": "a@b.example"}}'],
        [],
    ),
    ("a body in pieces", [ADA[:30], ADA[30:60], ADA[60:]], []),
    ("a body over the limit", [b" " * 300 + ADA], []),
    ("a body over the limit in pieces", [b" " * 200, b" " * 200, ADA], []),
    ("a request id", [ADA], [(b"x-request-id", b"req-7")]),
    ("a request id that is not sane", [ADA], [(b"x-request-id", b"has space")]),
    ("an allowed origin", [ADA], [ORIGIN]),
    ("an allowed origin, with a cookie", [ADA], [ORIGIN, (b"cookie", b"a=b")]),
    ("another origin", [ADA], [(b"origin", b"https://evil.example")]),
    ("another origin, refused", [b"{"], [(b"origin", b"https://evil.example")]),
    ("a forwarded request", [ADA], [(b"x-forwarded-for", b"203.0.113.9")]),
    ("a page's own Host", [ADA], [(b"host", b"rebound.example")]),
    ("a key", [ADA], [bearer(EDGE)]),
    ("a key asking for explain", [EXPLAIN], [bearer(EDGE)]),
    ("an explain key", [EXPLAIN], [bearer(ANALYST)]),
    ("a key sending consent", [CONSENT], [bearer(EDGE)]),
    ("a consent key", [CONSENT], [(b"x-api-key", CMP.encode())]),
    ("a key of another scope", [ADA], [(b"x-api-key", ADMIN.encode())]),
    ("a wrong key", [ADA], [bearer("wrong"), ORIGIN]),
    ("two keys", [ADA], [bearer(EDGE), (b"x-api-key", ANALYST.encode())]),
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


@pytest.mark.parametrize(("what", "chunks", "headers"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_the_front_answers_as_litestar_does(
    served: DeciderApp, what: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
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
        # a decision holding the one place: its body never comes
        held = asyncio.create_task(exchange(app, scope_of([]), []))
        await asyncio.sleep(0.01)
        front = await exchange(app, scope_of([]), [ADA])
        other = await exchange(litestar_path(app), scope_of([]), [ADA])
        held.cancel()
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
