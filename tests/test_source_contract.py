"""The profile source contract, run against every registered source: unknown ids, aliases,
flags, consent records, odd ids, and an unavailable source.

Each source gets a harness that loads records the way that source is filled (an import into
SQLite, a profile API answering over httpx.MockTransport, the in-memory dicts) and can take
it down. A source registered without a harness fails here, so none is left unchecked.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote

import httpx
import msgspec
import pytest

from decider.errors import ProfileSourceError
from decider.profile import AccountProfile, ConsentRecord, VisitorProfile
from decider.profiles.jsonl import AccountRecord, VisitorRecord
from decider.profiles.sources import DRIVERS
from decider.profiles.sources.base import ProfileSource
from decider.profiles.sources.http import HttpProfileSource
from decider.profiles.sources.memory import MemoryProfileSource
from decider.profiles.sources.sqlite import SqliteProfileStore

T = TypeVar("T")
Profile = VisitorProfile | AccountProfile

ADA_EMAIL = hashlib.sha256(b"ada@example.com").hexdigest()
ACME = AccountProfile(id="acc-1", flags=frozenset({"customer"}), traits={"name": "Acme"})
ADA = VisitorProfile(
    id="v-1",
    account_id="acc-1",
    user_ids=("u-1",),
    email_sha256=(ADA_EMAIL,),
    consent=(
        ConsentRecord(
            "personalization",
            "consent",
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2027, 1, 1, 12, 30, tzinfo=UTC),
        ),
        ConsentRecord("email_marketing", "legitimate_interest", datetime(2026, 2, 1, tzinfo=UTC)),
    ),
    flags=frozenset({"unsubscribed", "bounced"}),
    traits={"role": "vp", "score": 1.5, "seen": ["a", "b"], "shop": {"cart_adds": 3}},
)
ODD_IDS = ("a/b", "..", "?x=1#y", "naïve id", "%2F")


class Harness(Protocol):
    source: ProfileSource

    def load(self, *records: Profile) -> None:
        """Fill the source, as that source is filled in production."""

    def take_down(self) -> None:
        """Make the source fail as it would in an outage."""


class SqliteHarness:
    def __init__(self, path: Path) -> None:
        self.source = self.store = SqliteProfileStore(path)

    def load(self, *records: Profile) -> None:
        self.store.import_records(records)

    def take_down(self) -> None:
        self.store.close()


class MemoryHarness:
    def __init__(self) -> None:
        self.source = self.memory = MemoryProfileSource()

    def load(self, *records: Profile) -> None:
        self.memory.load(records)

    def take_down(self) -> None:
        self.memory.available = False


class HttpHarness:
    """A profile API over MockTransport, serving what an in-memory source holds."""

    def __init__(self) -> None:
        self.backing = MemoryProfileSource()
        self.down = False
        transport = httpx.MockTransport(self._answer)
        self.source = HttpProfileSource(
            httpx.AsyncClient(transport=transport, base_url="http://profiles.test")
        )

    def load(self, *records: Profile) -> None:
        self.backing.load(records)

    def take_down(self) -> None:
        self.down = True

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            return httpx.Response(503)
        parts = [unquote(p) for p in request.url.raw_path.decode().split("/")[1:]]
        found: object = None
        match parts:
            case ["healthz"]:
                return httpx.Response(200)
            case ["visitors", visitor_id]:
                found = self.backing.visitors.get(visitor_id)
            case ["accounts", account_id]:
                found = self.backing.accounts.get(account_id)
            case ["identities", ("user_id" | "email_sha256") as kind, value]:
                linked = self.backing.aliases.get((kind, value))
                found = {"visitor_id": linked} if linked else None
        if found is None:
            return httpx.Response(404)
        return httpx.Response(200, content=msgspec.json.encode(found))


@pytest.fixture(params=sorted(DRIVERS))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    name = request.param
    harnesses: dict[str, Any] = {
        "sqlite": lambda: SqliteHarness(tmp_path / "profiles.db"),
        "memory": MemoryHarness,
        "http": HttpHarness,
    }
    if name not in harnesses:
        pytest.fail(f"the {name} profile source has no contract harness in {__name__}")
    made: Harness = harnesses[name]()
    yield made
    run(made.source.aclose())


def run(lookup: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(lookup)


def test_profiles_are_found_by_id_and_alias_as_they_were_loaded(harness: Harness) -> None:
    """Visitors and accounts come back whole (consent, flags, traits), and visitors are found
    by user id and by email hash."""
    harness.load(ACME, ADA)
    source = harness.source
    assert run(source.visitor("v-1")) == ADA
    assert run(source.account("acc-1")) == ACME
    assert run(source.alias("user_id", "u-1")) == "v-1"
    assert run(source.alias("email_sha256", ADA_EMAIL)) == "v-1"
    assert run(source.ready()) is True


def test_import_records_are_stored_without_their_kind_tag(harness: Harness) -> None:
    """Records read from JSONL (tagged with `kind`) load as plain profiles."""
    harness.load(
        AccountRecord(**msgspec.structs.asdict(ACME)), VisitorRecord(**msgspec.structs.asdict(ADA))
    )
    assert type(run(harness.source.visitor("v-1"))) is VisitorProfile
    assert run(harness.source.account("acc-1")) == ACME


@pytest.mark.parametrize(
    "lookup",
    [
        lambda s: s.visitor("v-nobody"),
        lambda s: s.account("acc-nobody"),
        lambda s: s.alias("user_id", "u-nobody"),
        lambda s: s.alias("user_id", ADA_EMAIL),  # an email hash is not a user id
        lambda s: s.alias("email_sha256", "u-1"),  # nor a user id an email hash
        lambda s: s.visitor("acc-1"),  # an account id is not a visitor id
        lambda s: s.account("v-1"),  # nor a visitor id an account id
    ],
)
def test_unknown_ids_are_none(harness: Harness, lookup: Any) -> None:
    """Ids the source does not hold, or ids of the wrong kind, answer None; they never raise."""
    harness.load(ACME, ADA)
    assert run(lookup(harness.source)) is None


def test_loading_a_visitor_again_replaces_its_aliases(harness: Harness) -> None:
    """A visitor loaded again keeps only its new aliases: the old ones resolve no more."""
    harness.load(ADA)
    harness.load(msgspec.structs.replace(ADA, user_ids=("u-new",), email_sha256=()))
    source = harness.source
    assert run(source.alias("user_id", "u-new")) == "v-1"
    assert run(source.alias("user_id", "u-1")) is None
    assert run(source.alias("email_sha256", ADA_EMAIL)) is None
    visitor = run(source.visitor("v-1"))
    assert visitor is not None
    assert visitor.user_ids == ("u-new",)


@pytest.mark.parametrize("odd", ODD_IDS)
def test_ids_with_any_characters_round_trip(harness: Harness, odd: str) -> None:
    """Ids holding '/', '..', '?', '#', '%' or non-ASCII find exactly their own record."""
    harness.load(
        AccountProfile(id=odd),
        VisitorProfile(id=odd, account_id=odd, user_ids=(odd,)),
        VisitorProfile(id="v-decoy", user_ids=("a", "b", "x")),
    )
    source = harness.source
    visitor = run(source.visitor(odd))
    assert visitor is not None
    assert visitor.id == odd
    account = run(source.account(odd))
    assert account is not None
    assert account.id == odd
    assert run(source.alias("user_id", odd)) == odd


@pytest.mark.parametrize("kind", ["visitor", "account", "alias"])
def test_an_unavailable_source_raises_and_is_not_ready(harness: Harness, kind: str) -> None:
    """Down, every lookup raises ProfileSourceError (never another exception, never None),
    and ready() says False."""
    harness.load(ACME, ADA)
    harness.take_down()
    source = harness.source
    lookups: dict[str, Coroutine[Any, Any, object]] = {
        "visitor": source.visitor("v-1"),
        "account": source.account("acc-1"),
        "alias": source.alias("user_id", "u-1"),
    }
    with pytest.raises(ProfileSourceError):
        run(lookups.pop(kind))
    for unused in lookups.values():
        unused.close()
    assert run(source.ready()) is False
