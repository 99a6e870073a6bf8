"""The real OpenFeature Python SDK with its OFREP provider, against `decider serve` in its own
process: values, variants, reasons, metadata and errors as an application sees them."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from .conftest import RULES, api_key
from .service import running_service
from .test_readme import README

KEY = "sdk-key-0123456789abcdef"  # decide and explain
ADMIN = "sdk-admin-0123456789abcd"  # admin only: may not decide
MAX_SHA = hashlib.sha256(b"max@globex.example").hexdigest()  # unsubscribed
DEFAULT = {"hero": "Welcome"}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`decider serve` on the sample rules and store, with keys configured."""
    workdir: Path = tmp_path_factory.mktemp("ofrep")
    keys = f"{api_key(KEY, 'decide', 'explain', name='app')},{api_key(ADMIN, 'admin')}"
    env = {"DECIDER_API_KEYS": keys, "DECIDER_WATCH_RULES": "false"}
    with running_service(RULES, workdir, env=env) as service:
        yield str(service.client.base_url)


@contextlib.contextmanager
def sdk_client(url: str, key: str = KEY) -> Iterator[OpenFeatureClient]:
    """An OpenFeature client whose provider calls Decider at `url` with `key`."""
    provider = OFREPProvider(url, headers_factory=lambda: {"X-API-Key": key})
    api.set_provider(provider, domain="decider")
    try:
        yield api.get_client("decider")
    finally:
        api.clear_providers()
        provider.session.close()


@pytest.fixture
def client(url: str) -> Iterator[OpenFeatureClient]:
    with sdk_client(url) as sdk:
        yield sdk


def test_the_readme_example_prints_what_it_shows(url: str) -> None:
    """The README's Python example, run against the service (with the key it configures),
    prints the lines shown after it."""
    section = README.split("### OpenFeature (OFREP)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    shown = re.search(r"```text\n(.*?)```", section, re.S)
    assert code is not None
    assert shown is not None
    keyed = f'OFREPProvider("{url}", headers_factory=lambda: {{"X-API-Key": "{KEY}"}})'
    script = code[1].replace('OFREPProvider("http://localhost:8080")', keyed)
    assert keyed in script
    namespace: dict[str, Any] = {}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(script, "README.md", "exec"), namespace)
    finally:
        api.clear_providers()
        namespace["provider"].session.close()
    assert out.getvalue() == shown[1]


def test_a_placement_evaluates_as_an_object_flag(client: OpenFeatureClient) -> None:
    """Value, variant, reason and metadata, as the SDK hands them to the application."""
    context = EvaluationContext("u-ada", {"user_id": "u-ada"})
    details = client.get_object_details("home_hero", DEFAULT, context)
    assert details.error_code is None, details.error_message
    assert details.variant == "home_named_account"
    assert details.reason == Reason.SPLIT
    assert isinstance(details.value, dict)
    assert details.value["cta"] == "Book an executive briefing"
    assert set(details.value) == {"hero", "cta", "proof"}
    metadata = details.flag_metadata
    assert metadata["segment"] == "b2b_top_tier_evaluation"
    assert (metadata["personalized"], metadata["suppressed"]) == (True, False)
    assert (metadata["experiment"], metadata["arm"]) == ("home_hero_holdout", "control")
    assert re.fullmatch(r"[0-9a-f]{32}", str(metadata["decision_id"]))


@pytest.mark.parametrize(
    ("flag", "context", "reason", "variant"),
    [
        ("shop_product_hero", EvaluationContext("v-finn"), Reason.TARGETING_MATCH, "shop_urgency"),
        ("home_hero", EvaluationContext("anon-new"), Reason.DEFAULT, "home_generic"),
        (
            "nurture_email",
            EvaluationContext("anon-new", {"email_sha256": MAX_SHA}),
            Reason.DISABLED,
            "nurture_generic",
        ),
    ],
)
def test_reasons_reach_the_application(
    client: OpenFeatureClient, flag: str, context: EvaluationContext, reason: Reason, variant: str
) -> None:
    """Targeted, default and suppressed decisions, as OpenFeature reasons."""
    details = client.get_object_details(flag, DEFAULT, context)
    assert (details.error_code, details.reason, details.variant) == (None, reason, variant)
    assert details.flag_metadata["suppressed"] is (reason == Reason.DISABLED)


@pytest.mark.parametrize(
    ("flag", "context", "code", "message"),
    [
        (
            "no_such_placement",
            EvaluationContext("v-finn"),
            ErrorCode.FLAG_NOT_FOUND,
            "no placement",
        ),
        (
            "home_hero",
            EvaluationContext(None, {"url": "https://decider.example/"}),
            ErrorCode.TARGETING_KEY_MISSING,
            "context.targetingKey",
        ),
        (
            "home_hero",
            EvaluationContext("v-finn", {"email": "finn@example.com"}),
            ErrorCode.INVALID_CONTEXT,
            "context.email",
        ),
        (
            "home_hero",
            EvaluationContext("v-finn", {"email_sha256": "not-a-hash"}),
            ErrorCode.INVALID_CONTEXT,
            "context.email_sha256",
        ),
    ],
)
def test_errors_reach_the_application(
    client: OpenFeatureClient,
    flag: str,
    context: EvaluationContext,
    code: ErrorCode,
    message: str,
) -> None:
    """The default value, with the error code OFREP names and Decider's details."""
    details = client.get_object_details(flag, DEFAULT, context)
    assert details.value == DEFAULT
    assert details.reason == Reason.ERROR
    assert details.error_code == code
    assert (details.error_message or "").startswith(message)


@pytest.mark.parametrize(("key", "message"), [("wrong-key", "unauthorized"), (ADMIN, "forbidden")])
def test_a_refused_key_is_an_error_with_the_default(url: str, key: str, message: str) -> None:
    """An unknown key (401) or one without the decide scope (403): the default, GENERAL."""
    with sdk_client(url, key) as refused:
        details = refused.get_object_details("home_hero", DEFAULT, EvaluationContext("v-finn"))
    assert (details.value, details.error_code) == (DEFAULT, ErrorCode.GENERAL)
    assert details.error_message == message


def test_a_placement_is_an_object_not_a_string(client: OpenFeatureClient) -> None:
    """Asked for as a string, a placement is the SDK's TYPE_MISMATCH, and the default."""
    details = client.get_string_details("home_hero", "plain", EvaluationContext("v-finn"))
    assert (details.value, details.error_code) == ("plain", ErrorCode.TYPE_MISMATCH)
