"""The OpenAPI document against the real server: every answer below — successes and every kind
of error — must be a status the document lists for that operation, with its media type, and a
body valid against its schema (jsonschema over the document's own components). Errors are RFC
9457 problems everywhere, Litestar's own (404, 405, query validation) included."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from tests.e2e.conftest import Server, start_server

GATE_STATUSES = {"401", "403", "413", "429"}
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("openapi")
    server = start_server(tmp, f"sqlite:///{tmp / 'decisions.db'}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def document(srv: Server) -> dict[str, Any]:
    with srv.anonymous() as c:
        r = c.get("/schema/openapi.json")
    assert r.status_code == 200
    return r.json()


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return item[method.lower()]
    raise AssertionError(f"{method} {path} is not in the document")


def _validate(document: dict[str, Any], schema: dict[str, Any], body: Any) -> None:
    root = {**schema, "components": document["components"]}
    jsonschema.validate(body, root, cls=jsonschema.Draft202012Validator)


def conforms(document: dict[str, Any], r: httpx.Response) -> None:
    """The answer's status, media type and body are what the document says."""
    path = r.request.url.path
    op = _operation(document, r.request.method, path)
    status = str(r.status_code)
    assert status in op["responses"], f"{r.request.method} {path}: {status} not documented"
    content = op["responses"][status].get("content") or {}
    media = r.headers["content-type"].split(";")[0].strip()
    documented = {m.split(";")[0].strip(): v for m, v in content.items()}
    assert media in documented, f"{path} {status}: {media} not in {list(documented)}"
    if media.endswith("json"):
        _validate(document, documented[media]["schema"], r.json())
    else:
        assert documented[media]["schema"]["type"] == "string"


def problem(document: dict[str, Any], r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    _validate(document, {"$ref": "#/components/schemas/ProblemDetails"}, body)
    assert body["status"] == status and body["type"].startswith("urn:decision-service:problem:")
    assert "status_code" not in body and "Traceback" not in r.text
    return body


def test_every_operation_documents_its_answers(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, item in document["paths"].items():
        assert not path.startswith("/schema"), "the docs pages are not API operations"
        for method, op in item.items():
            codes = set(op["responses"])
            public = path.startswith("/health") or path == "/metrics"
            if public:
                assert "security" not in op, (method, path)
            else:
                assert op["security"] == [{"bearer": []}], (method, path)
                assert codes >= GATE_STATUSES, (method, path, codes)
            if method == "post" and path in ("/decide", "/keys"):
                assert "415" in codes
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")) and path != "/health/ready":
                    assert list(response["content"]) == [PROBLEM], (method, path, code)
    decide = document["paths"]["/decide"]["post"]
    ok = decide["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/Decision"}
    assert {"400", "422", "503"} <= set(decide["responses"])
    example = next(iter(ok["examples"].values()))["value"]
    _validate(document, ok["schema"], example)  # the example is a real decision
    assert "Idempotency-Key" in {p["name"] for p in decide["parameters"] if p["in"] == "header"}
    assert "400" in document["paths"]["/decisions"]["get"]["responses"]
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert [m.split(";")[0] for m in metrics] == ["text/plain"]
    trace = document["components"]["schemas"]["Trace"]["properties"]
    assert {"model", "ruleset", "rules_fired", "timings_us"} <= set(trace)


def test_real_answers_conform(
    srv: Server, document: dict[str, Any], application_lines: list[bytes]
) -> None:
    with srv.client("admin") as admin:
        decided = []
        for line in application_lines[:12]:
            r = admin.post("/decide", content=line)
            conforms(document, r)
            decided.append(r.json())
        r = admin.post("/decide?explain=true", content=application_lines[12])
        conforms(document, r)
        some = decided[0]["decision_id"]
        for r in (
            admin.get(f"/decisions/{some}"),
            admin.get("/decisions", params={"limit": 5}),
            admin.get("/decisions", params={"from": "2000-01-01", "outcome": "decline"}),
            admin.post(f"/decisions/{some}/replay"),
            admin.get("/audit/verify"),
            admin.get("/rules"),
            admin.get("/keys"),
            admin.post("/rules/reload"),
        ):
            assert r.status_code == 200, r.text
            conforms(document, r)
        made = admin.post("/keys", json={"name": "conformance-k", "role": "decider"})
        assert made.status_code == 201
        conforms(document, made)
        conforms(document, admin.post("/keys/conformance-k/revoke"))
        # errors, each one documented and a problem
        bad = admin.post("/decide", content=b'{"age": "x"}')
        body = problem(document, bad, 422)
        assert "$.age" in {e["field"] for e in body["errors"]}
        conforms(document, bad)
        for r, status in (
            (admin.post("/decide", content=b"{}", headers={"content-type": "text/plain"}), 415),
            (
                admin.post(
                    "/decide",
                    content=application_lines[0],
                    headers={"idempotency-key": "has space"},
                ),
                400,
            ),
            (admin.get("/decisions/01a21570-48c0-774b-b9a8-ae25008a9086"), 404),
            (admin.get("/decisions", params={"limit": 0}), 400),
            (admin.post("/keys", json={"name": "x"}), 422),
            (admin.post("/keys/no-such-key/revoke"), 404),
        ):
            problem(document, r, status)
            conforms(document, r)
    with srv.anonymous() as anon:
        for r in (anon.get("/health/live"), anon.get("/health/ready"), anon.get("/metrics")):
            conforms(document, r)
        r = anon.get("/decisions")
        problem(document, r, 401)
        conforms(document, r)
    with srv.client("decider") as decider:
        r = decider.get("/audit/verify")
        problem(document, r, 403)
        conforms(document, r)


def test_query_errors_name_the_parameter_as_sent(srv: Server, document: dict[str, Any]) -> None:
    """`from` (not `from_`), same words as the CLI; every date the CLI takes, the API takes."""
    with srv.client("auditor") as c:
        r = c.get("/decisions", params={"from": "yesterday", "to": "2026-13-01"})
        body = problem(document, r, 400)
        assert {e["field"] for e in body["errors"]} == {"from", "to"}
        assert "from_" not in r.text
        api_words = next(e["message"] for e in body["errors"] if e["field"] == "from")
        for accepted in ("2026-11-24", "2026-11-24T21:00:00Z", "2026-11-24 21:00+02:00"):
            assert c.get("/decisions", params={"from": accepted}).status_code == 200, accepted
        bad = c.get("/decisions", params={"outcome": "maybe"})
        assert {e["field"] for e in problem(document, bad, 400)["errors"]} == {"outcome"}
    cli = srv.cli("audit", "export", "--from", "yesterday")
    assert cli.returncode == 2
    assert f"argument --from: {api_words}" in cli.stderr
    accepted = srv.cli("audit", "export", "--format", "csv", "--from", "2026-11-24 21:00+02:00")
    assert accepted.returncode == 0, accepted.stderr


def test_framework_errors_are_problems(srv: Server, document: dict[str, Any]) -> None:
    with srv.anonymous() as c:
        assert "no route" in problem(document, c.get("/no/such/route"), 404)["detail"]
        problem(document, c.delete("/health/live"), 405)
        problem(document, c.get("/keys", headers={"authorization": "Bearer nope"}), 401)
