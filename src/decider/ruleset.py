"""What a compiled ruleset is: the values the engine decides over, and the CEL interface it calls.

`decider.rules.compiler` builds these from rule files and `decider.rules.cel` implements
`Engine` and `Program` for the two CEL runtimes; the core (engine, gate, service) reads them
and never imports either, so the decision path depends on nothing outside the core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from decider.dimensions import Dimensions
from decider.errors import Problem
from decider.experiments import Experiment
from decider.model import SegmentOutcome, Variant
from decider.traits import TraitSchema

EngineName = Literal["cel-expr", "cel-python"]
# what a rule may read; `visitor` and `account` are profile data and need consent
VARIABLES = ("visitor", "account", "context", "now")
PROFILE_VARIABLES = frozenset({"visitor", "account"})


class CelEvalError(Exception):
    """A rule failed at evaluation (missing field, wrong type). It then does not match."""


class Program(Protocol):
    def matches(self, activation: Any) -> bool:
        """True if the condition holds; raises CelEvalError when it cannot be evaluated."""


class Engine(Protocol):
    name: EngineName

    def compile(self, source: str, lists: frozenset[tuple[str, ...]] = frozenset()) -> Program:
        """Compile once, at load; `lists`: field paths known to hold lists (the profile
        schema's). Raises decider.rules.cel.CelCompileErrors."""

    def activation(
        self,
        visitor: Mapping[str, Any],
        account: Mapping[str, Any],
        context: Mapping[str, Any],
        now: datetime,
    ) -> Any:
        """Bind the variables once per request; every rule of that request shares it."""


class Chain(Protocol):
    def first(self, activation: Any) -> int:
        """The index of the first of its conditions that holds, or -1 when none does; raises
        CelEvalError when any condition it evaluated failed (then nothing is known of any)."""


@runtime_checkable
class ChainingEngine(Engine, Protocol):
    """An engine that can evaluate consecutive conditions as one program: one crossing into
    its runtime per chain instead of one per condition. Engines need not chain."""

    def chainable(self, program: Program) -> bool:
        """Whether `program` means the same within a chain as alone: one that runs a
        comprehension does not (all macros of one evaluation spend from one step budget)."""

    def chain(self, programs: Sequence[Program]) -> Chain | None:
        """One program over chainable `programs`, in order, or None when the runtime cannot
        take them together (e.g. its parser's nesting limit)."""


class ChannelPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a channel needs before profile data may be used (the `consent:` section)."""

    purposes: tuple[str, ...]
    bases: tuple[str, ...] = ("consent",)
    gpc_revokes: tuple[str, ...] = ()
    suppress_if_profile_unavailable: bool = False
    # without the consent `purposes` names, nothing is sent (suppressed), not even the default
    send_requires_consent: bool = False
    # a request may carry the caller's own consent prompt's state (`consent`: a page's banner,
    # an app's dialog), which then decides consent; unset: the web's yes, any other's no
    banner: bool | None = None

    def takes_banner(self, channel: str) -> bool:
        """Whether a request for `channel` may carry the consent banner's purposes."""
        return self.banner if self.banner is not None else channel == "web"


class CompiledChannel(msgspec.Struct, frozen=True):
    """A channel: the slots its placements fill, in order, the most characters each may
    hold (checked at load, for slots that have a limit; those in `sms` counted as a text
    message counts them), and its consent policy."""

    id: str
    slots: tuple[str, ...]
    limits: dict[str, int]
    policy: ChannelPolicy
    sms: frozenset[str] = frozenset()


class Guard(msgspec.Struct, frozen=True):
    """A conjunct of a condition that the raw values a rule reads (the traits and the context
    the activation is built from) can prove false before any CEL runs, which makes the whole
    condition false: `has(root.path)` without `literals`, false when the map the last field
    would be in lacks it; `root.path == "lit"` or `in [...]` with them, false when the path
    holds a string that is none of them."""

    root: str
    path: tuple[str, ...]
    literals: frozenset[str] | None = None


class Condition(msgspec.Struct, frozen=True):
    """A compiled CEL condition and what it reads.

    `needs_profile`: it reads `visitor` or `account`, so it needs the channel's consent.
    `guards`: its conjuncts that can rule it out unevaluated (decider.rules.guards).
    `expanded`: the text compiled, when it uses named conditions (decider.rules.conditions),
    for explain.
    """

    program: Program
    reads: frozenset[str]
    needs_profile: bool
    guards: tuple[Guard, ...] = ()
    expanded: str | None = None


class CompiledSegment(msgspec.Struct, frozen=True):
    id: str
    priority: int
    description: str
    owner: str
    file: str
    line: int
    condition: Condition


class CompiledSuppression(msgspec.Struct, frozen=True):
    id: str
    description: str
    flags: frozenset[str]
    condition: Condition | None
    channels: frozenset[str]
    placements: frozenset[str]
    tags: frozenset[str]

    def applies_to(self, placement: CompiledPlacement) -> bool:
        return (
            (not self.channels or placement.channel in self.channels)
            and (not self.placements or placement.id in self.placements)
            and (not self.tags or not self.tags.isdisjoint(placement.tags))
        )


class CompiledPlacement(msgspec.Struct, frozen=True):
    """A placement with each segment variant already filled out from the default, the
    suppressions that apply to it, in file order, and its experiment, if any. `choice`: set
    when it chooses the first segment with a variant here; `dimensions`: the language and
    role overrides of its variants that have any, by variant id."""

    id: str
    channel: str
    slots: tuple[str, ...]
    tags: frozenset[str]
    default: Variant
    variants: dict[str, Variant]
    suppressions: tuple[CompiledSuppression, ...] = ()
    experiment: Experiment | None = None
    choice: Choice | None = None
    dimensions: dict[str, Dimensions] = {}


class Run(msgspec.Struct, frozen=True):
    """Segments of one group (indexes into CompiledRuleset.segments, in order): tried by
    `chain` in one evaluation when there is one, one by one when not, or when it fails."""

    members: tuple[int, ...]
    chain: Chain | None = None


class Group(msgspec.Struct, frozen=True):
    """Segments evaluated together, in order, as `runs`; `first` is the earliest of them."""

    first: int
    runs: tuple[Run, ...]


class Lookup(msgspec.Struct, frozen=True):
    """The segments grouped by their guards on one path, and which of their groups can match
    for each thing the path may hold: a string (`equal` to a literal, else `other`), nothing
    (`missing`: the map the last field would be in lacks it), anything else (`unknown`: not a
    string, or a field before the last missing or no map). `first`: its earliest segment."""

    root: str
    path: tuple[str, ...]
    first: int
    equal: dict[str, tuple[Group, ...]]
    other: tuple[Group, ...]
    missing: tuple[Group, ...]
    unknown: tuple[Group, ...]


class MatchPlan(msgspec.Struct, frozen=True):
    """How the first match is found in one consent mode, built at load with the segments
    (decider.index): the segments evaluated in this mode, grouped by the path of their most
    selective guard in `lookups` (ordered by their first segment), or, with no guard (or
    when the mode is not indexed), in `unguarded`. `passed` is, per segment, its outcome
    when it does not match: `not_matched`, or `skipped_consent` for a segment that reads
    profile data in the mode without consent; `matched`, its outcome when it wins."""

    lookups: tuple[Lookup, ...]
    unguarded: Group | None
    passed: tuple[SegmentOutcome, ...]
    matched: tuple[SegmentOutcome, ...]


class Choice(msgspec.Struct, frozen=True):
    """How a placement that chooses `first_with_variant` finds the first match among the
    segments it has a variant for, once the global first match turned out to have none:
    those `segments`, in evaluation order, each one's index in the ruleset's (`positions`),
    and their own first-match plans per consent mode (None: one by one)."""

    segments: tuple[CompiledSegment, ...]
    positions: tuple[int, ...]
    consented: MatchPlan | None = None
    contextual: MatchPlan | None = None


class CompiledRuleset(msgspec.Struct, frozen=True):
    """Segments in evaluation order (priority descending, then id), placements by id, and the
    consent policy by channel (`channels`: every channel, built in or defined, with its
    slots). `version` is a content hash of the rule files. `consented` and `contextual` plan
    the first match with and without consent (built from `segments`; none: every segment is
    evaluated one by one)."""

    version: str
    engine: Engine
    files: tuple[str, ...]
    segments: tuple[CompiledSegment, ...]
    placements: dict[str, CompiledPlacement]
    policy: dict[str, ChannelPolicy]
    suppressions: tuple[CompiledSuppression, ...]
    warnings: tuple[Problem, ...] = ()
    schema: TraitSchema | None = None  # the profile schema (rules/schema.yaml), if any
    consented: MatchPlan | None = None
    contextual: MatchPlan | None = None
    channels: dict[str, CompiledChannel] = {}
