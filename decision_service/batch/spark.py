"""Batch and backtest on Spark: the same vectorized pipeline on every partition (`mapInArrow`).

The model text, its card and the ruleset text are broadcast once; each executor's Python
worker builds the pipeline once (cached by the broadcast's digest, checked against the card's
sha256) and reuses it for every partition it runs. Input and output are Parquet. A run writes
one dataset partitioned by `status`: `status=decided` (the decision columns, as the local
engine writes them) and `status=invalid` (application_id and /decide's error messages) — one
pass over the data. Run it on a cluster with `--master`/`SPARK_MASTER` (docs/batch.md).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from decision_service.batch.io import arrow_chunk
from decision_service.batch.pipeline import OUTPUT_SCHEMA, BatchPipeline
from decision_service.decision import OUTCOMES

SPARK_SCHEMA = (
    "decision_id string, application_id string, outcome string, approved_amount double, "
    "pd double, risk_band string, reasons array<struct<code:string,source:string,text:string,"
    "contribution:double>>, rules_fired array<string>, model_version string, "
    "ruleset_version string, decided_at string, status string, errors string"
)
OUT_SCHEMA = OUTPUT_SCHEMA.append(pa.field("status", pa.string())).append(
    pa.field("errors", pa.string())
)


class Shipped(msgspec.Struct, frozen=True):
    """Everything an executor needs to rebuild the pipeline: texts, not objects."""

    model_text: str
    card: dict[str, Any]
    ruleset_text: str
    ruleset_file: str
    refs: dict[str, Any]
    explain: bool
    reasons: bool = True


def ship(pipeline: BatchPipeline, ruleset_text: str, *, reasons: bool = True) -> bytes:
    scorer = pipeline.scorer
    return msgspec.msgpack.encode(
        Shipped(
            model_text=scorer.booster.model_to_string(),
            card=msgspec.to_builtins(scorer.card),
            ruleset_text=ruleset_text,
            ruleset_file=pipeline.ruleset.file,
            refs=msgspec.to_builtins(pipeline.refs),
            explain=pipeline.explain,
            reasons=reasons,
        )
    )


_BUILT: dict[str, tuple[BatchPipeline, type, bool]] = {}


def built(payload: bytes) -> tuple[BatchPipeline, type, bool]:
    """The pipeline for this payload, built once per Python worker process."""
    key = hashlib.sha256(payload).hexdigest()
    if key not in _BUILT:
        import lightgbm as lgb

        from decision_service.pipeline import Versions
        from decision_service.rules.language import load_ruleset_from_text
        from decision_service.scoring import ModelCard, Scorer, application_type
        from decision_service.service import card_schema

        shipped = msgspec.msgpack.decode(payload, type=Shipped)
        card = msgspec.convert(shipped.card, ModelCard)
        # model_to_string() round-trips the model, but not byte for byte: verify its
        # predictions instead of its sha256 (the driver checked the file's).
        scorer = Scorer(card, lgb.Booster(model_str=shipped.model_text))
        ruleset = load_ruleset_from_text(
            shipped.ruleset_text, shipped.ruleset_file, card_schema(card)
        )
        refs = msgspec.convert(shipped.refs, Versions)
        pipeline = BatchPipeline(scorer, ruleset, refs, explain=shipped.explain)
        _BUILT[key] = (pipeline, application_type(card), shipped.reasons)
    return _BUILT[key]


def decide_batches(payload: bytes, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """One partition: decide every Arrow batch; invalid rows come out with their errors."""
    import uuid_utils

    from decision_service.deciding import utc_now

    pipeline, app_type, reasons = built(payload)
    specs = pipeline.scorer.card.request_fields  # rules may read fields the model does not
    encode = msgspec.json.Encoder().encode
    for batch in batches:
        chunk = arrow_chunk(batch, app_type, specs, 1)
        result = pipeline.decide(chunk.apps, reasons=reasons)
        ids = [str(uuid_utils.uuid7()) for _ in range(result.n)]
        table = result.to_arrow(ids, utc_now())
        table = table.append_column("status", pa.array(["decided"] * result.n, pa.string()))
        table = table.append_column("errors", pa.nulls(result.n, pa.string()))
        yield from table.to_batches()
        if chunk.errors:
            k = len(chunk.errors)
            columns = {name: pa.nulls(k, OUT_SCHEMA.field(name).type) for name in OUT_SCHEMA.names}
            columns["application_id"] = pa.array([e[1] for e in chunk.errors], pa.string())
            columns["status"] = pa.array(["invalid"] * k, pa.string())
            columns["errors"] = pa.array([encode(e[2]).decode() for e in chunk.errors])
            yield from pa.table(columns, schema=OUT_SCHEMA).to_batches()


def session(master: str | None = None, app_name: str = "decision-service") -> Any:
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master or os.environ.get("SPARK_MASTER", "local[2]"))
        .appName(app_name)
        .config("spark.pyspark.python", os.environ.get("PYSPARK_PYTHON", sys.executable))
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "50000")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
    )
    return builder.getOrCreate()


def decide_frame(spark: Any, frame: Any, payload: bytes) -> Any:
    shipped = spark.sparkContext.broadcast(payload)  # sent to each executor once

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return decide_batches(shipped.value, batches)

    return frame.mapInArrow(run, SPARK_SCHEMA)


def run_spark_batch(
    settings: Any, source: Path, output: Path, *, rules: Path | None = None, spark: Any = None
) -> Any:
    from pyspark.sql import functions as F

    from decision_service.batch.runner import Summary, load_pipeline

    loaded = load_pipeline(settings, rules)
    spark = spark or session()
    start = time.perf_counter()
    frame = spark.read.parquet(str(source))
    cores = spark.sparkContext.defaultParallelism
    if frame.rdd.getNumPartitions() < cores:  # a single large file: use every core
        frame = frame.repartition(cores)
    decided = decide_frame(spark, frame, ship(loaded.pipeline, loaded.ruleset_text))
    decided.write.mode("overwrite").partitionBy("status").parquet(str(output))
    counts = (
        spark.read.parquet(str(output))
        .groupBy("status", "outcome")
        .agg(F.count("*").alias("n"))
        .collect()
    )
    summary = Summary(output=str(output), errors_file=str(output / "status=invalid"))
    for row in counts:
        if row["status"] == "invalid":
            summary.invalid += row["n"]
        else:
            summary.outcomes[row["outcome"]] += row["n"]
            summary.decided += row["n"]
    summary.rows = summary.decided + summary.invalid
    summary.seconds = time.perf_counter() - start
    return summary


def spark_redecide(settings: Any, candidate: Any, loaded: Any, spark: Any = None) -> Any:
    """The backtest's re-decision on Spark. Each application goes out with its row number as
    its id (ids decide nothing), so the candidate's results come back in the baseline's order."""
    from decision_service.backtest.compare import Candidate

    pipeline = candidate.pipeline
    spark = spark or session()
    table = loaded.apps.to_arrow(pipeline.scorer.card.request_fields)
    table = table.set_column(0, "application_id", pa.array(np.arange(loaded.apps.n).astype(str)))
    frame = spark.createDataFrame(table)  # Arrow in and out: no pandas on the way
    payload = ship(pipeline, candidate.ruleset_text, reasons=False)
    out = decide_frame(spark, frame, payload).toArrow()
    n = loaded.apps.n
    rows = pc.cast(out.column("application_id"), pa.int64()).to_numpy()
    outcome = np.zeros(n, np.int8)
    approved, pd = np.full(n, np.nan), np.zeros(n)
    band = np.full(n, None, dtype=object)
    codes = pc.index_in(out.column("outcome"), value_set=pa.array(OUTCOMES))
    outcome[rows] = codes.to_numpy()
    approved[rows] = out.column("approved_amount").to_numpy()
    pd[rows] = out.column("pd").to_numpy()
    band[rows] = out.column("risk_band").to_numpy(zero_copy_only=False)
    fired = {r.id: np.zeros(n, bool) for r in pipeline.ruleset.rules}
    for i, ids in zip(rows, out.column("rules_fired").to_pylist(), strict=True):
        for rid in ids:
            fired[rid][i] = True
    return Candidate(outcome, approved, pd, band, fired)
