"""`audit export --format parquet`: the same records as the JSONL export, same filters."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from decision_service.cli import main
from tests.conftest import APPLICATIONS, ROOT


def test_parquet_export_matches_jsonl(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DECISION_MODELS_DIR", str(ROOT / "models"))
    monkeypatch.setenv("DECISION_RULES_DIR", str(ROOT / "rules"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/audit.db")
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(APPLICATIONS.read_bytes().splitlines()[:120]) + b"\n")
    assert main(["batch", str(source), "-o", str(tmp_path / "o.parquet"), "--audit"]) == 0
    for outcome in ("refer", None):
        flt = ["--outcome", outcome] if outcome else []
        out = tmp_path / f"export-{outcome}.parquet"
        assert main(["audit", "export", "--format", "parquet", "--output", str(out), *flt]) == 0
        capsys.readouterr()
        assert main(["audit", "export", "--format", "jsonl", *flt]) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        rows = pq.read_table(out).to_pylist()
        assert len(rows) == len(lines) > 0
        for row, line in zip(rows, lines, strict=True):
            assert row["decision_id"] == line["decision_id"]
            assert json.loads(row["request_json"]) == line["request"]
            assert json.loads(row["decision_json"]) == line["decision"]
            assert row["rules_fired"] == [f["id"] for f in line["decision"]["trace"]["rules_fired"]]
            assert row["outcome"] == line["decision"]["outcome"]
            if outcome:
                assert row["outcome"] == outcome
