"""The served API, fuzzed from its own OpenAPI document by schemathesis: no 5xx, and every
answer as the document says (status, content type, body schema), for valid and invalid
requests, with a key that may do everything. Bounded: a few dozen examples an operation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.core import NOT_SET

from .conftest import RULES, api_key, generated_cases
from .service import running_service

KEY = "fuzz-key-0123456789abcdef"
# what the document promises; not "schema-valid data is accepted": a placement the rules do not
# define, or an identity with no id, is valid JSON Schema and rightly a 422
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]
KNOWN = [
    ("home_hero", {"user_id": "u-ada", "visitor_id": "anon-1"}),
    ("home_hero", {"visitor_id": "v-dan"}),
    ("shop_product_hero", {"account_id": "acc-northwind"}),
    ("nurture_email", {"email_sha256": sha256(b"max@globex.example").hexdigest()}),
    ("trial_email", {"user_id": "u-kai"}),
]
EVERYTHING = (
    "decide",
    "explain",
    "consent",
    "profiles-read",
    "profiles-write",
    "outcomes",
    "admin",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """`decider serve` on a copy of the sample store, and its OpenAPI document as served."""
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    env = {
        "DECIDER_API_KEYS": api_key(KEY, *EVERYTHING),
        "DECIDER_WATCH_RULES": "false",
        "DECIDER_EXPOSURE_DIR": str(workdir / "exposures"),  # and the outcomes beside them
    }
    with running_service(RULES, workdir, env=env) as service:
        yield schemathesis.openapi.from_url(f"{service.client.base_url}/schema/openapi.json")


def test_the_api_keeps_its_document_under_fuzzing(served: Any) -> None:
    """Every operation, valid and invalid requests alike: an answer the document allows."""
    operations = [result.ok() for result in served.get_all_operations()]
    assert len(operations) >= 16
    for operation in operations:

        @given(case=operation.as_strategy(), ids=st.sampled_from(KNOWN), known=st.booleans())
        @generated_cases(int(os.environ.get("FUZZ_EXAMPLES", "40")))
        def fuzz(case: Any, ids: tuple[str, dict[str, str]], known: bool) -> None:
            # half the decisions name a placement and a person the sample rules and store
            # know, so the fuzzing reaches the decision itself, not only its refusals
            if known and isinstance(case.body, dict) and "placement" in case.body:
                placement, identity = ids
                case.body["placement"] = placement
                if isinstance(case.body.get("recipients"), list):  # a batch: everyone known
                    case.body["recipients"] = [{"identity": identity}] * 3
                else:
                    case.body["identity"] = identity
            # and half the OFREP evaluations name a flag and a person they know, beside
            # whatever else a context given holds (a body is optional there)
            body = case.body if isinstance(case.body, dict) else {}
            context = body.get("context")
            ofrep = case.path.startswith("/ofrep/") and (case.body is NOT_SET or body == case.body)
            if known and ofrep and (context is None or isinstance(context, dict)):
                case.body = {**body, "context": {**(context or {}), **ids[1]}}
                case.media_type = case.media_type or "application/json"
                if "key" in case.path_parameters:
                    case.path_parameters["key"] = ids[0]
            case.call_and_validate(
                headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS, timeout=10
            )

        fuzz()
