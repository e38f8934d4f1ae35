"""Where a decision's CPU goes, measured in-process by calling the service's own code.

Nothing here re-implements the service: the service is built by its composition root
(``bootstrap``), the stages are the pipeline's own per-stage timings (``timings_us`` filled by
``pipeline.decide`` through ``Deciding.decide``), and the full handler is ``Decider.respond`` —
the function behind both /decide routes — with its audit commit on a real store, driven by 64
concurrent callers. What the server spends on top of ``Decider.respond`` is HTTP, the gate
(authentication, rate limit) and the framework.

Runs as a child process pinned like the server:

    python -m benchmarks.harness.stages --out FILE [--n 3000] [--pg URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness.common import APPLICATIONS, ENGINES, ROOT

REPEATS = 5


def per_item_us(fn: Callable[[Any], Any], items: Sequence[Any]) -> float:
    """Median over REPEATS passes of the mean µs per item."""
    passes = []
    for _ in range(REPEATS):
        t0 = time.perf_counter_ns()
        for x in items:
            fn(x)
        passes.append((time.perf_counter_ns() - t0) / len(items) / 1000)
    return statistics.median(passes)


def pipeline_stages(deciding: Any, apps: Sequence[Any]) -> dict[str, float]:
    """The pipeline's own stage timings (µs, mean per application) and the total."""
    sums: dict[str, int] = {}
    for app in apps:
        t: dict[str, int] = {}
        deciding.decide(app, timings_us=t)
        for k, v in t.items():
            sums[k] = sums.get(k, 0) + v
    out = {k: v / len(apps) for k, v in sums.items()}
    out["total"] = per_item_us(deciding.decide, apps)
    return out


async def respond_cpu(decider: Any, bodies: Sequence[bytes], n: int) -> dict:
    """Decider.respond (decode → decide → commit → encode), 64 concurrent callers: CPU of all
    threads per request (the audit writer's included), wall per request, the mean batch."""
    todo = iter(range(n))
    statuses: dict[int, int] = {}

    async def client() -> None:
        for i in todo:
            status, _body, _headers = await decider.respond(bodies[i % len(bodies)], b"", [])
            statuses[status] = statuses.get(status, 0) + 1

    store = decider.service.store
    c0, w0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(64)))
    c1, w1 = time.process_time(), time.perf_counter()
    stats = store.stats
    return {
        "cpu_us": (c1 - c0) / n * 1e6,
        "wall_us": (w1 - w0) / n * 1e6,
        "mean_batch": stats.records / max(stats.batches, 1),
        "statuses": statuses,
    }


def build(engine: str, url: str, work: Path) -> Any:
    from decision_service.service import bootstrap
    from decision_service.settings import load_settings

    settings = load_settings(
        environ={
            "DECISION_RULES_ENGINE": engine,
            "DECISION_RULES_WATCH": "false",
            "DATABASE_URL": url,
            "DECISION_LOG_DECISIONS": os.environ.get("BENCH_LOG_DECISIONS", "true"),
        }
    )
    return bootstrap(settings)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=3000, help="requests through Decider.respond")
    p.add_argument("--pg", help="PostgreSQL URL for the respond phase (optional)")
    args = p.parse_args()

    from decision_service.api.decide import Decider
    from decision_service.api.metrics import Metrics
    from decision_service.observability import configure_logging
    from decision_service.scoring import application_type
    from decision_service.scoring.application import ApplicationDecoder

    res: dict[str, Any] = {"errors": {}}
    bodies = [x for x in APPLICATIONS.read_bytes().splitlines() if x.strip()]
    res["applications"] = len(bodies)
    work = Path(tempfile.mkdtemp(prefix="stages-"))
    shutil.copytree(ROOT / "rules", work / "rules")
    (work / "models").symlink_to(ROOT / "models")
    (work / "notices").symlink_to(ROOT / "notices")  # the lenders' notice texts
    os.chdir(work)

    async def go() -> None:
        first = True
        targets = [(e, "SQLite", f"sqlite:///{work}/{e}.db") for e in ENGINES]
        if args.pg:
            targets.append(("durable_rules", "PostgreSQL", args.pg))
        for engine, backend, url in targets:
            name = f"{engine}/{backend}"
            try:
                service = build(engine, url, work)
                if first:
                    configure_logging(service.settings)  # stdout is /dev/null in this child
                await service.start()
                gc.collect()
                gc.freeze()
                if backend == "SQLite":
                    decode = ApplicationDecoder(application_type(service.scorer.card))
                    apps = [decode(b) for b in bodies]
                    if first:
                        res["decode"] = per_item_us(decode, bodies)
                        first = False
                    res[f"pipeline/{engine}"] = pipeline_stages(service.deciding, apps)
                decider = Decider(service, Metrics())
                res[f"respond/{name}"] = await respond_cpu(decider, bodies, args.n)
                await service.stop()
                with contextlib.suppress(Exception):
                    service.store.engine.dispose()
            except Exception as exc:
                res["errors"][name] = f"{type(exc).__name__}: {exc}"

    asyncio.run(go())
    shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
