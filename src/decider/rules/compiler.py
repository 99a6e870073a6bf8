"""Rules to a CompiledRuleset: every expression compiled once, every problem found at once.

`compile_ruleset` is pure apart from reading the files; the server, `decider check` and the
tests all call it, so what passes the check is exactly what serves.

It also plans the first match in each consent mode: the evaluated segments are grouped by
their guards (decider.index) when one chain cannot hold them all, and within a group, runs
of up to CHAIN_SIZE consecutive segments whose conditions the engine can chain become one
program each (fewer crossings into the CEL runtime per decision); a condition that cannot
be chained (it runs a comprehension) is a run of its own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec

from decider.dimensions import Dimensions
from decider.errors import Problem, RulesetError, meant
from decider.experiments import (
    CONTROL,
    RESERVED,
    Experiment,
    Split,
    new_experiment,
    new_split,
    parse_share,
)
from decider.index import build_index
from decider.model import SegmentOutcome, Variant
from decider.rules.cel import CelCompileErrors, Reference, references
from decider.rules.cel.check import undeclared
from decider.rules.cel.syntax import parse
from decider.rules.channels import compile_channels, too_long
from decider.rules.conditions import Conditions, Expanded
from decider.rules.dimensions import compile_dimensions, overrides
from decider.rules.files import (
    SCHEMA_FILE,
    PartlyRead,
    Path_,
    Placement,
    SegmentSplit,
    SourceFile,
    VariantRule,
    display_name,
    read_rule_file,
    rule_files,
)
from decider.rules.guards import guards
from decider.rules.lint import lint
from decider.rules.schema import check_reference, list_paths, read_schema
from decider.ruleset import (
    PROFILE_VARIABLES,
    VARIABLES,
    ChainingEngine,
    ChannelPolicy,
    Choice,
    CompiledChannel,
    CompiledPlacement,
    CompiledRuleset,
    CompiledSegment,
    CompiledSuppression,
    Condition,
    Engine,
    MatchPlan,
    Program,
    Run,
)
from decider.traits import TraitSchema

# CEL's reserved words and literals: no named condition may be one
RESERVED_WORDS = frozenset(
    (
        *("as", "break", "const", "continue", "else", "false", "for", "function", "if"),
        *("import", "in", "let", "loop", "namespace", "null", "package", "return", "true"),
        *("var", "void", "while"),
    )
)
# segments per chained program: measured with loadtests/bench_decide.py (200 segments on
# cel-expr: 10 a chain ~20% slower than 25; cel-expr's parser refuses nesting past 32, so a
# chain it refuses is split in halves until it takes them)
CHAIN_SIZE = 25


def compile_ruleset(
    directory: Path, engine: Engine, *, chain_size: int = CHAIN_SIZE
) -> CompiledRuleset:
    """Load and compile a rules directory. Raises RulesetError with every problem found.
    `chain_size`: segments per chained program (1: evaluate every segment alone)."""
    paths = rule_files(directory)
    if not paths:
        raise RulesetError([Problem(str(directory), 1, 1, "no rule files (*.yaml) here")])
    sources: list[SourceFile] = []
    problems: list[Problem] = []
    whole = 0  # files read whole; one read in part is compiled for its own mistakes
    for path in paths:
        try:
            sources.append(read_rule_file(path, display_name(path)))
            whole += 1
        except PartlyRead as exc:
            problems.extend(exc.problems)
            sources += [exc.salvaged] if exc.salvaged is not None else []
        except RulesetError as exc:
            problems.extend(exc.problems)
    schema = None
    if os.path.lexists(directory / SCHEMA_FILE):  # one that cannot be read is an error
        try:
            schema = read_schema(directory / SCHEMA_FILE, display_name(directory / SCHEMA_FILE))
        except RulesetError as exc:
            problems.extend(exc.problems)
    builder = _Builder(engine, problems, schema, chain_size)
    ruleset = builder.build(sources, every_file_read=whole == len(paths))
    if problems:
        raise RulesetError(problems, builder.warnings)
    if schema is not None:  # it decides how traits are stored: part of what the rules are
        files = [(s.name, s.document.content) for s in sources]
        files.append((SCHEMA_FILE, (directory / SCHEMA_FILE).read_bytes()))
        ruleset = msgspec.structs.replace(ruleset, version=version_of(files))
    return ruleset


def directory_version(directory: Path) -> str:
    """The version the rules in `directory` compile to, from their bytes alone (the files
    `compile_ruleset` reads: the rule files and the profile schema)."""
    files = [(path.name, path.read_bytes()) for path in rule_files(directory)]
    schema = directory / SCHEMA_FILE
    if schema.is_file():
        files.append((SCHEMA_FILE, schema.read_bytes()))
    return version_of(files)


def version_of(contents: Iterable[tuple[str, bytes]]) -> str:
    """A content hash of the rule files (and the profile schema): the same files give the
    same version anywhere."""
    digest = hashlib.sha256()
    for name, content in sorted(contents):
        digest.update(Path(name).name.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:12]


def plan(
    engine: Engine,
    segments: Sequence[CompiledSegment],
    *,
    consented: bool,
    size: int,
    indexed: bool | None = None,
) -> MatchPlan:
    """How the first match among `segments` (in evaluation order) is found in one consent
    mode: without consent, segments that read profile data are skipped, not evaluated. The
    evaluated ones are grouped by their guards (decider.index) if `indexed` (None: if one
    chain of `size` cannot hold them: one chain is one crossing into the runtime, the least
    an index could do, and on the sample rules the lookups cost more than the conditions
    they spare, loadtests/bench_decide.py), each group chained in runs of up to `size`."""
    evaluated = [i for i, s in enumerate(segments) if consented or not s.condition.needs_profile]
    kept = set(evaluated)
    passed = tuple(
        SegmentOutcome(s.id, s.priority, "not_matched" if i in kept else "skipped_consent")
        for i, s in enumerate(segments)
    )
    lookups, unguarded = build_index(
        segments,
        evaluated,
        lambda members: _runs(engine, segments, members, size),
        guarded=len(evaluated) > size if indexed is None else indexed,
    )
    matched = tuple(SegmentOutcome(s.id, s.priority, "matched") for s in segments)
    return MatchPlan(lookups, unguarded, passed, matched)


def planned(
    engine: Engine,
    placement: CompiledPlacement,
    segments: Sequence[CompiledSegment],
    *,
    size: int,
) -> CompiledPlacement:
    """`placement`, planned if it chooses `first_with_variant`: the first match among the
    `segments` (in evaluation order) it has a variant for, planned as the ruleset's is."""
    if placement.choice is None:
        return placement
    positions = tuple(i for i, s in enumerate(segments) if s.id in placement.variants)
    chosen = tuple(segments[i] for i in positions)
    plans = [plan(engine, chosen, consented=c, size=size) for c in (True, False)]
    return msgspec.structs.replace(placement, choice=Choice(chosen, positions, *plans))


def _runs(
    engine: Engine, segments: Sequence[CompiledSegment], members: tuple[int, ...], size: int
) -> tuple[Run, ...]:
    """One group's `members` in runs: chains of up to `size` consecutive chainable
    conditions, and a run of its own for each condition that cannot be chained."""
    chaining = engine if isinstance(engine, ChainingEngine) and size > 1 else None
    if chaining is None:
        return tuple(Run((i,)) for i in members)
    runs: list[Run] = []
    pending: list[int] = []  # consecutive chainable segments
    for member in members:
        if chaining.chainable(segments[member].condition.program):
            pending.append(member)
            continue
        runs += _chained(chaining, segments, pending, size)
        pending = []
        runs.append(Run((member,)))
    runs += _chained(chaining, segments, pending, size)
    return tuple(runs)


def condition(program: Program, source: str, *, expanded: bool = False) -> Condition:
    """`program`, compiled from `source` (which loads), with what it reads and its guards;
    `expanded`: `source` is a condition with its named conditions put in."""
    reads = frozenset(r.root for r in references(source))
    return Condition(
        program,
        reads,
        not reads.isdisjoint(PROFILE_VARIABLES),
        guards(parse(source)),
        source if expanded else None,
    )


def _chained(
    engine: ChainingEngine, segments: Sequence[CompiledSegment], members: list[int], size: int
) -> list[Run]:
    runs: list[Run] = []
    for start in range(0, len(members), size):
        runs += _chain(engine, segments, tuple(members[start : start + size]))
    return runs


def _chain(
    engine: ChainingEngine, segments: Sequence[CompiledSegment], members: tuple[int, ...]
) -> list[Run]:
    """One chained run, or, when the engine cannot take them together, two halves."""
    if len(members) < 2:
        return [Run(members)]
    chain = engine.chain([segments[i].condition.program for i in members])
    if chain is not None:
        return [Run(members, chain)]
    half = len(members) // 2
    return _chain(engine, segments, members[:half]) + _chain(engine, segments, members[half:])


class _Builder:
    def __init__(
        self,
        engine: Engine,
        problems: list[Problem],
        schema: TraitSchema | None,
        chain_size: int = CHAIN_SIZE,
    ) -> None:
        self.engine = engine
        self.chain_size = chain_size
        self.problems = problems
        self.warnings: tuple[Problem, ...] = ()
        self.schema = schema
        self.lists = list_paths(schema)
        self.experiment_ids: set[str] = set()
        self.channels: dict[str, CompiledChannel] = {}
        self.every_file_read = True
        self.conditions = Conditions({}, lambda _name, _expanded: True)
        self.used_conditions: set[str] = set()  # by a segment or suppression, or within one

    def build(self, sources: list[SourceFile], *, every_file_read: bool) -> CompiledRuleset:
        self.every_file_read = every_file_read
        built_in = self._policy(sources, every_file_read=self.every_file_read)
        self.channels = compile_channels(sources, built_in, self._problem)
        self.conditions = self._named_conditions(sources)
        segments = self._segments(sources)
        # declared, compiled or not: a variant of a broken segment is not a second problem
        declared = {s.id for source in sources for s in source.rules.segments}
        placements = self._placements(sources, declared)
        suppressions = self._suppressions(sources, placements)
        placements = {
            key: msgspec.structs.replace(
                p, suppressions=tuple(s for s in suppressions if s.applies_to(p))
            )
            for key, p in placements.items()
        }
        ordered = sorted(segments, key=lambda s: (-s.priority, s.id))
        placements = {
            key: planned(self.engine, p, ordered, size=self.chain_size)
            for key, p in placements.items()
        }
        self.warnings = lint(
            sources,
            placements,
            used_conditions=self.used_conditions,
            every_file_read=self.every_file_read,
        )
        plans = (
            plan(self.engine, ordered, consented=consented, size=self.chain_size)
            for consented in (True, False)
        )
        return CompiledRuleset(
            version=version_of((s.name, s.document.content) for s in sources),
            engine=self.engine,
            files=tuple(s.name for s in sources),
            segments=tuple(ordered),
            placements=placements,
            policy={name: channel.policy for name, channel in self.channels.items()},
            suppressions=tuple(suppressions),
            warnings=self.warnings,
            schema=self.schema,
            consented=next(plans),
            contextual=next(plans),
            channels=self.channels,
        )

    def _named_conditions(self, sources: list[SourceFile]) -> Conditions:
        """Every named condition, each compiled once alone, its mistakes placed where it is
        written (a `when` that uses a broken one is not a second problem)."""
        where: dict[str, tuple[SourceFile, Path_]] = {}
        texts: dict[str, str] = {}
        for source in sources:
            for name, text in source.rules.conditions.items():
                path: Path_ = ("conditions", name)
                if name in where:
                    self._problem(source, path, f"duplicate named condition {name!r}", name)
                elif name in VARIABLES or name in RESERVED_WORDS:
                    self._problem(source, path, f"{name!r} is a word CEL reads already", name)
                else:
                    where[name], texts[name] = (source, path), text

        def check(name: str, expanded: Expanded) -> bool:
            source, path = where[name]
            return self._compile(source, path, expanded, name) is not None

        conditions = Conditions(texts, check, every_file_read=self.every_file_read)
        for name, (source, path) in where.items():
            for line, column, message in conditions.fragment(name).errors:
                self._placed(source, path, (line, column), message, name)
        return conditions

    def _condition(self, source: SourceFile, path: Path_, text: str, rule: str) -> Condition | None:
        expanded = self.conditions.expand(text)
        self.used_conditions.update(expanded.names)
        for line, column, message in expanded.errors:
            self._placed(source, path, (line, column), message, rule)
        if expanded.errors or expanded.broken:
            return None
        return self._compile(source, path, expanded, rule)

    def _compile(
        self, source: SourceFile, path: Path_, expanded: Expanded, rule: str
    ) -> Condition | None:
        """Compile a condition as it runs; its problems placed where it is written."""
        text = expanded.text
        try:
            program = self.engine.compile(text, self.lists)
            refs = references(text)
        except CelCompileErrors as exc:
            for error in exc.errors:
                self._placed(
                    source, path, expanded.place(error.line, error.column), error.message, rule
                )
            return None
        bad = [(ref, message) for ref in refs if (message := self._reference_problem(ref))]
        for ref, message in bad:
            self._placed(source, path, expanded.place(ref.line, ref.column), message, rule)
        if bad:
            return None
        return condition(program, text, expanded=bool(expanded.names))

    def _placed(
        self, source: SourceFile, path: Path_, at: tuple[int, int], message: str, rule: str
    ) -> None:
        """A problem at a line:column of the CEL text at `path`."""
        line, column = source.document.place_in_string(path, *at)
        self.problems.append(Problem(source.name, line, column, message, rule))

    def _reference_problem(self, ref: Reference) -> str | None:
        """An unknown variable (cel-python does not type-check), or a trait not in the schema."""
        if ref.root not in VARIABLES:
            return undeclared(ref.root)
        return check_reference(self.schema, ref) if self.schema is not None else None

    def _unique(self, source: SourceFile, path: Path_, kind: str, id_: str, seen: set[str]) -> bool:
        if id_ in seen:
            self.problems.append(source.document.problem(path, f"duplicate {kind} id {id_!r}", id_))
            return False
        seen.add(id_)
        return True

    def _segments(self, sources: list[SourceFile]) -> list[CompiledSegment]:
        compiled: list[CompiledSegment] = []
        seen: set[str] = set()
        for source in sources:
            for index, segment in enumerate(source.rules.segments):
                path: Path_ = ("segments", index)
                if not self._unique(source, (*path, "id"), "segment", segment.id, seen):
                    continue
                condition = self._condition(source, (*path, "when"), segment.when, segment.id)
                if condition is None:
                    continue
                compiled.append(
                    CompiledSegment(
                        id=segment.id,
                        priority=segment.priority,
                        description=segment.description,
                        owner=segment.owner,
                        file=source.name,
                        line=source.document.mark(path).line,
                        condition=condition,
                    )
                )
        return compiled

    def _placements(
        self, sources: list[SourceFile], segments: set[str]
    ) -> dict[str, CompiledPlacement]:
        compiled: dict[str, CompiledPlacement] = {}
        seen: set[str] = set()
        for source in sources:
            for index, placement in enumerate(source.rules.placements):
                path: Path_ = ("placements", index)
                if not self._unique(source, (*path, "id"), "placement", placement.id, seen):
                    continue
                channel = self.channels.get(placement.channel)
                if channel is None:
                    self._unknown_channel(
                        source, (*path, "channel"), placement.channel, placement.id
                    )
                    continue
                allowed = channel.slots
                slots = placement.slots if placement.slots is not None else allowed
                for i, slot in enumerate(slots):
                    if slot in slots[:i]:
                        self._problem(
                            source, (*path, "slots", i), f"slot {slot!r} listed twice", placement.id
                        )
                    if slot not in allowed:
                        self._problem(
                            source,
                            (*path, "slots", i),
                            f"{channel.id} placements fill {', '.join(allowed)}; not {slot!r}",
                            placement.id,
                        )
                missing = [slot for slot in slots if slot not in placement.default.content]
                if missing:
                    self._problem(
                        source,
                        (*path, "default", "content"),
                        f"the default variant must fill every slot; missing {', '.join(missing)}",
                        placement.id,
                    )
                default = Variant(placement.default.id, placement.default.content)
                self._slots_known(source, (*path, "default", "content"), default, slots, channel)
                dimensions: dict[str, Dimensions | None] = {}
                self._dimensions(
                    source,
                    (*path, "default"),
                    placement.default,
                    slots=slots,
                    channel=channel,
                    found=dimensions,
                )
                variants: dict[str, Variant] = {}
                # a variant id names one content in a placement: the default's, a segment's or
                # a treatment's (exposures and the lift report count by it; its overrides:
                # _dimensions): segments may share a variant, not an id
                contents = {placement.default.id: placement.default.content}
                for segment, variant in placement.variants.items():
                    where = (*path, "variants", segment)
                    if segment not in segments:
                        why = f"variant for unknown segment {segment!r}{meant(segment, segments)}"
                        self._unknown(source, where, why, placement.id)
                        continue
                    content = {**placement.default.content, **variant.content}
                    if contents.setdefault(variant.id, content) != content:
                        self._problem(
                            source,
                            (*where, "id"),
                            f"variant id {variant.id!r} already names other content in this "
                            "placement; give this variant an id of its own",
                            placement.id,
                        )
                    own = Variant(variant.id, variant.content)
                    self._slots_known(source, (*where, "content"), own, slots, channel)
                    self._dimensions(
                        source, where, variant, slots=slots, channel=channel, found=dimensions
                    )
                    variants[segment] = Variant(variant.id, content)
                experiment = None
                if placement.experiment is not None:
                    experiment = self._experiment(
                        source,
                        (*path, "experiment"),
                        placement,
                        variants=variants,
                        contents=contents,
                        slots=tuple(slots),
                        segments=segments,
                        channel=channel,
                    )
                compiled[placement.id] = CompiledPlacement(
                    id=placement.id,
                    channel=placement.channel,
                    slots=tuple(slots),
                    tags=frozenset(placement.tags),
                    default=default,
                    variants=variants,
                    experiment=experiment,
                    # planned once the segments are ordered (planned)
                    choice=Choice((), ()) if placement.choose == "first_with_variant" else None,
                    dimensions={k: d for k, d in dimensions.items() if d is not None},
                )
        return compiled

    def _dimensions(
        self,
        source: SourceFile,
        path: Path_,
        variant: VariantRule,
        *,
        slots: tuple[str, ...],
        channel: CompiledChannel,
        found: dict[str, Dimensions | None],
    ) -> None:
        """The language and role overrides of the variant at `path` into `found`, by its id
        (None: it has none), each override's slots and lengths checked as content's are. A
        variant id names one set of overrides in a placement: the decision is dressed by
        the id it serves."""
        for where, texts in overrides(variant, path):
            self._slots_known(source, where, Variant(variant.id, texts), slots, channel)
        dimensions = compile_dimensions(
            variant, path, lambda at, message: self._problem(source, at, message, variant.id)
        )
        if found.setdefault(variant.id, dimensions) != dimensions:
            self._problem(
                source,
                (*path, "id"),
                f"variant id {variant.id!r} already names other overrides in this placement; "
                "give this variant an id of its own",
                variant.id,
            )

    def _experiment(
        self,
        source: SourceFile,
        path: Path_,
        placement: Placement,
        *,
        variants: dict[str, Variant],
        contents: dict[str, dict[str, str]],
        slots: tuple[str, ...],
        segments: set[str],
        channel: CompiledChannel,
    ) -> Experiment | None:
        """A placement's experiment, every mistake in it a problem at its place. `contents`:
        the content each variant id of the placement names, which a treatment's id joins."""
        rule = placement.experiment
        assert rule is not None
        problems = len(self.problems)
        self._unique(source, (*path, "id"), "experiment", rule.id, self.experiment_ids)
        salt = rule.id if rule.salt is None else rule.salt
        if "\0" in salt:
            self._problem(source, (*path, "salt"), "the salt holds a NUL character", rule.id)
        share = self._share(source, (*path, "holdout"), rule.holdout, rule.id)
        contents = dict(contents)  # however many segments try a treatment, one content
        splits: dict[str, Split] = {}
        for segment, spec in rule.segments.items():
            where = (*path, "segments", segment)
            if segment not in segments:
                why = f"unknown segment {segment!r}{meant(segment, segments)}"
                self._unknown(source, where, why, rule.id)
                continue
            if segment not in variants:
                self._problem(
                    source,
                    where,
                    f"{placement.id} has no variant for {segment}: its holdout would be shown "
                    "what everyone else is; give the segment a variant first",
                    rule.id,
                )
                continue
            own = share
            if spec.holdout is not None:
                own = self._share(source, (*where, "holdout"), spec.holdout, rule.id)
            arms = self._arms(
                source,
                where,
                spec,
                control=variants[segment],
                slots=slots,
                channel=channel,
                contents=contents,
                rule=rule.id,
            )
            if own is not None and arms is not None and (own > 0 or len(arms) > 1):
                splits[segment] = new_split(own, arms, salt)
        if share is not None:
            for segment, variant in variants.items():
                if segment not in rule.segments and share > 0:
                    splits[segment] = new_split(share, ((CONTROL, 1, variant),), salt)
        if len(self.problems) > problems:
            return None
        return new_experiment(rule.id, salt, rule.unit, splits)

    def _share(self, source: SourceFile, path: Path_, text: object, rule: str) -> Fraction | None:
        share = parse_share(text)
        if isinstance(share, str):
            self._problem(source, path, f"holdout: {share}", rule)
            return None
        return share

    def _arms(
        self,
        source: SourceFile,
        path: Path_,
        spec: SegmentSplit,
        *,
        control: Variant,
        slots: tuple[str, ...],
        channel: CompiledChannel,
        contents: dict[str, dict[str, str]],
        rule: str,
    ) -> tuple[tuple[str, int, Variant], ...] | None:
        """Control (the segment's own variant) and the treatments, with their weights."""
        problems = len(self.problems)
        weight = self._weight(source, (*path, "control_weight"), spec.control_weight, rule)
        arms: list[tuple[str, int, Variant]] = [(CONTROL, weight, control)]
        seen: set[str] = set()
        for i, treatment in enumerate(spec.treatments):
            where = (*path, "treatments", i)
            name = treatment.id
            if name in RESERVED:
                self._problem(
                    source,
                    (*where, "id"),
                    f"{name!r} names an arm already ({', '.join(sorted(RESERVED))}); "
                    "give the treatment its variant's own id",
                    rule,
                )
            elif name == control.id:
                self._problem(
                    source,
                    (*where, "id"),
                    f"{name!r} is the segment's own variant: it is the control arm already",
                    rule,
                )
            elif not self._unique(source, (*where, "id"), "arm", name, seen):
                continue
            weight = self._weight(source, (*where, "weight"), treatment.weight, rule)
            variant = Variant(name, treatment.content)
            self._slots_known(source, (*where, "content"), variant, slots, channel)
            missing = [slot for slot in slots if slot not in treatment.content]
            if missing:
                self._problem(
                    source,
                    (*where, "content"),
                    f"treatment {name} must fill every slot; missing {', '.join(missing)}",
                    rule,
                )
            known = contents.setdefault(name, treatment.content)
            if known != treatment.content:
                self._problem(
                    source,
                    (*where, "id"),
                    f"variant id {name!r} already names other content in this placement; "
                    "give the treatment an id of its own",
                    rule,
                )
            arms.append((name, weight, variant))
        return tuple(arms) if len(self.problems) == problems else None

    def _weight(self, source: SourceFile, path: Path_, weight: float, rule: str) -> int:
        if isinstance(weight, int) and weight >= 1:
            return weight
        self._problem(source, path, f"a weight is a whole number of 1 or more, not {weight}", rule)
        return 1

    def _slots_known(
        self,
        source: SourceFile,
        path: Path_,
        variant: Variant,
        slots: tuple[str, ...],
        channel: CompiledChannel,
    ) -> None:
        """Every slot `variant` fills is the placement's, and its text within the limit."""
        for slot in variant.content:
            if slot not in slots:
                self._problem(
                    source,
                    (*path, slot),
                    f"slot {slot!r} is not one of this placement's slots ({', '.join(slots)})",
                    variant.id,
                )
        for slot, message in too_long(channel, variant.content):
            self._problem(source, (*path, slot), message, variant.id)

    def _unknown_channel(self, source: SourceFile, path: Path_, name: str, rule: str) -> None:
        self._unknown(source, path, f"unknown channel {name!r}{_likely(name, self.channels)}", rule)

    def _unknown(self, source: SourceFile, path: Path_, message: str, rule: str) -> None:
        """A reference to something no file defines: a problem, unless a file could not
        be read whole (it may define it: not a second problem, and not in another file)."""
        if self.every_file_read:
            self._problem(source, path, message, rule)

    def _policy(
        self, sources: list[SourceFile], *, every_file_read: bool
    ) -> dict[str, tuple[SourceFile, ChannelPolicy]]:
        """The built-in channels' policies, with the file that gives them."""
        found = [(s, s.rules.consent) for s in sources if s.rules.consent is not None]
        for source, _ in found[1:]:
            self._problem(source, ("consent",), "the consent policy is defined more than once")
        if not found:
            if sources and every_file_read:  # an unreadable file may hold the policy
                name = sources[0].name
                self.problems.append(
                    Problem(name, 1, 1, "no consent policy: add a `consent:` section")
                )
            return {}
        source, policy = found[0]
        assert policy is not None
        return {"web": (source, policy.web), "email": (source, policy.email)}

    def _suppressions(
        self, sources: list[SourceFile], placements: dict[str, CompiledPlacement]
    ) -> list[CompiledSuppression]:
        tags = {tag for p in placements.values() for tag in p.tags}
        known_flags = self.schema.flags if self.schema is not None else None
        compiled: list[CompiledSuppression] = []
        seen: set[str] = set()
        for source in sources:
            for index, rule in enumerate(source.rules.suppressions):
                path: Path_ = ("suppressions", index)
                if not self._unique(source, (*path, "id"), "suppression", rule.id, seen):
                    continue
                if rule.when is None and not rule.flags:
                    self._problem(source, path, "give `when`, `flags` or both", rule.id)
                for i, name in enumerate(rule.channels):
                    if name not in self.channels:
                        self._unknown_channel(source, (*path, "channels", i), name, rule.id)
                for field, names, known in (
                    ("placements", rule.placements, set(placements)),
                    ("tags", rule.tags, tags),
                    ("flags", rule.flags, known_flags),
                ):
                    for i, name in enumerate(names):
                        if known is not None and name not in known:
                            # a typo here would quietly switch a suppression off
                            self._problem(
                                source,
                                (*path, field, i),
                                f"unknown {field[:-1]} {name!r}{_likely(name, known)}",
                                rule.id,
                            )
                condition = None
                if rule.when is not None:
                    condition = self._condition(source, (*path, "when"), rule.when, rule.id)
                compiled.append(
                    CompiledSuppression(
                        id=rule.id,
                        description=rule.description,
                        flags=frozenset(rule.flags),
                        condition=condition,
                        channels=frozenset(rule.channels),
                        placements=frozenset(rule.placements),
                        tags=frozenset(rule.tags),
                    )
                )
        return compiled

    def _problem(self, source: SourceFile, path: Path_, message: str, rule: Any = None) -> None:
        self.problems.append(source.document.problem(path, message, rule))


def _likely(name: str, known: Collection[str]) -> str:
    """What a rule author likely meant by an unknown `name`: the close one, else all known."""
    if not known:
        return ""
    return meant(name, known) or f" (known: {', '.join(sorted(known))})"
