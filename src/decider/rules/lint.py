"""Lint: findings that do not stop a ruleset but are almost always a mistake (warnings).

`decider check --strict` fails on them; the server loads the rules and reports them.
"""

from __future__ import annotations

from collections.abc import Iterator, Set

import msgspec

from decider.errors import Problem
from decider.rules.cel import MAX_ITERATIONS, CelCompileErrors, caller_sized
from decider.rules.dimensions import incomplete
from decider.rules.files import Path_, SourceFile, VariantRule
from decider.ruleset import CompiledPlacement


def lint(
    sources: list[SourceFile],
    placements: dict[str, CompiledPlacement],
    *,
    used_conditions: Set[str] = frozenset(),
    every_file_read: bool = True,
) -> tuple[Problem, ...]:
    """Every warning about the rule files, sorted by place. When a file could not be read,
    its placements are unknown: no segment is said to lack one, nor a named condition to be
    unused (`used_conditions`: those the segments and suppressions use); nor when a placement
    is in error (refused, or its id given twice), a segment to lack one."""
    return tuple(sorted(_findings(sources, placements, used_conditions, every_file_read)))


def _findings(
    sources: list[SourceFile],
    placements: dict[str, CompiledPlacement],
    used_conditions: Set[str],
    every_file_read: bool,
) -> Iterator[Problem]:
    used = {segment for p in placements.values() for segment in p.variants}
    written = sum(len(source.rules.placements) for source in sources)
    every_placement = every_file_read and len(placements) == written
    by_priority: dict[int, str] = {}
    seen: set[str] = set()  # placement ids: a second one is an error, not linted
    for source in sources:
        for index, segment in enumerate(source.rules.segments):
            path: Path_ = ("segments", index)
            if segment.id not in used and every_placement:
                yield _warning(
                    source,
                    (*path, "id"),
                    "no placement has a variant for this segment; winning it changes nothing",
                    segment.id,
                )
            tie = by_priority.setdefault(segment.priority, segment.id)
            if tie != segment.id:
                yield _warning(
                    source,
                    (*path, "priority"),
                    f"same priority as {tie}; the tie goes to the lower segment id",
                    segment.id,
                )
            yield from _caller_sized(source, (*path, "when"), segment.when, segment.id)
        for name, text in source.rules.conditions.items():
            path = ("conditions", name)
            if name not in used_conditions and every_file_read:
                yield _warning(
                    source, path, "no segment or suppression uses this named condition", name
                )
            yield from _caller_sized(source, path, text, name)
        for index, rule in enumerate(source.rules.suppressions):
            if rule.when is not None:
                path = ("suppressions", index, "when")
                yield from _caller_sized(source, path, rule.when, rule.id)
        for index, channel in enumerate(source.rules.channels):
            if not channel.consent.purposes:
                yield _warning(
                    source,
                    ("channels", index, "consent", "purposes"),
                    "no consent purpose: its placements use profile data, and send, without "
                    "anyone's consent (a transactional message's way; marketing needs one)",
                    channel.id,
                )
        for index, placement in enumerate(source.rules.placements):
            if placement.id in seen:
                continue
            seen.add(placement.id)
            slots = placements[placement.id].slots if placement.id in placements else ()
            for segment_id, variant in placement.variants.items():
                empty = [slot for slot in slots if slot not in variant.content]
                if empty:
                    yield _warning(
                        source,
                        ("placements", index, "variants", segment_id, "content"),
                        f"variant {variant.id} leaves {', '.join(empty)} empty; "
                        "the default's text is shown there",
                        placement.id,
                    )
            named: list[tuple[Path_, VariantRule]] = [(("default",), placement.default)]
            named += [(("variants", s), v) for s, v in placement.variants.items()]
            for where, variant_rule in named:
                for tag, missing in incomplete(variant_rule, slots):
                    yield _warning(
                        source,
                        ("placements", index, *where, "by_language", tag),
                        f"variant {variant_rule.id}: {tag} gives no {', '.join(missing)}; "
                        f"readers of {tag} get the variant's own text there",
                        placement.id,
                    )


def _caller_sized(source: SourceFile, path: Path_, when: str, rule: str) -> Iterator[Problem]:
    """A comprehension over the request's context runs as long as the caller's list: each
    is placed where its macro is named."""
    try:
        found = caller_sized(when)
    except CelCompileErrors:
        return  # an error of the rule, reported as one
    for comprehension in found:
        line, column = source.document.place_in_string(
            path, comprehension.line, comprehension.column
        )
        message = (
            f"{comprehension.macro}() iterates over the request's context, whose length each "
            f"caller chooses; past {MAX_ITERATIONS:,} steps in one evaluation the rule fails "
            "to evaluate (no match; a suppression suppresses)"
        )
        yield Problem(source.name, line, column, message, rule, kind="warning")


def _warning(source: SourceFile, path: Path_, message: str, rule: str) -> Problem:
    return msgspec.structs.replace(source.document.problem(path, message, rule), kind="warning")
