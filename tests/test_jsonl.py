"""The JSONL import format: every bad line reported with its place and field, at once."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest

from decider.errors import ImportFileError
from decider.profiles.jsonl import parse_profiles

ADA_EMAIL = hashlib.sha256(b"ada@example.com").hexdigest()

ACCOUNT_LINE: dict[str, Any] = {
    "kind": "account",
    "id": "acc-1",
    "flags": ["customer"],
    "traits": {"name": "Acme"},
}
VISITOR_LINE: dict[str, Any] = {
    "kind": "visitor",
    "id": "v-1",
    "account_id": "acc-1",
    "user_ids": ["u-1"],
    "email_sha256": [ADA_EMAIL],
    "consent": [
        {"purpose": "personalization", "basis": "consent", "granted_at": "2026-01-01T00:00:00Z"}
    ],
    "traits": {"role": "vp"},
}


def jsonl(*lines: dict[str, Any] | str) -> bytes:
    """A JSONL file of records (dicts) and raw lines (strings), in order."""
    return b"\n".join(
        line.encode() if isinstance(line, str) else msgspec.json.encode(line) for line in lines
    )


def test_parse_reports_every_bad_line_with_its_place_and_field() -> None:
    """Every bad line is reported at once, as file:line, naming the field at fault."""
    data = jsonl(
        VISITOR_LINE,
        {"kind": "visitor", "id": "v-2", "email": "ada@example.com"},
        ACCOUNT_LINE,
        {"kind": "visitor", "id": "v-3", "email_sha256": ["ABC"]},
        {"kind": "account", "traits": {}},
        {"kind": "visitor", "id": 42},
        {"kind": "company", "id": "acc-2"},
    )
    with pytest.raises(ImportFileError) as raised:
        parse_profiles(data, "bad.jsonl")

    expected = [
        (2, "`email`"),
        (4, "$.email_sha256[0]"),
        (5, "`id`"),
        (6, "$.id"),
        (7, "$.kind"),
    ]
    problems = raised.value.problems
    assert len(problems) == len(expected)
    for problem, (line, field) in zip(problems, expected, strict=True):
        assert problem.startswith(f"bad.jsonl:{line}: ")
        assert field in problem
    assert "ada@example.com" not in str(raised.value)


def test_blank_lines_and_comments_are_skipped_but_counted() -> None:
    """Blank lines and '#' comments are skipped, and still count toward line numbers."""
    data = jsonl("# profiles", "", "   ", ACCOUNT_LINE, "  # indented comment", VISITOR_LINE)
    assert [record.id for record in parse_profiles(data, "ok.jsonl")] == ["acc-1", "v-1"]

    with pytest.raises(ImportFileError) as raised:
        parse_profiles(data + b"\n\n# late\n{}", "ok.jsonl")
    assert raised.value.problems[0].startswith("ok.jsonl:9: ")


def test_crlf_line_endings_are_accepted() -> None:
    """A JSONL file written with CRLF line endings parses like one with LF."""
    data = jsonl(ACCOUNT_LINE, VISITOR_LINE).replace(b"\n", b"\r\n") + b"\r\n"
    assert [record.id for record in parse_profiles(data, "crlf.jsonl")] == ["acc-1", "v-1"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '{"kind": "visitor", "id": "v", "consent": [{"purpose": "p", "basis": "consent",'
            ' "granted_at": "2026-06-01T00:00:00"}]}',
            "timezone",
        ),
        ('{"kind": "account", "id": "a", "traits": {"n": 100000000000000000000}}', "64-bit"),
        ('{"kind": "account", "id": "a", "traits": {"x": ' + "[" * 20 + "]" * 20 + "}}", "nested"),
    ],
)
def test_values_the_rules_cannot_use_are_refused_at_import(line: str, expected: str) -> None:
    """A timestamp without an offset, a huge integer or deep nesting fails the import, placed."""
    with pytest.raises(ImportFileError) as caught:
        parse_profiles(line.encode(), "p.jsonl")
    (problem,) = caught.value.problems
    assert problem.startswith("p.jsonl:1:")
    assert expected in problem


def test_a_line_that_is_not_utf8_is_reported_with_its_place() -> None:
    """Bytes that are not UTF-8 are one more bad line, placed, not a crash."""
    data = jsonl(ACCOUNT_LINE) + b'\n{"kind": "account", "id": "acc-\xff"}\n' + jsonl(VISITOR_LINE)
    with pytest.raises(ImportFileError) as raised:
        parse_profiles(data, "bytes.jsonl")
    assert raised.value.problems == ("bytes.jsonl:2: not valid UTF-8",)
