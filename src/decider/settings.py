"""Service settings: one immutable object, built from an injected environment, checked at start.

Every field `name` is read from the variable DECIDER_NAME (upper case); a bad value stops the
service with a message naming that variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from decider.errors import validation_path
from decider.resolver import CacheSettings

Positive = Annotated[float, msgspec.Meta(gt=0)]
PREFIX = "DECIDER_"
_NO_API_URL = "the http profile source needs DECIDER_PROFILE_API_URL"


class SettingsError(ValueError):
    pass


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rules_dir: Path = Path("rules")
    engine: Literal["cel-expr", "cel-python"] = "cel-expr"
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    profile_source: Literal["sqlite", "http"] = "sqlite"
    profile_db: Path = Path("decider.db")
    profile_api_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+\S*$")] | None = None
    profile_api_token: str | None = None
    profile_api_timeout: Positive = 0.2
    profile_budget_ms: Positive = 50.0
    cache_maxsize: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    cache_ttl: Positive = 60.0
    cache_negative_ttl: Positive = 5.0
    cache_stale_ttl: Annotated[float, msgspec.Meta(ge=0)] = 600.0
    max_body_bytes: Annotated[int, msgspec.Meta(ge=256)] = 64 * 1024
    admin_token: Annotated[str, msgspec.Meta(min_length=16)] | None = None
    watch_rules: bool = True
    reload_debounce_ms: Annotated[int, msgspec.Meta(ge=0)] = 200

    seed_samples: bool = True

    def __post_init__(self) -> None:
        if self.profile_source == "http" and not self.profile_api_url:
            raise ValueError(_NO_API_URL)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: object) -> Settings:
        """Settings from DECIDER_* variables; `overrides` (command-line flags) win."""
        values: dict[str, object] = {}
        for name in cls.__struct_fields__:
            raw = environ.get(PREFIX + name.upper())
            if raw not in (None, ""):
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("profile_source") == "http" and not values.get("profile_api_url"):
            raise SettingsError(f"{PREFIX}PROFILE_API_URL: {_NO_API_URL}")
        try:
            return msgspec.convert(values, cls, strict=False, dec_hook=_paths)
        except msgspec.ValidationError as exc:
            message, path = validation_path(exc)
            field = str(path[0]) if path else "?"
            raise SettingsError(f"{PREFIX}{field.upper()}: {message}") from None

    @property
    def cache(self) -> CacheSettings:
        return CacheSettings(
            maxsize=self.cache_maxsize,
            ttl=self.cache_ttl,
            negative_ttl=self.cache_negative_ttl,
            stale_ttl=self.cache_stale_ttl,
        )


def _paths(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError
