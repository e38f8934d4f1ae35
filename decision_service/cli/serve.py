"""`decision-service serve`: checks once, then uvicorn. Everything heavy is imported inside."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

# How every server of ours runs (the benchmark's bare baseline uses the same options):
# httptools with deadlines for incomplete requests (api/protocol.py).
UVICORN_OPTIONS: dict[str, object] = {
    "loop": "uvloop",
    "http": "decision_service.api.protocol:DeadlineHttpToolsProtocol",
    "access_log": False,
    "log_config": None,
}


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from decision_service import startup
    from decision_service.settings import load_settings

    settings = load_settings(args.config, host=args.host, port=args.port, workers=args.workers)
    # Model, rules and database are checked (and an empty database created) once, here,
    # before any worker starts: a mistake is one line, not a traceback per worker.
    notes = startup.check_all(settings)
    app: object = "decision_service.api.app:create_server_app"
    try:
        if settings.workers == 1:
            # One process: the app is built here from these very settings, nothing goes
            # through the environment.
            from decision_service.api.app import create_server_app

            app = create_server_app(settings)
        else:  # workers build their own; the rules are checked here once
            startup.check_rules_build(settings)
    except Exception as exc:
        raise startup.explain(exc, settings) from exc
    for note in notes:  # only once everything is known good
        print(f"decision-service: {note}", file=sys.stderr)
    if settings.workers > 1 and args.config is not None:
        # Spawned workers import the factory and read the same sources (environment, TOML)
        # themselves; only a config file named on the command line has to be handed on.
        os.environ["DECISION_CONFIG"] = str(args.config)
    with contextlib.ExitStack() as stack:
        if settings.workers > 1:  # one /metrics over every worker: a fresh directory per run
            from decision_service.metrics_dir import shared_metrics_dir

            stack.enter_context(shared_metrics_dir())
        uvicorn.run(
            app,  # type: ignore[arg-type]
            factory=isinstance(app, str),
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            timeout_graceful_shutdown=10,
            timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
            limit_concurrency=settings.max_concurrency,
            **UVICORN_OPTIONS,
        )
    return 0
