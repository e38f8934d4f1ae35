"""Open-loop load at a constant arrival rate, latency measured from each SCHEDULED send time.

wrk is closed-loop: a connection sends its next request only after the previous answer, so when
the server stalls the generator stops sending and the stall is hidden (coordinated omission).
wrk2 fixes that but is not packaged in Debian, hence this small generator:

- request i is due at ``start + i / rate`` (a fixed schedule made before the run);
- at its due time it goes out on an idle keep-alive connection; if none is idle a new one is
  opened (up to ``--max-connections``), else it waits for one to free up;
- its latency is ``answer received − due time``: any wait — for a connection, for the server,
  or because this generator fell behind — counts against the server, never for it.

How far the generator itself lagged (actual send − due) is reported separately (``send_lag``)
so a busy client machine can be told apart from a slow server. Runs as a child process pinned
to the client core:

    python -m benchmarks.harness.openloop --port P --rate R --seconds S --bodies FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

_ID = re.compile(rb'"decision_id":"([^"]+)"')


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {k: 0.0 for k in ("p50", "p90", "p99", "p99_9", "max")}
    s = sorted(values)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))]

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p99_9": at(0.999), "max": s[-1]}


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body


async def run(args: argparse.Namespace) -> dict:
    bodies = [x for x in Path(args.bodies).read_bytes().splitlines() if x.strip()]
    extra = f"Authorization: {args.auth}\r\n" if args.auth else ""
    requests = [
        (
            f"POST {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
            f"Content-Type: application/json\r\n{extra}Content-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]
    idle: list[Conn] = []
    opened = 0
    freed = asyncio.Condition()
    total = int(args.rate * (args.warmup + args.seconds))
    latencies: list[float] = []
    lags: list[float] = []
    statuses: dict[int, int] = {}
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    ids: list[bytes] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    measure_from = start + args.warmup

    async def get_conn() -> Conn:
        nonlocal opened
        while True:
            while idle:
                conn = idle.pop()
                if not conn.reader.at_eof():
                    return conn
                # The server closed it while idle (its keep-alive timeout): not a failed
                # request, since nothing was sent on it; drop it and take another.
                opened -= 1
                conn.writer.close()
            if opened < args.max_connections:
                opened += 1
                try:
                    r, w = await asyncio.open_connection(args.host, args.port)
                except OSError:
                    opened -= 1
                    errors["connect"] += 1
                    raise
                return Conn(r, w)
            async with freed:
                await freed.wait()

    async def fire(i: int, due: float) -> None:
        nonlocal opened
        try:
            conn = await get_conn()
        except OSError:
            return
        sent = loop.time()
        try:
            status, body = await asyncio.wait_for(conn.exchange(requests[i % len(requests)]), 10)
        except TimeoutError:
            errors["timeout"] += 1
            opened -= 1
            conn.writer.close()
            return
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors["read"] += 1
            opened -= 1
            conn.writer.close()
            return
        done = loop.time()
        idle.append(conn)
        async with freed:
            freed.notify()
        if status == 200 and args.ids_out:
            m = _ID.search(body)
            if m:
                ids.append(m[1])
        if due >= measure_from:
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append((done - due) * 1e6)
            lags.append((sent - due) * 1e6)

    tasks = []
    for i in range(total):
        due = start + i / args.rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(fire(i, due)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.writer.close()
    if args.ids_out:
        Path(args.ids_out).write_bytes(b"\n".join(ids) + b"\n")
    return {
        "requests": len(latencies),
        "sent": total,  # warm-up included: the server's CPU over the run is for these
        "duration_us": args.seconds * 1e6,
        "rate": args.rate,
        "connections_opened": opened,
        "statuses": statuses,
        "errors": errors,
        "latency_us": percentiles(latencies),
        "send_lag_us": percentiles(lags),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/decide")
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--seconds", type=float, required=True, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds sent but not measured")
    p.add_argument("--bodies", required=True, help="JSONL file, one request body a line")
    p.add_argument("--max-connections", type=int, default=256)
    p.add_argument("--ids-out", help="write the decision_id of every 200 here")
    args = p.parse_args()
    args.auth = os.environ.get("OPENLOOP_AUTH", "")
    t0 = time.monotonic()
    try:
        import uvloop

        out = uvloop.run(run(args))
    except ImportError:
        out = asyncio.run(run(args))
    out["wall_s"] = time.monotonic() - t0
    print("OPENLOOP_RESULT " + json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
