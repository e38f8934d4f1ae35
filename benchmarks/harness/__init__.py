"""Benchmark harness of the decision service (issue 14): one entry point, a module per phase.

    uv run --all-groups python -m benchmarks.harness            # full run → benchmarks/RESULTS.md
    uv run --all-groups python -m benchmarks.harness --quick    # < 2 min smoke test (CI)

| module | phase |
| --- | --- |
| servers, stores | server processes (pinned, CPU from /proc, RSS) and their stores |
| wrk | closed-loop load (wrk + benchmarks/decide.lua) |
| core | the run's state; one measured load phase (64 and 8 connections, lost decisions) |
| latency, openloop | target 3: open-loop constant-arrival-rate latency at 70% of peak |
| mlserver | target 4's peer: MLServer in its own venv, same model, V2 bodies |
| reasons | target 5: exact reason codes vs LightGBM's pred_contrib |
| storage | target 6: bytes per decision on disk |
| coldstart | target 7: CLI and `serve` start-up CPU |
| soak | target 8 (opt-in `--soak N`): RSS over N decisions |
| stages | per-stage CPU through the service's own code (Deciding, Decider.respond) |
| commits | targets 2 and 4: the audit store's writer CPU per commit, and its COMMIT, by batch |
| agreement | textbook vs service outputs |
| profile | py-spy profile of /decide under load |
| plan, targets, report | order of the run, met/missed, RESULTS.md |
| why | each missed target explained from the run's own numbers |

No service code is copied here: every measurement runs the service itself (as a server, or its
own functions in a pinned child).
"""
