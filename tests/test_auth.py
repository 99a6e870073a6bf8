"""Callers authenticated and told only what they need: API keys and scopes, the secure
default, CORS for browser callers, request ids."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from decider.access import KeyRing, KeysError, Scope, parse_file, parse_spec
from decider.cli import main
from decider.profiles.jsonl import sample_profiles
from decider.profiles.sources.memory import MemoryProfileSource
from decider.reasons import ReasonCode
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.ruleset import CompiledRuleset
from decider.server.app import create_app
from decider.server.auth import is_loopback
from decider.settings import Settings
from decider.wiring import build_service

from .conftest import NOW, ROOT, RULES, api_key, app_client
from .service import running_service

EDGE = "edge-key-0123456789abcdef"  # decide only: a website's backend, or a browser
ANALYST = "analyst-key-0123456789abcdef"  # decide and explain
CMP = "cmp-key-0123456789abcdef"  # decide and consent: the consent banner's backend
KEYS = ",".join(
    [
        api_key(EDGE, "decide", name="edge"),
        api_key(ANALYST, "decide", "explain", name="analyst"),
        api_key(CMP, "decide", "consent", name="cmp"),
    ]
)
MAX_SHA = hashlib.sha256(b"max@globex.example").hexdigest()
ADA = {"placement": "home_hero", "identity": {"visitor_id": "anon-1", "user_id": "u-ada"}}
MAX = {"placement": "nurture_email", "identity": {"email_sha256": MAX_SHA}}
Client = TestClient[Any]
MEANINGS = {code.value: code.meaning for code in ReasonCode}


@pytest.fixture(scope="module")
def cel_expr_rules() -> CompiledRuleset:
    return compile_ruleset(RULES, new_engine("cel-expr"))


@pytest.fixture
def keyed(cel_expr_rules: CompiledRuleset) -> Iterator[Client]:
    with app_client(cel_expr_rules, api_keys=KEYS) as client:
        yield client


def with_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "an API key is required: Authorization: Bearer <key> or X-API-Key"),
        ({"Authorization": "Bearer not-a-key"}, "unknown API key"),
        ({"X-API-Key": "not-a-key"}, "unknown API key"),
        ({"Authorization": f"Basic {EDGE}"}, "an API key is required"),
        ({"Authorization": f"Bearer {EDGE.upper()}"}, "unknown API key"),
        ({"X-API-Key": EDGE, "Authorization": f"Bearer {ANALYST}"}, "two different API keys"),
        ({"X-API-Key": EDGE, "Authorization": "Basic dXNlcjpwYXNz"}, "two different API keys"),
    ],
)
def test_with_keys_configured_every_call_needs_one(
    keyed: Client, headers: dict[str, str], detail: str
) -> None:
    response = keyed.post("/v1/decide", json=ADA, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"
    assert response.json()["detail"].startswith(detail)


@pytest.mark.parametrize("headers", [with_key(EDGE), {"X-API-Key": EDGE}, {"x-api-key": EDGE}])
def test_a_key_is_taken_as_a_bearer_token_or_x_api_key(
    keyed: Client, headers: dict[str, str]
) -> None:
    assert keyed.post("/v1/decide", json=ADA, headers=headers).status_code == 200


def test_the_probes_and_the_openapi_document_need_no_key(keyed: Client) -> None:
    for path in ("/healthz", "/readyz", "/schema/openapi.json"):
        assert keyed.get(path).status_code == 200, path


def test_without_the_explain_scope_an_answer_names_no_id_account_or_flag(keyed: Client) -> None:
    """The decision and stable codes, each with its fixed meaning: never an internal visitor
    id, an account id, a flag or rule name, or a trait value."""
    for body in (ADA, MAX):
        minimal = keyed.post("/v1/decide", json=body, headers=with_key(EDGE)).json()
        full = keyed.post("/v1/decide", json=body, headers=with_key(ANALYST)).json()
        told = [r for r in full["reasons"] if not r["code"].startswith("identity.")]
        assert minimal["reasons"] == [
            {"code": r["code"], "message": MEANINGS[r["code"]]} for r in told
        ]
        for field in ("segment", "variant", "suppressed", "personalized"):
            assert minimal[field] == full[field]
        text = json.dumps(minimal["reasons"])
        for secret in ("v-ada", "v-max", "acc-", "unsubscribed", "email_opt_outs", "Northwind"):
            assert secret not in text
    full_text = json.dumps(full["reasons"])
    assert "v-max" in full_text  # the analyst's answer does say who
    assert "unsubscribed" in full_text


@pytest.mark.parametrize(
    ("guess", "right"),
    [
        ({"account_id": "acc-globex"}, {"account_id": "acc-northwind"}),
        ({"user_id": "u-ben"}, {"user_id": "u-ada"}),
        ({"visitor_id": "v-ben"}, {"visitor_id": "v-ada"}),
    ],
)
def test_without_the_explain_scope_guesses_about_who_is_who_go_unanswered(
    keyed: Client, guess: dict[str, str], right: dict[str, str]
) -> None:
    """Ada's email hash with a wrong and a right account, user or visitor id: the same
    answer but for the decision itself (an analyst's answers differ, by identity reasons)."""
    ada = {"email_sha256": hashlib.sha256(b"ada@northwind.example").hexdigest()}

    def answer(key: str, ids: dict[str, str]) -> Any:
        body = {"placement": "home_hero", "identity": {**ada, **ids}}
        decided = keyed.post("/v1/decide", json=body, headers=with_key(key)).json()
        return [r["code"] for r in decided["reasons"]]

    assert answer(EDGE, guess) == answer(EDGE, right)
    assert answer(ANALYST, guess) != answer(ANALYST, right)


def test_explain_needs_the_explain_scope(keyed: Client) -> None:
    refused = keyed.post("/v1/decide", json={**ADA, "explain": True}, headers=with_key(EDGE))
    assert refused.status_code == 403
    assert (refused.json()["code"], refused.json()["field"]) == ("forbidden", "explain")
    allowed = keyed.post("/v1/decide", json={**ADA, "explain": True}, headers=with_key(ANALYST))
    assert allowed.status_code == 200
    assert allowed.json()["explain"]


def test_only_a_key_with_the_consent_scope_may_send_the_consent_signal(keyed: Client) -> None:
    body = {**ADA, "consent": {"purposes": ["personalization"]}}
    for key in (EDGE, ANALYST):
        refused = keyed.post("/v1/decide", json=body, headers=with_key(key))
        assert refused.status_code == 403
        assert refused.json()["field"] == "consent"
    assert keyed.post("/v1/decide", json=body, headers=with_key(CMP)).status_code == 200
    # withdrawing is anyone's right: an empty banner, and Sec-GPC, need no scope
    rejected_all = {**ADA, "consent": {"purposes": []}}
    assert keyed.post("/v1/decide", json=rejected_all, headers=with_key(EDGE)).status_code == 200
    gpc = keyed.post("/v1/decide", json=ADA, headers={**with_key(EDGE), "Sec-GPC": "1"})
    assert gpc.status_code == 200


@contextmanager
def served_at(ruleset: CompiledRuleset, address: str, **settings: Any) -> Iterator[TestClient[Any]]:
    """The app as a request arriving on `address` sees it (the scope's server address)."""
    with tempfile.TemporaryDirectory() as scratch:
        usage_db = Path(scratch) / "usage.db"
        options = Settings(rules_dir=RULES, watch_rules=False, usage_db=usage_db, **settings)
        source = MemoryProfileSource(sample_profiles(NOW))
        service = build_service(options, source=source, ruleset=ruleset, clock=lambda: NOW)
        with TestClient(create_app(service), base_url=f"http://{address}:8080") as client:
            yield client


def test_without_keys_callers_on_loopback_decide_and_explain(
    cel_expr_rules: CompiledRuleset,
) -> None:
    """The quickstart's plain curl: no key, on this machine."""
    with served_at(cel_expr_rules, "127.0.0.1") as client:
        answer = client.post("/v1/decide", json={**ADA, "explain": True})
        assert answer.status_code == 200, answer.text
        assert "v-ada" in json.dumps(answer.json()["reasons"])
        assert client.get("/admin/rules").status_code == 403  # administering needs a key


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("/run/decider.sock", True),
        (None, True),
        ("10.1.2.3", False),
        ("0.0.0.0", False),
        ("::ffff:10.1.2.3", False),
        ("fe80::1", False),
    ],
)
def test_what_counts_as_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_without_keys_a_request_arriving_on_another_address_is_refused(
    cel_expr_rules: CompiledRuleset,
) -> None:
    """A process manager may bind any address: without keys, only loopback is answered."""
    with served_at(cel_expr_rules, "10.1.2.3") as client:
        refused = client.post("/v1/decide", json=ADA)
        assert refused.status_code == 403
        assert "DECIDER_ALLOW_ANONYMOUS=true" in refused.json()["detail"]
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "X-Forwarded-For: 203.0.113.9",
        "Forwarded: for=203.0.113.9",
        "X-Real-IP: 1.2.3.4",
        "Via: 1.1 proxy.example",
        "CF-Connecting-IP: 203.0.113.9",
        "Host: evil.example",  # a page that rebound its name to 127.0.0.1
        "Host: evil.example:8080",
        "Host: 10.1.2.3",
    ],
)
def test_without_keys_a_request_through_a_proxy_is_refused_even_on_loopback(
    cel_expr_rules: CompiledRuleset, header: str
) -> None:
    """A proxy on this machine forwards everyone to 127.0.0.1: its requests are not local."""
    name, _, value = header.partition(": ")
    with served_at(cel_expr_rules, "127.0.0.1") as client:
        refused = client.post("/v1/decide", json=ADA, headers={name: value})
        assert refused.status_code == 403


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:8080", "[::1]:8080", "[::1]"]
)
def test_without_keys_a_loopback_host_is_answered(
    cel_expr_rules: CompiledRuleset, host: str
) -> None:
    with served_at(cel_expr_rules, "127.0.0.1") as client:
        assert client.post("/v1/decide", json=ADA, headers={"Host": host}).status_code == 200


def test_allowing_anonymous_callers_opens_decisions_and_nothing_more(
    cel_expr_rules: CompiledRuleset,
) -> None:
    with served_at(cel_expr_rules, "10.1.2.3", allow_anonymous=True) as client:
        answer = client.post("/v1/decide", json=MAX)
        assert answer.status_code == 200
        assert "v-max" not in answer.text
        assert client.post("/v1/decide", json={**ADA, "explain": True}).status_code == 403
        assert client.get("/admin/rules").status_code == 403


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), environ=env or {}, out=out)
    return code, out.getvalue()


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    env = {"DECIDER_PROFILE_DB": str(tmp_path / "p.db")}
    code, out = run("serve", "--rules", str(RULES), "--host", "0.0.0.0", "--port", "0", env=env)
    assert code == 1
    assert out.startswith("decider: refusing to listen on 0.0.0.0 with no API keys")
    assert f"```text\n{out}```" in (ROOT / "README.md").read_text()  # as the README shows


def test_serve_on_a_public_address_with_keys(tmp_path: Path) -> None:
    env = {"DECIDER_API_KEYS": KEYS, "DECIDER_HOST": "0.0.0.0", "DECIDER_WATCH_RULES": "false"}
    with running_service(RULES, tmp_path, env=env, headers=with_key(EDGE)) as service:
        assert service.client.post("/v1/decide", json=ADA).status_code == 200
        assert (
            service.client.post("/v1/decide", json=ADA, headers={"Authorization": ""}).status_code
            == 401
        )


def test_keys_new_makes_a_key_whose_entries_configure_it() -> None:
    code, out = run("keys", "new", "--name", "web-edge", "--scope", "decide", "--scope", "consent")
    assert code == 0, out
    key = re.search(r"^key:  (dk_\S+)$", out, re.M)
    spec = re.search(r"^DECIDER_API_KEYS entry:  (\S+)$", out, re.M)
    assert key, out
    assert spec, out
    ring = KeyRing(parse_spec(spec[1], "DECIDER_API_KEYS"))
    caller = ring.caller(key[1])
    assert caller is not None
    assert caller.name == "web-edge"
    assert caller.scopes == frozenset({Scope.DECIDE, Scope.CONSENT})
    document = out.split("DECIDER_API_KEYS_FILE entry:\n", 1)[1]
    (from_file,) = parse_file(f"keys:\n{document}".encode(), "keys.yaml")
    assert from_file == ring.keys[0]
    assert key[1] not in (ring.keys[0].sha256, document)


def test_keys_new_refuses_a_bad_name() -> None:
    code, out = run("keys", "new", "--name", "has space", "--scope", "decide")
    assert code == 2
    assert "name: letters, digits" in out


SHA = "0" * 64


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("edge:decide", "DECIDER_API_KEYS: entry 1: expected name:scope+scope:sha256"),
        (f"edge:decide+fly:{SHA}", "unknown scope 'fly'; choose from decide, explain"),
        ("edge:decide:not-a-hash", "sha256: expected the key's SHA-256 as 64 hex digits"),
        (f"edge::{SHA}", "unknown scope ''"),
        (f"edge:decide:{SHA},edge:admin:{'1' * 64}", "key 'edge' is defined twice"),
        (f"a:decide:{SHA},b:admin:{SHA}", "key 'a' has the same hash as another key"),
    ],
)
def test_a_wrong_key_definition_stops_the_service_saying_why(spec: str, message: str) -> None:
    with pytest.raises(KeysError) as refused:
        KeyRing(parse_spec(spec, "DECIDER_API_KEYS"))
    assert message in str(refused.value)
    assert SHA not in str(refused.value)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"keys: [", "not a YAML document"),
        (b"\xff", "not a YAML document"),
        (b"keys: 3", "expected `keys:` and a list of keys"),
        (b"keys:\n  - {name: a, scopes: [decide], sha256: x, key: y}", "unknown field 'key'"),
        (b"keys:\n  - {name: a, scopes: decide, sha256: x}", "scopes: expected a list"),
    ],
)
def test_a_wrong_keys_file_is_refused_naming_the_key(document: bytes, message: str) -> None:
    with pytest.raises(KeysError) as refused:
        parse_file(document, "keys.yaml")
    assert message in str(refused.value)


def test_a_hash_in_capitals_is_the_same_hash() -> None:
    digest = hashlib.sha256(EDGE.encode()).hexdigest()
    ring = KeyRing(parse_spec(f"edge:decide:{digest.upper()}", "DECIDER_API_KEYS"))
    assert ring.caller(EDGE) is not None


def test_a_keys_file_configures_keys(tmp_path: Path, cel_expr_rules: CompiledRuleset) -> None:
    digest = hashlib.sha256(EDGE.encode()).hexdigest()
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - name: edge\n    scopes: [decide]\n    sha256: {digest}\n")
    with app_client(cel_expr_rules, api_keys_file=keys) as client:
        assert client.post("/v1/decide", json=ADA, headers={"X-API-Key": EDGE}).is_success
        assert client.post("/v1/decide", json=ADA).status_code == 401


def test_the_readme_lists_every_scope() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n| scope | allows |\n", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| (.+) \|$", table, re.M))
    assert {scope: rows.get(scope) for scope in Scope} == {s: s.meaning for s in Scope}


@pytest.fixture(scope="module")
def browser_facing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    env = {
        "DECIDER_API_KEYS": KEYS,
        "DECIDER_CORS_ORIGINS": "https://shop.example, https://www.shop.example",
        "DECIDER_WATCH_RULES": "false",
    }
    with running_service(RULES, tmp_path_factory.mktemp("cors"), env=env) as service:
        yield service.client


def preflight(client: httpx.Client, origin: str) -> httpx.Response:
    return client.options(
        "/v1/decide",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-api-key",
        },
    )


def test_a_browser_on_an_allowed_origin_passes_the_preflight_and_decides(
    browser_facing: httpx.Client,
) -> None:
    answer = preflight(browser_facing, "https://shop.example")
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "https://shop.example"
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "x-api-key" in allowed
    assert "content-type" in allowed
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in answer.headers
    decided = browser_facing.post(
        "/v1/decide", json=ADA, headers={"Origin": "https://shop.example", "X-API-Key": EDGE}
    )
    assert decided.status_code == 200
    assert decided.headers["access-control-allow-origin"] == "https://shop.example"
    assert "x-request-id" in decided.headers["access-control-expose-headers"]


def test_a_browser_on_another_origin_is_not_let_in(browser_facing: httpx.Client) -> None:
    answer = preflight(browser_facing, "https://evil.example")
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers
    decided = browser_facing.post(
        "/v1/decide", json=ADA, headers={"Origin": "https://evil.example", "X-API-Key": EDGE}
    )
    assert "access-control-allow-origin" not in decided.headers
    assert decided.headers["vary"] == "Origin"  # a cache keeps the origins apart


@pytest.mark.parametrize("name", ["Authorization", "X-API-Key"])
def test_a_key_header_given_twice_is_refused(browser_facing: httpx.Client, name: str) -> None:
    """A proxy reading the other copy would disagree about who is calling (over a real
    socket: in-process clients join repeated headers)."""
    value = f"Bearer {EDGE}" if name == "Authorization" else EDGE
    headers = [(name, value), (name, value.replace(EDGE, ANALYST))]
    response = browser_facing.post("/v1/decide", json=ADA, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == f"{name} given twice: send one key"


def test_without_origins_configured_there_is_no_cors(keyed: Client) -> None:
    answer = keyed.post(
        "/v1/decide", json=ADA, headers={"Origin": "https://shop.example", "X-API-Key": EDGE}
    )
    assert "access-control-allow-origin" not in answer.headers


def test_credentials_are_allowed_for_listed_origins_only_when_asked(
    cel_expr_rules: CompiledRuleset,
) -> None:
    settings: dict[str, Any] = {
        "api_keys": KEYS,
        "cors_origins": "https://shop.example",
        "cors_credentials": True,
    }
    with app_client(cel_expr_rules, **settings) as client:
        answer = preflight(client, "https://shop.example")
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert answer.headers["access-control-allow-origin"] == "https://shop.example"


@pytest.mark.parametrize(
    ("given", "echoed"),
    [("req-42.abc:1", True), ("has space", False), ("x" * 129, False), ("", False)],
)
def test_a_request_id_is_echoed_or_made(keyed: Client, given: str, echoed: bool) -> None:
    for path in ("/healthz", "/no-such-path", "/v1/decide"):
        answer = keyed.get(path, headers={"X-Request-ID": given})
        request_id = answer.headers["x-request-id"]
        assert (request_id == given) is echoed
        assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", request_id)
