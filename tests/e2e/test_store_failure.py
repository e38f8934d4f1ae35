"""The audit store breaks in the middle of a run: every request either got a decision that is
in the store, or a 503 and nothing was recorded. Then the store comes back."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import sqlalchemy as sa

from tests.e2e.conftest import start_server


def test_no_decision_leaves_without_its_record(database_url, application_lines, tmp_path):
    # Six clients at full speed on one key: no rate limit here (tests/e2e/test_access.py has it).
    server = start_server(tmp_path, database_url, extra_env={"DECISION_RATE_LIMIT": "off"})
    engine = sa.create_engine(database_url)
    stop = threading.Event()
    results: list[tuple[str, int, str | None]] = []

    def load(worker: int) -> None:
        with server.client() as c:
            i = 0
            while not stop.is_set():
                line = application_lines[(worker * 97 + i) % len(application_lines)]
                app_id = f"FAIL-{worker}-{i}"
                body = line.replace(
                    line[line.index(b'"APP-') : line.index(b'",') + 1], f'"{app_id}"'.encode()
                )
                r = c.post("/decide", content=body)
                results.append(
                    (
                        app_id,
                        r.status_code,
                        r.json().get("decision_id") if r.status_code == 200 else None,
                    )
                )
                i += 1

    try:
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(load, w) for w in range(6)]
            time.sleep(1.5)
            with engine.begin() as conn:  # the store breaks under load
                conn.execute(sa.text("ALTER TABLE decision RENAME TO decision_away"))
            time.sleep(1.5)
            with httpx.Client(base_url=server.url) as c:
                assert c.get("/health/ready").status_code == 503
            with engine.begin() as conn:  # and comes back
                conn.execute(sa.text("ALTER TABLE decision_away RENAME TO decision"))
            time.sleep(1.5)
            stop.set()
            for f in futures:
                f.result()
        codes = [code for _, code, _ in results]
        assert codes.count(503) > 0 and codes.count(200) > 0
        assert set(codes) <= {200, 503}
        with engine.connect() as conn:
            stored = dict(
                conn.execute(
                    sa.text(
                        "SELECT application_id, decision_id FROM decision "
                        "WHERE application_id LIKE 'FAIL-%'"
                    )
                ).all()
            )
        lost = [a for a, code, d in results if code == 200 and stored.get(a) != d]
        phantom = [a for a, code, _ in results if code == 503 and a in stored]
        assert lost == [] and phantom == []
        assert results[-1][1] == 200  # recovered
        assert server.cli("audit", "verify").returncode == 0
    finally:
        stop.set()
        server.stop()
        engine.dispose()
