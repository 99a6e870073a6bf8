"""Service settings: one immutable object, every default defined once, read from DECIDER_*.

A field `name` is read from DECIDER_NAME; the cache's fields from DECIDER_CACHE_<NAME>, and
the chosen profile source's own settings (DECIDER_PROFILE_SOURCE) from
DECIDER_PROFILE_<NAME>. A bad value stops the service with a message naming its variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar, get_args, get_type_hints

import msgspec

from decider.errors import TYPE_WORDS, closest, validation_path
from decider.profiles.cache import CacheSettings
from decider.profiles.sources import DEFAULT, DRIVERS, driver_for
from decider.profiles.sources.base import SourceSettings
from decider.ruleset import EngineName

PREFIX = "DECIDER_"
CACHE_PREFIX = PREFIX + "CACHE_"
PROFILE_PREFIX = PREFIX + "PROFILE_"
SOURCE_VARIABLE = PROFILE_PREFIX + "SOURCE"
# old name -> new name: the old one is still read (the new one wins) and reported at start
RENAMED = {PREFIX + "SEED_SAMPLES": PROFILE_PREFIX + "SEED_SAMPLES"}
# gone, and what replaces them: set, they stop the service (a secret that silently stopped
# working would lock its owner out, or leave them thinking a route is closed)
REMOVED = {
    PREFIX + "ADMIN_TOKEN": "make an API key with the admin scope (decider keys new --scope "
    "admin) and configure it in DECIDER_API_KEYS or DECIDER_API_KEYS_FILE",
    PREFIX + "PROFILES_TOKEN": "make an API key with the profiles-read and profiles-write "
    "scopes (decider keys new --scope profiles-read --scope profiles-write) and configure it "
    "in DECIDER_API_KEYS or DECIDER_API_KEYS_FILE",
}


class SettingsError(ValueError):
    """A setting is wrong; the message starts with the variable's name."""


def _default_source() -> SourceSettings:
    settings: SourceSettings = DRIVERS[DEFAULT].settings()
    return settings


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything configurable; `profile` holds the chosen profile source's own settings."""

    rules_dir: Path = Path("rules")
    engine: EngineName = "cel-expr"
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    profile: SourceSettings = msgspec.field(default_factory=_default_source)
    profile_budget_ms: Annotated[float, msgspec.Meta(gt=0, le=60_000)] = 50.0
    cache: CacheSettings = msgspec.field(default_factory=CacheSettings)
    max_body_bytes: Annotated[int, msgspec.Meta(ge=256, le=64 * 1024 * 1024)] = 64 * 1024
    api_keys: str | None = None
    api_keys_file: Path | None = None
    allow_anonymous: bool = False
    cors_origins: str | None = None
    cors_credentials: bool = False
    log_format: Literal["auto", "json", "text"] = "auto"
    idle_timeout_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 5
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1024 * 1024)] = 16 * 1024
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    workers: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0  # 0: one per CPU
    reload_wait_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0
    watch_rules: bool = True
    reload_debounce_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 200
    # measuring lift (decider.measure): where exposures and outcomes go, the unit hashes' key
    exposure_sink: Literal["none", "jsonl", "stdout"] = "none"
    exposure_dir: Path = Path("measure/exposures")
    exposure_max_bytes: Annotated[int, msgspec.Meta(ge=4096, le=2**40)] = 64 * 1024 * 1024
    exposure_queue: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 100_000
    exposure_context: str | None = None
    exposure_all: bool = False
    outcome_dir: Path | None = None
    measure_key: str | None = None
    measure_retention_days: Annotated[int, msgspec.Meta(ge=0, le=36500)] = 400
    # segment governance that survives restarts (decider.usage)
    usage_db: Path | None = None
    usage_flush_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    idle_days: Annotated[int, msgspec.Meta(ge=1, le=36500)] = 90

    @property
    def allowed_origins(self) -> list[str]:
        """DECIDER_CORS_ORIGINS as a list: none by default, `*` for any origin."""
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]

    @property
    def exposure_context_keys(self) -> tuple[str, ...]:
        """DECIDER_EXPOSURE_CONTEXT as the context keys an exposure record copies."""
        return tuple(k.strip() for k in (self.exposure_context or "").split(",") if k.strip())

    @property
    def outcome_path(self) -> Path:
        """DECIDER_OUTCOME_DIR, or `outcomes` beside the exposure directory."""
        return self.outcome_dir or self.exposure_dir.parent / "outcomes"

    @property
    def usage_path(self) -> Path:
        """DECIDER_USAGE_DB, or `usage.db` beside the exposure directory."""
        return self.usage_db or self.exposure_dir.parent / "usage.db"

    @property
    def profile_source(self) -> str:
        """The name of the profile source `profile` configures."""
        return driver_for(self.profile).name

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from DECIDER_* variables; unset or empty ones keep their defaults."""
        for name, instead in REMOVED.items():
            if environ.get(name):
                raise SettingsError(f"{name} is no longer read: {instead}")
        renamed = {new: environ[old] for old, new in RENAMED.items() if old in environ}
        environ = {**renamed, **environ}
        name = environ.get(SOURCE_VARIABLE) or DEFAULT
        driver = DRIVERS.get(name)
        if driver is None:
            raise SettingsError(
                f"{SOURCE_VARIABLE}: unknown profile source {name!r}; "
                f"choose one of {', '.join(DRIVERS)}"
            )
        top = _read(cls, environ, PREFIX, skip=("profile", "cache"))
        _check_cors(top)
        return msgspec.structs.replace(
            top,
            profile=_read(driver.settings, environ, PROFILE_PREFIX, source=name),
            cache=_read(CacheSettings, environ, CACHE_PREFIX),
        )


_ORIGIN = re.compile(r"^https?://[^/?#\s]+$")


def _check_cors(settings: Settings) -> None:
    origins = settings.allowed_origins
    for origin in origins:
        if origin != "*" and (not _ORIGIN.match(origin) or "*" in origin):
            raise SettingsError(
                f"DECIDER_CORS_ORIGINS: {origin!r} is not an origin: scheme://host[:port], "
                "no path and no pattern, or * alone"
            )
    if "*" in origins and settings.cors_credentials:
        raise SettingsError(
            "DECIDER_CORS_CREDENTIALS: never with DECIDER_CORS_ORIGINS=*; list the origins "
            "that may send credentials"
        )


class Variable(msgspec.Struct, frozen=True):
    """A variable Decider reads: its default (msgspec.NODEFAULT when required), and the
    profile source it configures (None: it applies whatever the source)."""

    name: str
    default: object
    source: str | None = None


def variables() -> Iterator[Variable]:
    """Every variable Decider reads."""
    yield from _variables(Settings, PREFIX, skip=("profile", "cache"))
    yield Variable(SOURCE_VARIABLE, DEFAULT)
    yield from _variables(CacheSettings, CACHE_PREFIX)
    for driver in DRIVERS.values():
        yield from _variables(driver.settings, PROFILE_PREFIX, source=driver.name)


def _variables(
    kind: type[msgspec.Struct],
    prefix: str,
    *,
    skip: tuple[str, ...] = (),
    source: str | None = None,
) -> Iterator[Variable]:
    for field in msgspec.structs.fields(kind):
        if field.name in skip:
            continue
        default = (
            field.default_factory()
            if field.default_factory is not msgspec.NODEFAULT
            else field.default
        )
        yield Variable(prefix + field.name.upper(), default, source)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A sentence for each DECIDER_* variable that is not a setting, or that belongs to a
    profile source other than the chosen one: both are ignored, and likely a typo."""
    owners = {variable.name: variable.source for variable in variables()}
    chosen = environ.get(SOURCE_VARIABLE) or DEFAULT
    found = []
    for name in sorted(environ):
        if not name.startswith(PREFIX):
            continue
        if name in RENAMED:
            found.append(
                f"{name} is now {RENAMED[name]}: its value is used unless {RENAMED[name]} is "
                "set; rename it"
            )
            continue
        if name in owners:
            owner = owners[name]
            if owner not in (None, chosen):
                found.append(
                    f"{name} is a setting of the {owner} profile source, not {chosen}: ignored"
                )
            continue
        likely = closest(name, owners)
        hint = f"; did you mean {likely}?" if likely else ""
        found.append(f"{name} is not a Decider setting: ignored{hint}")
    return found


def _fields(kind: type[msgspec.Struct], skip: tuple[str, ...] = ()) -> list[str]:
    return [name for name in kind.__struct_fields__ if name not in skip]


T = TypeVar("T", bound=msgspec.Struct)


def _read(
    kind: type[T],
    environ: Mapping[str, str],
    prefix: str,
    *,
    skip: tuple[str, ...] = (),
    source: str | None = None,
) -> T:
    values = {
        name: raw
        for name in _fields(kind, skip)
        if (raw := environ.get(prefix + name.upper())) not in (None, "")
    }
    for name, raw in values.items():
        if not raw.isprintable() or raw != raw.encode("utf-8", "replace").decode():
            raise SettingsError(f"{prefix}{name.upper()}: not printable UTF-8 text")
    try:
        return msgspec.convert(values, kind, strict=False, dec_hook=_paths)
    except msgspec.ValidationError as exc:
        message, path = validation_path(exc)
        variable = f"{prefix}{str(path[-1]).upper()}" if path else prefix.rstrip("_")
        if message.startswith("Object missing required field") and source:
            message = f"required by {SOURCE_VARIABLE}={source}"
        message = _in_words(message, kind, str(path[-1]) if path else "")
        raise SettingsError(f"{variable}: {message}") from None


def _in_words(message: str, kind: type[msgspec.Struct], field: str) -> str:
    """msgspec's message, said for someone who wrote an environment variable."""
    if message.startswith("Invalid enum value"):
        choices = get_args(get_type_hints(kind).get(field))
        return f"{message}; choose one of {', '.join(map(str, choices))}"
    expected = re.match(r"Expected `(\w+)`, got `str`$", message)
    if expected and expected[1] in TYPE_WORDS:
        return f"expected {TYPE_WORDS[expected[1]]}"
    return message


def _paths(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError
