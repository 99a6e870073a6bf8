"""A request's ids in one round trip (POST /resolve): the resolver decides exactly as it does
over one GET per id, for every shape of ids (conflicts, merges, dangling links, the
account's rule), in one request to the API; page bursts share it; an API without the
endpoint is asked id by id; a change mid-trip is not overwritten by the trip's answer; an
answer that came in while the process stood still past the budget is taken; and the
README's example is what the contract answers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime

import httpx
import msgspec
import pytest
import uvloop

from decider.model import Channel, Identity
from decider.profile import AccountProfile, Resolution, VisitorProfile
from decider.profiles.cache import CacheSettings
from decider.profiles.jsonl import sample_profiles
from decider.profiles.resolver import Resolver
from decider.profiles.sources.base import Change, Opening
from decider.profiles.sources.http import HttpProfileSource, HttpSettings, open_source

from .conftest import NOW
from .fake_profile_api import fake_profile_api, resolve_answer, routes_of
from .test_clock import collection
from .test_readme import blocks, matches

ADA_EMAIL = hashlib.sha256(b"ada@example.com").hexdigest()
BEN_EMAIL = hashlib.sha256(b"ben@example.com").hexdigest()
PEOPLE: list[VisitorProfile | AccountProfile] = [
    AccountProfile(id="acc-northwind", traits={"fit_score": 92}),
    AccountProfile(id="acc-globex", traits={"fit_score": 64}),
    AccountProfile(id="acc-initech", traits={"fit_score": 71}),
    VisitorProfile(
        id="v-ada", account_id="acc-northwind", user_ids=("u-ada",), email_sha256=(ADA_EMAIL,)
    ),
    VisitorProfile(id="v-ben", account_id="acc-globex", email_sha256=(BEN_EMAIL,)),
    VisitorProfile(id="v-carol", user_ids=("u-carol",)),  # no account of her own
    VisitorProfile(id="v-anon"),
]
ROUTES = {
    **routes_of(PEOPLE),
    "/identities/user_id/u-ghost": b'{"visitor_id": "v-ghost"}',  # a link to nobody
}
SHAPES: dict[str, Identity] = {
    "user": Identity(user_id="u-ada"),
    "email": Identity(email_sha256=ADA_EMAIL),
    "cookie": Identity(visitor_id="v-ada"),
    "unknown cookie": Identity(visitor_id="c-new"),
    "account": Identity(account_id="acc-globex"),
    "user + another's cookie": Identity(user_id="u-ada", visitor_id="v-anon"),
    "user + another's email": Identity(user_id="u-ada", email_sha256=BEN_EMAIL),
    "email + another's cookie": Identity(email_sha256=BEN_EMAIL, visitor_id="v-ada"),
    "user + another account": Identity(user_id="u-ada", account_id="acc-globex"),
    "accountless user + account": Identity(user_id="u-carol", account_id="acc-initech"),
    "dangling user": Identity(user_id="u-ghost"),
    "unknown user + cookie": Identity(user_id="u-nobody", visitor_id="v-ben"),
    "every id": Identity(
        user_id="u-ada", email_sha256=BEN_EMAIL, visitor_id="v-anon", account_id="acc-initech"
    ),
}


class Api:
    """A MockTransport handler over ROUTES, POST /resolve included unless `resolves` is
    False; records what it is asked."""

    def __init__(self, *, resolves: bool = True) -> None:
        self.routes = dict(ROUTES)
        self.resolves = resolves
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        self.paths.append(path)
        if (request.method, path) == ("POST", "/resolve") and self.resolves:
            return httpx.Response(200, content=resolve_answer(request.content, self.routes.get))
        body = self.routes.get(path) if request.method == "GET" else None
        return httpx.Response(404) if body is None else httpx.Response(200, content=body)


Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


def resolver_over(
    handler: Handler,
    *,
    resolve: bool,
    budget: float = 5.0,
) -> Resolver:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://api.test")
    return Resolver(HttpProfileSource(http, resolve=resolve), budget=budget, cache=CacheSettings())


def cold(resolve: bool, identity: Identity, channel: Channel) -> tuple[Resolution, list[str]]:
    """A resolution on an empty cache, and the requests it made."""
    api = Api()
    return asyncio.run(resolver_over(api, resolve=resolve).resolve(identity, channel)), api.paths


@pytest.mark.parametrize("channel", ["web", "email"])
@pytest.mark.parametrize("shape", SHAPES)
def test_one_round_trip_resolves_as_one_get_per_id_does(shape: str, channel: Channel) -> None:
    """For every shape of ids, on web and email, the resolution from one POST /resolve is
    the one the GETs give: who is decided for, their account, everyone else the ids name,
    the reasons; and it took one request where the GETs took one or more per id."""
    identity = SHAPES[shape]
    by_gets, gets = cold(False, identity, channel)
    at_once, trips = cold(True, identity, channel)
    assert at_once == by_gets
    ids = [k for k in ("user_id", "email_sha256", "visitor_id") if getattr(identity, k)]
    assert trips == (["/resolve"] if ids else gets)  # an account alone is one GET either way
    assert len(gets) >= len(ids)


def test_a_warm_cache_asks_nothing_and_a_page_burst_asks_once() -> None:
    """Placements of one page decided at once share one round trip; decided again while the
    cache is fresh, they ask nothing."""
    api = Api()
    identity = SHAPES["every id"]

    async def main() -> tuple[list[Resolution], Resolution]:
        resolver = resolver_over(api, resolve=True)
        burst = await asyncio.gather(*(resolver.resolve(identity) for _ in range(3)))
        return list(burst), await resolver.resolve(identity)

    burst, warm = asyncio.run(main())
    assert api.paths == ["/resolve"]
    assert burst[0] == burst[1] == burst[2] == warm


def test_an_api_without_resolve_is_asked_id_by_id(caplog: pytest.LogCaptureFixture) -> None:
    """DECIDER_PROFILE_API_RESOLVE set for an API that lacks the endpoint: its 404 is seen
    once, that request's ids are asked by GET, and so is every request after it; a warning
    says so once; the resolutions are those of the GETs."""
    api = Api(resolves=False)
    first, second = SHAPES["user + another's cookie"], SHAPES["account"]

    async def main() -> tuple[Resolution, Resolution]:
        resolver = resolver_over(api, resolve=True)
        return await resolver.resolve(first), await resolver.resolve(second)

    with caplog.at_level(logging.WARNING, logger="decider"):
        found = asyncio.run(main())
    assert found == (cold(False, first, "web")[0], cold(False, second, "web")[0])
    assert api.paths.count("/resolve") == 1
    assert api.paths[0] == "/resolve"
    assert len([r for r in caplog.records if r.name == "decider"]) == 1


def test_a_change_during_a_trip_is_not_cached_from_its_answer() -> None:
    """The profile changes (the API's webhook names it) while a round trip is out: whatever
    that request then looks up is asked anew, so the next decision sees the change, as
    it would over GETs."""
    api = Api()
    changed = msgspec.json.encode(
        VisitorProfile(
            id="v-ada", account_id="acc-northwind", user_ids=("u-ada",), flags=frozenset({"vip"})
        )
    )

    async def main() -> Resolution:
        out, gate = asyncio.Event(), asyncio.Event()

        async def held(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/resolve":
                answer = api(request)  # as the API read it, before the change
                out.set()
                await gate.wait()
                return answer
            return api(request)

        resolver = resolver_over(held, resolve=True)
        during = asyncio.create_task(resolver.resolve(SHAPES["user"]))
        await out.wait()
        api.routes["/visitors/v-ada"] = changed
        resolver.apply(Change(visitors=("v-ada",)))
        gate.set()
        await during
        return await resolver.resolve(SHAPES["user"])

    after = asyncio.run(main())
    assert after.visitor is not None
    assert after.visitor.flags == frozenset({"vip"})


STALLS: dict[str, tuple[Callable[[float], None], float, float, float]] = {
    # what stops the process, for how long; when the API answers; the API timeout
    "busy with other requests": (time.sleep, 1.0, 0.05, 5.0),  # busy time counts against it
    "collecting garbage": (collection, 0.4, 0.6, 0.5),
}


@pytest.mark.parametrize("stall", STALLS)
def test_a_round_trip_outlasts_the_process_standing_still(stall: str) -> None:
    """Over a real socket, on aiohttp and uvloop: the round trip is out, then the process
    stands still: busy past the budget while the API answers, or collecting garbage so long
    that the answer, after it, comes past the budget's and the API timeout's first deadline.
    Both are the API's time, not the process's: the answer is used, no lookup counts late."""
    stand_still, seconds, latency, api_timeout = STALLS[stall]

    async def main(url: str) -> tuple[Resolution, tuple[int, int]]:
        settings = HttpSettings(api_url=url, api_timeout=api_timeout, api_resolve=True)
        source = open_source(settings, Opening(now=datetime.now(UTC)))
        resolver = Resolver(source, budget=0.5, cache=CacheSettings())
        try:
            await source.ready()  # a connection kept open
            api.latency = latency
            resolving = asyncio.create_task(resolver.resolve(SHAPES["user"]))
            while not api.asked:  # until the API has the request
                await asyncio.sleep(0.001)
            stand_still(seconds)
            return await resolving, resolver.lookups
        finally:
            await source.aclose()

    with fake_profile_api(ROUTES, keep_alive=True) as api:
        resolution, (_, late) = uvloop.run(main(api.url))
    assert (resolution.status, late) == ("resolved", 0)
    assert resolution.visitor is not None
    assert resolution.visitor.id == "v-ada"


def test_the_readmes_resolve_example_is_what_the_contract_answers() -> None:
    """The README's POST /resolve example, asked of an API holding the sample profiles (the
    fake API builds its answer from the GETs'), answers the JSON shown after it."""
    shown = blocks()
    (index,) = [i for i, (lang, text) in enumerate(shown) if lang == "http" and "/resolve" in text]
    asked = shown[index][1].strip().splitlines()[-1].encode()
    answer = resolve_answer(asked, routes_of(sample_profiles(NOW)).get)
    assert shown[index + 1][0] == "json"
    assert matches(msgspec.json.decode(shown[index + 1][1]), msgspec.json.decode(answer))
