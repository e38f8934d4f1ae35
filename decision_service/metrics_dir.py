"""The directory where the workers of one `serve` share their Prometheus samples.

prometheus_client decides at import time whether it writes samples to memory-mapped files
(multiprocess mode), from PROMETHEUS_MULTIPROC_DIR. So `serve` sets the variable before any
worker starts (uvicorn spawns fresh interpreters, which inherit it) and, because files left by
an earlier run would be summed into this one, to a directory made for this run and removed
after it. Nothing here imports prometheus_client: the parent must not choose its mode early.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    """The shared directory, if this process runs as one of several workers."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


@contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """A fresh directory for this run's workers, named in the environment; removed after."""
    path = Path(tempfile.mkdtemp(prefix="decision-service-metrics-"))
    before = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
        shutil.rmtree(path, ignore_errors=True)


def worker_exited() -> None:
    """A worker stops: its live gauges (model_active, ruleset_active) leave the aggregate."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())
