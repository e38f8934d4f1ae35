"""A loan system posts its queue as one batch: valid applications are decided and recorded in
one commit, invalid ones come back with their index and field paths, a retried batch returns
the same decisions — against the real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import msgspec
import sqlalchemy as sa

from decision_service.audit.testing import stored_texts
from decision_service.scoring import application_type
from tests.e2e.conftest import Server

N = 100


def _rows(server: Server, ids: list[str]) -> dict[str, tuple[str, str]]:
    engine = sa.create_engine(server.database_url)
    try:
        stored = stored_texts(engine)  # request and decision, unpacked from ``record``
    finally:
        engine.dispose()
    wanted = set(ids)
    return {k: v for k, v in stored.items() if k in wanted}


def _batch(lines: list[bytes], invalid_at: dict[int, bytes]) -> tuple[bytes, list[bytes]]:
    """A JSON array of the lines, spaced like a real client's, with invalid items spliced in."""
    items = list(lines)
    for index, item in sorted(invalid_at.items()):
        items.insert(index, item)
    return b"[\n  " + b",\n  ".join(items) + b"\n]", items


def test_a_batch_is_decided_and_recorded_item_by_item(
    server: Server, application_lines: list[bytes], scorer
) -> None:
    lines = application_lines[500 : 500 + N]
    bad = {
        3: b'{"application_id": "BAD-1", "age": 5}',
        50: b'"not an object"',
        101: b'{"application_id": "BAD-2", "age": 46, "age": 47}',
    }
    body, items = _batch(lines, bad)
    with server.client("decider") as c:
        r = c.post("/decide/batch", content=body)
    assert r.status_code == 200, r.text[:500]
    answer = r.json()
    assert [e["index"] for e in answer["errors"]] == sorted(bad)
    assert any(e["field"] == "$.age" for e in answer["errors"][0]["errors"])
    decisions = answer["decisions"]
    assert len(decisions) == N
    app_type = application_type(scorer.card)
    valid = [item for i, item in enumerate(items) if i not in bad]
    for sent, decision in zip(valid, decisions, strict=True):  # in order, real scores
        app = msgspec.json.decode(sent, type=app_type)
        assert decision["application_id"] == app.application_id
        assert decision["pd"] == scorer.predict(scorer.features(app))
    stored = _rows(server, [d["decision_id"] for d in decisions])
    assert len(stored) == N  # every valid item recorded, no invalid one
    for sent, decision in zip(valid, decisions, strict=True):
        request_json, decision_json = stored[decision["decision_id"]]
        assert request_json.encode() == sent  # the item's own bytes, as if sent to /decide
        assert json.loads(decision_json) == decision
    with server.client("auditor") as c:
        replayed = c.post(f"/decisions/{decisions[0]['decision_id']}/replay").json()
    assert replayed["identical"] is True


def test_a_retried_batch_is_answered_with_the_same_decisions(
    server: Server, application_lines: list[bytes]
) -> None:
    body, _ = _batch(application_lines[700:710], {})
    headers = {"idempotency-key": "batch-retry-1"}
    with server.client("decider") as c:
        first = c.post("/decide/batch", content=body, headers=headers)
        again = c.post("/decide/batch", content=body, headers=headers)
        other = c.post("/decide/batch", content=body.replace(b"\n", b" "), headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("idempotency-replayed") == "true"
    assert again.json() == first.json()
    assert other.status_code == 422  # the same key with another body
    ids = [d["decision_id"] for d in first.json()["decisions"]]
    assert len(_rows(server, ids)) == 10


def test_batches_that_are_not_batches_are_refused(server: Server) -> None:
    one = b'{"application_id": "A"}'
    cases = {
        b"{}": 422,  # an object, not an array
        b"[]": 422,  # nothing to decide
        b"[" + b",".join([one] * 1001) + b"]": 422,  # over DECISION_BATCH_MAX
        b"[1, 2": 422,  # malformed
        b"\xff[]": 422,  # not UTF-8
    }
    with server.client("decider") as c:
        for body, status in cases.items():
            r = c.post("/decide/batch", content=body)
            assert r.status_code == status, (body[:40], r.text[:200])
            assert "Traceback" not in r.text
        big = b"[" + b" " * (4 * 1024 * 1024 + 1) + b"]"
        assert c.post("/decide/batch", content=big).status_code == 413
        assert (
            c.post(
                "/decide/batch", content=b"[]", headers={"content-type": "text/plain"}
            ).status_code
            == 415
        )
    with server.client("auditor") as c:
        assert c.post("/decide/batch", content=b"[]").status_code == 403
