"""The `decider` command: check, profiles import, and serve refusing broken rules."""

from __future__ import annotations

import io
import json
from pathlib import Path

from decider.cli import main

from .conftest import RULES


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), environ=env or {}, out=out)
    return code, out.getvalue()


def test_check_passes_on_the_sample_rules() -> None:
    """`decider check rules` exits 0 and says what it loaded, on either engine."""
    for engine in ("cel-expr", "cel-python"):
        code, out = run("check", str(RULES), "--engine", engine)
        assert code == 0, out
        assert out.startswith("ok: ruleset ")
        assert f"engine {engine}" in out


def test_check_prints_every_problem_with_its_place(rules_copy: Path) -> None:
    """Two broken files: exit 1, one line per problem as file:line:column, then a count."""
    for name, old, new in [
        ("b2b.yaml", "has(account.fit_score) && account.fit_score < 40", "account.fit_score <"),
        ("ecommerce.yaml", "visitor.shop.cart_adds == 0", "visitor.shop.cart_adds === 0"),
    ]:
        path = rules_copy / name
        path.write_text(path.read_text().replace(old, new, 1))
    code, out = run("check", str(rules_copy))
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[-1] == f"2 problems in {rules_copy}"
    places = [line.split(": ", 1)[0] for line in lines[:-1]]
    assert [p.rsplit("/", 1)[-1].split(":")[0] for p in places] == ["b2b.yaml", "ecommerce.yaml"]
    for place in places:
        _file, line, column = place.rsplit(":", 2)
        assert int(line) > 1
        assert int(column) > 1


def test_a_bad_setting_names_its_variable() -> None:
    """A bad environment variable stops the command with the variable's name."""
    code, out = run("check", str(RULES), env={"DECIDER_ENGINE": "fast"})
    assert code == 2
    assert "DECIDER_ENGINE" in out


def test_profiles_import_then_serve_from_the_store(tmp_path: Path) -> None:
    """Importing a JSONL file writes visitors and accounts to the SQLite store."""
    db = tmp_path / "p.db"
    source = tmp_path / "profiles.jsonl"
    records = [
        {"kind": "account", "id": "acc-x", "traits": {"fit_score": 90}},
        {"kind": "visitor", "id": "v-x", "account_id": "acc-x", "user_ids": ["u-x"]},
    ]
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    code, out = run("profiles", "import", str(source), "--db", str(db))
    assert code == 0, out
    assert out.strip() == f"imported 1 visitors and 1 accounts into {db}"


def test_profiles_import_refuses_a_file_with_bad_lines(tmp_path: Path) -> None:
    """Bad lines are all reported with their numbers, and nothing is imported."""
    db = tmp_path / "p.db"
    source = tmp_path / "profiles.jsonl"
    source.write_text(
        '{"kind": "visitor", "id": "v-ok"}\n'
        '{"kind": "visitor", "id": "v-bad", "email": "raw@example.com"}\n'
        '{"kind": "robot", "id": "r"}\n'
    )
    code, out = run("profiles", "import", str(source), "--db", str(db))
    assert code == 1
    assert f"{source}:2:" in out
    assert "email" in out
    assert f"{source}:3:" in out
    assert "nothing imported: 2 bad line(s)" in out
    assert not db.exists()


def test_serve_refuses_to_start_on_broken_rules(rules_copy: Path, tmp_path: Path) -> None:
    """`decider serve` on broken rules exits non-zero and says why, before listening."""
    path = rules_copy / "context.yaml"
    path.write_text(path.read_text().replace("context.url.contains", "context.url.contains(("))
    env = {"DECIDER_PROFILE_DB": str(tmp_path / "p.db")}
    code, out = run("serve", "--rules", str(rules_copy), "--port", "0", env=env)
    assert code == 1
    assert "context.yaml:" in out
    assert "ctx_migration_research" in out
