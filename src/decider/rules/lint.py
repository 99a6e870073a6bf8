"""Lint: findings that do not stop a ruleset but are almost always a mistake (warnings).

`decider check --strict` fails on them; the server loads the rules and reports them.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from decider.errors import Problem
from decider.rules.files import Path_, SourceFile
from decider.ruleset import CompiledPlacement


def lint(
    sources: list[SourceFile], placements: dict[str, CompiledPlacement]
) -> tuple[Problem, ...]:
    """Every warning about the rule files, sorted by place."""
    return tuple(sorted(_findings(sources, placements)))


def _findings(
    sources: list[SourceFile], placements: dict[str, CompiledPlacement]
) -> Iterator[Problem]:
    used = {segment for p in placements.values() for segment in p.variants}
    by_priority: dict[int, str] = {}
    for source in sources:
        for index, segment in enumerate(source.rules.segments):
            path: Path_ = ("segments", index)
            if segment.id not in used:
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
        for index, placement in enumerate(source.rules.placements):
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


def _warning(source: SourceFile, path: Path_, message: str, rule: str) -> Problem:
    return msgspec.structs.replace(source.document.problem(path, message, rule), kind="warning")
