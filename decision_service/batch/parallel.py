"""Several worker processes for a large Parquet/CSV batch (no --audit, not JSONL out).

Each worker builds the pipeline once from the same texts Spark ships (`spark.ship`/`built`),
validates and decides the raw Arrow batches it is sent, and returns Arrow tables; the parent
reads, writes and counts, in input order, with a bounded number of chunks in flight (flat
memory), and decides the first batches itself while the workers start. Workers are spawned,
not forked: LightGBM's OpenMP runtime does not survive a fork.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Iterator
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


def decide_arrow(
    pipeline: Any, app_type: type, batch: pa.RecordBatch, first_line: int
) -> tuple[pa.Table, list, int, np.ndarray]:
    """One raw batch: validated, decided, as (decisions table, errors, rows read, counts)."""
    import uuid_utils

    from decision_service.deciding import utc_now

    chunk = arrow_chunk(batch, app_type, pipeline.scorer.card.request_fields, first_line)
    result = pipeline.decide(chunk.apps)
    ids = [str(uuid_utils.uuid7()) for _ in range(result.n)]
    counts = np.bincount(result.outcome_codes, minlength=3)
    errors = [
        (line, ident, [(e.field, e.message) for e in errs]) for line, ident, errs in chunk.errors
    ]
    return result.to_arrow(ids, utc_now()), errors, chunk.size, counts


def _decide(batch: pa.RecordBatch, first_line: int) -> tuple[pa.Table, list, int, np.ndarray]:
    from decision_service.batch.spark import built

    assert _PAYLOAD is not None
    pipeline, app_type, _ = built(_PAYLOAD)
    return decide_arrow(pipeline, app_type, batch, first_line)


def _ready() -> None:
    """A no-op: done once a worker has started and built its pipeline."""


def decide_in_workers(
    payload: bytes,
    batches: Iterator[tuple[pa.RecordBatch, int]],
    workers: int,
    local: Callable[[pa.RecordBatch, int], tuple[pa.Table, list, int, np.ndarray]] | None = None,
) -> Iterator[tuple[pa.Table, list, int, np.ndarray]]:
    """Results in input order; at most 2 chunks per worker in flight. Until the workers have
    started (seconds: imports, the model's tables), the batches are decided here by `local`,
    so a small file never waits for them (without `local`, every batch goes to a worker)."""
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, context, initializer=_init, initargs=(payload,))
    # Spawning blocks until a child has imported its modules (the payload fills the pipe):
    # a thread starts them, and this one decides meanwhile.
    started: list[Future[Any]] = []

    def start_workers() -> None:
        # A short run can end (and the interpreter begin its shutdown, which closes every
        # pool to new work) while workers are still being started: then there is nothing
        # left for them to do, and no traceback to print.
        with contextlib.suppress(RuntimeError):
            for _ in range(workers):
                started.append(pool.submit(_ready))

    starter = threading.Thread(target=start_workers, daemon=True)
    starter.start()
    used = False
    try:
        pending: deque[Future[Any]] = deque()
        for batch, start in batches:
            starting = starter.is_alive() or not all(f.done() for f in started)
            if local is not None and not used and starting:
                yield local(batch, start)
                continue
            used = True
            pending.append(pool.submit(_decide, batch, start))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        if used:
            pool.shutdown(wait=True, cancel_futures=True)
        else:  # workers still starting: they stop once started, without holding the run up

            def stop() -> None:
                starter.join()
                pool.shutdown(cancel_futures=True)

            threading.Thread(target=stop).start()
