"""The package's shape: a pure core that imports no I/O library, dependencies that point one
way, reason codes only in their enum, and a README whose Layout section is the tree."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

PACKAGE = ROOT / "src" / "decider"
# the pure core: what a decision is and how it is made, free of frameworks and I/O
CORE = (
    "addresses",
    "described",
    "errors",
    "model",
    "reasons",
    "ruleset",
    "traits",
    "profile",
    "gate",
    "experiments",
    "engine",
    "index",
    "dimensions",
    "batch",
    "service",
    "stats",
)
# a web framework or server, an HTTP client, a database, a YAML parser, a file watcher, and
# the CEL runtimes (the core calls them through the Engine interface only)
FOREIGN = (
    "litestar",
    "uvicorn",
    "starlette",
    "httpx",
    "httpcore",
    "aiohttp",
    "sqlite3",
    "yaml",
    "watchfiles",
    "celpy",
    "cel_expr_python",
)
# which of our folders each folder may import, besides the core
ALLOWED = {
    "core": set[str](),
    "rules": {"rules"},
    "profiles": {"profiles"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(p for p in parts if p != "__init__") or "__init__"] = path
    return found


def imported(path: Path) -> set[str]:
    """The decider modules and packages `path` imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("decider"):
            names.add(node.module.removeprefix("decider").lstrip("."))
        elif isinstance(node, ast.Import):
            names |= {a.name.removeprefix("decider.") for a in node.names if "decider" in a.name}
    return names - {""}


def folder(module: str) -> str:
    top = module.split(".", maxsplit=1)[0]
    return top if top in ("rules", "profiles", "server") else ("core" if top in CORE else top)


def test_the_pure_core_imports_no_framework_client_database_or_parser() -> None:
    """Importing every core module loads none of the foreign libraries, even indirectly."""
    code = (
        "import json, sys\n"
        + "".join(f"import decider.{m}\n" for m in CORE)
        + f"print(json.dumps(sorted(m for m in {FOREIGN!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize("module", sorted(modules()))
def test_dependencies_point_one_way(module: str) -> None:
    """The core imports only the core; rules/ and profiles/ import the core and themselves;
    only server/, the composition root and the CLI may import across folders."""
    own = folder(module)
    if own not in ALLOWED:
        return
    allowed = ALLOWED[own] | {"core"}
    wrong = sorted(m for m in imported(modules()[module]) if folder(m) not in allowed)
    assert wrong == [], f"decider.{module} imports {wrong}"


def test_reason_codes_are_written_only_in_their_enum() -> None:
    """No module outside reasons.py spells a reason code: they use the enum."""
    from decider.reasons import ReasonCode  # noqa: PLC0415

    spelled = re.compile("|".join(re.escape(f'"{code.value}"') for code in ReasonCode))
    offenders = [
        f"{path.relative_to(ROOT)}: {match[0]}"
        for path in modules().values()
        if path.name != "reasons.py"
        for match in [spelled.search(path.read_text())]
        if match
    ]
    assert offenders == []


def layout_paths(block: str) -> set[str]:
    """The paths a tree drawn with two-space indents lists: `rules/` under `src/decider/`
    nested as `src/decider/rules/`."""
    paths, stack = set(), list[tuple[int, str]]()
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip(" "))
        name = line.split()[0]
        while stack and stack[-1][0] >= depth:
            stack.pop()
        path = (stack[-1][1] if stack else "") + name
        paths.add(path.rstrip("/"))
        if name.endswith("/"):
            stack.append((depth, path))
    return paths


def test_the_readme_layout_is_the_tree() -> None:
    """Every module and folder of the package is in the README's Layout section, where it
    is, and nothing listed is missing."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    listed = {p for p in layout_paths(block) if p.startswith("src/decider/")}
    actual = {
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*")
        if "__pycache__" not in path.parts
        and (path.is_dir() or (path.suffix == ".py" and path.name != "__init__.py"))
    }
    assert listed == actual
