"""`decision-service batch` on real applications: every format, invalid rows, --audit."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from decision_service.audit import AuditStore, iter_records, verify
from decision_service.cli import main
from decision_service.pipeline import decide, versions
from decision_service.rules.compiled import CompiledEngine
from decision_service.scoring import application_type
from tests.conftest import APPLICATIONS, ROOT

N = 400


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DECISION_MODELS_DIR", str(ROOT / "models"))
    monkeypatch.setenv("DECISION_RULES_DIR", str(ROOT / "rules"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/audit.db")
    monkeypatch.delenv("DECISION_CONFIG", raising=False)
    return tmp_path


def _lines() -> list[bytes]:
    return APPLICATIONS.read_bytes().splitlines()[:N]


BAD = [
    b'{"application_id":"BAD-1","age":12}',  # too young, and most fields missing
    b"not json",
    b'{"application_id":"BAD-3","age":30,"seniority":1,"records":false,"term":12,'
    b'"expenses":50,"amount":100,"price":200,"colour":"red"}',  # unknown field
]


def _input(tmp: Path) -> Path:
    lines = _lines()
    lines[10:10] = BAD[:2]
    lines.append(BAD[2])
    path = tmp / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _row_decisions(scorer, ruleset):
    engine = CompiledEngine(ruleset)
    refs = versions(scorer, engine, ruleset.sha256)
    decoder = msgspec.json.Decoder(application_type(scorer.card))
    return {
        d.application_id: d
        for d in (
            decide(
                decoder.decode(line),
                scorer,
                engine,
                refs,
                explain=False,
                decision_id="x",
                decided_at="t",
            )
            for line in _lines()
        )
    }


def test_jsonl_to_parquet_with_invalid_rows(env, pipeline, ruleset, capsys):
    source, out = _input(env), env / "out.parquet"
    assert main(["batch", str(source), "-o", str(out), "--summary", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == N + 3 and summary["decided"] == N and summary["invalid"] == 3
    errors = [json.loads(x) for x in Path(f"{out}.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [11, 12, N + 3]
    assert errors[0]["application_id"] == "BAD-1"
    assert {"field": "$.age", "message": "Expected `int` >= 16"} in errors[0]["errors"]
    assert errors[1]["errors"][0]["field"] == "$"
    assert {"field": "$.colour", "message": "unknown field"} in errors[2]["errors"]
    table = pq.read_table(out)
    assert table.num_rows == N
    expected = _row_decisions(pipeline.scorer, ruleset)
    for row in table.to_pylist():
        d = expected[row["application_id"]]
        assert (row["outcome"], row["pd"], row["approved_amount"], row["risk_band"]) == (
            d.outcome,
            d.pd,
            d.approved_amount,
            d.risk_band,
        )
        assert [r["code"] for r in row["reasons"]] == [r.code for r in d.reasons]
        assert row["rules_fired"] == [f.id for f in d.trace.rules_fired]
    # nothing recorded without --audit
    store = AuditStore.open(f"sqlite:///{env}/audit.db")
    assert list(iter_records(store.reader)) == []


def test_formats_agree_and_jsonl_is_the_decide_answer(env, pipeline, ruleset):
    source = _input(env)
    assert main(["batch", str(source), "-o", str(env / "a.jsonl"), "--chunk-rows", "97"]) == 0
    assert main(["batch", str(source), "-o", str(env / "a.parquet")]) == 0
    decisions = [json.loads(x) for x in (env / "a.jsonl").read_text().splitlines()]
    assert len(decisions) == N
    expected = _row_decisions(pipeline.scorer, ruleset)
    for d in decisions:
        row = msgspec.to_builtins(expected[d["application_id"]])
        for key in ("decision_id", "decided_at", "trace_id"):
            row.pop(key), d.pop(key)
        row["trace"].pop("timings_us"), d["trace"].pop("timings_us")
        row["trace"]["ruleset"]["engine"] = d["trace"]["ruleset"]["engine"]
        assert d == row
    # Parquet in, CSV out: the same outcomes as JSONL in
    pq.write_table(pq.read_table(env / "a.parquet").select(["application_id"]), env / "ids.parquet")
    apps = [msgspec.json.decode(x) for x in _lines()]
    pq.write_table(pa.Table.from_pylist(apps), env / "apps.parquet")
    assert main(["batch", str(env / "apps.parquet"), "-o", str(env / "b.csv")]) == 0
    rows = pcsv.read_csv(env / "b.csv").to_pylist()
    assert [(r["application_id"], r["outcome"]) for r in rows] == [
        (d["application_id"], d["outcome"]) for d in decisions
    ]
    assert rows[0]["rules_fired"] == ";".join(f["id"] for f in decisions[0]["trace"]["rules_fired"])


def test_csv_and_parquet_invalid_rows_are_reported(env):
    apps = [msgspec.json.decode(x) for x in _lines()[:50]]
    apps[3]["age"] = 200  # out of range
    apps[7]["home"] = "castle"  # not a category
    apps[9]["application_id"] = "bad id!"
    pq.write_table(pa.Table.from_pylist(apps), env / "apps.parquet")
    assert main(["batch", str(env / "apps.parquet"), "-o", str(env / "o.parquet")]) == 0
    errors = [json.loads(x) for x in (env / "o.parquet.errors.jsonl").read_text().splitlines()]
    assert [(e["line"], e["errors"][0]["field"]) for e in errors] == [
        (4, "$.age"),
        (8, "$.home"),
        (10, "$.application_id"),
    ]
    assert pq.read_table(env / "o.parquet").num_rows == 47
    csv = env / "apps.csv"
    pcsv.write_csv(pa.Table.from_pylist([msgspec.json.decode(x) for x in _lines()[:20]]), csv)
    lines = csv.read_text().splitlines()
    cells = lines[5].split(",")
    cells[1] = '"abc"'  # age
    lines[5] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    assert main(["batch", str(csv), "-o", str(env / "c.parquet")]) == 0
    errors = [json.loads(x) for x in (env / "c.parquet.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [6]
    assert pq.read_table(env / "c.parquet").num_rows == 19
    pq.write_table(pa.Table.from_pylist([{**apps[0], "colour": "red"}]), env / "u.parquet")
    assert main(["batch", str(env / "u.parquet"), "-o", str(env / "u.out.parquet")]) == 2


def test_audit_records_every_decision_as_decide_does(env):
    source = _input(env)
    assert main(["batch", str(source), "-o", str(env / "o.parquet"), "--audit"]) == 0
    store = AuditStore.open(f"sqlite:///{env}/audit.db")
    records = list(iter_records(store.reader))
    assert len(records) == N
    by_app = {r.application_id: r for r in records}
    for line in _lines():
        record = by_app[msgspec.json.decode(line)["application_id"]]
        assert record.request_json == line.decode()  # the exact request bytes
    decided = {r["decision_id"] for r in pq.read_table(env / "o.parquet").to_pylist()}
    assert decided == {r.decision_id for r in records}
    assert verify(store.reader).ok
    assert main(["audit", "replay", "--all"]) == 0  # every batch decision replays identically


def test_worker_processes_give_the_same_output(env):
    apps = [msgspec.json.decode(x) for x in _lines()]
    apps[20]["age"] = 3
    pq.write_table(pa.Table.from_pylist(apps), env / "apps.parquet")
    base = ["batch", str(env / "apps.parquet"), "--chunk-rows", "64"]
    assert main([*base, "-o", str(env / "one.parquet")]) == 0
    assert main([*base, "-o", str(env / "two.parquet"), "--workers", "2"]) == 0
    one, two = (
        pq.read_table(env / f"{k}.parquet").drop(["decision_id", "decided_at"]).to_pylist()
        for k in ("one", "two")
    )
    assert one == two and len(one) == N - 1
    assert (env / "one.parquet.errors.jsonl").read_text() == (
        env / "two.parquet.errors.jsonl"
    ).read_text()


def test_audit_store_down_is_a_clear_failure(env, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    out = env / "o.jsonl"
    assert main(["batch", str(_input(env)), "-o", str(out), "--audit"]) == 3
    assert "audit store unavailable" in capsys.readouterr().err  # stderr: stdout is data
    assert not out.exists() or out.read_bytes() == b""  # nothing decided leaves unrecorded
