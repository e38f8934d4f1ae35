"""Closed-loop load: wrk with benchmarks/decide.lua (status counts, decision ids, percentiles)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness.common import APPLICATIONS, HOST, LUA, PhaseError
from benchmarks.harness.servers import AUTH_KEYS


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    statuses: dict[int, int]
    errors: dict[str, int]
    latency_us: dict[str, float]
    ids_file: Path | None

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok(self) -> int:
        return sum(n for code, n in self.statuses.items() if 200 <= code < 300)

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 300)

    @property
    def socket_errors(self) -> int:
        e = self.errors
        return e["connect"] + e["read"] + e["write"] + e["timeout"]


class Wrk:
    def __init__(self, prefix: list[str], tmp: Path) -> None:
        self.prefix, self.tmp = prefix, tmp
        self._n = 0

    def argv(self, port: int, seconds: float, connections: int, path: str, bodies: Path) -> list:
        return [
            *self.prefix,
            *("wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout=5s"),
            *("-s", str(LUA), f"http://{HOST}:{port}{path}", "--", str(bodies)),
        ]

    def env(self, port: int, ids_file: Path | None) -> dict[str, str]:
        env = dict(os.environ)
        if port in AUTH_KEYS:
            env["WRK_AUTH"] = f"Bearer {AUTH_KEYS[port]}"
        env["WRK_IDS_OUT"] = str(ids_file) if ids_file else ""
        return env

    def run(
        self,
        port: int,
        seconds: float,
        connections: int,
        *,
        collect_ids: bool = False,
        path: str = "/decide",
        bodies: Path = APPLICATIONS,
    ) -> WrkResult:
        self._n += 1
        ids_file = self.tmp / f"ids-{self._n}.txt" if collect_ids else None
        argv = self.argv(port, seconds, connections, path, bodies)
        try:
            out = subprocess.run(
                argv,
                env=self.env(port, ids_file),
                capture_output=True,
                text=True,
                timeout=seconds + 60,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PhaseError(f"wrk did not finish: {exc}") from exc
        return parse(out.returncode, out.stdout, out.stderr, ids_file)


def parse(returncode: int, stdout: str, stderr: str, ids_file: Path | None) -> WrkResult:
    line = next((x for x in stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if returncode != 0 or line is None:
        raise PhaseError(f"wrk failed ({returncode}): {stdout[-800:]}{stderr}")
    data = json.loads(line.removeprefix("WRK_RESULT "))
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        statuses={int(k): v for k, v in data["statuses"].items()},
        errors=data["errors"],
        latency_us=data["latency_us"],
        ids_file=ids_file,
    )


def read_ids(files: Iterable[Path | None]) -> set[str]:
    ids: set[str] = set()
    for f in files:
        if f is not None and f.exists():
            ids.update(x for x in f.read_text().split("\n") if x)
    return ids
