"""The run's state and the one measured-load primitive every server phase uses.

A load phase starts a server, warms it up, measures it with wrk at 64 and at 8 connections
(server CPU per request from /proc, event-loop vs other threads, PostgreSQL backends), runs the
phase's extras on the same server, stops it, and checks every decision id answered 200 against
the store (lost decisions).
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness.common import (
    APPLICATIONS,
    ROOT,
    PhaseError,
    free_port,
    log,
    placement,
)
from benchmarks.harness.servers import Server, audit_counters
from benchmarks.harness.stores import Store, Stores, pids_cpu
from benchmarks.harness.wrk import Wrk, WrkResult, read_ids


@dataclass
class Settings:
    quick: bool
    duration: float
    warmup: float
    connections: int
    low_connections: int
    rounds: int
    latency_seconds: float
    sample: int  # applications compared textbook vs decide (0 = all)
    soak: int  # decisions in the RSS soak (0 = not run)
    profile: bool
    mlserver: bool
    mlserver_venv: Path | None
    postgres: str | None
    log_decisions: bool
    output: Path | None
    command: str


@dataclass
class Measure:
    """One measured load run against one server."""

    round: int
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    cpu_us: float  # server process tree CPU per request
    loop_cpu_us: float  # of which the worker's main thread (event loop)
    other_cpu_us: float  # of which the worker's other threads (the audit writer, ...)
    db_cpu_us: float | None  # PostgreSQL backends' CPU per request (our database only)
    requests: int
    non_2xx: int
    socket_errors: int
    batch: float | None = None  # decisions per audit commit in the window (/metrics)
    commit_ms: float | None = None  # mean time to write and commit one audit batch

    @property
    def full_cpu_us(self) -> float:
        """The server's CPU per request plus its PostgreSQL backends' (the whole decision)."""
        return self.cpu_us + (self.db_cpu_us or 0.0)


@dataclass
class PhaseResult:
    key: str  # bare | decide/<engine>/<store> | textbook | mlserver
    title: str
    runs: list[Measure] = field(default_factory=list)
    ok_responses: int = 0
    records: int | None = None  # rows in the store
    lost: int | None = None
    error: str | None = None
    ready_cpu_s: list[float] = field(default_factory=list)  # server start → ready, CPU

    def at(self, connections: int) -> list[Measure]:
        return [m for m in self.runs if m.connections == connections]

    def median(self, attr: str, connections: int) -> float:
        vals = [getattr(m, attr) for m in self.at(connections) if getattr(m, attr) is not None]
        return statistics.median(vals) if vals else math.nan

    def by_round(self, attr: str, connections: int) -> dict[int, float]:
        return {m.round: getattr(m, attr) for m in self.at(connections)}


class Harness:
    def __init__(self, cfg: Settings, tmp: Path) -> None:
        self.cfg, self.tmp = cfg, tmp
        self.place = placement()
        self.wrk = Wrk(self.place.client, tmp)
        self.stores = Stores(tmp, cfg.postgres)
        self.results: dict[str, PhaseResult] = {}
        self.failures: list[str] = []
        self.extras: dict[str, Any] = {}  # phase outputs by name (latency, storage, ...)
        self.round = 0
        self._stores: dict[str, Store] = {}
        self._ids_files: dict[str, list[Path | None]] = {}
        self._extra_ids: dict[str, set[str]] = {}
        self.load_at_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        # The service runs in `tmp` on its defaults (models/, rules/): a stable copy of the rules
        # for the whole run, the repo's models.
        shutil.copytree(ROOT / "rules", tmp / "rules")
        (tmp / "models").symlink_to(ROOT / "models")
        (tmp / "notices").symlink_to(ROOT / "notices")  # the lenders' notice texts
        self.lines = [x for x in APPLICATIONS.read_bytes().splitlines() if x.strip()]

    def fail(self, title: str, exc: BaseException | str) -> str:
        if isinstance(exc, str):
            detail = exc
        elif isinstance(exc, PhaseError):
            detail = str(exc)
        else:
            detail = traceback.format_exc()
        self.failures.append(f"{title}: {detail}")
        log(f"{title}: FAILED: {detail}")
        return (str(exc) or type(exc).__name__).splitlines()[0] if exc else title

    def store_for(self, key: str, backend: str) -> Store:
        """One store per phase for the whole run (rounds append to it)."""
        if key not in self._stores:
            name = key.replace("/", "-").lower()
            self._stores[key] = (
                self.stores.sqlite(name) if backend == "SQLite" else self.stores.postgres(name)
            )
        return self._stores[key]

    def phase_store(self, key: str) -> Store | None:
        return self._stores.get(key)

    def port(self) -> int:
        return free_port()

    def add_ids(self, key: str, ids: set[str] | None = None, file: Path | None = None) -> None:
        if ids:
            self._extra_ids.setdefault(key, set()).update(ids)
        if file is not None:
            self._ids_files.setdefault(key, []).append(file)

    # -- one measured load run -----------------------------------------------------------------

    def measure(
        self, server: Server, store: Store | None, connections: int, ids: bool, **wrk: Any
    ) -> tuple[Measure, WrkResult]:
        db_pids = store.backend_pids() if store is not None and store.pg_name else []
        db_before = pids_cpu(db_pids)
        audit0 = audit_counters(server.port) if store is not None else None
        before, (main0, other0) = server.cpu_seconds(), server.thread_cpu_seconds()
        w = self.wrk.run(server.port, self.cfg.duration, connections, collect_ids=ids, **wrk)
        after, (main1, other1) = server.cpu_seconds(), server.thread_cpu_seconds()
        db_after = pids_cpu(db_pids)
        audit1 = audit_counters(server.port) if audit0 is not None else None
        n = max(w.requests, 1)
        batch = commit_ms = None
        if audit0 is not None and audit1 is not None:  # how the group commit behaved
            commits = audit1["audit_batch_records_count"] - audit0["audit_batch_records_count"]
            if commits > 0:
                records = audit1["audit_batch_records_sum"] - audit0["audit_batch_records_sum"]
                took = audit1["audit_commit_seconds_sum"] - audit0["audit_commit_seconds_sum"]
                batch, commit_ms = records / commits, took / commits * 1000
        m = Measure(
            round=self.round,
            connections=connections,
            rps=w.rps,
            p50_ms=w.latency_us["p50"] / 1000,
            p99_ms=w.latency_us["p99"] / 1000,
            p999_ms=w.latency_us["p99_9"] / 1000,
            cpu_us=(after - before) / n * 1e6,
            loop_cpu_us=(main1 - main0) / n * 1e6,
            other_cpu_us=(other1 - other0) / n * 1e6,
            db_cpu_us=(db_after - db_before) / n * 1e6 if db_pids else None,
            requests=w.requests,
            non_2xx=w.non_2xx,
            socket_errors=w.socket_errors,
            batch=batch,
            commit_ms=commit_ms,
        )
        return m, w

    def load_phase(
        self,
        key: str,
        title: str,
        make: Callable[[int], tuple[Server, Store | None]],
        *,
        ids: bool,
        extra: Callable[[Server, Store | None, PhaseResult], None] | None = None,
        **wrk: Any,
    ) -> None:
        """Start the server, warm it up, measure at 64 and 8 connections, (extra), stop it;
        count what the store kept."""
        cfg = self.cfg
        result = self.results.setdefault(key, PhaseResult(key, title))
        server: Server | None = None
        store: Store | None = None
        try:
            server, store = make(self.port())
            server.start()
            if server.ready_cpu_s is not None:
                result.ready_cpu_s.append(server.ready_cpu_s)
            log(
                f"{title}: ready in {server.ready_wall_s:.1f}s, {server.ready_cpu_s:.2f}s CPU "
                f"(port {server.port})"
            )
            if cfg.warmup > 0:
                w = self.wrk.run(server.port, cfg.warmup, cfg.connections, collect_ids=ids, **wrk)
                self.add_ids(key, file=w.ids_file)
            for conns in (cfg.connections, cfg.low_connections):
                m, w = self.measure(server, store, conns, ids, **wrk)
                self.add_ids(key, file=w.ids_file)
                result.runs.append(m)
                log(
                    f"{title} c={conns}: {m.rps:,.0f} req/s, p50 {m.p50_ms:.2f} ms, "
                    f"p99 {m.p99_ms:.2f} ms, {m.cpu_us:.0f} µs CPU/req"
                    + (f" (+{m.db_cpu_us:.0f} µs PostgreSQL)" if m.db_cpu_us is not None else "")
                    + f", errors {m.non_2xx + m.socket_errors}"
                )
            if extra is not None:
                extra(server, store, result)
        except Exception as exc:  # a phase that cannot run is reported; the others still run
            result.error = self.fail(title, exc)
        finally:
            if server is not None:
                server.stop()
        if ids and store is not None and result.error is None:
            self.count(result, store)

    def count(self, result: PhaseResult, store: Store) -> None:
        received = read_ids(self._ids_files.get(result.key, []))
        received |= self._extra_ids.get(result.key, set())
        try:
            stored = store.decision_ids()
        except Exception as exc:
            result.error = self.fail(result.title, f"could not read the store: {exc}")
            return
        result.records = len(stored)
        result.lost = len(received - stored)
        result.ok_responses = len(received)
        log(
            f"{result.title}: {len(received):,} decisions answered 200, {len(stored):,} records "
            f"in the store, lost {result.lost}"
        )

    def total_lost(self) -> int:
        return sum(p.lost or 0 for p in self.results.values())
