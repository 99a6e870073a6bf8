"""Keyed hashes of units: one documented scheme, pinned; a key from the settings or a key file
made once for every process; no key file for a service that measures nothing."""

from __future__ import annotations

import hmac
import stat
import threading
from pathlib import Path

import msgspec
import pytest

from decider.measure.units import KEY_FILE, Units, kept_key, parse_key, units_for
from decider.profiles.sources.memory import MemoryProfileSource
from decider.settings import Settings, SettingsError
from decider.wiring import build_service

from .conftest import RULES


def test_a_unit_is_the_hmac_sha256_of_kind_and_id_in_32_hex_characters() -> None:
    key = bytes.fromhex("0f" * 16)
    units = Units(key)
    expected = hmac.new(key, b"account:acc-northwind", "sha256").hexdigest()[:32]
    assert units.account("acc-northwind") == expected
    # pinned: a change of scheme would stop last month's files joining this month's
    assert units.account("acc-northwind") == "9dde2016be9ae8da7cc0a52b5e8f5766"
    assert units.visitor("v-ada") == "05afd36db74494e59bf1a73e95866e8f"
    assert units.of("visitor", "acc-northwind") != units.account("acc-northwind")


def test_a_key_is_hex_or_text_of_16_bytes_at_least() -> None:
    assert parse_key("0f" * 16) == b"\x0f" * 16
    assert parse_key("a text key of 16+ chars") == b"a text key of 16+ chars"
    with pytest.raises(SettingsError, match=r"^DECIDER_MEASURE_KEY: 8 bytes; a key needs 16"):
        parse_key("0f" * 8)  # 16 hex digits: 8 bytes
    with pytest.raises(SettingsError) as short:
        parse_key("too-short")
    assert "too-short" not in str(short.value)


def test_without_the_variable_one_key_is_made_once_private_and_shared(tmp_path: Path) -> None:
    """Processes starting together all read the one key that was linked into place first."""
    path = tmp_path / "measure" / KEY_FILE
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(kept_key(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8
    assert len(set(keys)) == 1
    assert len(keys[0]) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [KEY_FILE]  # no scraps left
    assert kept_key(path) == keys[0]


def test_a_key_file_that_cannot_be_made_says_to_set_the_variable(tmp_path: Path) -> None:
    (tmp_path / "measure").write_text("a file where the directory would be")
    with pytest.raises(SettingsError, match="set DECIDER_MEASURE_KEY, the same for every"):
        kept_key(tmp_path / "measure" / KEY_FILE)


def test_a_service_that_logs_no_exposure_makes_no_key_until_it_needs_one(
    tmp_path: Path,
) -> None:
    settings = Settings(rules_dir=RULES, exposure_dir=tmp_path / "m" / "exposures")
    units = units_for(settings)
    assert not (tmp_path / "m").exists()
    units.visitor("v-ada")
    assert (tmp_path / "m" / KEY_FILE).is_file()


def test_with_an_exposure_sink_the_key_is_made_before_the_service_starts(
    tmp_path: Path,
) -> None:
    settings = Settings(
        rules_dir=RULES, exposure_sink="jsonl", exposure_dir=tmp_path / "m" / "exposures"
    )
    build_service(settings, source=MemoryProfileSource())
    assert (tmp_path / "m" / KEY_FILE).is_file()
    (tmp_path / "file").write_text("")
    blocked = msgspec.structs.replace(settings, exposure_dir=tmp_path / "file" / "exposures")
    with pytest.raises(SettingsError, match="DECIDER_MEASURE_KEY is not set"):
        build_service(blocked, source=MemoryProfileSource())


def test_the_variable_wins_over_the_file(tmp_path: Path) -> None:
    settings = Settings(measure_key="0f" * 16, exposure_dir=tmp_path / "exposures")
    assert units_for(settings).account("acc-northwind") == "9dde2016be9ae8da7cc0a52b5e8f5766"
    assert list(tmp_path.iterdir()) == []
