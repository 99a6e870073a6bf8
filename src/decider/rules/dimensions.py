"""A variant's language and role overrides, from rule files: tags checked, each override's
slots and lengths checked as content's are (by the compiler), and languages left incomplete
found (a warning).

The overrides are served by decider.dimensions, which says how a slot's text is found.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from decider.dimensions import Dimensions, chain
from decider.rules.files import Path_, VariantRule

# BCP 47, as far as a rule file needs: a language of 2 or 3 letters (an ISO 639 code, not a
# word: `german` is none), then subtags of 1 to 8 letters or digits (de, de-AT, pt-BR,
# zh-Hant-TW, es-419)
TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")


def compile_dimensions(
    rule: VariantRule, path: Path_, report: Callable[[Path_, str], None]
) -> Dimensions | None:
    """The overrides of the variant `rule` at `path`, or None when it has none; a tag that
    is not one, or one given twice (tags are read whatever their case), is reported at it."""
    for where, slots in overrides(rule, path):
        if not slots:
            report(where, f"{where[-1]} gives no slot: give it some or leave it out")
    by_language: dict[str, tuple[str, dict[str, str]]] = {}
    for tag, problem in _languages(rule):
        if problem is not None:
            report((*path, "by_language", tag), problem)
        else:
            by_language[tag.lower()] = (tag, dict(rule.by_language[tag]))
    if not by_language and not rule.by_role:
        return None
    return Dimensions(by_language, {role: dict(slots) for role, slots in rule.by_role.items()})


def overrides(rule: VariantRule, path: Path_) -> Iterator[tuple[Path_, dict[str, str]]]:
    """Each override of `rule` with its path, for the checks content gets (slots, lengths)."""
    for role, slots in rule.by_role.items():
        yield (*path, "by_role", role), slots
    for tag, slots in rule.by_language.items():
        yield (*path, "by_language", tag), slots


def incomplete(rule: VariantRule, slots: tuple[str, ...]) -> Iterator[tuple[str, list[str]]]:
    """(tag, slots) for each language of `rule` whose fallback chain (itself, then the
    shorter tags the variant has) gives no text for some of the placement's `slots`: its
    readers get the variant's own text there. A tag that is an error (not one, or one
    again) is not a warning too."""
    given = {tag.lower(): set(texts) for tag, texts in rule.by_language.items()}
    for tag, problem in _languages(rule):
        if problem is not None:
            continue
        found = set().union(*(given.get(t, set()) for t in chain(tag.lower())))
        missing = [slot for slot in slots if slot not in found]
        if missing:
            yield tag, missing


def _languages(rule: VariantRule) -> Iterator[tuple[str, str | None]]:
    """Each language tag of `rule`, in order, with why it is an error, if it is: not a tag,
    or one given already (tags are read whatever their case)."""
    first: dict[str, str] = {}  # by tag in lower case: the tag as first given
    for tag in rule.by_language:
        if not TAG.fullmatch(tag):
            dashed = tag.replace("_", "-")
            fix = f"write {dashed}" if TAG.fullmatch(dashed) else "BCP 47: de, de-AT, pt-BR"
            yield tag, f"{tag!r} is not a language tag ({fix})"
        elif tag.lower() in first:
            yield tag, f"{tag!r} is {first[tag.lower()]!r} again: tags are read in any case"
        else:
            first[tag.lower()] = tag
            yield tag, None
