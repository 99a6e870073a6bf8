"""Named conditions: CEL fragments a rule file names once, for segments and suppressions.

`conditions: {icp_fit: has(account.fit_score) && account.fit_score >= 50}` lets a `when`
read `icp_fit && account.stage == "awareness"`. At load each name is replaced by its
condition, in parentheses, so both engines compile, and the guard index and the chains
see, exactly what runs: nothing is looked up per decision. A named condition is compiled
once on its own where it is written, so its mistakes are reported there and not again at
each use; a name used with a field, an unknown name (when the rules name conditions) and a
cycle are errors at the place of the name.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping
from typing import NamedTuple

from decider.rules.cel import CelCompileErrors, Reference, references
from decider.rules.cel.check import undeclared
from decider.ruleset import VARIABLES

# (line, column) in a text, 1-based, and what is wrong there
Located = tuple[int, int, str]


class Expanded(NamedTuple):
    """A condition with its names replaced. `names`: those it uses, directly or not, in
    order; `errors`: in the text as written; `broken`: it uses a named condition that has
    errors of its own (reported where that is written). `spans`: (start, end, offset) of
    each text put in, in the expanded text, and the offset of its name in the written one."""

    text: str
    written: str
    names: tuple[str, ...] = ()
    errors: tuple[Located, ...] = ()
    broken: bool = False
    spans: tuple[tuple[int, int, int], ...] = ()

    def place(self, line: int, column: int) -> tuple[int, int]:
        """Where a line:column of the expanded text is in the written one: inside a text
        put in, the name it replaced."""
        offset = _offset(self.text, line, column)
        shift = 0
        for start, end, written_at in self.spans:
            if offset < start:
                break
            if offset < end:
                return _line_column(self.written, written_at)
            shift += (end - start) - len(_name_at(self.written, written_at))
        return _line_column(self.written, offset - shift)


class Conditions:
    """The named conditions of a ruleset, each expanded (and checked) once, on demand."""

    def __init__(
        self,
        named: Mapping[str, str],
        check: Callable[[str, Expanded], bool],
        *,
        every_file_read: bool = True,
    ) -> None:
        """`check(name, expanded)` compiles a named condition alone and reports its
        mistakes at its place; False if it has any. Without `every_file_read`, a name
        that is not known may be one a file read in part names: what uses it is broken,
        not wrong (not a second problem)."""
        self.named = dict(named)
        self._every_file_read = every_file_read
        self._check = check
        self._done: dict[str, Expanded] = {}
        self._cycles = _cycles(self.named)

    def expand(self, text: str) -> Expanded:
        """`text` with every named condition it uses replaced, and what is wrong with it."""
        return self._expand(text)

    def fragment(self, name: str) -> Expanded:
        """A named condition, expanded and checked (once): `broken` if it has errors."""
        done = self._done.get(name)
        if done is None:
            errors = self._cycles.get(name, ())
            if errors:  # not expanded: it would never end
                done = Expanded(self.named[name], self.named[name], errors=errors)
            else:
                done = self._expand(self.named[name])
                if not done.errors and not done.broken and not self._check(name, done):
                    done = done._replace(broken=True)
            self._done[name] = done
        return done

    def _expand(self, text: str) -> Expanded:
        try:
            found = references(text)
        except CelCompileErrors:  # the compiler reports it, placed
            return Expanded(text, text)
        parts: list[str] = []
        spans: list[tuple[int, int, int]] = []
        names: list[str] = []
        errors: list[Located] = []
        broken = False
        at = length = 0  # read of `text`, and written to the expansion
        for ref in sorted(found, key=lambda r: (r.line, r.column)):
            if not self._every_file_read and ref.root not in (*VARIABLES, *self.named):
                broken = True
                continue
            problem = self._problem(ref)
            if problem is not None:
                errors.append((ref.line, ref.column, problem))
                continue
            if ref.root in VARIABLES or ref.root not in self.named:
                continue
            inner = self.fragment(ref.root)
            names += [n for n in (ref.root, *inner.names) if n not in names]
            if inner.errors or inner.broken:
                broken = True
                continue
            start = _offset(text, ref.line, ref.column)
            parts.append(text[at:start])
            length += start - at
            put = f"({inner.text})"
            spans.append((length, length + len(put), start))
            parts.append(put)
            length += len(put)
            at = start + len(ref.root)
        parts.append(text[at:])
        return Expanded("".join(parts), text, tuple(names), tuple(errors), broken, tuple(spans))

    def _problem(self, ref: Reference) -> str | None:
        if ref.root in VARIABLES:
            return None
        if ref.root not in self.named:
            if not self.named:
                return None  # the compiler's own message: rules read these variables
            return undeclared(ref.root, self.named)
        if ref.path:
            return (
                f"{ref.root} is a named condition, true or false: it has no field {ref.path[0]!r}"
            )
        return None


def _cycles(named: Mapping[str, str]) -> dict[str, tuple[Located, ...]]:
    """For each named condition on a cycle, the error at its first name on the cycle."""
    uses: dict[str, list[Reference]] = {}
    for name, text in named.items():
        try:
            uses[name] = [r for r in references(text) if r.root in named and not r.path]
        except CelCompileErrors:
            uses[name] = []
    found: dict[str, tuple[Located, ...]] = {}
    for name in named:
        path = _path_back(name, uses)
        if path is not None:
            first = next(r for r in uses[name] if r.root == path[1])
            message = f"named condition {name} uses itself: {' -> '.join(path)}"
            found[name] = ((first.line, first.column, message),)
    return found


def _path_back(name: str, uses: Mapping[str, list[Reference]]) -> list[str] | None:
    """The shortest way from `name` back to itself through the names it uses, or None."""
    paths = {ref.root: [name, ref.root] for ref in uses[name]}
    pending = list(paths)
    while pending:
        at = pending.pop(0)
        if at == name:
            return paths[at]
        for ref in uses[at]:
            if ref.root not in paths:
                paths[ref.root] = [*paths[at], ref.root]
                pending.append(ref.root)
    return None


def _starts(text: str) -> list[int]:
    return [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]


def _offset(text: str, line: int, column: int) -> int:
    starts = _starts(text)
    return starts[min(line, len(starts)) - 1] + column - 1


def _line_column(text: str, offset: int) -> tuple[int, int]:
    starts = _starts(text)
    line = bisect_right(starts, offset)
    return line, offset - starts[line - 1] + 1


def _name_at(text: str, offset: int) -> str:
    end = offset
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return text[offset:end]
