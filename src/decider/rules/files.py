"""Rule files: their schema, and reading them with the place of every value.

A rules directory holds `*.yaml` files, read in name order; each may hold any of the
sections below, and the compiler merges them. Decoding is strict: an unknown field is an
error at its line, so a misspelt key never silently means "absent".
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import msgspec
import yaml

from decider.errors import (
    Problem,
    RulesetError,
    closest,
    matching,
    plain_types,
    validation_path,
)
from decider.model import ID_PATTERN, ID_WORDS
from decider.ruleset import ChannelPolicy

T = TypeVar("T")
SCHEMA_FILE = "schema.yaml"
RuleId = Annotated[str, matching(ID_PATTERN, ID_WORDS)]
SlotName = Annotated[
    str,
    matching(
        r"^[a-z][a-z0-9_]{0,63}$",
        "a slot name: 1 to 64 lowercase letters, digits or _, starting with a letter",
    ),
]
# a named condition is read in CEL as an identifier: letters, digits and _
ConditionName = Annotated[
    str,
    matching(
        r"^[a-z_][a-z0-9_]{0,63}$",
        "a condition name: 1 to 64 lowercase letters, digits or _, not starting with a digit",
    ),
]
# a value of the profile's `role` trait
RoleName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Segment(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An audience: the highest-priority segment whose `when` holds is the request's segment."""

    id: RuleId
    description: str
    owner: str
    priority: int
    when: str


class Treatment(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A variant tried beside a segment's own one (its control): the arm is named by its id."""

    id: RuleId
    weight: int | float = 1  # a whole number: 1.5 is refused by the compiler, placed
    content: dict[str, str]


class SegmentSplit(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One segment's part of an experiment: its own holdout share, and treatment arms."""

    holdout: str | int | float | None = None
    control_weight: int | float = 1
    treatments: tuple[Treatment, ...] = ()


class ExperimentRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A placement's holdout (and splits): see decider.experiments. `holdout` is a
    percentage ("10%"); `salt` defaults to the id (experiments of one salt hold out the same
    units)."""

    id: RuleId
    holdout: str | int | float
    unit: Literal["account", "visitor"] = "account"
    salt: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    segments: dict[str, SegmentSplit] = {}


class VariantRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A placement's content: its `content` by slot, and overrides of some slots by the
    visitor's role and by the request's language, a BCP 47 tag (decider.dimensions)."""

    id: str
    content: dict[str, str]
    by_role: dict[RoleName, dict[str, str]] = {}
    by_language: dict[str, dict[str, str]] = {}


class Placement(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A spot that shows content: a page region on the web, an email template in email.
    `choose`: which segment's variant is served: the highest-priority match's
    (`first_match`), or the highest-priority match's that has a variant here
    (`first_with_variant`)."""

    id: RuleId
    channel: RuleId  # web, email, or a channel the rules define
    description: str = ""
    slots: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] | None = None
    tags: tuple[str, ...] = ()
    choose: Literal["first_match", "first_with_variant"] = "first_match"
    default: VariantRule
    variants: dict[str, VariantRule] = {}
    experiment: ExperimentRule | None = None


class ConsentPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The built-in channels' policies; a defined channel carries its own."""

    web: ChannelPolicy
    email: ChannelPolicy


class Slot(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A slot of a defined channel; `max_length` is checked at load for every text a
    placement gives the slot (an SMS body too long is refused before any send), counted in
    characters, or with `count: sms` as a text message counts it (decider.rules.channels)."""

    max_length: Annotated[int, msgspec.Meta(ge=1)] | None = None
    count: Literal["characters", "sms"] = "characters"


class ChannelRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A channel beside the built-in web and email (push, SMS, in-app): the slots its
    placements fill, in order, and its consent policy (purposes, bases, Sec-GPC, sending)."""

    id: RuleId
    description: str = ""
    slots: Annotated[dict[SlotName, Slot], msgspec.Meta(min_length=1)]
    consent: ChannelPolicy


class Suppression(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Who must not get a message. Empty scope lists mean "everywhere"."""

    id: RuleId
    description: str
    when: str | None = None
    flags: tuple[str, ...] = ()
    channels: tuple[RuleId, ...] = ()
    placements: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


class RuleFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    channels: tuple[ChannelRule, ...] = ()
    # CEL fragments by name, which a `when` reads as an identifier (decider.rules.conditions)
    conditions: dict[ConditionName, str] = {}
    segments: tuple[Segment, ...] = ()
    placements: tuple[Placement, ...] = ()
    consent: ConsentPolicy | None = None
    suppressions: tuple[Suppression, ...] = ()


Path_ = tuple[str | int, ...]


class Mark(msgspec.Struct, frozen=True):
    """Where a YAML value starts (1-based), and enough to place a column inside a string:
    a literal block's indent, or the source text of a folded, quoted or multi-line one."""

    line: int
    column: int
    style: str | None = None
    indent: int | None = None
    raw: str | None = None


class Document(msgspec.Struct, frozen=True):
    """A YAML file's data, with the place of each value by its path in the document."""

    name: str
    content: bytes
    data: Any
    marks: dict[Path_, Mark]

    def mark(self, path: Path_) -> Mark:
        """The place of `path`, or of its nearest ancestor that has one."""
        while path and path not in self.marks:
            path = path[:-1]
        return self.marks.get(path, Mark(1, 1))

    def problem(self, path: Path_, message: str, rule: str | None = None) -> Problem:
        mark = self.mark(path)
        return Problem(self.name, mark.line, mark.column, message, rule)

    def convert(self, kind: type[T]) -> T:
        """The data as `kind`, strictly; a mismatch raises RulesetError at its place, with
        those of every other field, list item (segments, placements...) and unknown key:
        msgspec stops at the first, and an author fixing one at a time would run check
        once each."""
        try:
            return msgspec.convert(self.data if self.data is not None else {}, kind, strict=True)
        except msgspec.ValidationError as exc:
            problems = dict.fromkeys([self._mismatch(exc, (), kind)])
            problems.update(dict.fromkeys(self._item_mismatches(kind)))
            raise RulesetError(problems) from None

    def salvage(self, kind: type[T]) -> tuple[Document, T] | None:
        """The data as `kind` with each field, list item or map entry that does not convert
        left out (an unknown key too), and the document of what is kept (a list's items
        renumbered, each still placed where it is written); None if not even that converts."""
        if not isinstance(self.data, dict) or not issubclass(kind, msgspec.Struct):
            return None
        kept: dict[str, Any] = {}
        renumbered: dict[str, dict[int, int]] = {}  # by list field: old index, new
        for name, whole, value in _given(kind, self.data):
            item_type = _item_type(whole)
            if _converts(value, whole):
                kept[name] = value
            elif item_type is not None and isinstance(value, list):
                good = [n for n, item in enumerate(value) if _converts(item, item_type)]
                kept[name] = [value[n] for n in good]
                renumbered[name] = {old: new for new, old in enumerate(good)}
            elif get_origin(whole) is dict and isinstance(value, dict):  # no constraints
                kept[name] = {k: v for k, v in value.items() if _converts({k: v}, whole)}
        if not _converts(kept, kind):
            return None
        marks: dict[Path_, Mark] = {}
        for path, mark in self.marks.items():
            numbers = renumbered.get(path[0]) if path and isinstance(path[0], str) else None
            if numbers is None or len(path) < 2:
                marks[path] = mark
            elif isinstance(path[1], int) and path[1] in numbers:
                marks[(path[0], numbers[path[1]], *path[2:])] = mark
        document = Document(self.name, self.content, kept, marks)
        return document, msgspec.convert(kept, kind, strict=True)

    def _mismatch(self, exc: msgspec.ValidationError, within: Path_, kind: Any) -> Problem:
        message, path = validation_path(exc)
        message, path = plain_types(message), (*within, *path)
        if message.startswith("Object contains unknown field `") and path:
            known = [f.encode_name for f in _fields_at(kind, path[:-1])]
            likely = closest(str(path[-1]), known)
            message += f"; did you mean {likely}?" if likely else ""
        if path and isinstance(path[-1], str):  # name the field: the line may hold others
            message = f"{path[-1]}: {message}"
        return self.problem(path, message)

    def _item_mismatches(self, kind: type[Any]) -> Iterator[Problem]:
        """Beside msgspec's first: the first mismatch of each field of `kind` converted
        alone (of each item alone, for a list), and each key that is no field."""
        if not isinstance(self.data, dict) or not isinstance(kind, type):
            return
        fields = [field.encode_name for field in msgspec.structs.fields(kind)]
        for key in self.data:
            if key not in fields:
                likely = closest(str(key), fields)
                hint = f"; did you mean {likely}?" if likely else ""
                yield self.problem((key,), f"{key}: Object contains unknown field `{key}`{hint}")
        for name, whole, value in _given(kind, self.data):
            item_type = _item_type(whole) if isinstance(value, list) else None
            for n, item in enumerate(value) if item_type else [(None, value)]:
                try:
                    msgspec.convert(item, item_type or whole, strict=True)
                except msgspec.ValidationError as exc:
                    yield self._mismatch(exc, (name,) if n is None else (name, n), kind)

    def place_in_string(self, path: Path_, line: int, column: int) -> tuple[int, int]:
        """Map a line:column inside a YAML string value (a CEL expression) to the file."""
        mark = self.mark(path)
        if mark.style == "|" and mark.indent is not None:
            return mark.line + line, mark.indent + column
        value = self.value(path)
        if mark.raw is not None and isinstance(value, str):
            lines = value.split("\n")
            offset = sum(len(text) + 1 for text in lines[: line - 1]) + column - 1
            return _place_in_source(mark, value, offset)
        quote = 1 if mark.style else 0
        return mark.line + line - 1, mark.column + quote + column - 1

    def value(self, path: Path_) -> Any:
        found = self.data
        for key in path:
            try:
                found = found[key]
            except (KeyError, IndexError, TypeError):
                return None
        return found


def _given(kind: Any, data: dict[Any, Any]) -> Iterator[tuple[str, Any, Any]]:
    """(name, type, value) of each field of the struct type `kind` that `data` gives."""
    hints = get_type_hints(kind, include_extras=True)
    for field in msgspec.structs.fields(kind):
        if field.encode_name in data:
            yield field.encode_name, hints[field.name], data[field.encode_name]


def _fields_at(kind: Any, path: Path_) -> tuple[msgspec.structs.FieldInfo, ...]:
    """The fields of the struct at `path` within `kind` (through fields, list items and map
    values); none if no struct is there."""
    for step in path:
        kind = _bare(kind)
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            if not isinstance(step, str):
                return ()
            hints = get_type_hints(kind, include_extras=True)
            by_name = {f.encode_name: f.name for f in msgspec.structs.fields(kind)}
            if step not in by_name:
                return ()
            kind = hints[by_name[step]]
        elif (item := _item_type(kind)) is not None:
            kind = item
        elif get_origin(kind) is dict:
            kind = get_args(kind)[1]
        else:
            return ()
    kind = _bare(kind)
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return msgspec.structs.fields(kind)
    return ()


def _bare(hint: Any) -> Any:
    """A type without its Annotated constraints."""
    return get_args(hint)[0] if get_origin(hint) is Annotated else hint


def _item_type(hint: Any) -> Any:
    """The type of a list's (or a variadic tuple's) items, if `hint` is one; else None."""
    bare = _bare(hint)
    args = get_args(bare)
    if get_origin(bare) is list or (get_origin(bare) is tuple and ... in args):
        return args[0]
    return None


def _converts(value: Any, kind: Any) -> bool:
    try:
        msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError:
        return False
    return True


def _place_in_source(mark: Mark, value: str, offset: int) -> tuple[int, int]:
    """Where the character `offset` of a scalar's value stands in its source text: walk the
    source alongside the value, skipping what YAML folded away (line breaks, indentation,
    quotes, escapes)."""
    raw = mark.raw or ""
    at = raw.index("\n") + 1 if mark.style == ">" and "\n" in raw else int(bool(mark.style))
    read = 0
    while read < offset and at < len(raw):
        mine, theirs = raw[at], value[read]
        if mine == theirs:
            at, read = at + 1, read + 1
        elif theirs in " \n" and mine in " \t\r\n":  # a line break folded into a space
            while at < len(raw) and raw[at] in " \t\r\n":
                at += 1
            read += 1
        elif mark.style == '"' and mine == "\\":  # an escape stands for one character
            at, read = at + 2, read + 1
        else:  # indentation, or the second quote of ''
            at += 1
    while at < len(raw) and raw[at] in " \t\r\n" and read < len(value) and value[read] != raw[at]:
        at += 1
    before = raw[:at]
    if "\n" not in before:
        return mark.line, mark.column + at
    return mark.line + before.count("\n"), at - before.rfind("\n")


class SourceFile(msgspec.Struct, frozen=True):
    """One rule file: its document and its decoded rules."""

    document: Document
    rules: RuleFile

    @property
    def name(self) -> str:
        return self.document.name


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loading, except that timestamps stay strings: profile traits carry RFC 3339
    strings (see decider.profile), and typed fields such as `now` are parsed by msgspec."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A key given twice is an error: YAML would silently keep the last one."""
        seen: set[tuple[type, Any]] = set()  # by type too: 1 and true are two keys
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node, deep=deep)
            if (type(key), key) in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add((type(key), key))
        return super().construct_mapping(node, deep)

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML reads it from the class
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


# a Kubernetes ConfigMap volume keeps each revision in a directory of its own, and this
# symlink to the current one, swapped by rename
CONFIGMAP_LINK = "..data"
_MAX_LINKS = 40  # as the kernel: more, and it is a loop


def revision_dir(directory: Path) -> Path:
    """The directory one load reads every file from: `directory` with the symlinks on its way
    resolved once, now (through a ConfigMap volume's `..data` link when it has one). A change
    to several files swapped in as a new directory behind a symlink is then read whole: a
    swap during the load is seen by the next one. Without symlinks, `directory` itself."""
    data = directory / CONFIGMAP_LINK
    resolved = os.path.realpath(data if data.is_symlink() else directory)
    return directory if resolved == os.path.abspath(directory) else Path(resolved)


def links_of(directory: Path) -> list[Path]:
    """The symlinks resolving `directory` goes through, absolute, in order (the `..data` link
    of a ConfigMap volume included): where a swap of revision shows."""
    links: list[Path] = []
    pending = list(Path(os.path.abspath(directory)).parts)
    data = directory / CONFIGMAP_LINK
    if data.is_symlink():
        pending.append(CONFIGMAP_LINK)
    at = Path(pending.pop(0))  # the root
    while pending and len(links) <= _MAX_LINKS:
        part = pending.pop(0)
        if part == "..":
            at = at.parent
            continue
        step = at / part
        if not step.is_symlink():
            at = step
            continue
        links.append(step)
        target = Path(os.readlink(step))
        if target.is_absolute():
            at = Path(target.anchor)
            pending = list(target.parts[1:]) + pending
        else:
            pending = list(target.parts) + pending
    return links


def yaml_files(directory: Path) -> list[Path]:
    """The `*.yaml` of a directory, in name order, but hidden names (an editor's lock file,
    `.#b2b.yaml`); one that cannot be read (a symlink to nothing, a directory) is listed, so
    that reading it fails rather than what it holds vanishing."""
    return sorted(p for p in directory.glob("*.yaml") if not p.name.startswith("."))


def rule_files(directory: Path) -> list[Path]:
    """The rule files of a directory (tests/ and schema.yaml are not rules)."""
    return [p for p in yaml_files(directory) if p.name != SCHEMA_FILE]


# while set, (copy, original): files read from `copy` are named as their originals
_shown_as: ContextVar[tuple[Path, Path] | None] = ContextVar("shown_as", default=None)


@contextmanager
def shown_as(copy: Path, original: Path) -> Iterator[None]:
    """Within, files read from the directory `copy` are named as the same files of
    `original` (a worker loading the copy of the rules its peers serve)."""
    token = _shown_as.set((copy.resolve(), original))
    try:
        yield
    finally:
        _shown_as.reset(token)


def display_name(path: Path) -> str:
    """A file's name as messages show it: relative to the working directory when inside it."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: named as listed (read_yaml says why)
        return str(path)
    copy = _shown_as.get()
    if copy is not None and resolved.is_relative_to(copy[0]):
        path = copy[1] / resolved.relative_to(copy[0])
        resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_yaml(path: Path, name: str) -> Document:
    """Parse one YAML file, keeping places. Raises RulesetError if it is not YAML, or not a
    regular file (a FIFO would block a load, a device never end it)."""
    try:
        if not path.is_file():
            raise RulesetError([Problem(name, 1, 1, f"cannot read: {_not_a_file(path)}")])
        content = path.read_bytes()
    except OSError as exc:  # e.g. removed between listing and reading, mid-save
        raise RulesetError([Problem(name, 1, 1, f"cannot read: {exc.strerror}")]) from None
    try:
        loader = _Loader(content.decode("utf-8"))
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_aliases(node, name)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError as exc:
        raise RulesetError([Problem(name, 1, 1, f"not UTF-8: {exc.reason}")]) from None
    except RecursionError:  # PyYAML reads nesting by recursion
        raise RulesetError([Problem(name, 1, 1, "invalid YAML: nested too deeply")]) from None
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark or exc.context_mark
        line, column = (where.line + 1, where.column + 1) if where else (1, 1)
        problem = exc.problem or str(exc)
        if problem == "mapping values are not allowed here":  # `when: {"DE": 1}[...] == 1`
            problem += " (quote a text holding ': ', or write it as a block: `key: |`)"
        raise RulesetError([Problem(name, line, column, f"invalid YAML: {problem}")]) from None
    marks = dict(_marks(node, ())) if node is not None else {}
    return Document(name, content, data, marks)


class PartlyRead(RulesetError):
    """A rule file whose shape is wrong in places (`problems`), and what of it could be read
    (`salvaged`: its rules with each wrong part left out), so that the rest is compiled and
    its own mistakes reported beside the shape's, in one `decider check`."""

    def __init__(self, problems: Iterable[Problem], salvaged: SourceFile | None) -> None:
        super().__init__(problems)
        self.salvaged = salvaged


def read_rule_file(path: Path, name: str) -> SourceFile:
    """Decode one rule file. Raises PartlyRead when its shape is wrong, RulesetError when it
    cannot be read at all; each with every problem, placed."""
    document = read_yaml(path, name)
    try:
        return SourceFile(document, document.convert(RuleFile))
    except RulesetError as exc:
        salvaged = document.salvage(RuleFile)
        partly = SourceFile(*salvaged) if salvaged is not None else None
        raise PartlyRead(exc.problems, partly) from None


def _not_a_file(path: Path) -> str:
    """Why a name listed in a directory is no file to read."""
    if path.is_symlink() and not path.exists():
        return "a symlink that leads to no file"
    return "a directory" if path.is_dir() else "not a regular file"


MAX_EXPANSION = 10  # how many times its own values aliases may make a file's data hold


def _check_aliases(root: yaml.Node, name: str) -> None:
    """YAML aliases (`*name`) repeat a value given once: an alias within its own value
    would never end, and aliases of aliases multiply a small file into gigabytes. Raises
    RulesetError for either; aliases that repeat some values stay allowed."""
    sizes: dict[int, int] = {}  # a node's values, aliases expanded, by the node's id
    open_: set[int] = set()  # the nodes being counted: one met again is its own alias

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            mark = node.start_mark
            message = "an alias within its own anchored value: it would never end"
            raise RulesetError([Problem(name, mark.line + 1, mark.column + 1, message)])
        open_.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        sizes[key] = 1 + sum(size(child) for child in children)
        open_.discard(key)
        return sizes[key]

    total = size(root)
    if total > MAX_EXPANSION * len(sizes):
        message = (
            f"aliases make this file hold {total:,} values, from {len(sizes):,} written: at "
            f"most {MAX_EXPANSION} times as many (write repeated values out, or use fewer "
            "aliases of aliases)"
        )
        raise RulesetError([Problem(name, 1, 1, message)])


def _marks(node: yaml.Node, path: Path_) -> Iterator[tuple[Path_, Mark]]:
    start = node.start_mark
    if isinstance(node, yaml.ScalarNode):
        indent, raw = None, None
        if node.style == "|":
            # the text of a literal block starts on the next line, at the block's indent
            indent = _block_indent(node)
        elif node.style or node.end_mark.line != start.line:
            buffer = start.buffer or ""
            raw = buffer[start.pointer : node.end_mark.pointer]
        yield path, Mark(start.line + 1, start.column + 1, node.style, indent, raw)
        return
    yield path, Mark(start.line + 1, start.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                yield from _marks(value, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _marks(item, (*path, index))


def _block_indent(node: yaml.ScalarNode) -> int:
    buffer = node.start_mark.buffer
    if buffer is None:
        return 1
    first_line = buffer[node.start_mark.pointer :].split("\n", 2)[1:2]
    text = first_line[0] if first_line else ""
    return len(text) - len(text.lstrip(" "))
