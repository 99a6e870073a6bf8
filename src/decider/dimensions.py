"""Variant dimensions: a variant's text by the reader's language and role, without a segment
for each combination.

A variant may give, beside its content, overrides by role (the visitor profile's `role`
trait, read only with the channel's consent) and by language (the request context's
`language`, a BCP 47 tag such as `de-AT`). Each override gives some slots. A slot's text is
the first found of: the language overrides along the tag's fallback chain, most specific
first (`de-AT`, then `de`: RFC 4647 lookup), then the role's override, then the variant's
own content. Language comes before role because a role's text is written in the variant's
own language: a German reader is never shown a line of it where German text exists.

Only placements whose variants have overrides pay for this: the engine looks at nothing
else.
"""

from __future__ import annotations

import msgspec

from decider.model import Variant

LANGUAGE = "language"  # the request context's key
ROLE = "role"  # the visitor profile's trait
# the longest tag read (BCP 47 advises 35 characters); a longer value is no language
MAX_TAG = 35


class Dimensions(msgspec.Struct, frozen=True):
    """One variant's overrides. `by_language`: by lowercase tag, the tag as written in the
    rules and the slots it gives; `by_role`: by role, the slots it gives."""

    by_language: dict[str, tuple[str, dict[str, str]]]
    by_role: dict[str, dict[str, str]]


def chain(tag: str) -> list[str]:
    """The fallback chain of a (lowercase) tag, most specific first: de-at-x → de-at → de."""
    found = [tag]
    while "-" in tag:
        tag = tag.rpartition("-")[0]
        found.append(tag)
    return found


def dressed(dimensions: Dimensions, variant: Variant, language: object, role: object) -> Variant:
    """`variant` with the overrides for `language` (the context's value, whatever it is) and
    `role` (the profile's, None without consent) put in, and which of them gave text."""
    languages: list[tuple[str, dict[str, str]]] = []
    if type(language) is str and dimensions.by_language and len(language) <= MAX_TAG:
        for tag in chain(language.replace("_", "-").lower()):
            found = dimensions.by_language.get(tag)
            if found is not None:
                languages.append(found)
    by_role = dimensions.by_role.get(role) if type(role) is str else None
    if not languages and by_role is None:
        return variant
    content = dict(variant.content)
    given: set[str] = set()
    for _, slots in languages:
        for slot, text in slots.items():
            if slot not in given:
                content[slot] = text
                given.add(slot)
    applied = False
    for slot, text in (by_role or {}).items():
        if slot not in given:
            content[slot] = text
            applied = True
    return Variant(
        variant.id,
        content,
        language=languages[0][0] if languages else None,
        role=role if applied and type(role) is str else None,
    )
