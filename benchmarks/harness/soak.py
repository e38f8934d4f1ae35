"""Target 8 (opt-in, ``--soak N``; never in CI): RSS of one worker over N decisions.

A fresh default-configuration server (durable_rules, SQLite) driven by bounded wrk chunks at
64 connections until N decisions were answered; the worker's RSS is sampled between chunks.
Growth is measured from the first sample (after warm-up allocations), not from idle.
"""

from __future__ import annotations

import time

from benchmarks.harness.common import log
from benchmarks.harness.core import Harness, Measure, PhaseResult
from benchmarks.harness.servers import decide_server

CHUNK_S = 15.0


def run(h: Harness, decisions: int) -> None:
    key, title = "soak", "soak · durable_rules · SQLite"
    result = h.results.setdefault(key, PhaseResult(key, title))
    store = h.stores.sqlite("soak")
    server = decide_server(
        h.port(), h.place.server, h.tmp, "durable_rules", store.url, h.cfg.log_decisions
    )
    samples: list[tuple[int, int]] = []
    t0 = time.monotonic()
    try:
        server.start()
        rss_idle = server.worker_rss()
        total = 0
        while total < decisions:
            w = h.wrk.run(server.port, CHUNK_S, h.cfg.connections, collect_ids=True)
            h.add_ids(key, file=w.ids_file)
            total += w.requests
            samples.append((total, server.worker_rss()))
            log(f"{title}: {total:,} decisions, RSS {samples[-1][1] / 2**20:.1f} MiB")
            if w.non_2xx or w.socket_errors:
                result.runs.append(
                    Measure(
                        0, 0, w.rps, 0, 0, 0, 0, 0, 0, None, w.requests, w.non_2xx, w.socket_errors
                    )
                )
        h.extras["soak"] = {
            "decisions": total,
            "seconds": time.monotonic() - t0,
            "rss_idle": rss_idle,
            "samples": samples,
        }
    except Exception as exc:
        result.error = h.fail(title, exc)
    finally:
        server.stop()
    if result.error is None:
        h.count(result, store)
