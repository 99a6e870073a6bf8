"""A service's measuring parts, built from its settings: the unit hashes, the exposure log,
the outcome intake, and the sinks they write to, started and closed with the service.

Exposures go where DECIDER_EXPOSURE_SINK says. Outcomes are stored: JSONL files in
DECIDER_OUTCOME_DIR, or standard output beside the exposures when the sink is `stdout`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from decider.engine import Evaluated
from decider.measure.exposures import ExposureLog
from decider.measure.outcomes import Consent, OutcomeIntake
from decider.measure.sink import Sink, SinkKind, open_sink
from decider.measure.units import Units, units_for
from decider.ruleset import ChannelPolicy
from decider.service import IdentityResolver
from decider.settings import Settings

EXPOSURE = "exposure"
OUTCOME = "outcome"
RESULTS = ("written", "dropped", "failed")


@dataclass(frozen=True)
class Measuring:
    units: Units
    exposures: ExposureLog
    outcomes: OutcomeIntake

    @property
    def sinks(self) -> dict[str, Sink]:
        """The sinks by the kind of record they take."""
        return {EXPOSURE: self.exposures.sink, OUTCOME: self.outcomes.sink}

    def expose(self, evaluated: Evaluated, context: Mapping[str, Any], at: datetime) -> None:
        """The decision path's hook: log `evaluated`'s exposure, if it is one, with the unit
        its experiment bucketed as a keyed hash (a decision is bucketed only when it is shown,
        so a unit is hashed only for a record). Never blocks."""
        unit = evaluated.unit
        keyed = (unit.kind, self.units.of(unit.kind, unit.id)) if unit is not None else None
        self.exposures.record(evaluated.decision, context, keyed, at=at)

    def start(self) -> None:
        for sink in self.sinks.values():
            sink.start()

    def close(self) -> None:
        """Write what is queued and stop (blocks: call it off the event loop)."""
        for sink in self.sinks.values():
            sink.close()

    def counts(self) -> dict[tuple[str, str], int]:
        """Records by kind (exposure, outcome) and result (written, dropped, failed)."""
        return {
            (kind, result): getattr(sink.counts, result)
            for kind, sink in self.sinks.items()
            for result in RESULTS
        }


def build_measuring(
    settings: Settings,
    resolver: IdentityResolver,
    policies: Callable[[], Mapping[str, ChannelPolicy]],
    *,
    clock: Callable[[], datetime],
) -> Measuring:
    """Measuring as `settings` say; `policies`: the loaded rules' channel policies, whose
    consent outcomes by identity pass as decisions do. With an exposure sink, the unit key
    is made (or read) now, not in a decision. Raises SettingsError for a key that is wrong
    or cannot be made."""
    units = units_for(settings)
    kind = settings.exposure_sink
    if kind != "none":
        units.ready()
    exposures = _sink(settings, kind, EXPOSURE, settings.exposure_dir)
    stored: SinkKind = "stdout" if kind == "stdout" else "jsonl"
    outcomes = _sink(settings, stored, OUTCOME, settings.outcome_path)
    return Measuring(
        units=units,
        exposures=ExposureLog(
            exposures,
            context_keys=settings.exposure_context_keys,
            everything=settings.exposure_all,
        ),
        outcomes=OutcomeIntake(
            outcomes,
            units,
            resolver,
            Consent(policies, clock),
            clock=clock,
            retention_days=settings.measure_retention_days,
        ),
    )


def _sink(settings: Settings, kind: SinkKind, name: str, directory: Path) -> Sink:
    return open_sink(
        kind,
        directory=directory,
        prefix=f"{name}s",
        max_bytes=settings.exposure_max_bytes,
        limit=settings.exposure_queue,
        name=name,
        retention_days=settings.measure_retention_days,
    )
