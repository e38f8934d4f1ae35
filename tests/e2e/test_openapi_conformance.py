"""The OpenAPI document against the real server: every answer below — successes, the HTML and
text variants, and every kind of error — must be a status the document lists for that operation,
with its media type, and a body valid against its schema. The same checks as
test_schemathesis.py (schemathesis' status, content-type and schema conformance), here on
chosen requests: the refusals of each role, the pages, the errors generated requests rarely
reach. Errors are RFC 9457 problems everywhere, Litestar's own (404, 405, query validation)
included."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.challengers._files import challenger, rules_dir
from tests.e2e.conftest import Server, start_server

GATE_STATUSES = {"401", "403", "413", "429"}
BODIES = ("/decide", "/decide/batch", "/keys", "/models/active")  # routes that take a JSON body
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("openapi")
    rules_dir(tmp, tight=challenger("tighter-pd"))  # so a challenger report has results
    server = start_server(tmp, f"sqlite:///{tmp / 'decisions.db'}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def document(srv: Server) -> dict[str, Any]:
    with srv.anonymous() as c:
        r = c.get("/schema/openapi.json")
    assert r.status_code == 200
    return r.json()


@pytest.fixture(scope="module")
def checked(document: dict[str, Any]) -> OpenApiSchema:
    return schemathesis.openapi.from_dict(document)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _validate(document: dict[str, Any], schema: dict[str, Any], body: Any) -> None:
    root = {**schema, "components": document["components"]}
    jsonschema.validate(body, root, cls=jsonschema.Draft202012Validator)


def conforms(checked: OpenApiSchema, r: httpx.Response) -> None:
    """The answer's status, media type and body are what the document says (schemathesis'
    checks: a failure names the check and prints the answer)."""
    path = r.request.url.path
    operation = checked.find_operation_by_path(r.request.method, path)
    assert operation is not None, f"{r.request.method} {path} is not documented"
    found = re.fullmatch(re.sub(r"\{([^}]+)\}", r"(?P<\1>[^/]+)", operation.path), path)
    assert found is not None, (operation.path, path)
    case = operation.Case(path_parameters=found.groupdict())
    case.validate_response(r, checks=CHECKS)


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
            if method == "post" and path in BODIES:
                assert "415" in codes and op["requestBody"]["content"]["application/json"]
            formats = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            if "format" in formats:  # format=html: a page, documented as such
                assert "text/html" in op["responses"]["200"]["content"], (method, path)
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")) and path != "/health/ready":
                    assert list(response["content"]) == [PROBLEM], (method, path, code)
                for media, content in response.get("content", {}).items():
                    if media.endswith("json"):  # every answer has a schema, examples fit it
                        assert content["schema"], (method, path, code, "no schema")
                    for example in content.get("examples", {}).values():
                        _validate(document, content["schema"], example["value"])
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
    srv: Server, document: dict[str, Any], checked: OpenApiSchema, application_lines: list[bytes]
) -> None:
    with srv.client("admin") as admin:
        decided = []
        for line in application_lines[:12]:
            r = admin.post("/decide", content=line)
            conforms(checked, r)
            decided.append(r.json())
        r = admin.post("/decide?explain=true", content=application_lines[12])
        conforms(checked, r)
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
            conforms(checked, r)
        made = admin.post("/keys", json={"name": "conformance-k", "role": "decider"})
        assert made.status_code == 201
        conforms(checked, made)
        conforms(checked, admin.post("/keys/conformance-k/revoke"))
        # errors, each one documented and a problem
        bad = admin.post("/decide", content=b'{"age": "x"}')
        body = problem(document, bad, 422)
        assert "$.age" in {e["field"] for e in body["errors"]}
        conforms(checked, bad)
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
            conforms(checked, r)
    with srv.anonymous() as anon:
        for r in (anon.get("/health/live"), anon.get("/health/ready"), anon.get("/metrics")):
            conforms(checked, r)
        r = anon.get("/decisions")
        problem(document, r, 401)
        conforms(checked, r)
    with srv.client("decider") as decider:
        r = decider.get("/audit/verify")
        problem(document, r, 403)
        conforms(checked, r)


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


def _url(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "nothing-here", template)


def test_every_refusal_is_documented(
    srv: Server, document: dict[str, Any], checked: OpenApiSchema
) -> None:
    """Every operation called by each role but admin, and with no key: each answer conforms;
    every secured operation refuses some role (403) and everyone without a key (401)."""
    operations = [(m.upper(), p) for p, item in document["paths"].items() for m in item]
    secured = {
        (m.upper(), p)
        for p, item in document["paths"].items()
        for m, op in item.items()
        if "security" in op
    }
    refused = set()
    for role in ("decider", "analyst", "auditor"):
        with srv.client(role) as c:
            for method, path in operations:
                if (method, path, role) == ("GET", "/audit/verify", "auditor"):
                    continue  # admitted: a walk of the whole log (test_real_answers_conform)
                r = c.request(method, _url(path), content=b"{}")
                conforms(checked, r)
                if r.status_code == 403:
                    refused.add((method, path))
    assert refused == secured
    with srv.anonymous() as anon:
        for method, path in operations:
            r = anon.request(method, _url(path))
            conforms(checked, r)
            assert (r.status_code == 401) == ((method, path) in secured), (method, path)


def test_late_routes_and_pages_conform(
    srv: Server, document: dict[str, Any], checked: OpenApiSchema, application_lines: list[bytes]
) -> None:
    """Batch, models, drift, notices, challenger reports: JSON, HTML and their errors."""
    with srv.client("admin") as admin:
        batch = b"[" + b",".join(application_lines[:12]) + b',{"age": "x"}]'
        r = admin.post("/decide/batch", content=batch)
        conforms(checked, r)
        assert r.status_code == 200 and [e["index"] for e in r.json()["errors"]] == [12]
        adverse = next(d for d in r.json()["decisions"] if d["outcome"] != "approve")
        notice = f"/decisions/{adverse['decision_id']}/notice"
        pages = []
        for r in (
            admin.get(notice),
            admin.get(notice, params={"format": "html"}),
            admin.get(notice, headers={"accept": "text/html"}),
            admin.get("/monitoring/drift"),
            admin.get("/monitoring/drift", params={"format": "html"}),
            admin.get("/challengers/tighter-pd/report"),
            admin.get("/challengers/tighter-pd/report", params={"format": "html"}),
            admin.get("/models"),
            admin.get("/rules"),
        ):
            assert r.status_code == 200, (r.request.url, r.text)
            conforms(checked, r)
            pages.append(r.headers["content-type"].split(";")[0])
        assert pages.count("text/html") == 4
        for r, status in (
            (admin.post("/decide/batch", content=b"[]"), 422),
            (admin.post("/decide/batch", content=b"{"), 422),
            (admin.post("/decide/batch", content=batch, headers={"idempotency-key": "a b"}), 400),
            (admin.post("/decide/batch", content=b"[]", headers={"content-type": "text/csv"}), 415),
            (admin.get(notice, params={"format": "pdf"}), 400),
            (admin.get(notice, params={"lender": "nobody"}), 400),
            (admin.get("/monitoring/drift", params={"model_version": "9.9.9"}), 404),
            (admin.get("/monitoring/drift", params={"from": "yesterday"}), 400),
            (admin.get("/challengers/nobody/report"), 404),
            (admin.get("/challengers/tighter-pd/report", params={"format": "pdf"}), 400),
            (admin.post("/models/active", content=b"not json"), 400),
            (admin.post("/models/active", json={"action": "promote", "version": "9.9.9"}), 404),
            (admin.post("/models/active", json={"action": "rollback"}), 409),
        ):
            problem(document, r, status)
            conforms(checked, r)
