"""An operator points the service at an OTLP collector (here a real receiver in the test) and
reads its JSON logs: each request is one SERVER span with HTTP semantic-convention attributes
and its stages inside it; the log stream holds log lines only — a start-up line naming model,
ruleset and database, one line per rejected request without personal data, a short reload
line."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from decision_service.observability import configure_tracing
from decision_service.settings import load_settings
from decision_service.startup import database_label
from tests.conftest import APPLICATIONS
from tests.e2e.conftest import start_server
from tests.telemetry.otlp_receiver import Receiver, Span, otlp_receiver

STAGES = ["validate", "score", "rules", "explain", "audit"]
SECRET_NAME = "Zebulon-Quaxley"  # a value only the rejected body holds


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Receiver, dict, Path]]:
    """A real served run: one decision, one rejected application, one reload; then stopped
    (which flushes the spans to the receiver)."""
    tmp = tmp_path_factory.mktemp("traced")
    with otlp_receiver() as receiver:
        srv = start_server(
            tmp,
            f"sqlite:///{tmp / 'd.db'}",
            extra_env={
                "DECISION_OTEL_EXPORTER": "otlp",
                "DECISION_OTEL_ENDPOINT": receiver.endpoint,
            },
        )
        seen: dict = {}
        try:
            line = APPLICATIONS.read_bytes().splitlines()[0]
            with srv.client() as c:
                seen["decision"] = c.post("/decide", content=line).json()
                bad = json.loads(line) | {"age": 3, "income": "lots", "name": SECRET_NAME}
                r = c.post("/decide", json=bad)
                assert r.status_code == 422
                seen["rejected"] = r.json()
                assert c.post("/rules/reload").status_code == 200
                seen["rules"] = c.get("/rules").json()
        finally:
            srv.stop()
        yield receiver, seen, srv.log


def _children(spans: list[Span], root: Span) -> list[Span]:
    return sorted((s for s in spans if s.parent_span_id == root.span_id), key=lambda s: s.start)


def test_a_decision_is_one_server_span_with_its_stages_inside(served) -> None:
    receiver, seen, _ = served
    spans = receiver.trace(seen["decision"]["trace_id"])
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1
    root = roots[0]
    assert root.name == "POST /decide" and root.kind == ProtoSpan.SPAN_KIND_SERVER
    assert root.resource["service.name"] == "decision-service"
    assert root.attributes["http.request.method"] == "POST"
    assert root.attributes["http.route"] == "/decide"
    assert root.attributes["url.path"] == "/decide"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["decision.id"] == seen["decision"]["decision_id"]
    assert root.status_code != Status.STATUS_CODE_ERROR
    children = _children(spans, root)
    assert [s.name for s in children] == STAGES
    assert len(spans) == 1 + len(STAGES)
    for child in children:  # inside the request, in order, never before it
        assert root.start <= child.start <= child.end <= root.end
    for before, after in itertools.pairwise(children):
        assert before.end <= after.start


def test_a_rejected_request_is_a_span_and_one_log_line_without_personal_data(served) -> None:
    receiver, seen, log = served
    rejected = [s for s in receiver.spans if s.attributes.get("http.response.status_code") == 422]
    assert len(rejected) == 1
    span = rejected[0]
    assert span.kind == ProtoSpan.SPAN_KIND_SERVER and span.name == "POST /decide"
    assert span.status_code != Status.STATUS_CODE_ERROR  # a client's mistake, not the server's
    lines = [json.loads(x) for x in log.read_text().splitlines() if '"request_rejected"' in x]
    assert len(lines) == 1
    line = lines[0]
    fields = sorted(e["field"] for e in seen["rejected"]["errors"])
    assert line["path"] == "/decide" and line["status"] == 422
    assert line["problem"] == "invalid-application"
    assert line["error_count"] == len(fields) and sorted(line["fields"]) == fields
    assert line["trace_id"] == span.trace_id
    assert SECRET_NAME not in log.read_text()  # the body never reaches the log


def test_the_log_stream_holds_log_lines_only(served) -> None:
    _, seen, log = served
    records = []
    for raw in log.read_text().splitlines():
        if raw.startswith("decision-service: "):
            continue  # serve's start-up notes (stderr, merged into this file by the fixture)
        records.append(json.loads(raw))  # every other line is one JSON log record
    assert records and all("event" in r and "level" in r for r in records)
    assert not [r for r in records if "span_id" in r or "context" in r]

    started = [r for r in records if r["event"] == "started"]
    assert len(started) == 1
    rules = seen["rules"]
    decision = seen["decision"]
    assert started[0]["model_version"] == decision["trace"]["model"]["version"]
    assert started[0]["ruleset"] == rules["name"]
    assert started[0]["ruleset_version"] == rules["version"]
    assert started[0]["ruleset_sha256"] == rules["sha256"]
    assert started[0]["rule_count"] == len(rules["rules"])
    assert started[0]["database"].startswith("sqlite:///")

    reloaded = [r for r in records if r["event"] == "rules_reloaded"]
    assert len(reloaded) == 1
    assert reloaded[0]["source"] == "http" and reloaded[0]["rule_count"] == len(rules["rules"])
    assert reloaded[0]["ruleset_sha256"] == rules["sha256"]
    raw_line = next(x for x in log.read_text().splitlines() if '"rules_reloaded"' in x)
    assert all(r["when"] not in raw_line for r in rules["rules"])  # never the rules' text


def test_the_database_is_named_without_its_password() -> None:
    label = database_label("postgresql+psycopg://ops:s3cret-pw@db.internal:5432/decisions")
    assert "s3cret-pw" not in label and "db.internal:5432/decisions" in label


def test_console_spans_go_to_stderr_one_line_each(capfd) -> None:
    settings = load_settings(None, otel_exporter="console")
    provider = configure_tracing(settings)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("outer"):
        tracer.start_span("inner").end()
    provider.shutdown()
    out, err = capfd.readouterr()
    assert out == ""  # stdout is the JSON log stream
    spans = [json.loads(x) for x in err.splitlines()]
    assert sorted(s["name"] for s in spans) == ["inner", "outer"]
