"""Target 4's peer: Seldon MLServer with its LightGBM runtime, predict only, one process.

Installed by the harness into its OWN virtual environment from PyPI (pinned below; uv), so
nothing of it enters the project's environment. It serves the same model file as the service;
the V2 request bodies are built with the service's own feature encoder (``Scorer.features``),
one application per request. It is driven by the same wrk script as /decide.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.harness.common import APPLICATIONS, MODEL_DIR, PhaseError, free_port, log
from benchmarks.harness.servers import Server

PINS = ("mlserver==1.7.1", "mlserver-lightgbm==1.7.1")
MODEL = "underwriting"
PATH = f"/v2/models/{MODEL}/infer"


def default_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "decision-service-bench" / ("-".join(p.replace("==", "-") for p in PINS))


def ensure_venv(venv: Path) -> Path:
    """The MLServer environment (created once, then reused): its `mlserver` executable."""
    exe = venv / "bin" / "mlserver"
    if exe.exists():
        return exe
    uv = shutil.which("uv")
    if uv is None:
        raise PhaseError("uv not found: needed to install MLServer into its own environment")
    log(f"MLServer: installing {' '.join(PINS)} into {venv} (once)")
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    for argv in (
        [uv, "venv", "-q", "--python", py, str(venv)],
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *PINS],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise PhaseError(f"MLServer install failed: {proc.stderr[-1500:]}")
    return exe


def v2_bodies(out: Path) -> Path:
    """One V2 inference body per application, features encoded by the service's own encoder."""
    import msgspec

    from decision_service.scoring import Scorer, application_type

    scorer = Scorer.load(MODEL_DIR)
    decode = msgspec.json.Decoder(application_type(scorer.card)).decode
    lines = [x for x in APPLICATIONS.read_bytes().splitlines() if x.strip()]
    with out.open("w") as f:
        for line in lines:
            row = scorer.features(decode(line))
            body = {
                "inputs": [
                    {
                        "name": "features",
                        "shape": [1, len(row)],
                        "datatype": "FP64",
                        "data": [None if math.isnan(x) else x for x in row],
                    }
                ]
            }
            f.write(json.dumps(body, separators=(",", ":")) + "\n")
    return out


def server(exe: Path, port: int, prefix: list[str], tmp: Path) -> Server:
    repo = tmp / f"mlserver-{port}"
    (repo / MODEL).mkdir(parents=True, exist_ok=True)
    settings = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,  # inference in the server process: one process, like ours
        "debug": False,
    }
    (repo / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": MODEL,
        "implementation": "mlserver_lightgbm.LightGBMModel",
        "parameters": {"uri": str(MODEL_DIR / "model.txt"), "version": "1.0.0"},
    }
    (repo / MODEL / "model-settings.json").write_text(json.dumps(model))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return Server(
        "MLServer",
        [str(exe), "start", str(repo)],
        env=env,
        cwd=repo,
        port=port,
        prefix=prefix,
        log_path=tmp / f"mlserver-{port}.log",
        ready_path=f"/v2/models/{MODEL}/ready",
        path=PATH,
    )
