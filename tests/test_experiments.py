"""Bucketing: golden values that pin the hash, the stability the scheme promises (properties
over generated units and weights), and decisions for generated people: the holdout's share,
one arm per account on web and email, consent and suppression first."""

from __future__ import annotations

import shutil
from collections import Counter
from fractions import Fraction

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from decider.engine import Evaluated, decide, select_placement
from decider.experiments import (
    CONTROL,
    HOLDOUT,
    Arm,
    Unit,
    assign,
    holdout_point,
    key,
    new_experiment,
    new_split,
    rendezvous,
    unit_bytes,
    unit_of,
)
from decider.model import ConsentSignal, DecideRequest, Identity, Variant
from decider.profile import AccountProfile, ConsentRecord, Resolution, VisitorProfile
from decider.reasons import ReasonCode
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.ruleset import CompiledRuleset
from decider.stats import Stats

from .conftest import NOW, RULES

DEFAULT = Variant("default", {"hero": "d"})
OWN = Variant("own", {"hero": "o"})
SALT = "exp-1"
WEB = ConsentRecord("personalization", "consent", NOW.replace(year=2026, month=1))
EMAIL = ConsentRecord("email_marketing", "consent", NOW.replace(year=2026, month=1))
TOP_TIER = {
    "fit_score": 92,
    "stage": "evaluation",
    "lifecycle": "prospect",
    "last_seen_at": "2026-11-18T09:00:00Z",
    "committee_roles_seen": ["vp", "practitioner", "economic_buyer"],
}


def test_the_hash_is_xxh3_64_of_salt_label_and_unit() -> None:
    """XXH3 64 of the empty input is the specification's value; a unit's hash is XXH3 64 of
    `salt NUL label NUL kind:id`, and its holdout point that over 2^64."""
    assert xxhash.xxh3_64_intdigest(b"") == 0x2D06800538D394C2
    raw = b"home_hero_holdout\0holdout\0account:acc-northwind"
    assert xxhash.xxh3_64_intdigest(raw) == 16396754479619412813
    assert key("home_hero_holdout", HOLDOUT) + unit_bytes("account", "acc-northwind") == raw


@pytest.mark.parametrize(
    ("unit", "point"),
    [
        (Unit("account", "acc-northwind"), 0.8888698414257397),
        (Unit("account", "acc-initech"), 0.053982172683357435),
        (Unit("visitor", "v-finn"), 0.7960979809995982),
        (Unit("visitor", "acc-initech"), 0.9480853296034315),  # the kind is hashed too
    ],
)
def test_golden_holdout_points(unit: Unit, point: float) -> None:
    assert holdout_point("home_hero_holdout", unit) == point


def arms(*weights: tuple[str, int], salt: str = SALT) -> tuple[Arm, ...]:
    split = new_split(Fraction(0), tuple((arm, w, Variant(arm, {})) for arm, w in weights), salt)
    return split.arms


def arm_of(units: list[str], *weights: tuple[str, int]) -> dict[str, str]:
    chosen = arms(*weights)
    return {unit: rendezvous(chosen, unit_bytes("account", unit)).id for unit in units}


def test_golden_arms() -> None:
    """Control 2, two treatments 1 each: these units land here, now and always."""
    units = [f"acc-{i}" for i in range(1, 7)]
    assert arm_of(units, (CONTROL, 2), ("roi", 1), ("story", 1)) == {
        "acc-1": "control",
        "acc-2": "control",
        "acc-3": "story",
        "acc-4": "roi",
        "acc-5": "control",
        "acc-6": "control",
    }


def test_the_holdout_line_is_exact() -> None:
    """Held out when the hash is below share x 2^64 / 100, rounded up: 0% holds nobody out,
    100% everybody, and a hash sits on the right side of the line at its very edge."""
    assert new_split(Fraction(10), ((CONTROL, 1, OWN),), SALT).threshold == -(-(2**64) // 10)
    assert new_split(Fraction(0), ((CONTROL, 1, OWN),), SALT).threshold == 0
    assert new_split(Fraction(100), ((CONTROL, 1, OWN),), SALT).threshold == 2**64
    unit = Unit("account", "acc-initech")
    point = holdout_point(SALT, unit)
    experiment = new_experiment(
        "e",
        SALT,
        "account",
        {
            "held": new_split(
                Fraction(point) * 100 + Fraction(1, 10**12), ((CONTROL, 1, OWN),), SALT
            ),
            "at": new_split(Fraction(point) * 100, ((CONTROL, 1, OWN),), SALT),
        },
    )
    assert assign(experiment, experiment.splits["held"], unit, DEFAULT).arm == HOLDOUT
    at = experiment.splits["at"]
    assert assign(experiment, at, unit, DEFAULT).arm == CONTROL  # not below its own point


UNITS = st.lists(
    st.text(st.characters(exclude_characters="\0"), min_size=1, max_size=20),
    min_size=1,
    max_size=50,
    unique=True,
)
WEIGHTS = st.lists(st.integers(1, 20), min_size=1, max_size=5)


def split_arms(weights: list[int]) -> list[tuple[str, int]]:
    return [(CONTROL, weights[0])] + [(f"t{i}", w) for i, w in enumerate(weights[1:], 1)]


@settings(max_examples=200, deadline=None)
@given(
    UNITS,
    WEIGHTS,
    st.fractions(0, 100, max_denominator=1000),
    st.fractions(0, 100, max_denominator=1000),
)
def test_a_new_share_moves_units_only_across_the_holdout_line(
    units: list[str], weights: list[int], before: Fraction, after: Fraction
) -> None:
    """A bigger holdout only takes units into it, a smaller one only lets them out, and a
    unit outside the holdout both times keeps its arm."""
    pairs = tuple((arm, w, Variant(arm, {})) for arm, w in split_arms(weights))
    splits = {"old": new_split(before, pairs, SALT), "new": new_split(after, pairs, SALT)}
    experiment = new_experiment("e", SALT, "account", splits)
    old, new = experiment.splits["old"], experiment.splits["new"]
    for raw in units:
        unit = Unit("account", raw)
        was, now = (
            assign(experiment, old, unit, DEFAULT).arm,
            assign(experiment, new, unit, DEFAULT).arm,
        )
        if was != now:
            assert HOLDOUT in (was, now)
            assert (now == HOLDOUT) == (after > before)


@settings(max_examples=200, deadline=None)
@given(UNITS, WEIGHTS, st.data())
def test_a_new_weight_moves_units_only_into_or_out_of_that_arm(
    units: list[str], weights: list[int], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(weights) - 1))
    changed = list(weights)
    changed[index] = data.draw(st.integers(1, 40))
    named = split_arms(weights)
    arm = named[index][0]
    before = arm_of(units, *named)
    after = arm_of(units, *split_arms(changed))
    for unit in units:
        if before[unit] != after[unit]:
            moved_in = changed[index] > weights[index]
            assert (after[unit] if moved_in else before[unit]) == arm


@settings(max_examples=200, deadline=None)
@given(UNITS, WEIGHTS, st.integers(1, 20))
def test_a_new_arm_only_takes_units(units: list[str], weights: list[int], weight: int) -> None:
    named = split_arms(weights)
    before = arm_of(units, *named)
    after = arm_of(units, *named, ("new", weight))
    assert all(after[u] in (before[u], "new") for u in units)


def test_arms_get_units_in_proportion_to_their_weights() -> None:
    units = [f"acc-{i}" for i in range(20_000)]
    counted = Counter(arm_of(units, (CONTROL, 2), ("roi", 1), ("story", 1)).values())
    assert counted["control"] / len(units) == pytest.approx(0.5, abs=0.02)
    assert counted["roi"] / len(units) == pytest.approx(0.25, abs=0.02)
    assert counted["story"] / len(units) == pytest.approx(0.25, abs=0.02)


def test_the_unit_is_the_account_else_the_stitched_visitor() -> None:
    """An account experiment buckets the account when there is one, else the visitor; a
    visitor experiment always the visitor; an anonymous cookie (no profile) is itself; nobody
    known, or a profile that could not be fetched, is no unit."""
    visitor = VisitorProfile(id="v-1", account_id="acc-1")
    account = AccountProfile(id="acc-1")
    with_account = Resolution("resolved", visitor, account)
    cookie_only = Resolution("resolved", VisitorProfile(id="anon-7"))
    assert unit_of("account", with_account) == Unit("account", "acc-1")
    assert unit_of("visitor", with_account) == Unit("visitor", "v-1")
    assert unit_of("account", cookie_only) == Unit("visitor", "anon-7")
    assert unit_of("account", Resolution("resolved", None, account)) == Unit("account", "acc-1")
    assert unit_of("visitor", Resolution("resolved", None, account)) is None
    assert unit_of("account", Resolution("unknown")) is None
    assert unit_of("account", Resolution("unknown"), "anon-8") == Unit("visitor", "anon-8")
    assert unit_of("visitor", Resolution("unknown"), "anon-8") == Unit("visitor", "anon-8")
    assert unit_of("account", with_account, "anon-8") == Unit("account", "acc-1")
    assert unit_of("account", cookie_only, "anon-8") == Unit("visitor", "anon-7")
    assert unit_of("account", Resolution("unavailable"), "anon-8") is None


# decisions for generated people, through the engine's own `decide`


def person(
    i: int, account: int, *consent: ConsentRecord, flags: frozenset[str] = frozenset()
) -> Resolution:
    return Resolution(
        "resolved",
        VisitorProfile(id=f"v-{i}", account_id=f"acc-{account}", consent=consent, flags=flags),
        AccountProfile(id=f"acc-{account}", traits=TOP_TIER),
    )


def decided(
    ruleset: CompiledRuleset,
    placement: str,
    resolution: Resolution,
    *,
    explain: bool = False,
    context: dict[str, str] | None = None,
    banner: tuple[str, ...] | None = None,
    identity: Identity | None = None,
) -> Evaluated:
    request = DecideRequest(
        placement=placement,
        identity=identity or Identity(visitor_id="v"),
        context=context or {},
        consent=ConsentSignal(banner) if banner is not None else None,
        explain=explain,
    )
    chosen = select_placement(ruleset, request)
    return decide(ruleset, chosen, request, resolution, now=NOW, gpc=False, decision_id="d")


@pytest.fixture(scope="module")
def both_channels(tmp_path_factory: pytest.TempPathFactory) -> CompiledRuleset:
    """The sample rules, and the nurture email holding out the same accounts as the hero
    (the same salt and share)."""
    rules = tmp_path_factory.mktemp("exp") / "rules"
    shutil.copytree(RULES, rules)
    b2b = rules / "b2b.yaml"
    text = b2b.read_text()
    email = "    variants:\n      b2b_top_tier_evaluation:\n        id: nurture_exec_briefing"
    experiment = "    experiment: {id: nurture_holdout, salt: home_hero_holdout, holdout: 10%}\n"
    b2b.write_text(text.replace(email, experiment + email))
    ruleset = compile_ruleset(rules, new_engine("cel-expr"))
    assert ruleset.placements["nurture_email"].experiment is not None
    return ruleset


def test_the_holdout_holds_its_share_of_10000_accounts(both_channels: CompiledRuleset) -> None:
    """10% configured: within 1.5 points over 10,000 generated accounts (the standard
    deviation is 0.3), each in its segment, held out or not; the held out get the default."""
    arms: Counter[str | None] = Counter()
    for i in range(10_000):
        made = decided(both_channels, "home_hero", person(i, i, WEB)).decision
        assert made.segment == "b2b_top_tier_evaluation"
        assert made.experiment == "home_hero_holdout"
        arms[made.arm] += 1
        if made.arm == HOLDOUT:
            assert (made.variant.id, made.personalized) == ("home_generic", False)
        else:
            assert (made.variant.id, made.personalized) == ("home_named_account", True)
    assert set(arms) == {HOLDOUT, CONTROL}
    assert arms[HOLDOUT] / 10_000 == pytest.approx(0.10, abs=0.015)


def test_everyone_of_an_account_shares_one_arm_on_web_and_email(
    both_channels: CompiledRuleset,
) -> None:
    """Three people of each of 300 accounts: one arm per account, the same on the hero and
    in the nurture email."""
    held = 0
    for account in range(300):
        seen = set()
        for i in range(3):
            resolution = person(account * 3 + i, account, WEB, EMAIL)
            for placement in ("home_hero", "nurture_email"):
                evaluated = decided(both_channels, placement, resolution)
                assert evaluated.unit == Unit("account", f"acc-{account}")
                seen.add(evaluated.decision.arm)
        (arm,) = seen
        held += arm == HOLDOUT
    assert 0 < held < 300


def test_suppressed_decisions_have_no_arm_and_no_consent_means_no_bucket(
    both_channels: CompiledRuleset,
) -> None:
    """Consent and suppression come first: a suppressed person is in no arm, and without
    the channel's consent nobody is bucketed by profile ids (served as without the
    experiment, which here is nothing: no segment matches without the profile)."""
    held_out = next(
        i
        for i in range(100)
        if decided(both_channels, "home_hero", person(i, i, WEB)).decision.arm == HOLDOUT
    )
    flagged = person(held_out, held_out, WEB, EMAIL, flags=frozenset({"unsubscribed"}))
    email = decided(both_channels, "nurture_email", flagged)
    assert email.decision.suppressed
    assert (email.decision.experiment, email.decision.arm, email.unit) == (None, None, None)
    unconsented = decided(both_channels, "home_hero", person(held_out, held_out))
    assert (unconsented.decision.arm, unconsented.unit) == (None, None)
    assert unconsented.decision.segment is None


def test_without_consent_a_contextual_match_is_served_as_without_the_experiment(
    ruleset: CompiledRuleset,
) -> None:
    """A contextual segment the hero has a variant for matches without consent: its variant
    is served, no arm, and a reason says the experiment did not bucket."""
    made = decided(ruleset, "home_hero", person(1, 1), context={"utm_campaign": "comparison"})
    assert (made.decision.segment, made.decision.variant.id) == (
        "ctx_comparison_click",
        "home_from_comparison_email",
    )
    assert (made.decision.experiment, made.decision.arm, made.unit) == (None, None, None)
    assert made.decision.reasons[-1].code == ReasonCode.EXPERIMENT_NOT_BUCKETED
    assert "consent" in made.decision.reasons[-1].message


def test_an_anonymous_visitor_is_bucketed_by_its_cookie(ruleset: CompiledRuleset) -> None:
    """An unknown visitor whose banner grants consent may match a contextual segment; no
    profile knows them, so their unit is the request's visitor_id."""
    made = decided(
        ruleset,
        "home_hero",
        Resolution("unknown"),
        context={"utm_campaign": "comparison"},
        banner=("personalization",),
        identity=Identity(visitor_id="anon-cookie-5"),
    )
    assert made.decision.segment == "ctx_comparison_click"
    assert made.unit == Unit("visitor", "anon-cookie-5")
    assert made.decision.arm in ("holdout", "control")
    assert made.decision.reasons[-1].code in (
        ReasonCode.EXPERIMENT_HOLDOUT,
        ReasonCode.EXPERIMENT_CONTROL,
    )


@pytest.mark.parametrize(
    ("resolution", "identity", "why"),
    [
        (Resolution("unknown"), Identity(user_id="u-nobody"), "no account or visitor to bucket"),
        (
            Resolution("unavailable"),
            Identity(visitor_id="anon-cookie-5"),
            "without the channel's consent",  # unknown consent counts as not granted
        ),
    ],
    ids=["no visitor_id", "profile unavailable"],
)
def test_nobody_to_bucket_is_not_bucketed(
    ruleset: CompiledRuleset, resolution: Resolution, identity: Identity, why: str
) -> None:
    """Ids that name no profile and carry no visitor_id, or a profile source that failed
    (whose account, and so unit, is not known): no arm, and a reason says why."""
    made = decided(
        ruleset,
        "home_hero",
        resolution,
        context={"utm_campaign": "comparison"},
        banner=("personalization",),
        identity=identity,
    )
    assert made.decision.segment == "ctx_comparison_click"
    assert (made.decision.arm, made.unit) == (None, None)
    reason = made.decision.reasons[-1]
    assert reason.code == ReasonCode.EXPERIMENT_NOT_BUCKETED
    assert reason.message.startswith(f"home_hero_holdout: {why}")


def test_a_visitor_who_logs_in_is_bucketed_by_their_account_from_then_on(
    ruleset: CompiledRuleset,
) -> None:
    """Before login the cookie's visitor is the unit; once the ids resolve to a person of an
    account, the account is, whatever arm the cookie had."""
    cookie = Resolution("resolved", VisitorProfile(id="anon-1", consent=(WEB,)))
    context = {"utm_campaign": "q4-comparison-email"}
    before = decided(ruleset, "home_hero", cookie, context=context)
    after = decided(ruleset, "home_hero", person(1, 9, WEB), context=context)
    assert before.decision.segment == "ctx_comparison_click"
    assert before.unit == Unit("visitor", "anon-1")
    assert after.decision.segment == "b2b_top_tier_evaluation"
    assert after.unit == Unit("account", "acc-9")


def test_explain_shows_the_bucket_but_never_the_unit_id(ruleset: CompiledRuleset) -> None:
    made = decided(ruleset, "home_hero", person(1, 1, WEB), explain=True).decision
    assert made.bucket is not None
    assert (made.bucket.experiment, made.bucket.unit_kind, made.bucket.holdout) == (
        "home_hero_holdout",
        "account",
        0.1,
    )
    assert made.bucket.point == holdout_point("home_hero_holdout", Unit("account", "acc-1"))
    assert made.bucket.arm == made.arm
    assert "acc-1" not in repr(made.bucket)
    assert decided(ruleset, "home_hero", person(1, 1, WEB)).decision.bucket is None


def test_a_holdout_counts_apart_from_the_default(ruleset: CompiledRuleset) -> None:
    """decider_decisions_total counts a holdout decision with outcome `holdout`, in its
    segment."""
    stats = Stats(NOW)
    for i in range(200):
        stats.record(decided(ruleset, "home_hero", person(i, i, WEB)), NOW)
    outcomes = Counter({key[3]: n for key, n in stats.decided.items()})
    assert set(outcomes) == {"holdout", "personalized"}
    assert outcomes["holdout"] > 0
    assert {key[2] for key in stats.decided} == {"b2b_top_tier_evaluation"}
