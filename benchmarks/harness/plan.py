"""The order of a run: interleaved rounds of the load phases, then the in-process phases."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.harness import agreement, coldstart, latency, mlserver, profile, soak, storage
from benchmarks.harness.common import ENGINES, PhaseError, child_python, clean_env, log
from benchmarks.harness.core import Harness, PhaseResult
from benchmarks.harness.servers import Server, bare_server, decide_server, textbook_server
from benchmarks.harness.stores import Store

DEFAULT = "decide/durable_rules/SQLite"


def run(h: Harness) -> None:
    cfg = h.cfg
    configs = [(e, "SQLite") for e in ENGINES]
    if cfg.postgres:
        configs += [(e, "PostgreSQL") for e in ENGINES]
    ml = _mlserver_setup(h) if cfg.mlserver else None
    for rnd in range(cfg.rounds):
        h.round = rnd
        log(f"round {rnd + 1}/{cfg.rounds}")
        h.load_phase("bare", "bare Litestar", lambda port: (_bare(h, port), None), ids=False)
        for engine, backend in configs:
            key = f"decide/{engine}/{backend}"
            h.load_phase(
                key,
                f"decide · {engine} · {backend}",
                _decide_maker(h, engine, backend, key),
                ids=True,
                extra=_decide_extra(h, key) if rnd == 0 and backend == "SQLite" else None,
            )
        h.load_phase(
            "textbook",
            "textbook FastAPI",
            _textbook_maker(h),
            ids=True,
            extra=_textbook_extra(h) if rnd == 0 else None,
        )
        if ml is not None:
            exe, bodies = ml
            h.load_phase(
                "mlserver",
                "MLServer predict only",
                lambda port, exe=exe: (mlserver.server(exe, port, h.place.server, h.tmp), None),
                ids=False,
                path=mlserver.PATH,
                bodies=bodies,
            )
    _storage(h)
    coldstart.run(h, quick=cfg.quick)
    _child(h, "reasons", ["--rows", "300" if cfg.quick else "0"], "reasons")
    _child(h, "stages", _stages_args(h), "stages")
    _child(h, "commits", ["--n", "800" if cfg.quick else "4000"], "commits")
    if cfg.profile:
        profile.run(h)
    if cfg.soak:
        soak.run(h, cfg.soak)


def _bare(h: Harness, port: int) -> Server:
    return bare_server(port, h.place.server, h.tmp)


def _decide_maker(h: Harness, engine: str, backend: str, key: str) -> Any:
    def make(port: int) -> tuple[Server, Store | None]:
        store = h.store_for(key, backend)
        server = decide_server(port, h.place.server, h.tmp, engine, store.url, h.cfg.log_decisions)
        return server, store

    return make


def _textbook_maker(h: Harness) -> Any:
    def make(port: int) -> tuple[Server, Store | None]:
        store = h.store_for("textbook", "SQLite")
        return textbook_server(port, h.place.server, h.tmp, store.url), store

    return make


def _sample(h: Harness) -> list[bytes]:
    n = h.cfg.sample
    if n <= 0 or n >= len(h.lines):
        return list(h.lines)
    step = len(h.lines) / n
    return [h.lines[int(i * step)] for i in range(n)]


def _decide_extra(h: Harness, key: str) -> Any:
    def extra(server: Server, store: Store | None, result: PhaseResult) -> None:
        if key == DEFAULT:  # the outputs the textbook is compared with
            answers = agreement.post_all(server.port, _sample(h))
            h.add_ids(key, {a["decision_id"] for a in answers.values() if a.get("decision_id")})
            h.extras["decide_samples"] = answers
        latency.latency_extra(h, server, key, result.median("rps", h.cfg.connections))

    return extra


def _textbook_extra(h: Harness) -> Any:
    def extra(server: Server, store: Store | None, result: PhaseResult) -> None:
        answers = agreement.post_all(server.port, _sample(h))
        h.add_ids("textbook", {a["decision_id"] for a in answers.values()})
        a = agreement.compare(h.extras.get("decide_samples", {}), answers)
        h.extras["agreement"] = a
        log(
            f"textbook vs decide on {a['n']} applications: outcome {a['outcome']}/{a['n']}, "
            f"risk_band {a['risk_band']}/{a['n']}, approved_amount {a['approved_amount']}/"
            f"{a['n']}, reason codes {a['reasons']}/{a['n']}"
        )

    return extra


def _mlserver_setup(h: Harness) -> tuple[Path, Path] | None:
    try:
        exe = mlserver.ensure_venv(h.cfg.mlserver_venv or mlserver.default_venv())
        return exe, mlserver.v2_bodies(h.tmp / "v2-bodies.jsonl")
    except Exception as exc:
        h.results["mlserver"] = PhaseResult("mlserver", "MLServer predict only")
        h.results["mlserver"].error = h.fail("MLServer", exc)
        return None


def _storage(h: Harness) -> None:
    out: dict[str, Any] = {}
    for key in (DEFAULT, "decide/durable_rules/PostgreSQL"):
        store = h.phase_store(key)
        if store is None:
            continue
        try:
            out[store.label] = storage.measure(store)
            per = out[store.label]["per_decision"]
            log(f"storage {store.label}: {per:,.0f} bytes per decision" if per else "storage: -")
        except Exception as exc:
            h.fail(f"storage ({store.label})", exc)
    h.extras["storage"] = out


def _stages_args(h: Harness) -> list[str]:
    args = ["--n", "600" if h.cfg.quick else "3000"]
    if h.cfg.postgres and not h.cfg.quick:
        try:
            args += ["--pg", h.stores.postgres("stages").url]
        except PhaseError as exc:
            log(f"stages: no PostgreSQL ({exc})")
    return args


def _child(h: Harness, module: str, args: list[str], name: str) -> None:
    """Run an in-process measurement in a child pinned like the server; JSON out."""
    out = h.tmp / f"{name}.json"
    env = clean_env() | {"BENCH_LOG_DECISIONS": "true" if h.cfg.log_decisions else "false"}
    log(f"{name} (in-process, pinned)")
    try:
        proc = subprocess.run(
            [*h.place.server, *child_python(module), "--out", str(out), *args],
            cwd=h.tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=600,
            check=False,
        )
    except subprocess.TimeoutExpired:
        h.fail(name, "timed out")
        return
    if proc.returncode != 0 or not out.exists():
        h.fail(name, f"exit {proc.returncode}: {proc.stderr[-2000:]}")
        return
    h.extras[name] = json.loads(out.read_text())
