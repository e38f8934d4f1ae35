"""Spark (local[2]): the same pipeline per partition gives the local engine's outputs, for
batch (Parquet in, Parquet out) and for the backtest's re-decision. One session for the
module; small inputs (the JVM's start dominates)."""

from __future__ import annotations

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.backtest.compare import redecide
from decision_service.backtest.load import Loaded, load_file
from decision_service.batch.runner import load_pipeline
from decision_service.batch.spark import run_spark_batch, session, spark_redecide
from decision_service.cli import main
from decision_service.settings import load_settings
from tests.conftest import APPLICATIONS, ROOT

pytestmark = pytest.mark.slow  # ~1 minute: the JVM and Python workers start; CI runs it


@pytest.fixture(scope="module")
def spark():
    s = session("local[2]", "decision-service-tests")
    yield s
    s.stop()


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.setenv("DECISION_MODELS_DIR", str(ROOT / "models"))
    monkeypatch.setenv("DECISION_RULES_DIR", str(ROOT / "rules"))
    monkeypatch.delenv("DECISION_CONFIG", raising=False)
    return load_settings()


def _apps(n: int) -> list[dict]:
    return [msgspec.json.decode(x) for x in APPLICATIONS.read_bytes().splitlines()[:n]]


def test_spark_batch_equals_local(spark, settings, tmp_path):
    apps = _apps(300)
    apps[5]["age"] = 7  # invalid: both engines must set it aside
    source = tmp_path / "apps.parquet"
    pq.write_table(pa.Table.from_pylist(apps), source)
    assert main(["batch", str(source), "-o", str(tmp_path / "local.parquet")]) == 0
    summary = run_spark_batch(settings, source, tmp_path / "spark", spark=spark)
    assert summary.decided == 299 and summary.invalid == 1
    local = pq.read_table(tmp_path / "local.parquet").drop(["decision_id", "decided_at"])
    remote = pq.read_table(tmp_path / "spark" / "status=decided").drop(
        ["decision_id", "decided_at", "errors"]
    )
    key = [("application_id", "ascending")]
    assert (
        remote.select(local.column_names).sort_by(key).to_pylist() == local.sort_by(key).to_pylist()
    )
    invalid = pq.read_table(tmp_path / "spark" / "status=invalid").to_pylist()
    assert [r["application_id"] for r in invalid] == [apps[5]["application_id"]]
    assert '"$.age"' in invalid[0]["errors"]


def test_spark_backtest_redecision_equals_local(spark, settings, tmp_path):
    path = tmp_path / "apps.jsonl"
    path.write_bytes(b"\n".join(APPLICATIONS.read_bytes().splitlines()[:300]) + b"\n")
    candidate = load_pipeline(settings)
    loaded: Loaded = load_file(path, candidate.pipeline, candidate.app_type)
    local = redecide(candidate.pipeline, loaded)
    remote = spark_redecide(settings, candidate, loaded, spark=spark)
    assert np.array_equal(local.outcome, remote.outcome)
    assert np.array_equal(local.pd, remote.pd)
    assert np.array_equal(local.approved, remote.approved, equal_nan=True)
    assert local.risk_band.tolist() == remote.risk_band.tolist()
    assert all(np.array_equal(local.fired[k], remote.fired[k]) for k in local.fired)
