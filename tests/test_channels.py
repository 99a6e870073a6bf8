"""Channels defined in the rules: push and SMS beside the built-in web and email, their slots
and length limits checked at load, their consent policies applied at decision time."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from decider.errors import RulesetError
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.ruleset import CompiledRuleset

from .conftest import api_key, app_client
from .test_compiler import line_of, problems_of, replace

SMS_BODY = "        body: 'Our seasonal sale is on: 20% off this week at shop.example. Reply STOP"


def test_the_sample_rules_define_push_and_sms_beside_web_and_email(
    ruleset: CompiledRuleset,
) -> None:
    """Each channel has its slots, in order, and its limits; each has a placement."""
    assert {name: c.slots for name, c in ruleset.channels.items()} == {
        "web": ("hero", "cta", "proof"),
        "email": ("subject", "opening", "proof", "cta"),
        "push": ("title", "body"),
        "sms": ("body",),
    }
    assert ruleset.channels["sms"].limits == {"body": 160}
    assert ruleset.policy["sms"].purposes == ("sms_marketing",)
    assert {p.channel for p in ruleset.placements.values()} == {"web", "email", "push", "sms"}


def test_an_sms_body_over_its_limit_is_an_error_at_its_place(rules_copy: Path) -> None:
    """A text too long for its slot is refused at load, where the text is written."""
    shop = rules_copy / "ecommerce.yaml"
    replace(
        shop,
        "Reply STOP to opt out.'\n    variants:",
        "Reply STOP to opt out. " + "x" * 80 + "'\n    variants:",
    )
    (problem,) = problems_of(rules_copy)
    assert (problem.line, problem.column) == (line_of(shop, SMS_BODY), 15)
    assert problem.message == "body is 163 characters; sms allows 160 in body"
    assert problem.rule == "sms_sale"


@pytest.mark.parametrize(
    ("added", "message"),
    [
        ("x" * 90, None),  # 160 GSM-7 characters: one message
        ("€" * 46, "body is 162 characters; sms allows 160 in body"),  # € takes two septets
        (
            "\U0001f600",  # an emoji: the whole text goes as UCS-2, 70 to a message
            "body holds characters outside GSM-7 ('\U0001f600'), so it is sent as UCS-2: 72 of "
            "them; sms allows 70 in body (as 160 GSM-7 ones)",
        ),
    ],
    ids=["160 GSM-7", "extension characters", "an emoji"],
)
def test_an_sms_body_is_counted_as_a_text_message_is(
    rules_copy: Path, added: str, message: str | None
) -> None:
    """`count: sms`: GSM-7 septets, two for an extension character; any other character
    makes the whole text UCS-2, of which one message holds 70."""
    shop = rules_copy / "ecommerce.yaml"
    replace(shop, "Reply STOP to opt out.'\n    variants:", f"Reply STOP{added}'\n    variants:")
    if message is None:
        compile_ruleset(rules_copy, new_engine("cel-expr"))
        return
    (problem,) = problems_of(rules_copy)
    assert problem.message == message


def test_a_treatment_over_the_limit_is_refused_too(rules_copy: Path) -> None:
    """Every text a slot can show is checked: a variant's, a default's, a treatment's."""
    shop = rules_copy / "ecommerce.yaml"
    with shop.open("a") as file:
        file.write(
            "    experiment:\n"
            "      id: sms_test\n"
            "      holdout: 0%\n"
            "      segments:\n"
            "        shop_high_intent:\n"
            "          treatments:\n"
            f"            - {{id: sms_long, content: {{body: {'y' * 161}}}}}\n"
        )
    (problem,) = problems_of(rules_copy)
    assert problem.message == "body is 161 characters; sms allows 160 in body"
    assert problem.line == line_of(shop, "id: sms_long")


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "saas_trial.yaml",
            "    channel: push\n",
            "    channel: pager\n",
            "unknown channel 'pager' (known: email, push, sms, web)",
        ),
        (
            "policy.yaml",
            "    channels: [push, sms]\n",
            "    channels: [push, mms]\n",
            "unknown channel 'mms' (did you mean sms?)",
        ),
        ("policy.yaml", "  - id: sms\n", "  - id: push\n", "duplicate channel id 'push'"),
        (
            "policy.yaml",
            "  - id: sms\n",
            "  - id: web\n",
            "web is built in (slots hero, cta, proof); its policy is in the `consent:` section",
        ),
        (
            "saas_trial.yaml",
            "        title: One step to your first segment\n",
            "        subject: One step to your first segment\n",
            "slot 'subject' is not one of this placement's slots (title, body)",
        ),
        (
            "policy.yaml",
            "      purposes: [sms_marketing]\n",
            "      purposes: [sms_marketing]\n      gpc_revokes: [personalization]\n",
            "'personalization' is not one of sms's purposes (sms_marketing); "
            "Sec-GPC would withdraw nothing",
        ),
    ],
)
def test_channel_mistakes_are_errors_at_their_place(
    rules_copy: Path, file: str, old: str, new: str, message: str
) -> None:
    """Placed where the mistake is (a channel lost is then unknown where it is used, too)."""
    replace(rules_copy / file, old, new)
    (problem,) = [p for p in problems_of(rules_copy) if p.message == message]
    needle = new.strip().split("\n")[-1]
    lines = (rules_copy / file).read_text().splitlines()
    assert problem.line == max(i for i, line in enumerate(lines, 1) if needle in line)
    assert problem.file.endswith(file)


def test_a_slot_name_and_a_limit_are_checked_as_file_shape(rules_copy: Path) -> None:
    replace(
        rules_copy / "policy.yaml", "body: {max_length: 160, count: sms}", "body: {max_length: 0}"
    )
    (problem,) = problems_of(rules_copy)
    assert "Expected `int` >= 1" in problem.message
    assert problem.line == line_of(rules_copy / "policy.yaml", "max_length: 0")


def test_rules_without_channels_load_as_before(rules_copy: Path) -> None:
    """Rule files written before channels could be defined compile unchanged: web and email
    are built in."""
    for name in ("policy.yaml", "saas_trial.yaml", "ecommerce.yaml"):
        text = (rules_copy / name).read_text()
        if name == "policy.yaml":
            start, end = text.index("channels:\n"), text.index("suppressions:\n")
            text = text[:start] + text[end:]
            text = text.replace("    channels: [push, sms]\n", "    channels: [email]\n")
        else:
            text = (
                text[
                    : text.index(
                        "\n  - id: trial_push\n"
                        if "trial" in name
                        else "\n  - id: cart_reminder_sms\n"
                    )
                ]
                + "\n"
            )
        (rules_copy / name).write_text(text)
    for name in ("saas_trial.yaml", "ecommerce.yaml"):  # their cases of the removed placements
        (rules_copy / "tests" / name).unlink()
    ruleset = compile_ruleset(rules_copy, new_engine("cel-expr"))
    assert set(ruleset.channels) == {"web", "email"}


def decide(client: TestClient[Any], **body: Any) -> Any:
    return client.post("/v1/decide", json=body)


def test_a_push_decision_applies_the_push_policy(client: TestClient[Any]) -> None:
    """Kai allowed push notifications: the stalled-trial nudge; Jay did not: nothing sent."""
    kai = decide(client, placement="trial_push", identity={"user_id": "u-kai"}).json()
    assert (kai["channel"], kai["segment"], kai["variant"]["id"]) == (
        "push",
        "trial_stalled",
        "trial_push_nudge",
    )
    assert kai["suppressed"] is False
    jay = decide(client, placement="trial_push", identity={"user_id": "u-jay"}).json()
    assert jay["suppressed"] is True
    assert [r["code"] for r in jay["reasons"]][-1] == "suppressed.no_consent"


def test_an_sms_goes_only_to_someone_known_who_opted_in(client: TestClient[Any]) -> None:
    """Finn opted in to texts: the cart reminder; an email hash naming nobody: no text."""
    nobody = hashlib.sha256(b"nobody@shop.example").hexdigest()
    response = decide(
        client, placement="cart_reminder_sms", channel="sms", identity={"visitor_id": "v-finn"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["variant"]["id"] == "sms_cart"
    unknown = decide(client, placement="cart_reminder_sms", identity={"email_sha256": nobody})
    assert unknown.json()["suppressed"] is True


@pytest.mark.parametrize(
    ("channel", "detail"),
    [
        ("fax", "not a channel of the loaded rules; known: email, push, sms, web"),
        ("push", "placement 'cart_reminder_sms' serves the sms channel, not push"),
        ("SMS", "expected an id: 1 to 128 lowercase letters"),
    ],
)
def test_a_request_for_another_channel_is_a_422_naming_it(
    client: TestClient[Any], channel: str, detail: str
) -> None:
    response = decide(
        client, placement="cart_reminder_sms", channel=channel, identity={"user_id": "u-kai"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "channel"
    assert body["detail"].startswith(detail)


def test_a_banner_granting_is_refused_on_a_sent_channel_a_withdrawal_honoured(
    client: TestClient[Any],
) -> None:
    """Push and email take stored consent records only: a `consent` that grants is a 422
    naming it; one that withdraws everything is honoured (Kai allowed push: not now), so
    a caller told of a "reject all" need not drop it and have stored records decide."""
    kai = {"placement": "trial_push", "identity": {"user_id": "u-kai"}}
    granting = decide(client, **kai, consent={"purposes": ["push_marketing"]})
    assert (granting.status_code, granting.json()["field"]) == (422, "consent")
    withdrawn = decide(client, **kai, consent={"purposes": []})
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["suppressed"] is True
    assert [r["code"] for r in withdrawn.json()["reasons"]][-2:] == [
        "consent.denied",
        "suppressed.no_consent",
    ]
    assert decide(client, **kai).json()["suppressed"] is False  # stored records: allowed
    ada = {"placement": "nurture_email", "identity": {"user_id": "u-ada"}}
    assert decide(client, **ada, consent={"purposes": []}).json()["suppressed"] is True


def test_a_channel_whose_policy_says_banner_takes_the_callers_consent_signal(
    rules_copy: Path, tmp_path: Path
) -> None:
    """`banner: true`: an app's own consent dialog decides for push, as the page's banner
    does for the web (Jay never stored push consent; his dialog grants it now), in
    decisions and outcomes alike; `banner: false` on the web refuses the signal there."""
    policy = rules_copy / "policy.yaml"
    replace(
        policy,
        "      purposes: [push_marketing]\n",
        "      purposes: [push_marketing]\n      banner: true\n",
    )
    replace(
        policy,
        "    gpc_revokes: [personalization]\n",
        "    gpc_revokes: [personalization]\n    banner: false\n",
    )
    key = "tags-key-0123456789abcdef"
    with app_client(
        compile_ruleset(rules_copy, new_engine("cel-expr")),
        api_keys=api_key(key, "decide", "outcomes", "consent"),
        measure_key="0f" * 16,
        exposure_dir=tmp_path / "exposures",
        headers={"X-API-Key": key},
    ) as client:
        granted = {"purposes": ["push_marketing"]}
        jay = decide(client, placement="trial_push", identity={"user_id": "u-jay"}, consent=granted)
        assert jay.status_code == 200, jay.text
        assert jay.json()["suppressed"] is False
        assert "consent.granted" in [r["code"] for r in jay.json()["reasons"]]
        web = decide(client, placement="home_hero", identity={"user_id": "u-ada"}, consent=granted)
        assert (web.status_code, web.json()["field"]) == (422, "consent")
        assert web.json()["detail"] == (
            "web decisions use stored consent records only: a `consent` may only withdraw "
            "everything (`[]`) there (the rules' consent policy for web would need "
            "`banner: true` to take a grant)"
        )
        event = {"event_id": "e-1", "name": "purchase", "identity": {"user_id": "u-jay"}}
        pushed = client.post("/v1/outcomes", json={**event, "channel": "push", "consent": granted})
        assert pushed.status_code == 200, pushed.text
        on_web = client.post("/v1/outcomes", json={**event, "event_id": "e-2", "consent": granted})
        assert (on_web.status_code, on_web.json()["field"]) == (422, "consent")


def test_email_takes_no_banner(rules_copy: Path) -> None:
    replace(
        rules_copy / "policy.yaml",
        "    send_requires_consent: true\n",
        "    send_requires_consent: true\n    banner: true\n",
    )
    (problem,) = problems_of(rules_copy)
    assert problem.message.startswith("email is decided at send time, where no consent banner")


def test_a_ruleset_error_names_every_channel_problem_at_once(rules_copy: Path) -> None:
    replace(rules_copy / "saas_trial.yaml", "    channel: push\n", "    channel: pager\n")
    replace(rules_copy / "ecommerce.yaml", "    channel: sms\n", "    channel: text\n")
    with pytest.raises(RulesetError) as caught:
        compile_ruleset(rules_copy, new_engine("cel-python"))
    assert sorted(p.message.split(" (")[0] for p in caught.value.problems) == [
        "unknown channel 'pager'",
        "unknown channel 'text'",
    ]


def test_a_channel_without_a_consent_purpose_is_warned_of(rules_copy: Path) -> None:
    """Allowed (a transactional channel needs none), but a marketing one missing its purpose
    would personalize and send to everyone: `decider check` says so."""
    replace(rules_copy / "policy.yaml", "purposes: [sms_marketing]", "purposes: []")
    ruleset = compile_ruleset(rules_copy, new_engine("cel-expr"))
    (warning,) = ruleset.warnings
    assert (warning.rule, warning.kind) == ("sms", "warning")
    assert warning.message.startswith("no consent purpose: its placements use profile data")
    assert warning.line == line_of(rules_copy / "policy.yaml", "purposes: []")
