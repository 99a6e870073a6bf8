"""Compiling rules: every expression once, every problem at once, each with its place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from decider.errors import Problem, RulesetError
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.ruleset import CompiledRuleset

from .conftest import RULES


def problems_of(rules: Path, engine: str = "cel-expr") -> tuple[Problem, ...]:
    with pytest.raises(RulesetError) as caught:
        compile_ruleset(rules, new_engine(engine))
    return caught.value.problems


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_sample_rules_compile(ruleset: CompiledRuleset) -> None:
    """The shipped rules compile on both engines into a ruleset with a content-hash version."""
    assert len(ruleset.version) == 12
    assert {"home_hero", "nurture_email"} <= set(ruleset.placements)
    assert {p.channel for p in ruleset.placements.values()} == {"web", "email", "push", "sms"}


def test_version_is_a_content_hash(rules_copy: Path) -> None:
    """The same files give the same version; any edit gives another."""
    first = compile_ruleset(rules_copy, new_engine("cel-expr")).version
    assert compile_ruleset(RULES, new_engine("cel-expr")).version == first
    replace(rules_copy / "b2b.yaml", "See how it works", "See it work")
    assert compile_ruleset(rules_copy, new_engine("cel-expr")).version != first


def test_segments_are_ordered_by_priority_then_id(rules_copy: Path) -> None:
    """Ties in priority are broken by segment id, ascending, whatever the file order."""
    (rules_copy / "zz_ties.yaml").write_text(
        "segments:\n"
        "  - {id: tie_b, description: b, owner: o, priority: 500, when: 'true'}\n"
        "  - {id: tie_a, description: a, owner: o, priority: 500, when: 'true'}\n"
    )
    ruleset = compile_ruleset(rules_copy, new_engine("cel-expr"))
    assert [s.id for s in ruleset.segments[:2]] == ["tie_a", "tie_b"]
    priorities = [s.priority for s in ruleset.segments]
    assert priorities == sorted(priorities, reverse=True)


def test_contextual_segments_are_known_from_their_references(ruleset: CompiledRuleset) -> None:
    """Which segments need consent comes from what each compiled expression reads."""
    needs = {s.id: s.condition.needs_profile for s in ruleset.segments}
    assert needs["ctx_comparison_click"] is False
    assert needs["ctx_migration_research"] is False
    assert needs["b2b_top_tier_evaluation"] is True
    assert needs["shop_browser"] is True


@pytest.mark.parametrize("engine", ["cel-expr", "cel-python"])
def test_two_broken_expressions_in_two_files_are_both_reported(
    rules_copy: Path, engine: str
) -> None:
    """Errors in two files come back together, each with its file and line:column."""
    b2b, context = rules_copy / "b2b.yaml", rules_copy / "context.yaml"
    # inside a literal block: line 3 of the expression, right after `&&`
    replace(
        b2b,
        '      && timestamp(account.last_seen_at) > now - duration("336h")\n',
        '      && timestamp(account.last_seen_at) > now - duration("336h") &&\n',
    )
    # in a plain one-line scalar
    replace(
        context,
        'when: has(context.url) && context.url.contains("/guides/migrat")',
        'when: has(context.url) && context.url.contains("/guides/migrat"',
    )
    problems = problems_of(rules_copy, engine)
    assert [(p.file.rsplit("/", 1)[-1], p.rule) for p in problems] == [
        ("b2b.yaml", "b2b_top_tier_evaluation"),
        ("context.yaml", "ctx_migration_research"),
    ]
    b2b_problem, context_problem = problems
    assert b2b_problem.line in (
        line_of(b2b, "&& timestamp(account.last_seen_at) > now -") + 1,
        line_of(b2b, "size(account.committee_roles_seen) >= 3"),
    )
    assert context_problem.line == line_of(context, "/guides/migrat")
    assert context_problem.column > len("    when: ")
    assert str(context_problem).startswith(f"{context_problem.file}:{context_problem.line}:")


def test_a_syntax_error_points_at_its_column(rules_copy: Path) -> None:
    """A one-line expression's error column is the column in the file."""
    context = rules_copy / "context.yaml"
    replace(
        context,
        'when: has(context.utm_campaign) && context.utm_campaign.contains("comparison")',
        "when: has(context.utm_campaign) && && true",
    )
    (problem,) = problems_of(rules_copy)
    line = context.read_text().splitlines()[problem.line - 1]
    assert line[problem.column - 1 :].startswith("&& true")


@pytest.mark.parametrize("engine", ["cel-expr", "cel-python"])
@pytest.mark.parametrize(
    ("construct", "at", "says"),
    [
        ('account.tags.map(t, t)[0] == "vp"', "[0]", "order of a map's keys"),
        ("now.getHours(context.tz) > 9", "context.tz", "time zone"),
        ("context.path.matches(context.p)", "context.p", "literal"),
        ("account.employees > 10u", "10u", "unsigned"),
        ("account.in == 1", ".in", "reserved word"),
    ],
)
def test_a_refused_construct_is_placed_on_both_engines(
    rules_copy: Path, engine: str, construct: str, at: str, says: str
) -> None:
    """A construct the engines cannot agree on is refused at load by either, at its line
    and column in the rule file."""
    context = rules_copy / "context.yaml"
    replace(
        context,
        'when: has(context.url) && context.url.contains("/guides/migrat")',
        f"when: has(context.url) && {construct}",
    )
    (problem,) = problems_of(rules_copy, engine)
    assert problem.rule == "ctx_migration_research"
    assert says in problem.message
    line = context.read_text().splitlines()[problem.line - 1]
    assert problem.line == line_of(context, construct)
    assert at in line[problem.column - 2 :][: len(at) + 2]


@pytest.mark.parametrize("engine", ["cel-expr", "cel-python"])
def test_type_errors_are_reported_at_load(rules_copy: Path, engine: str) -> None:
    """Both engines type-check: a non-bool condition or a bad overload is refused at load."""
    replace(
        rules_copy / "context.yaml",
        'when: has(context.url) && context.url.contains("/guides/migrat")',
        "when: 1 + 'a' == 2",
    )
    replace(
        rules_copy / "b2b.yaml",
        "when: has(account.fit_score) && account.fit_score < 40",
        "when: size(account.committee_roles_seen)",
    )
    messages = [p.message for p in problems_of(rules_copy, engine)]
    assert "no overload of '+' takes (int, string)" in messages
    assert "a condition must be a bool; this one is int" in messages


@pytest.mark.parametrize(
    ("condition", "hint"),
    [
        (
            "now - 14 > timestamp(account.last_seen_at)",
            'add or subtract a duration: duration("24h")',
        ),
        (
            'timestamp(account.last_seen_at) > duration("336h")',
            'compare a timestamp with a timestamp: now - duration("336h")',
        ),
        ('"80" < 1', "convert one side: int(...), double(...) or string(...)"),
        ("size(1) > 0", "size() takes a string, a list or a map"),
        ("1.5 > 1", "write the int as a double (1.0) or convert with double()"),
    ],
)
def test_a_type_slip_says_how_to_mend_it(rules_copy: Path, condition: str, hint: str) -> None:
    """The type mistakes rule authors make most: the checker's words, and what to write."""
    replace(
        rules_copy / "b2b.yaml",
        "when: has(account.fit_score) && account.fit_score < 40",
        f"when: '{condition}'",
    )
    (problem,) = problems_of(rules_copy)
    assert problem.message.startswith("no overload of ")
    assert problem.message.endswith(f"; {hint}")


def test_an_unknown_variable_is_refused(rules_copy: Path) -> None:
    """A misspelt variable (`acount`) is an undeclared reference, not a rule that never matches."""
    replace(
        rules_copy / "b2b.yaml",
        "when: has(account.fit_score) && account.fit_score < 40",
        "when: has(acount.fit_score) && acount.fit_score < 40",
    )
    problems = problems_of(rules_copy)
    assert len(problems) == 2  # both references, each at its own column
    assert all("acount' (did you mean account?)" in p.message for p in problems)
    assert {p.rule for p in problems} == {"b2b_out_of_icp"}
    assert len({p.column for p in problems}) == 2


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "b2b.yaml",
            "    owner: abm@decider.example\n",
            "    ownr: abm@decider.example\n",
            "unknown field `ownr`; did you mean owner?",
        ),
        (
            "b2b.yaml",
            "    priority: 90\n",
            "    priority: ninety\n",
            "expected a whole number, got text",
        ),
        ("b2b.yaml", "    channel: web\n", "    channel: fax\n", "unknown channel 'fax' (known: "),
        (
            "b2b.yaml",
            "      b2b_mid_tier_surge:\n        id: nurture_pricing",
            "      b2b_mid_tier_surge_:\n        id: nurture_pricing",
            "variant for unknown segment 'b2b_mid_tier_surge_' (did you mean b2b_mid_tier_surge?)",
        ),
        (
            "b2b.yaml",
            "    channel: web\n",
            "    channel: webb\n",
            "channel 'webb' (did you mean web?)",
        ),
        ("b2b.yaml", "    owner: abm@decider.example\n", "", "owner: required, and not given"),
        (
            "policy.yaml",
            "suppressions:\n",
            "suppressions:\n  - {id: x, description: y\n",
            "invalid YAML",
        ),
        (
            "b2b.yaml",
            "    priority: 90\n",
            "    priority: 90\n    priority: 95\n",
            "duplicate key 'priority'",
        ),
        ("saas_trial.yaml", "    slots: [hero, cta]", "    slots: []", "of length >= 1"),
    ],
)
def test_file_shape_errors_are_placed(
    rules_copy: Path, file: str, old: str, new: str, expected: str
) -> None:
    """A wrong key, type or value, or broken YAML, is reported at its line."""
    replace(rules_copy / file, old, new)
    (problem,) = problems_of(rules_copy)
    assert expected in problem.message
    assert problem.file.endswith(file)
    assert problem.line > 1


def _laughs(levels: int) -> str:
    """YAML whose aliases of aliases hold 10**levels values, from a few lines."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, levels)]
    return "\n".join([*lines, f"segments: *a{levels - 1}"]) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("segments: &a [*a]\n", "1:11: an alias within its own anchored value"),
        (_laughs(7), "1:1: aliases make this file hold 23,456,797 values, from 26 written"),
        ("segments: " + "[" * 600 + "]" * 600 + "\n", "1:1: invalid YAML: nested too deeply"),
        ("1: a\ntrue: b\n1: c\n", "3:1: invalid YAML: duplicate key 1"),
    ],
    ids=["alias loop", "aliases of aliases", "deep nesting", "1 and true"],
)
def test_yaml_that_would_never_end_or_blow_up_is_a_located_error(
    rules_copy: Path, text: str, expected: str
) -> None:
    """A few bytes must not hang, exhaust memory or crash `decider check`, a start or a
    reload: an alias inside its own value, aliases multiplying values, deep nesting. Keys
    1 and true are two keys, not one given twice."""
    (rules_copy / "zz.yaml").write_text(text)
    (problem,) = problems_of(rules_copy)
    assert f"{problem.line}:{problem.column}: {problem.message}".startswith(expected)


def test_aliases_that_repeat_a_few_values_are_allowed(rules_copy: Path) -> None:
    text = (rules_copy / "b2b.yaml").read_text()
    text = text.replace(
        "    owner: abm@decider.example\n", "    owner: &abm abm@decider.example\n", 1
    )
    text = text.replace("    owner: abm@decider.example\n", "    owner: *abm\n")
    (rules_copy / "b2b.yaml").write_text(text)
    assert compile_ruleset(rules_copy, new_engine("cel-expr")).segments


def test_every_wrong_item_of_a_file_is_reported_at_once(rules_copy: Path) -> None:
    """msgspec stops at a file's first mismatch; each other segment or placement is checked
    alone, so one `decider check` lists them all, each at its line, a pattern in words."""
    b2b = rules_copy / "b2b.yaml"
    replace(b2b, "    priority: 80\n", "    priority: eighty\n")
    replace(b2b, "    priority: 70\n", "    priority: [70]\n")
    replace(b2b, "  - id: b2b_out_of_icp\n", "  - id: B2B Out\n")
    problems = problems_of(rules_copy)
    assert [(p.file.endswith("b2b.yaml"), p.message) for p in problems] == [
        (True, "priority: expected a whole number, got text"),
        (True, "priority: expected a whole number, got a list"),
        (
            True,
            "id: expected an id: 1 to 128 lowercase letters, digits or _.-, starting with a "
            "letter or digit",
        ),
    ]
    assert [p.line for p in problems] == sorted({p.line for p in problems})


def test_a_file_wrong_in_shape_is_still_compiled_for_its_other_mistakes(rules_copy: Path) -> None:
    """The parts of a file that read are compiled, so one check lists a wrong priority, a
    trait misspelt in the next segment (placed where it is written), and an unknown key in
    another file; the segments that other file declares are not "unknown" elsewhere."""
    shop = rules_copy / "ecommerce.yaml"
    replace(shop, "    priority: 55\n", '    priority: "high"\n')
    replace(shop, "visitor.shop.products_viewed >= 3", "visitor.shop.products_viewd >= 3")
    with (rules_copy / "context.yaml").open("a") as context:
        context.write("wibble: 3\n")
    found = [(Path(p.file).name, p.line, p.rule, p.message[:40]) for p in problems_of(rules_copy)]
    assert found == [
        (
            "context.yaml",
            line_of(rules_copy / "context.yaml", "wibble: 3"),
            None,
            "wibble: Object contains unknown field `w",
        ),
        (
            "ecommerce.yaml",
            line_of(shop, 'priority: "high"'),
            None,
            "priority: expected a whole number, got t",
        ),
        (
            "ecommerce.yaml",
            line_of(shop, "products_viewd"),
            "shop_comparison",
            "visitor.shop.products_viewd is not in th",
        ),
    ]


def test_every_wrong_field_and_unknown_key_of_a_file_is_reported_at_once(
    rules_copy: Path,
) -> None:
    (rules_copy / "zz.yaml").write_text(
        'bogus: 1\nsegments: {a: 1}\nplacements: {b: 2}\nsuppressions: "x"\n'
    )
    assert [(p.line, p.message) for p in problems_of(rules_copy)] == [
        (1, "bogus: Object contains unknown field `bogus`"),  # like no field: no guess
        (2, "segments: expected a list, got a map"),
        (3, "placements: expected a list, got a map"),
        (4, "suppressions: expected a list, got text"),
    ]


def test_a_value_of_the_wrong_kind_names_its_field_and_warns_of_nothing_else(
    rules_copy: Path,
) -> None:
    """A mistyped enum names its field (the line may hold others); the file it breaks is
    not read, so its placements are unknown: no segment is said to lack a variant."""
    replace(rules_copy / "b2b.yaml", "      unit: account ", "      unit: acount ")
    with pytest.raises(RulesetError) as caught:
        compile_ruleset(rules_copy, new_engine("cel-expr"))
    (problem,) = caught.value.problems
    assert problem.message == "unit: Invalid enum value 'acount'"
    assert problem.line == line_of(rules_copy / "b2b.yaml", "unit: acount")
    assert caught.value.warnings == ()


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "context.yaml",
            "  - id: ctx_migration_research",
            "  - id: ctx_comparison_click",
            "duplicate segment id 'ctx_comparison_click'",
        ),
        (
            "b2b.yaml",
            "      b2b_out_of_icp:\n",
            "      b2b_out_of_icpp:\n",
            "variant for unknown segment 'b2b_out_of_icpp'",
        ),
        (
            "saas_trial.yaml",
            "    slots: [hero, cta]",
            "    slots: [hero, subject]",
            "not 'subject'",
        ),
        ("saas_trial.yaml", "        cta: Choose a plan\n", "", "missing cta"),
        (
            "saas_trial.yaml",
            "          cta: Upgrade now\n",
            "          banner: Upgrade now\n",
            "slot 'banner' is not one of this placement's slots",
        ),
        (
            "policy.yaml",
            "    tags: [acquisition]",
            "    placements: [no_such_placement]",
            "unknown placement 'no_such_placement'",
        ),
        ("policy.yaml", "    flags: [legal_hold]\n", "", "give `when`, `flags` or both"),
        ("saas_trial.yaml", "    slots: [hero, cta]", "    slots: [hero, hero]", "listed twice"),
        (
            "policy.yaml",
            "    tags: [acquisition]",
            "    tags: [acquisiton]",
            "unknown tag 'acquisiton'",
        ),
        (
            "policy.yaml",
            "[unsubscribed, do_not",
            "[unsubscibed, do_not",
            "unknown flag 'unsubscibed'",
        ),
        (
            "policy.yaml",
            "    gpc_revokes: [personalization]",
            "    gpc_revokes: [personalisation]",
            "'personalisation' is not one of web's purposes",
        ),
    ],
)
def test_meaning_errors_are_placed(
    rules_copy: Path, file: str, old: str, new: str, expected: str
) -> None:
    """Duplicates, unknown segments or placements, and slot mistakes are refused with a place."""
    replace(rules_copy / file, old, new)
    problems = problems_of(rules_copy)
    assert any(expected in p.message and p.file.endswith(file) for p in problems), problems


def test_a_consent_policy_is_required_once(rules_copy: Path) -> None:
    """Without a consent policy there is no safe default; two policies are ambiguous."""
    policy = (rules_copy / "policy.yaml").read_text()
    consent, suppressions = policy.split("suppressions:")
    (rules_copy / "policy.yaml").write_text("suppressions:" + suppressions)
    assert any("no consent policy" in p.message for p in problems_of(rules_copy))
    (rules_copy / "policy.yaml").write_text(policy)
    (rules_copy / "zz_second_policy.yaml").write_text(consent)
    assert any("more than once" in p.message for p in problems_of(rules_copy))


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    """A directory with no rule files is refused rather than serving nothing."""
    (problem,) = problems_of(tmp_path)
    assert "no rule files" in problem.message


def test_a_rule_file_that_cannot_be_read_fails_the_load(rules_copy: Path) -> None:
    """A `*.yaml` (or the schema) that is a symlink to nothing or a loop, a directory, a pipe
    or a device is an error, not skipped: its segments would vanish from the rules; nor read:
    a pipe would block the load. Hidden names (an editor's lock file) are no rules."""
    (rules_copy / ".#b2b.yaml").symlink_to("ada@host.4242:1700000000")  # Emacs's lock file
    compile_ruleset(rules_copy, new_engine("cel-expr"))
    (rules_copy / "b2b.yaml").rename(rules_copy / "b2b.yaml.saved")
    (rules_copy / "b2b.yaml").symlink_to("b2b.yaml.gone")
    (rules_copy / "more.yaml").mkdir()
    (rules_copy / "loop.yaml").symlink_to("loop.yaml")
    os.mkfifo(rules_copy / "pipe.yaml")  # read, it would block the load for ever
    (rules_copy / "zero.yaml").symlink_to("/dev/zero")  # read, it would never end
    (rules_copy / "schema.yaml").unlink()
    (rules_copy / "schema.yaml").symlink_to("schema.yaml.gone")
    found = {(p.file.rsplit("/", 1)[-1], p.message) for p in problems_of(rules_copy)}
    assert found == {
        ("b2b.yaml", "cannot read: a symlink that leads to no file"),
        ("more.yaml", "cannot read: a directory"),
        ("loop.yaml", "cannot read: a symlink that leads to no file"),
        ("pipe.yaml", "cannot read: not a regular file"),
        ("zero.yaml", "cannot read: not a regular file"),
        ("schema.yaml", "cannot read: a symlink that leads to no file"),
    }


def test_a_variant_id_names_one_content_in_a_placement(rules_copy: Path) -> None:
    """Segments may share a variant (same id, same content), not an id for other content:
    exposures and the lift report count by the id."""
    b2b = rules_copy / "b2b.yaml"
    text = b2b.read_text()
    replace(b2b, "id: home_education\n", "id: home_comparison\n")
    (problem,) = problems_of(rules_copy)
    assert problem.message == (
        "variant id 'home_comparison' already names other content in this placement; "
        "give this variant an id of its own"
    )
    assert (problem.file.rsplit("/", 1)[-1], problem.rule) == ("b2b.yaml", "home_hero")
    surge = text.index("      b2b_mid_tier_surge:\n        id: home_comparison")
    dormant = text.index("      b2b_icp_awareness_dormant:\n        id: home_education", surge)
    after = text.index("\n      ", text.index("proof:", dormant)) + 1
    shared = text[surge:dormant].replace("b2b_mid_tier_surge", "b2b_icp_awareness_dormant")
    b2b.write_text(text[:dormant] + shared + text[after:])
    compile_ruleset(rules_copy, new_engine("cel-expr"))  # one variant for two segments


def test_common_slips_are_told_how_to_mend(rules_copy: Path) -> None:
    """A rule author's usual first mistakes: `=` for `==`, a trailing comma, a condition
    holding ': ' written unquoted, a decimal priority."""
    b2b = rules_copy / "b2b.yaml"
    replace(b2b, "priority: 80", "priority: 2.5")
    replace(b2b, 'account.stage == "evaluation"', 'account.stage = "evaluation"')
    replace(b2b, "account.fit_score < 40", "account.fit_score in [1, 2,]")
    messages = [p.message for p in problems_of(rules_copy)]
    assert "priority: expected a whole number, got a decimal number" in messages
    assert "syntax error: unexpected character '=' (compare with ==)" in messages
    assert "syntax error: unexpected ']' (drop the comma before it)" in messages
    replace(b2b, "priority: 2.5", 'priority: 80\n    when: context.country in {"DE": 1}')
    (problem,) = problems_of(rules_copy)
    assert problem.message == (
        "invalid YAML: mapping values are not allowed here (quote a text holding ': ', or "
        "write it as a block: `key: |`)"
    )


def test_the_sample_rules_have_no_lint_findings(ruleset: CompiledRuleset) -> None:
    """The shipped rules are clean: `decider check --strict` passes on them."""
    assert ruleset.warnings == ()


def test_lint_finds_unused_segments_ties_and_empty_slots(rules_copy: Path) -> None:
    """Warnings, each placed: a segment no placement uses, a priority tie, a variant gap."""
    (rules_copy / "zz_lint.yaml").write_text(
        "segments:\n  - {id: orphan, description: d, owner: o, priority: 90, when: 'true'}\n"
    )
    replace(rules_copy / "b2b.yaml", "          proof: Read by 12,000 marketers this year\n", "")
    ruleset = compile_ruleset(rules_copy, new_engine("cel-expr"))
    found = {(w.rule, w.message.split(";")[0]) for w in ruleset.warnings}
    assert ("orphan", "no placement has a variant for this segment") in found
    assert ("orphan", "same priority as b2b_top_tier_evaluation") in found
    assert ("home_hero", "variant home_education leaves proof empty") in found
    assert all(w.kind == "warning" and w.line > 1 for w in ruleset.warnings)
    assert all(str(w).split(": ")[1] == "warning" for w in ruleset.warnings)


def test_a_placement_in_error_adds_no_warnings_of_its_own(rules_copy: Path) -> None:
    """A refused placement (an unknown channel) or a second one of an id is one error: no
    segment is said to lack a placement, no slot of the wrong placement to be left empty."""
    b2b = rules_copy / "b2b.yaml"
    for old, new in [
        ("    channel: web\n", "    channel: webb\n"),
        ("  - id: nurture_email", "  - id: home_hero"),
    ]:
        text = b2b.read_text()
        replace(b2b, old, new)
        with pytest.raises(RulesetError) as caught:
            compile_ruleset(rules_copy, new_engine("cel-expr"))
        assert len(caught.value.problems) == 1
        assert caught.value.warnings == ()
        b2b.write_text(text)


def test_lint_warns_of_comprehensions_over_the_callers_context(rules_copy: Path) -> None:
    """A comprehension over `context` runs as long as the list a caller sends: a warning at
    each such macro (in segments and suppressions), none for one over the profile or a
    literal, and the rules still load."""
    (rules_copy / "zz_context.yaml").write_text(
        "segments:\n"
        "  - id: ctx_pages\n"
        "    description: d\n"
        "    owner: o\n"
        "    priority: 5\n"
        "    when: |\n"
        "      has(context.pages)\n"
        '      && context.pages.exists(p, p.tags.all(t, t != "x"))\n'
        '      && account.intent_topics.exists(r, r == "vp") && [1, 2].all(n, n != context.n)\n'
        "suppressions:\n"
        "  - id: pages_supp\n"
        "    description: d\n"
        "    when: 'context.pages.filter(p, p == \"y\").size() > 0'\n"
    )
    ruleset = compile_ruleset(rules_copy, new_engine("cel-expr"))
    found = sorted(
        (w.rule, w.line, w.column, w.message.split(" ")[0])
        for w in ruleset.warnings
        if "context" in w.message
    )
    lines = (rules_copy / "zz_context.yaml").read_text().splitlines()
    assert found == [
        ("ctx_pages", 8, lines[7].index("exists(p") + 1, "exists()"),
        ("ctx_pages", 8, lines[7].index("all(t") + 1, "all()"),
        ("pages_supp", 13, lines[12].index("filter(") + 1, "filter()"),
    ]
    assert all("9,999 steps" in w.message for w in ruleset.warnings if "context" in w.message)


@pytest.mark.parametrize("engine", ["cel-expr", "cel-python"])
def test_a_trait_missing_from_the_schema_is_refused(rules_copy: Path, engine: str) -> None:
    """With rules/schema.yaml, `account.fit_scor` is an error that suggests the real name."""
    replace(rules_copy / "b2b.yaml", "account.fit_score < 40", "account.fit_scor < 40")
    replace(
        rules_copy / "ecommerce.yaml",
        "visitor.shop.cart_removes > 0",
        "visitor.shop.cart_removes.x > 0",
    )
    first, second = problems_of(rules_copy, engine)
    assert first.rule == "b2b_out_of_icp"
    assert "account.fit_scor is not in the profile schema" in first.message
    assert "did you mean account.fit_score?" in first.message
    assert (first.line, first.column) == (line_of(rules_copy / "b2b.yaml", "fit_scor <"), 37)
    assert second.message == "visitor.shop.cart_removes is a int; it has no field 'x'"


def test_without_a_schema_traits_are_not_checked(rules_copy: Path) -> None:
    """The schema is optional: without it any trait may be read."""
    (rules_copy / "schema.yaml").unlink()
    replace(rules_copy / "b2b.yaml", "account.fit_score < 40", "account.fit_scor < 40")
    compile_ruleset(rules_copy, new_engine("cel-expr"))


def test_a_bad_schema_is_reported_with_its_place(rules_copy: Path) -> None:
    """Unknown types and sections in the schema are errors at their lines."""
    replace(rules_copy / "schema.yaml", "  fit_score: int", "  fit_score: integer")
    (rules_copy / "schema.yaml").write_text(
        (rules_copy / "schema.yaml").read_text() + "person: {}\n"
    )
    messages = [p.message for p in problems_of(rules_copy)]
    assert any("unknown type 'integer'" in m for m in messages)
    assert any("unknown section 'person'" in m for m in messages)


def test_an_unknown_variable_is_refused_on_the_python_engine_too(rules_copy: Path) -> None:
    """cel-python does not type-check, but free identifiers are still checked at load."""
    replace(
        rules_copy / "context.yaml",
        "has(context.url) && context.url",
        "has(contxt.url) && contxt.url",
    )
    problems = problems_of(rules_copy, "cel-python")
    assert {p.message for p in problems} == {
        "undeclared reference to 'contxt' (did you mean context?); rules read visitor, "
        "account, context, now and the named conditions (icp_fit)"
    }


@pytest.mark.parametrize("engine", ["cel-expr", "cel-python"])
def test_a_list_the_schema_declares_may_be_compared_after_filter(
    rules_copy: Path, engine: str
) -> None:
    """Stored values are held to the schema, so a field it declares a list is a list: what
    filter() keeps of it has an order both engines share. Without the schema it could be a
    map, and the comparison is refused."""
    replace(
        rules_copy / "context.yaml",
        'when: has(context.url) && context.url.contains("/guides/migrat")',
        "when: has(account.committee_roles_seen) && "
        'account.committee_roles_seen.filter(r, r != "x") == ["vp"]',
    )
    compile_ruleset(rules_copy, new_engine(engine))
    (rules_copy / "schema.yaml").unlink()
    (problem,) = problems_of(rules_copy, engine)
    assert "order of a map's keys" in problem.message


def test_a_problem_never_prints_a_terminals_escape_codes() -> None:
    """A rule file may hold anything, escape codes too: what `decider check` and the admin
    API say of it shows them escaped, never acted on by a terminal."""
    said = str(Problem("b2b.yaml", 3, 5, "'de\x1b[31mRED' is no language tag", kind="warning"))
    assert "\x1b" not in said
    assert said == "b2b.yaml:3:5: warning: 'de\\x1b[31mRED' is no language tag"
