"""Settings from the environment: every bad value stops the service naming its variable, the
chosen profile source's own settings, and variables that are no setting reported."""

from __future__ import annotations

import pytest

from decider.errors import ProfileSourceError
from decider.profiles.sources.http import HttpSettings
from decider.profiles.sources.memory import MemorySettings
from decider.profiles.sources.sqlite import SqliteSettings
from decider.settings import Settings, SettingsError, unknown_variables
from decider.wiring import build_service

from .conftest import NOW

HTTP = {"DECIDER_PROFILE_SOURCE": "http", "DECIDER_PROFILE_API_URL": "http://profiles.test"}


def test_defaults_come_from_the_settings_types() -> None:
    """With no variables set, every value is its one default, the sqlite source included."""
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.profile == SqliteSettings()
    assert settings.profile_source == "sqlite"


def test_the_chosen_source_reads_its_own_variables() -> None:
    """DECIDER_PROFILE_SOURCE picks the source; DECIDER_PROFILE_* fill its settings, and the
    cache reads DECIDER_CACHE_*."""
    settings = Settings.from_env(
        {
            "DECIDER_PROFILE_SOURCE": "http",
            "DECIDER_PROFILE_API_URL": "https://profiles.example/v1",
            "DECIDER_PROFILE_API_TIMEOUT": "0.5",
            "DECIDER_CACHE_TTL": "30",
        }
    )
    assert settings.profile == HttpSettings(api_url="https://profiles.example/v1", api_timeout=0.5)
    assert settings.cache.ttl == 30
    memory = Settings.from_env({"DECIDER_PROFILE_SOURCE": "memory"})
    assert memory.profile == MemorySettings()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"DECIDER_PORT": "70000"}, "DECIDER_PORT: Expected `int` <= 65535"),
        ({"DECIDER_ENGINE": "fast"}, "DECIDER_ENGINE: Invalid enum value 'fast'"),
        ({"DECIDER_PROFILE_SOURCE": "postgres"}, "DECIDER_PROFILE_SOURCE: unknown profile source"),
        ({"DECIDER_PROFILE_SOURCE": "http"}, "DECIDER_PROFILE_API_URL: required by"),
        ({"DECIDER_CACHE_TTL": "-1"}, "DECIDER_CACHE_TTL: Expected `float` > 0.0"),
        ({"DECIDER_CACHE_TTL": "inf"}, "DECIDER_CACHE_TTL: Expected `float` <="),
        ({"DECIDER_CACHE_STALE_TTL": "nan"}, "DECIDER_CACHE_STALE_TTL:"),
        ({"DECIDER_RELOAD_DEBOUNCE_MS": "9" * 30}, "DECIDER_RELOAD_DEBOUNCE_MS: Expected `int`"),
        ({"DECIDER_PORT": "\udcff"}, "DECIDER_PORT: not printable UTF-8 text"),
        (
            {"DECIDER_ADMIN_TOKEN": "a-token-of-sixteen-chars"},
            "DECIDER_ADMIN_TOKEN is no longer read: make",
        ),
        ({"DECIDER_PROFILES_TOKEN": "x"}, "DECIDER_PROFILES_TOKEN is no longer read"),
        (
            {"DECIDER_CORS_ORIGINS": "https://a.example/p"},
            "DECIDER_CORS_ORIGINS: 'https://a.example/p' is",
        ),
        (
            {"DECIDER_CORS_ORIGINS": "https://*", "DECIDER_CORS_CREDENTIALS": "1"},
            "DECIDER_CORS_ORIGINS: 'https://*' is not an origin",
        ),
        (
            {"DECIDER_CORS_ORIGINS": "*", "DECIDER_CORS_CREDENTIALS": "1"},
            "DECIDER_CORS_CREDENTIALS: never",
        ),
        ({"DECIDER_LOG_FORMAT": "xml"}, "DECIDER_LOG_FORMAT: Invalid enum value 'xml'; choose"),
        ({"DECIDER_IDLE_TIMEOUT_S": "0"}, "DECIDER_IDLE_TIMEOUT_S: Expected `int` >= 1"),
        ({**HTTP, "DECIDER_PROFILE_API_TOKEN": "tökén"}, "DECIDER_PROFILE_API_TOKEN:"),
    ],
)  # fmt: skip
def test_a_bad_value_names_its_variable(environ: dict[str, str], expected: str) -> None:
    """Out of range, of the wrong type, not UTF-8, or a header value that cannot be sent:
    refused at start with the variable's name."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(environ)
    assert str(refused.value).startswith(expected)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:99999", "port is out of range"),
        ("http://[::1", "not a URL"),
        ("http://profiles.example/api?key=secret", "no query or fragment"),
        ("ftp://profiles.example", "http:// or https://"),
    ],
)
def test_a_profile_api_url_that_cannot_work_stops_the_service(url: str, expected: str) -> None:
    """The http source checks its base URL when it opens, before the service listens."""
    settings = Settings(profile=HttpSettings(api_url=url))
    with pytest.raises(ProfileSourceError, match=f"^DECIDER_PROFILE_API_URL: .*{expected}"):
        build_service(settings, clock=lambda: NOW)


def test_a_renamed_variable_is_still_read_and_reported() -> None:
    """DECIDER_SEED_SAMPLES (the old name) still switches seeding off, says to rename it,
    and the new name wins when both are set."""
    old = {"DECIDER_SEED_SAMPLES": "false"}
    assert Settings.from_env(old).profile == SqliteSettings(seed_samples=False)
    assert unknown_variables(old) == [
        "DECIDER_SEED_SAMPLES is now DECIDER_PROFILE_SEED_SAMPLES: its value is used unless "
        "DECIDER_PROFILE_SEED_SAMPLES is set; rename it"
    ]
    both = {**old, "DECIDER_PROFILE_SEED_SAMPLES": "true"}
    assert Settings.from_env(both).profile == SqliteSettings(seed_samples=True)


def test_variables_that_are_no_setting_are_reported() -> None:
    """A typo gets a suggestion; another source's variable is named as ignored."""
    environ = {
        "DECIDER_CAHCE_TTL": "5",
        "DECIDER_PROFILE_FILE": "profiles.jsonl",
        "DECIDER_RULES_DIR": "rules",
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == [
        "DECIDER_CAHCE_TTL is not a Decider setting: ignored; did you mean DECIDER_CACHE_TTL?",
        "DECIDER_PROFILE_FILE is a setting of the memory profile source, not sqlite: ignored",
    ]
