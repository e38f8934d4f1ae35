"""Same outputs: the textbook baseline and the service, on the same applications."""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.harness.common import HOST, PhaseError
from benchmarks.harness.servers import auth_headers


def post_all(port: int, bodies: Sequence[bytes], clients: int = 8) -> dict[str, dict[str, Any]]:
    """POST every body (a few keep-alive connections); answers by application_id."""

    headers = {"Content-Type": "application/json", **auth_headers(port)}

    def worker(chunk: Sequence[bytes]) -> list[dict[str, Any]]:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        out = []
        try:
            for body in chunk:
                conn.request("POST", "/decide", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise PhaseError(f"POST /decide answered {resp.status}: {data[:300]!r}")
                out.append(json.loads(data))
        finally:
            conn.close()
        return out

    chunks = [bodies[i::clients] for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        answers = [a for part in pool.map(worker, chunks) for a in part]
    return {a["application_id"]: a for a in answers}


def compare(ours: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    common = sorted(set(ours) & set(theirs))
    res: dict[str, Any] = {
        "n": len(common),
        "outcome": 0,
        "risk_band": 0,
        "pd_exact": 0,
        "pd_max_diff": 0.0,
        "approved_amount": 0,
        "reasons": 0,
        "contrib_max_diff": 0.0,
        "mismatches": [],
    }
    for app_id in common:
        a, b = ours[app_id], theirs[app_id]
        same = True
        for k in ("outcome", "risk_band"):
            if a[k] == b[k]:
                res[k] += 1
            else:
                same = False
        if a["pd"] == b["pd"]:
            res["pd_exact"] += 1
        res["pd_max_diff"] = max(res["pd_max_diff"], abs(a["pd"] - b["pd"]))
        x, y = a["approved_amount"], b["approved_amount"]
        if (x is None and y is None) or (x is not None and y is not None and abs(x - y) < 1e-9):
            res["approved_amount"] += 1
        else:
            same = False
        if [r["code"] for r in a["reasons"]] == [r["code"] for r in b["reasons"]]:
            res["reasons"] += 1
            for ra, rb in zip(a["reasons"], b["reasons"], strict=True):
                if ra.get("contribution") is not None and rb.get("contribution") is not None:
                    d = abs(ra["contribution"] - rb["contribution"])
                    res["contrib_max_diff"] = max(res["contrib_max_diff"], d)
        else:
            same = False
        if not same and len(res["mismatches"]) < 5:
            res["mismatches"].append(app_id)
    return res
