"""Every exception Decider raises, in one documented hierarchy.

    DeciderError
    ├── RulesetError          the rules cannot be loaded; carries every Problem at once
    ├── InvalidRequest        a caller sent something we cannot answer; names the field (422)
    │   ├── MalformedBody     empty, not JSON, or nested past the decoder's limit (400)
    │   └── UnknownPlacement  the placement is not in the loaded rules
    ├── ProfileSourceError    the profile store or API failed (not "unknown id")
    ├── ProfileConflict       a write would give one user id or email hash to two visitors
    ├── ReadOnlySource        a write to a source Decider only reads (a profile API)
    ├── ImportFileError       a profiles file has bad lines; carries every one
    ├── NotStored             outcomes that could not be stored now; send them again (503)
    └── RecordFileError       an exposure or outcome file has a line that is not a record

Foreign exceptions from I/O and decoding (httpx, sqlite3, msgspec, the CEL runtimes'
compile and evaluation errors) are translated into these, or into CelEvalError
(decider.ruleset) and CelCompileErrors (decider.rules.cel), in the module that meets them,
so callers handle one family.
Anything else is a bug: the HTTP layer answers it with a JSON 500 and logs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import get_close_matches
from typing import Any, Literal

import msgspec

_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\['([^']*)'\]")
_ADDRESS = re.compile(r"[^\s`'\"@]*@[^\s`'\"]*")
_NAMES_A_FIELD = ("Object contains unknown field `", "Object missing required field `")


# msgspec's message for a string a pattern refuses, by the message: what the pattern means
_IN_WORDS: dict[str, str] = {}


def matching(regex: str, words: str, **meta: Any) -> msgspec.Meta:
    """A string constraint: `regex`, which messages say as `words` (what the string must be,
    "an id: ...") rather than as the regex, which puzzles a caller or a rule author."""
    _IN_WORDS[f"Expected `str` matching regex '{regex}'"] = f"expected {words}"
    return msgspec.Meta(pattern=regex, **meta)


# msgspec's names of JSON types, as someone writing YAML or an environment variable says them
TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "str": "text",
    "bool": "true or false",
    "array": "a list",
    "object": "a map",
    "null": "nothing",
}
_EXPECTED = re.compile(r"Expected `(\w+)`, got `(\w+)`")


def closest(word: str, known: Iterable[str]) -> str | None:
    """The known name a misspelt `word` likely meant, if one is close."""
    close = get_close_matches(word, list(known), n=1)
    return close[0] if close else None


def meant(word: str, known: Iterable[str]) -> str:
    """ " (did you mean X?)" for the known name closest to a misspelt `word`, else ""."""
    likely = closest(word, known)
    return f" (did you mean {likely}?)" if likely else ""


_TIME = "expected a time in RFC 3339 with its offset, as 2026-11-20T12:00:00Z"
# msgspec's words, as a rule author says them
_PLAIN = {
    "Invalid RFC3339 encoded datetime": _TIME,
    "Expected `datetime` with a timezone component": _TIME,
}
_MISSING = re.compile(r"Object missing required field `[^`]+`")


def plain_types(message: str) -> str:
    """msgspec's "Expected `int`, got `str`" as "expected a whole number, got text" (and its
    other messages a rule author meets, in words)."""
    if message in _PLAIN:
        return _PLAIN[message]
    if _MISSING.fullmatch(message):
        return "required, and not given"
    found = _EXPECTED.fullmatch(message)
    if found and found[1] in TYPE_WORDS and found[2] in TYPE_WORDS:
        got = "a decimal number" if found[2] == "float" else TYPE_WORDS[found[2]]
        return f"expected {TYPE_WORDS[found[1]]}, got {got}"
    return message


def in_words(text: str) -> str:
    """msgspec's message where it would puzzle a caller, said plainly."""
    for phrase, words in _IN_WORDS.items():
        text = text.replace(phrase, words)
    return text


def redact(text: str) -> str:
    """`text` with anything around an `@` taken out: messages echo what a caller sent (an
    unknown field's name, an invalid value), and that may be an email address."""
    return _ADDRESS.sub("<redacted>", text) if "@" in text else text


def validation_path(error: msgspec.ValidationError) -> tuple[str, tuple[str | int, ...]]:
    """Split msgspec's "Expected `int`, got `str` - at `$.segments[0].priority`" into the
    message and the path of the field at fault (for an unknown or missing field msgspec names
    the parent; the path then ends at the field itself). Both redacted."""
    text = in_words(redact(str(error)))
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        message, where = text, "$`"
    # `[...]` stands for a map key msgspec does not name: the path ends at the map
    known = where.rstrip("`").removeprefix("$").split("[...]")[0]
    path: list[str | int] = [
        int(index) if index else (name or quoted)
        for name, index, quoted in _PATH_PART.findall(known)
    ]
    if message.startswith(_NAMES_A_FIELD):
        path.append(message.split("`")[1])
    return message, tuple(path)


ProblemKind = Literal["error", "warning", "test_failure"]


class Problem(msgspec.Struct, frozen=True, order=True):
    """One thing wrong in a rules directory, with its place (1-based line and column).

    `kind`: an `error` (the rules do not compile) or a `test_failure` (a rule test case
    fails) refuses the ruleset; a `warning` (lint) is reported and the ruleset still loads.
    """

    file: str
    line: int
    column: int
    message: str
    rule: str | None = None
    kind: ProblemKind = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        what = f"{self.rule}: {self.message}" if self.rule else self.message
        said = f"{where}: warning: {what}" if self.kind == "warning" else f"{where}: {what}"
        return printable(said)  # a rule file's text may hold a terminal's escape codes


class DeciderError(Exception):
    """Base of every error Decider raises on purpose."""


class EngineUnavailable(DeciderError):
    """The CEL engine asked for cannot run in this installation."""


class RulesetError(DeciderError):
    """The ruleset is refused; `problems` holds every error, sorted by place, and `warnings`
    the lint findings made on the way, for a report that shows both."""

    def __init__(self, problems: Iterable[Problem], warnings: Iterable[Problem] = ()) -> None:
        self.problems = tuple(sorted(problems))
        self.warnings = tuple(sorted(warnings))
        super().__init__("\n".join(str(p) for p in self.problems))


class InvalidRequest(DeciderError):
    """A request we refuse to answer. `field` is a dotted path into the request body."""

    status = 422
    code: Literal["invalid_request", "malformed_body", "unknown_placement", "forbidden"] = (
        "invalid_request"
    )

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class MalformedBody(InvalidRequest):
    status = 400
    code = "malformed_body"


class UnknownPlacement(InvalidRequest):
    code = "unknown_placement"


class Forbidden(InvalidRequest):
    """A field the caller's API key may not send (explain, consent)."""

    status = 403
    code = "forbidden"


class ProfileSourceError(DeciderError):
    """The profile source could not answer. Never carries personal data in its message."""


class ProfileConflict(DeciderError):
    """A write would link an alias (user id, email hash) to a second visitor."""


class ReadOnlySource(DeciderError):
    """A write to a source Decider only reads (a profile API)."""


class ImportFileError(DeciderError):
    """A profiles file was refused; `problems` lists bad lines (the first ones, if there are
    many), `count` how many problems there are in all."""

    def __init__(self, problems: Iterable[str], count: int | None = None) -> None:
        self.problems = tuple(problems)
        self.count = len(self.problems) if count is None else count
        super().__init__("\n".join(self.problems))


class NotStored(DeciderError):
    """Outcomes the outcome log could not take or write now (its queue is full, its disk
    fails): none of the request's events are stored, and sending them again is safe."""


class RecordFileError(DeciderError):
    """An exposure or outcome file `decider report` cannot read: the file and line at fault,
    so the one bad line in millions can be found."""


def printable(line: str) -> str:
    """`line` with any character a terminal would act on (an escape sequence from a file
    that holds one) written as its Python escape."""
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in line)
