"""Audit store throughput: group commit vs one commit per append, on SQLite and PostgreSQL;
and the writer thread's cost per record of the chain hash: plain sha256 (before the audit key)
vs HMAC-SHA256 under the key (now).

    uv run python benchmarks/audit_bench.py                     # both backends, all variants
    uv run python benchmarks/audit_bench.py --backend sqlite -n 20000 -c 64
    uv run python benchmarks/audit_bench.py --hash-only         # µs per record of the hash
    uv run python benchmarks/audit_bench.py --storage -n 5000   # bytes on disk per decision

Closed loop like a load test: ``-c`` clients each append (and wait for the commit of) one
decision after another. "single" is the same writer with ``max_batch=1``: one transaction per
decision, i.e. what a synchronous commit per request gives.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from decision_service.audit import AuditStore, Keyring, verify
from decision_service.audit.chain import GENESIS, record_hash, record_mac
from decision_service.audit.encoding import pack, unpack
from decision_service.audit.records import record_columns
from decision_service.audit.testing import sample_decision, sample_request

KEYRING = Keyring.generate()  # in memory: the benchmark leaves no key file behind

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


async def run(url: str, n: int, clients: int, max_batch: int, synchronous: str) -> dict:
    store = AuditStore.open(
        url,
        max_batch=max_batch,
        sqlite_synchronous=synchronous,  # type: ignore[arg-type]
        keyring=KEYRING,
    )
    await store.start()
    request = sample_request()
    latencies: list[float] = []
    per_client = n // clients

    async def client() -> None:
        for _ in range(per_client):
            decision = sample_decision(rules=["DTI-REFER"])
            t0 = time.perf_counter()
            await store.append(request, decision)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    stats = store.stats
    await store.close()
    latencies.sort()
    return {
        "appends/s": round(len(latencies) / elapsed),
        "p50 ms": round(statistics.median(latencies) * 1000, 2),
        "p99 ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "transactions": stats.batches,
        "mean batch": round(stats.records / max(stats.batches, 1), 1),
    }


def hash_cost(n: int = 20000, rounds: int = 15) -> dict[str, float]:
    """Median µs per record of what the writer thread computes per record for the chain."""
    rows = []
    for _ in range(200):
        columns, _rules = record_columns(
            sample_request(), sample_decision(outcome="decline", rules=["DTI-REFER"]), "bench"
        )
        rows.append(columns | {"chain_id": "c" * 32, "key_id": KEYRING.current_id})

    def plain() -> None:
        prev = GENESIS
        for i in range(n):
            prev = record_hash("c" * 32, i + 1, prev, rows[i % 200])

    def keyed() -> None:
        prev = GENESIS
        for i in range(n):
            prev = record_mac(KEYRING, "c" * 32, i + 1, prev, rows[i % 200])

    # alternate the two in every round: on a shared, noisy machine only same-round ratios hold
    plain_us: list[float] = []
    keyed_us: list[float] = []
    for _ in range(rounds):
        for fn, times in ((plain, plain_us), (keyed, keyed_us)):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) / n * 1e6)
    ratios = [k / p for p, k in zip(plain_us, keyed_us, strict=True)]
    texts = [(r["request_json"], r["decision_json"]) for r in rows]
    packed = [r["record"] for r in rows]
    pack_us, unpack_us = [], []
    for _ in range(rounds):  # what storing a record packed costs, next to its MAC
        t0 = time.perf_counter()
        for i in range(n // 10):
            pack(*texts[i % 200])
        pack_us.append((time.perf_counter() - t0) / (n // 10) * 1e6)
        t0 = time.perf_counter()
        for i in range(n // 10):
            unpack(packed[i % 200])
        unpack_us.append((time.perf_counter() - t0) / (n // 10) * 1e6)
    return {
        "plain sha256 (before)": round(statistics.median(plain_us), 2),
        "HMAC-SHA256 (now)": round(statistics.median(keyed_us), 2),
        "ratio now/before": round(statistics.median(ratios), 3),
        "pack (encoding.py)": round(statistics.median(pack_us), 2),
        "unpack (encoding.py)": round(statistics.median(unpack_us), 2),
    }


def storage(n: int, clients: int, backend: str) -> None:
    """Target 6 as the harness measures it (benchmarks/harness/storage.py), on a store filled
    by the real handler (``Decider.respond``, durable_rules) with the benchmark applications."""
    import os
    import shutil

    from benchmarks.harness import storage as measure
    from benchmarks.harness.common import APPLICATIONS, ROOT
    from benchmarks.harness.stages import build
    from benchmarks.harness.stores import Store
    from decision_service.api.decide import Decider
    from decision_service.api.metrics import Metrics

    os.environ.setdefault("BENCH_LOG_DECISIONS", "false")  # the decision log is not measured
    bodies = [x for x in APPLICATIONS.read_bytes().splitlines() if x.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "rules", work / "rules")
        for name in ("models", "notices"):
            (work / name).symlink_to(ROOT / name)
        os.chdir(work)
        targets = []
        if backend in ("sqlite", "both"):
            targets.append(("SQLite", f"sqlite:///{work}/audit.db", None))
        if backend in ("postgres", "both"):
            name = pg_database()
            targets.append(("PostgreSQL", PG_URL.format(name=name), name))
        for label, url, pg_name in targets:
            try:

                async def fill(url: str = url) -> None:
                    service = build("durable_rules", url, work)
                    await service.start()
                    decider = Decider(service, Metrics())
                    todo = iter(range(n))

                    async def client() -> None:
                        for i in todo:
                            await decider.respond(bodies[i % len(bodies)], b"", [])

                    await asyncio.gather(*(client() for _ in range(clients)))
                    await service.stop()
                    service.store.engine.dispose()

                asyncio.run(fill())
                data = measure.measure(Store(label, url))
                per = {k: round(v / data["decisions"]) for k, v in data["parts"].items() if v}
                print(
                    f"{label}: {data['per_decision']:,.0f} B/decision "
                    f"({data['bytes']:,} B / {data['decisions']:,} decisions); parts: {per}"
                )
            finally:
                if pg_name is not None:
                    drop_pg(pg_name)


def sqlite_url(tmp: Path, label: str) -> str:
    return f"sqlite:///{tmp / label / 'audit.db'}"


def pg_database() -> str:
    name = f"audit_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("-n", type=int, default=5000, help="appends per variant")
    parser.add_argument("-c", type=int, default=64, help="concurrent clients")
    parser.add_argument("--hash-only", action="store_true", help="only the hash cost per record")
    parser.add_argument("--storage", action="store_true", help="only bytes per decision")
    args = parser.parse_args()
    if args.storage:
        storage(args.n, args.c, args.backend)
        return

    costs = hash_cost()
    print("chain hash per record (µs, median of 15 alternating runs of 20000):")
    for label, us in costs.items():
        print(f"  {label:24} {us}")
    if args.hash_only:
        return

    variants = []
    if args.backend in ("sqlite", "both"):
        variants += [
            ("sqlite", "group", 1000, "FULL"),
            ("sqlite", "group", 1000, "NORMAL"),
            ("sqlite", "single", 1, "FULL"),
            ("sqlite", "single", 1, "NORMAL"),
        ]
    if args.backend in ("postgres", "both"):
        variants += [("postgres", "group", 1000, "FULL"), ("postgres", "single", 1, "FULL")]

    print(f"{args.n} appends, {args.c} concurrent clients")
    with tempfile.TemporaryDirectory() as tmp:
        for backend, mode, max_batch, sync in variants:
            label = f"{backend}-{mode}-{sync}"
            if backend == "sqlite":
                url = sqlite_url(Path(tmp), label)
                result = asyncio.run(run(url, args.n, args.c, max_batch, sync))
                ok = verify(AuditStore.open(url, keyring=KEYRING).reader, KEYRING).ok
            else:
                name = pg_database()
                try:
                    url = PG_URL.format(name=name)
                    result = asyncio.run(run(url, args.n, args.c, max_batch, sync))
                    ok = verify(AuditStore.open(url, keyring=KEYRING).reader, KEYRING).ok
                finally:
                    drop_pg(name)
            shown = f"{backend:8} {mode:6} " + (
                f"sync={sync:6}" if backend == "sqlite" else " " * 11
            )
            print(shown, " ".join(f"{k}={v}" for k, v in result.items()), f"verified={ok}")


if __name__ == "__main__":
    main()
