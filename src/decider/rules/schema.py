"""The optional profile schema, rules/schema.yaml: which visitor and account traits exist.

With it, `decider check` (and every load) refuses a rule that reads a trait the schema does
not have, so `account.fit_scor` is caught when written instead of silently never matching.

    visitor:
      role: string
      shop:                      # a nested map: its fields, checked in turn
        session_at: timestamp
    account:
      fit_score: int
      intent_topics: list
      enrichment: map            # `map` and `any`: fields beneath are not checked
    flags: [unsubscribed, do_not_contact, bounced, legal_hold]   # what suppressions may name

The same schema fixes trait values where profiles enter (decider.traits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decider.errors import Problem, RulesetError, closest
from decider.rules.cel import Reference
from decider.rules.files import Document, Path_, read_yaml
from decider.traits import OPEN, TYPES, TraitSchema


def list_paths(schema: TraitSchema | None) -> frozenset[tuple[str, ...]]:
    """The traits the schema declares lists, as paths (`("account", "committee_roles_seen")`):
    stored values are held to it, so rules may rely on their order."""
    if schema is None:
        return frozenset()
    found: set[tuple[str, ...]] = set()

    def walk(fields: dict[str, Any], path: tuple[str, ...]) -> None:
        for name, node in fields.items():
            if node == "list":
                found.add((*path, name))
            elif isinstance(node, dict):
                walk(node, (*path, name))

    walk(schema.visitor, ("visitor",))
    walk(schema.account, ("account",))
    return frozenset(found)


def check_reference(schema: TraitSchema, ref: Reference) -> str | None:
    """Why `ref` is not in the schema, or None if it is (or is not a profile read)."""
    node: Any = {"visitor": schema.visitor, "account": schema.account}.get(ref.root)
    if node is None:
        return None
    walked = [ref.root]
    for name in ref.path:
        if isinstance(node, str):
            if node in OPEN:
                return None
            return f"{'.'.join(walked)} is a {node}; it has no field {name!r}"
        if name not in node:
            where = ".".join(walked)
            likely = closest(name, node)
            hint = f"; did you mean {where}.{likely}?" if likely else ""
            return f"{where}.{name} is not in the profile schema ({schema.file}){hint}"
        node = node[name]
        walked.append(name)
    return None


def read_schema(path: Path, name: str) -> TraitSchema:
    """Read and check a schema file. Raises RulesetError with every problem, placed."""
    document = read_yaml(path, name)
    data = document.data if document.data is not None else {}
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise RulesetError([document.problem((), "expected a map with visitor and account")])
    for key in data:
        if key not in ("visitor", "account", "flags"):
            problems.append(
                document.problem((key,), f"unknown section {key!r}; use visitor, account, flags")
            )
    flags = data.get("flags")
    if flags is not None and not (
        isinstance(flags, list) and all(isinstance(f, str) for f in flags)
    ):
        problems.append(document.problem(("flags",), "flags is a list of flag names"))
        flags = None
    roots = {root: data.get(root) or {} for root in ("visitor", "account")}
    for root, node in roots.items():
        problems.extend(_check_node(document, (root,), node))
    if problems:
        raise RulesetError(problems)
    return TraitSchema(
        roots["visitor"], roots["account"], frozenset(flags) if flags is not None else None, name
    )


def _check_node(document: Document, path: Path_, node: Any) -> list[Problem]:
    if isinstance(node, str):
        if node in TYPES:
            return []
        return [
            document.problem(path, f"unknown type {node!r}; use one of {', '.join(sorted(TYPES))}")
        ]
    if not isinstance(node, dict):
        return [document.problem(path, "expected a type name or a map of fields")]
    problems: list[Problem] = []
    for key, child in node.items():
        problems.extend(_check_node(document, (*path, key), child))
    return problems
