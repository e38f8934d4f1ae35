"""What one audit commit costs the writer thread, by batch size (targets 2 and 4 at 8
connections): the real ``AuditStore`` on SQLite, closed-loop clients appending real-sized
decisions, the writer thread's CPU per batch (``time.thread_time`` around its transaction) and,
inside it, the database's own COMMIT (``dialect.do_commit``: on SQLite the WAL frames and their
fsync, the durability every decision waits for). Runs as a child pinned like the server:

    python -m benchmarks.harness.commits --out FILE [--n N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

CLIENTS = (1, 8, 64)


def measure(url: str, clients: int, n: int) -> dict[str, float]:
    """The closed loop of benchmarks/audit_bench.py (the store's defaults: one commit per
    queue drain, synchronous=FULL), timed on the writer thread."""
    from sqlalchemy.engine.default import DefaultDialect

    from benchmarks.audit_bench import run
    from decision_service.audit import writer as writer_module

    batches: list[tuple[float, float, int]] = []  # (writer CPU, of which COMMIT, records)
    in_commit = [0.0]
    write_batch = writer_module.GroupCommitWriter._write_batch
    do_commit = DefaultDialect.do_commit

    def timed_batch(self: Any, batch: Any) -> None:  # the writer thread's CPU, one transaction
        t0, in_commit[0] = time.thread_time(), 0.0
        try:
            return write_batch(self, batch)
        finally:
            records = sum(len(p.records) for p in batch)
            batches.append((time.thread_time() - t0, in_commit[0], records))

    def timed_commit(self: Any, dbapi_connection: Any) -> None:
        t0 = time.thread_time()
        try:
            return do_commit(self, dbapi_connection)
        finally:
            in_commit[0] += time.thread_time() - t0

    DefaultDialect.do_commit = timed_commit  # type: ignore[method-assign]
    writer_module.GroupCommitWriter._write_batch = timed_batch  # type: ignore[method-assign]
    try:
        asyncio.run(run(url, n, clients, max_batch=1000, synchronous="FULL"))
    finally:
        DefaultDialect.do_commit = do_commit  # type: ignore[method-assign]
        writer_module.GroupCommitWriter._write_batch = write_batch  # type: ignore[method-assign]
    kept = batches[len(batches) // 10 :]  # past the start (first connection, first sets)
    cpu = sum(b[0] for b in kept)
    commit = sum(b[1] for b in kept)
    records = sum(b[2] for b in kept)
    return {
        "batch": records / len(kept),
        "cpu_per_batch_us": cpu / len(kept) * 1e6,
        "commit_per_batch_us": commit / len(kept) * 1e6,
        "cpu_per_record_us": cpu / records * 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=4000, help="appends per client count")
    args = p.parse_args()
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        for clients in CLIENTS:
            url = f"sqlite:///{Path(d) / f'c{clients}.db'}"
            out[str(clients)] = measure(url, clients, args.n if clients > 1 else args.n // 2)
    args.out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
