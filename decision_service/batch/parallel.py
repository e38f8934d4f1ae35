"""Several worker processes for a large Parquet/CSV batch (no --audit, not JSONL out).

Each worker builds the pipeline once from the same texts Spark ships (`spark.ship`/`built`),
validates and decides the raw Arrow batches it is sent, and returns Arrow tables; the parent
reads, writes and counts, in input order, with a bounded number of chunks in flight (flat
memory). Workers are spawned, not forked: LightGBM's OpenMP runtime does not survive a fork.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from decision_service.batch.io import arrow_chunk

_PAYLOAD: bytes | None = None


def _init(payload: bytes) -> None:
    global _PAYLOAD
    from decision_service.batch.spark import built

    _PAYLOAD = payload
    built(payload)


def _decide(batch: pa.RecordBatch, first_line: int) -> tuple[pa.Table, list, int, np.ndarray]:
    import uuid_utils

    from decision_service.batch.spark import built
    from decision_service.deciding import utc_now

    assert _PAYLOAD is not None
    pipeline, app_type, _ = built(_PAYLOAD)
    chunk = arrow_chunk(batch, app_type, pipeline.scorer.card.request_fields, first_line)
    result = pipeline.decide(chunk.apps)
    ids = [str(uuid_utils.uuid7()) for _ in range(result.n)]
    counts = np.bincount(result.outcome_codes, minlength=3)
    errors = [
        (line, ident, [(e.field, e.message) for e in errs]) for line, ident, errs in chunk.errors
    ]
    return result.to_arrow(ids, utc_now()), errors, chunk.size, counts


def decide_in_workers(
    payload: bytes, batches: Iterator[tuple[pa.RecordBatch, int]], workers: int
) -> Iterator[tuple[pa.Table, list, int, np.ndarray]]:
    """Results in input order; at most 2 chunks per worker in flight."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, context, initializer=_init, initargs=(payload,)) as pool:
        pending: deque[Future[Any]] = deque()
        for batch, start in batches:
            pending.append(pool.submit(_decide, batch, start))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
