"""The composition root: settings in, everything a running Decider needs out, built once.

`build_service` is the one place that picks implementations (CEL engine, profile source) and
wires them together; the HTTP app and the CLI take the finished `Service`. Time, decision
ids, the profile API's HTTP client, and for tests a ready source or ruleset, are injected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from decider.access import KeyRing, KeysError, parse_file, parse_spec
from decider.measure.measuring import Measuring, build_measuring
from decider.profiles.resolver import Resolver
from decider.profiles.sources import driver_for
from decider.profiles.sources.base import Opening, ProfileSource, ProfileStore
from decider.profiles.sources.sqlite import SqliteSettings
from decider.reload import Reloader
from decider.rules.cel import new_engine
from decider.rules.files import SCHEMA_FILE, display_name
from decider.rules.schema import read_schema
from decider.rules.suites import compile_and_test
from decider.ruleset import CompiledRuleset, EngineName
from decider.service import Decider, new_decision_id, utcnow
from decider.settings import SOURCE_VARIABLE, Settings, SettingsError
from decider.stats import Stats
from decider.traits import TraitSchema
from decider.usage.book import UsageBook
from decider.usage.keeper import UsageKeeper

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("decider")


@dataclass(frozen=True)
class Service:
    """A running Decider's parts. `running()` holds them live: reloads on file changes and
    SIGHUP while inside, the exposure and outcome writers running, and on the way out what
    they hold written, the segment usage counted since the last write added to its file,
    and the profile source closed."""

    settings: Settings
    decider: Decider
    source: ProfileSource
    resolver: Resolver
    stats: Stats
    reloader: Reloader
    keys: KeyRing
    measuring: Measuring
    usage: UsageKeeper

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Service]:
        # a first connection to a remote source is made now, not in a decision's budget
        await self.source.ready()
        ruleset = self.decider.ruleset
        log.info(
            "started",
            extra={
                "event": "start",
                "ruleset": ruleset.version,
                "engine": ruleset.engine.name,
                "segments": len(ruleset.segments),
                "profile_source": self.settings.profile_source,
                "keys": len(self.keys.keys),
                "allow_anonymous": self.settings.allow_anonymous,
            },
        )
        self.measuring.start()
        try:
            async with (
                self.usage.running(),
                self.reloader.running(
                    watch=self.settings.watch_rules,
                    debounce_ms=self.settings.reload_debounce_ms,
                ),
            ):
                yield self
        finally:
            await asyncio.to_thread(self.measuring.close)
            await self.source.aclose()
            log.info(
                "stopped",
                extra={"event": "stop", "ruleset": self.decider.ruleset.version},
            )


def load_rules(rules_dir: Path, engine: EngineName) -> CompiledRuleset:
    """What the service serves: the rules compiled on a new engine (each load its own, so a
    reload may compile on a worker thread while requests evaluate on the loop), their tests
    passing, all read from one revision of the directory. Raises RulesetError with every
    problem."""
    return compile_and_test(rules_dir, new_engine(engine))


def build_service(
    settings: Settings,
    *,
    http_client: httpx.AsyncClient | None = None,
    clock: Callable[[], datetime] = utcnow,
    ids: Callable[[], str] = new_decision_id,
    source: ProfileSource | None = None,
    ruleset: CompiledRuleset | None = None,
    on_load: Callable[[CompiledRuleset], None] | None = None,
) -> Service:
    """Compile and test the rules (so broken rules stop the service before it listens), then
    open the profile source and build the rest around them.

    `on_load` is told of every ruleset a reload loads (before it is swapped in).

    Raises RulesetError for rules that fail, ProfileSourceError for a source that cannot open,
    SettingsError for API keys that are wrong.
    """
    keys = load_keys(settings)
    ruleset = ruleset or load_rules(settings.rules_dir, settings.engine)
    # reloads compile on the engine the service serves with
    engine = ruleset.engine.name

    def load() -> CompiledRuleset:
        loaded = load_rules(settings.rules_dir, engine)
        if on_load is not None:  # e.g. keep it for workers that start later
            on_load(loaded)
        return loaded

    decider: Decider | None = None

    def current() -> CompiledRuleset:
        """The ruleset served now: a reload may change it."""
        return decider.ruleset if decider is not None else ruleset

    def schema() -> TraitSchema | None:
        return current().schema

    if source is None:
        opening = Opening(now=clock(), http_client=http_client, schema=schema)
        source = driver_for(settings.profile).open_with(settings.profile, opening)
    resolver = Resolver(
        source,
        budget=settings.profile_budget_ms / 1000,
        cache=settings.cache,
        changes=source.changes if isinstance(source, ProfileStore) else None,
    )
    stats = Stats(clock())
    measuring = build_measuring(settings, resolver, lambda: current().policy, clock=clock)
    exposures = measuring.expose if measuring.exposures.enabled else None
    decider = Decider(ruleset, resolver, stats, clock=clock, ids=ids, exposures=exposures)
    reloader = Reloader(decider, load, rules_dir=settings.rules_dir, clock=clock)
    usage = UsageKeeper(
        UsageBook(settings.usage_path),
        stats,
        lambda: ([segment.id for segment in decider.ruleset.segments], reloader.loaded_at),
        clock=clock,
        every_s=settings.usage_flush_s,
        idle_days=settings.idle_days,
    )
    return Service(settings, decider, source, resolver, stats, reloader, keys, measuring, usage)


def load_keys(settings: Settings) -> KeyRing:
    """The API keys of DECIDER_API_KEYS and DECIDER_API_KEYS_FILE, together. Raises
    SettingsError naming the variable (never a hash) for a key that is wrong."""
    try:
        keys = parse_spec(settings.api_keys or "", "DECIDER_API_KEYS")
        path = settings.api_keys_file
        if path is not None:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise KeysError(f"cannot read {path}: {exc.strerror or exc}") from None
            keys += parse_file(data, f"DECIDER_API_KEYS_FILE ({path})")
        return KeyRing(keys)
    except KeysError as exc:
        message = str(exc)
        if not message.startswith("DECIDER_"):
            message = f"DECIDER_API_KEYS / DECIDER_API_KEYS_FILE: {message}"
        raise SettingsError(message) from None


def open_store(settings: Settings, *, schema: TraitSchema | None, now: datetime) -> ProfileStore:
    """The configured profile store, for `decider profiles` (imports, access, erasure): one
    whose writes reach every process serving from it, opened without seeding samples.
    Raises SettingsError for a source Decider cannot write from the command line."""
    profile = settings.profile
    driver = driver_for(profile)
    if not driver.shared:
        raise SettingsError(
            f"{SOURCE_VARIABLE}={driver.name}: `decider profiles` writes the sqlite or redis "
            "store; the http source is read-only and the memory one lives inside a server"
        )
    if isinstance(profile, SqliteSettings):
        profile = msgspec.structs.replace(profile, seed_samples=False)
    store = driver.open_with(profile, Opening(now=now, schema=lambda: schema))
    assert isinstance(store, ProfileStore)
    return store


def read_profile_schema(rules_dir: Path) -> TraitSchema | None:
    """The profile schema of a rules directory, if it has one. Raises RulesetError."""
    path = rules_dir / SCHEMA_FILE
    return read_schema(path, display_name(path)) if path.is_file() else None
