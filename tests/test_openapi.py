"""The served OpenAPI document tells the truth: valid, short operation ids, every status an
operation answers, and the admin endpoints' bearer scheme."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset

from .conftest import RULES, api_key, app_client

TOKEN = "test-admin-token-0123456789"


@pytest.fixture(scope="module")
def spec() -> Iterator[dict[str, Any]]:
    ruleset = compile_ruleset(RULES, new_engine("cel-expr"))
    with app_client(ruleset, api_keys=api_key(TOKEN, "admin")) as client:
        document: dict[str, Any] = client.get("/schema/openapi.json").json()
        yield document


def operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }


def test_the_document_is_valid_openapi(spec: dict[str, Any]) -> None:
    """openapi-spec-validator accepts the served document."""
    validate(spec)


def test_operation_ids_are_short_and_readable(spec: dict[str, Any]) -> None:
    """A generated client reads `decide(...)`, not a name derived from the handler's path."""
    ids = {name: op["operationId"] for name, op in operations(spec).items()}
    assert ids == {
        "POST /v1/decide": "decide",
        "POST /v1/decide/batch": "decideBatch",
        "GET /healthz": "healthz",
        "GET /readyz": "readyz",
        "GET /admin/rules": "rules",
        "POST /admin/reload": "reload",
        "GET /admin/segments": "segments",
        "GET /admin/traffic": "traffic",
        "GET /v1/profiles/visitors/{visitor_id}": "getVisitor",
        "PUT /v1/profiles/visitors/{visitor_id}": "putVisitor",
        "PATCH /v1/profiles/visitors/{visitor_id}": "patchVisitor",
        "DELETE /v1/profiles/visitors/{visitor_id}": "deleteVisitor",
        "GET /v1/profiles/accounts/{account_id}": "getAccount",
        "PUT /v1/profiles/accounts/{account_id}": "putAccount",
        "PATCH /v1/profiles/accounts/{account_id}": "patchAccount",
        "DELETE /v1/profiles/accounts/{account_id}": "deleteAccount",
        "POST /v1/profiles/invalidate": "invalidate",
        "POST /v1/outcomes": "reportOutcomes",
        "POST /ofrep/v1/evaluate/flags/{key}": "ofrepEvaluateFlag",
        "POST /ofrep/v1/evaluate/flags": "ofrepEvaluateFlags",
    }


@pytest.mark.parametrize(
    ("operation", "statuses"),
    [
        ("POST /v1/decide", {"200", "400", "401", "403", "413", "422", "503"}),
        ("POST /v1/decide/batch", {"200", "400", "401", "403", "413", "422", "503"}),
        ("GET /healthz", {"200"}),
        ("GET /readyz", {"200", "503"}),
        ("GET /admin/rules", {"200", "401", "403"}),
        ("POST /admin/reload", {"200", "401", "403", "422", "503"}),
        ("GET /admin/segments", {"200", "401", "403"}),
        ("POST /v1/outcomes", {"200", "400", "401", "403", "413", "422", "503"}),
        (
            "PUT /v1/profiles/visitors/{visitor_id}",
            {"200", "400", "401", "403", "409", "413", "422", "503"},
        ),
        (
            "PATCH /v1/profiles/accounts/{account_id}",
            {"200", "400", "401", "403", "404", "409", "413", "422", "503"},
        ),
        (
            "DELETE /v1/profiles/visitors/{visitor_id}",
            {"204", "400", "401", "403", "404", "409", "503"},
        ),
        ("POST /v1/profiles/invalidate", {"200", "400", "401", "403", "413", "422", "503"}),
        ("POST /ofrep/v1/evaluate/flags/{key}", {"200", "400", "401", "403", "404", "413", "503"}),
        ("POST /ofrep/v1/evaluate/flags", {"200", "304", "400", "401", "403", "413", "503"}),
    ],
)
def test_every_status_an_operation_answers_is_documented(
    spec: dict[str, Any], operation: str, statuses: set[str]
) -> None:
    """Each operation lists exactly the statuses it answers (besides litestar's own 405)."""
    assert set(operations(spec)[operation]["responses"]) == statuses


def test_operations_declare_the_api_key_schemes(spec: dict[str, Any]) -> None:
    """Every operation but the probes takes an API key, as a bearer token or X-API-Key."""
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {
        "apiKey": {
            "type": "apiKey",
            "name": "X-API-Key",
            "in": "header",
            "description": "an API key",
        },
        "bearer": {"type": "http", "scheme": "bearer", "description": "an API key"},
    }
    for name, operation in operations(spec).items():
        probe = name in ("GET /healthz", "GET /readyz")
        expected: list[dict[str, list[str]]] | None = (
            None if probe else [{"apiKey": []}, {"bearer": []}]
        )
        assert operation.get("security") == expected, name


@pytest.mark.parametrize(
    ("operation", "required"),
    [
        ("POST /v1/decide", {"placement", "identity"}),
        ("POST /v1/decide/batch", {"placement", "recipients"}),
        ("PUT /v1/profiles/visitors/{visitor_id}", {"id"}),
        ("PATCH /v1/profiles/visitors/{visitor_id}", set()),
        ("POST /v1/profiles/invalidate", set()),
        ("POST /ofrep/v1/evaluate/flags/{key}", set()),
    ],
)
def test_bodies_are_documented(spec: dict[str, Any], operation: str, required: set[str]) -> None:
    """Bodies the handlers decode themselves are described from the same types."""
    body = operations(spec)[operation]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body.get("required", [])) == required


@pytest.mark.parametrize("operation", ["POST /v1/decide", "POST /v1/decide/batch"])
def test_the_decide_operations_document_the_gpc_header(
    spec: dict[str, Any], operation: str
) -> None:
    """Sec-GPC, which the service honours, is a documented header parameter."""
    (parameter,) = operations(spec)[operation]["parameters"]
    assert (parameter["name"], parameter["in"]) == ("Sec-GPC", "header")
    assert parameter["required"] is False


def test_a_batch_result_is_a_decision_or_a_problem(spec: dict[str, Any]) -> None:
    """Each result of a batch is documented as the decision POST /v1/decide answers, or
    an `error` holding problem details."""
    answers = operations(spec)["POST /v1/decide/batch"]["responses"]
    decided = answers["200"]["content"]["application/json"]["schema"]
    single = operations(spec)["POST /v1/decide"]["responses"]["200"]["content"]
    shapes = decided["properties"]["results"]["items"]["anyOf"]
    assert [set(shape["required"]) for shape in shapes] == [
        set(spec["components"]["schemas"]["Decision"]["required"]),
        {"error"},
    ]
    assert single["application/json"]["schema"] == {"$ref": "#/components/schemas/Decision"}


def test_error_codes_are_a_closed_set(spec: dict[str, Any]) -> None:
    """Callers may branch on `code`: the document lists every code it can take."""
    code = spec["components"]["schemas"]["ProblemDetails"]["properties"]["code"]
    assert {"invalid_request", "malformed_body", "unauthorized", "internal_error"} <= set(
        code["enum"]
    )


def test_ofrep_bodies_follow_the_protocol(spec: dict[str, Any]) -> None:
    """OFREP's body is optional; its bulk answer is documented with its ETag, and its
    errors in OFREP's shape, not as problem details."""
    bulk = operations(spec)["POST /ofrep/v1/evaluate/flags"]
    assert bulk["requestBody"]["required"] is False
    ok = bulk["responses"]["200"]
    assert ok["headers"]["ETag"]["required"] is True
    assert ok["content"]["application/json"]["schema"]["required"] == ["flags"]
    assert "content" not in bulk["responses"]["304"]
    single = operations(spec)["POST /ofrep/v1/evaluate/flags/{key}"]["responses"]
    for status in ("400", "401", "404"):
        (media,) = single[status]["content"]
        assert media == "application/json"
