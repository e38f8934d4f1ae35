"""Cost of one challenger per decision, compiled engine (target ≤ 15 µs).

    uv run python benchmarks/challenger_bench.py            # 1,782 real applications × 5 rounds
    uv run python benchmarks/challenger_bench.py -n 500 --rounds 3

Two loops over the same real applications (benchmarks/data/applications.jsonl), in-process,
in the same run: the champion decision alone (``Deciding.decide``), and the champion decision
followed by the challenger step exactly as ``decide_and_record`` runs it (``_challenge``: the
sample check, the same facts through the challenger's compiled engine, the result row). The
difference per decision is the challenger's cost. Rounds alternate the two loops and the best
round of each is reported (`--stat median` for the median), so a noisy neighbour hurts both
alike. Not counted: the challenger row's
insert and MAC on the audit writer thread (off the request's CPU path, in the same commit).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from decision_service.deciding import Ask
from decision_service.pipeline import RuleFacts, evaluate_rules
from decision_service.scoring import application_type
from decision_service.service import bootstrap
from decision_service.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
TARGET_US = 15.0


def service(tmp: Path, with_challenger: bool):
    rules = tmp / ("with" if with_challenger else "without")
    rules.mkdir()
    policy = (ROOT / "rules" / "risk_appetite.yaml").read_text()
    (rules / "risk_appetite.yaml").write_text(policy)
    if with_challenger:
        (rules / "challenger.yaml").write_text(
            policy.replace("ruleset: risk-appetite", "ruleset: tighter-pd\nrole: challenger")
            .replace("records and pd > 0.30", "records and pd > 0.25")
            .replace("records and not pd > 0.30", "records and not pd > 0.25")
        )
    return bootstrap(
        load_settings(
            environ={},
            models_dir=ROOT / "models",
            rules_dir=rules,
            database_url=f"sqlite:///{tmp / (rules.name + '.db')}",
            rules_watch=False,
            log_decisions=False,
            rules_engine="compiled",
            audit_key_file=tmp / "audit.key",
        )
    )


def rules_only(svc, asks: list[Ask], pds: list[float]) -> float:
    """Seconds for the challenger's rule evaluation alone (the engine: the floor of its cost),
    as the challenger runs it: without the trace (its row keeps rule ids)."""
    engine = svc.rules.challengers()[0].engine
    t0 = time.perf_counter()
    for one, pd in zip(asks, pds, strict=True):
        evaluate_rules(one.app, pd, engine, trace=False)
    return time.perf_counter() - t0


def rules_on_seen(svc, asks: list[Ask], pds: list[float]) -> float:
    """Seconds for the same, as `_challenge` runs it after the champion: on the facts the
    champion's rules saw (pipeline.RuleFacts: not normalised again)."""
    engine, champion = svc.rules.challengers()[0].engine, svc.rules.active().engine
    seens = [RuleFacts() for _ in asks]
    for one, pd, seen in zip(asks, pds, seens, strict=True):
        evaluate_rules(one.app, pd, champion, trace=False, seen=seen)
    t0 = time.perf_counter()
    for one, pd, seen in zip(asks, pds, seens, strict=True):
        evaluate_rules(one.app, pd, engine, trace=False, seen=seen)
    return time.perf_counter() - t0


def loop(svc, asks: list[Ask], challenge: bool) -> float:
    """Seconds for one pass: decide each application (and run the challenger step)."""
    deciding = svc.deciding
    t0 = time.perf_counter()
    if challenge:
        for one in asks:
            deciding._challenge(one, deciding._decide(one))
    else:
        for one in asks:
            deciding._decide(one)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=0, help="applications (default: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stat", choices=["min", "median"], default="min", help="per round")
    args = parser.parse_args()
    lines = (ROOT / "benchmarks/data/applications.jsonl").read_bytes().splitlines()
    lines = lines[: args.n] if args.n else lines
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        plain, shadowed = service(tmp, False), service(tmp, True)
        decode = msgspec.json.Decoder(application_type(plain.scorer.card)).decode
        asks = [Ask(decode(x), x) for x in lines]
        rows = shadowed.deciding._challenge(asks[0], shadowed.deciding._decide(asks[0]))
        assert len(rows) == 1 and rows[0]["error"] is None, rows  # the challenger really runs
        loop(plain, asks, False), loop(shadowed, asks, True)  # warm-up
        pds = [plain.deciding._decide(one).pd for one in asks]
        base, with_ch, engine_only, engine_seen = [], [], [], []
        for _ in range(args.rounds):
            base.append(loop(plain, asks, False))
            with_ch.append(loop(shadowed, asks, True))
            engine_only.append(rules_only(shadowed, asks, pds))
            engine_seen.append(rules_on_seen(shadowed, asks, pds))
        n = len(asks)
        # the best round of each: on a shared machine the least disturbed pass is the cost
        pick = min if args.stat == "min" else statistics.median
        b_us = pick(base) / n * 1e6
        c_us = pick(with_ch) / n * 1e6
        cost = c_us - b_us
        e_us = pick(engine_only) / n * 1e6
        print(f"applications: {n}, rounds: {args.rounds} ({args.stat}), engine: compiled")
        print(f"champion alone:            {b_us:8.1f} µs/decision")
        print(f"champion + 1 challenger:   {c_us:8.1f} µs/decision  ({c_us / b_us:.2f}×)")
        print(f"one challenger costs:      {cost:8.1f} µs/decision  (target ≤ {TARGET_US:g} µs)")
        print(f"  of which its rules:      {e_us:8.1f} µs/decision  (the engine on the same facts)")
        print(f"  of which the step:       {cost - e_us:8.1f} µs/decision  (sample, row, guards)")
        s_us = pick(engine_seen) / n * 1e6
        print(f"  (its rules as _challenge runs them, on the champion's facts: {s_us:.1f} µs)")
        print("met" if cost <= TARGET_US else "missed")
        for svc in (plain, shadowed):
            svc.rules.close()


if __name__ == "__main__":
    main()
