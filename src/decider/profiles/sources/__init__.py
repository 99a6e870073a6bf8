"""Profile sources by name: DECIDER_PROFILE_SOURCE picks one. A new source is one module that
defines a `Driver` (see base.py) and one line here."""

from __future__ import annotations

from typing import Any

from decider.profiles.sources import http, memory, redis, sqlite
from decider.profiles.sources.base import Driver, SourceSettings

# each driver opens only its own settings; `Driver.open_with` checks the pairing at run time
DRIVERS: dict[str, Driver[Any]] = {
    driver.name: driver
    for driver in (
        sqlite.DRIVER,
        redis.DRIVER,
        http.DRIVER,
        memory.DRIVER,
    )
}
DEFAULT = "sqlite"


def driver_for(settings: SourceSettings) -> Driver[Any]:
    """The driver whose settings these are."""
    for driver in DRIVERS.values():
        if type(settings) is driver.settings:
            return driver
    raise LookupError(f"no profile source takes {type(settings).__name__}")
