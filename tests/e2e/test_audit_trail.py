"""An auditor reads who read personal data and who changed the rules, and a database
administrator without the audit key tries the issue's attack — against the real server, on
SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from decision_service.audit.chain import GENESIS, record_hash
from decision_service.audit.encoding import pack
from decision_service.audit.records import expand
from decision_service.audit.tables import DecisionRow
from decision_service.audit_cli import cli_actor
from tests.e2e.conftest import Server, start_server

N = 40


@pytest.fixture(scope="module")
def trail(database_url: str, tmp_path_factory, application_lines) -> Server:
    srv = start_server(
        tmp_path_factory.mktemp("trail"),
        database_url,
        extra_env={"DECISION_AUDIT_CHECKPOINT_INTERVAL_S": "0.2"},
    )

    def post(line: bytes) -> int:
        with srv.client() as c:
            return c.post("/decide", content=line).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(post, application_lines[:N])) == [200] * N
    yield srv
    srv.stop()


@pytest.fixture
def db(trail: Server):
    engine = sa.create_engine(trail.database_url)
    yield engine
    engine.dispose()


def _rows(db: sa.Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]


def _decision_ids(db: sa.Engine, outcome: str) -> list[str]:
    return [
        r["decision_id"]
        for r in _rows(
            db, "SELECT decision_id FROM decision WHERE outcome = :o ORDER BY seq", o=outcome
        )
    ]


def test_the_audit_key_is_made_on_first_start_readable_by_its_owner_only(trail: Server) -> None:
    key = trail.workdir / "var" / "audit.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    secret = key.read_text().split()[1]
    assert secret not in trail.log.read_text()  # never in a log line


def test_every_read_of_personal_data_is_in_the_access_log(trail: Server, db) -> None:
    declined = _decision_ids(db, "decline")
    with trail.client() as c:
        page = c.get("/decisions", params={"outcome": "decline", "limit": 3}).json()
        assert len(page["items"]) == 3
        assert c.get(f"/decisions/{declined[0]}").status_code == 200
        assert c.get("/decisions/no-such-id").status_code == 404
        assert c.post(f"/decisions/{declined[1]}/replay").json()["identical"] is True
    reads = _rows(db, "SELECT actor, route, filters, returned FROM access_log ORDER BY seq")[-4:]
    assert [(r["actor"], r["route"], r["returned"]) for r in reads] == [
        ("admin", "GET /decisions", 3),
        ("admin", "GET /decisions/{decision_id}", 1),
        ("admin", "GET /decisions/{decision_id}", 0),
        ("admin", "POST /decisions/{decision_id}/replay", 1),
    ]
    assert json.loads(reads[0]["filters"]) == {"limit": 3, "outcome": "decline"}
    assert json.loads(reads[1]["filters"]) == {"decision_id": declined[0]}
    with trail.client() as c:
        report = c.get("/audit/verify").json()
    assert report["ok"] is True, report["problems"]
    logs = {x["log"]: x for x in report["logs"]}
    assert logs["access_log"]["records"] >= 4 and logs["access_log"]["ok"] is True


def test_a_rule_reload_is_in_the_change_log(trail: Server, db) -> None:
    with trail.client() as c:
        active = c.get("/rules").json()
        assert c.post("/rules/reload").status_code == 200
    change = _rows(db, "SELECT * FROM change_log ORDER BY seq")[-1]
    assert (change["actor"], change["action"], change["subject"]) == (
        "admin",
        "rules.reload",
        active["name"],
    )
    assert json.loads(change["before"])["sha256"] == active["sha256"]
    assert json.loads(change["after"]) == {
        "name": active["name"],
        "version": active["version"],
        "sha256": active["sha256"],
    }


def test_cli_exports_and_replays_are_recorded_as_the_os_user(trail: Server, db) -> None:
    done = trail.cli("audit", "export", "--format", "csv", "--outcome", "refer")
    assert done.returncode == 0, done.stderr
    exported = len(done.stdout.splitlines()) - 1
    some = _decision_ids(db, "approve")[0]
    assert trail.cli("audit", "replay", "--id", some).returncode == 0
    reads = _rows(db, "SELECT actor, route, filters, returned FROM access_log ORDER BY seq")[-2:]
    assert [(r["actor"], r["route"], r["returned"]) for r in reads] == [
        (cli_actor(), "audit export --format csv", exported),
        (cli_actor(), "audit replay", 1),
    ]
    assert json.loads(reads[0]["filters"]) == {"outcome": "refer"}


def test_a_column_edited_alone_is_named_and_never_believed(trail: Server, db) -> None:
    victim = _decision_ids(db, "decline")[2]
    with db.begin() as conn:
        conn.execute(
            sa.text("UPDATE decision SET outcome = 'approve' WHERE decision_id = :i"), {"i": victim}
        )
    try:
        with trail.client() as c:
            report = c.get("/audit/verify").json()
            replay = c.post(f"/decisions/{victim}/replay").json()
        assert [(p["decision_id"], p["kind"]) for p in report["problems"]] == [
            (victim, "columns_disagree")
        ]
        assert (
            "outcome: column 'approve', decision JSON 'decline'" in report["problems"][0]["detail"]
        )
        assert replay["identical"] is False
        assert {
            "field": "$columns.outcome",
            "recorded": "approve",
            "replayed": "decline",
        } in replay["differences"]
        done = trail.cli("audit", "replay", "--id", victim)
        assert done.returncode == 1 and " 1 different" in done.stdout
        verified = trail.cli("audit", "verify")
        assert verified.returncode == 1 and f"record {victim}: columns_disagree" in verified.stdout
        # both exports say what the decision said
        jsonl = trail.cli("audit", "export", "--format", "jsonl", "--application-id", "x")
        assert jsonl.returncode == 0
        lines = trail.cli("audit", "export", "--format", "jsonl").stdout.splitlines()
        in_jsonl = {
            json.loads(x)["decision_id"]: json.loads(x)["decision"]["outcome"] for x in lines
        }
        rows = csv.DictReader(io.StringIO(trail.cli("audit", "export", "--format", "csv").stdout))
        in_csv = {r["decision_id"]: r["outcome"] for r in rows}
        assert in_csv == in_jsonl and in_csv[victim] == "decline"
    finally:
        with db.begin() as conn:
            conn.execute(
                sa.text("UPDATE decision SET outcome = 'decline' WHERE decision_id = :i"),
                {"i": victim},
            )
    assert trail.cli("audit", "verify").returncode == 0


@pytest.mark.parametrize("victim_at", ["first_decline", "chain_start"])
def test_the_issues_attack_is_detected(trail: Server, db, victim_at: str) -> None:
    """Flip one decision's outcome, recompute every following hash with the project's own
    chain code (no key), update chain_head: the attack the issue reports as undetected.

    A victim after keyed records is ``downgraded``; one at seq 1 (nothing keyed before it) is
    re-hashed correctly, so only the missing checkpoint gives it away: ``unanchored``."""
    if victim_at == "first_decline":
        victim = _decision_ids(db, "decline")[0]
    else:
        victim = _rows(db, "SELECT decision_id FROM decision WHERE seq = 1 ORDER BY chain_id")[0][
            "decision_id"
        ]
    (chain_id,) = [
        r["chain_id"]
        for r in _rows(db, "SELECT chain_id FROM decision WHERE decision_id = :i", i=victim)
    ]
    # read through the table's types, as verify does: on SQLite a raw SELECT returns
    # decided_at as naive text, which hashes differently from the UTC datetime verify reads
    decision = DecisionRow.__table__
    with db.connect() as conn:
        columns = [
            expand(r)  # request and decision unpacked from ``record``
            for r in conn.execute(
                sa.select(decision).where(decision.c.chain_id == chain_id).order_by(decision.c.seq)
            ).mappings()
        ]
    saved = [dict(r) for r in columns]
    start = next(r["seq"] for r in columns if r["decision_id"] == victim)
    prev = GENESIS if start == 1 else columns[start - 2]["record_hash"]
    with db.begin() as conn:
        for row in columns[start - 1 :]:
            if row["decision_id"] == victim:
                was = row["outcome"]
                row["outcome"] = "decline" if was == "approve" else "approve"
                row["decision_json"] = row["decision_json"].replace(
                    f'"outcome":"{was}"', f'"outcome":"{row["outcome"]}"'
                )
            row["prev_hash"], row["key_id"] = prev, None
            row["record_hash"] = prev = record_hash(chain_id, row["seq"], prev, row)
            row["record"] = pack(row["request_json"], row["decision_json"])
            conn.execute(
                sa.text(
                    "UPDATE decision SET outcome = :outcome, record = :record, "
                    "prev_hash = :prev_hash, record_hash = :record_hash, key_id = NULL "
                    "WHERE decision_id = :decision_id"
                ),
                row,
            )
        conn.execute(
            sa.text("UPDATE chain_head SET last_hash = :h WHERE chain_id = :c"),
            {"h": prev, "c": chain_id},
        )
    try:
        with trail.client() as c:
            report = c.get("/audit/verify").json()
        assert report["ok"] is False
        (problem,) = report["problems"]
        assert (problem["chain_id"], problem["seq"], problem["decision_id"]) == (
            chain_id,
            start,
            victim,
        )
        assert problem["kind"] == ("unanchored" if start == 1 else "downgraded")
        done = trail.cli("audit", "verify", "--format", "json")
        assert done.returncode == 1
        assert json.loads(done.stdout)["problems"] == report["problems"]
    finally:
        with db.begin() as conn:
            for row in saved:
                row["record"] = pack(row["request_json"], row["decision_json"])
                conn.execute(
                    sa.text(
                        "UPDATE decision SET outcome = :outcome, record = :record, "
                        "prev_hash = :prev_hash, record_hash = :record_hash, key_id = :key_id "
                        "WHERE decision_id = :decision_id"
                    ),
                    row,
                )
            conn.execute(
                sa.text("UPDATE chain_head SET last_hash = :h WHERE chain_id = :c"),
                {"h": saved[-1]["record_hash"], "c": chain_id},
            )
    assert trail.cli("audit", "verify").returncode == 0


def test_a_cut_tail_is_caught_by_the_checkpoint_signed_at_shutdown(trail: Server, db) -> None:
    trail.stop()  # the last checkpoint is written on the way out
    last = _rows(db, "SELECT chain_id, seq, decision_id FROM decision ORDER BY seq DESC LIMIT 1")[0]
    with db.begin() as conn:  # cut the newest decision, and make the head agree
        conn.execute(
            sa.text("DELETE FROM decision WHERE decision_id = :i"), {"i": last["decision_id"]}
        )
        prev = conn.execute(
            sa.text("SELECT record_hash FROM decision WHERE chain_id = :c AND seq = :s"),
            {"c": last["chain_id"], "s": last["seq"] - 1},
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE chain_head SET last_seq = :s, last_hash = :h WHERE chain_id = :c"),
            {"s": last["seq"] - 1, "h": prev, "c": last["chain_id"]},
        )
    done = trail.cli("audit", "verify")
    assert done.returncode == 1
    assert f"chain {last['chain_id']} seq {last['seq']} record -: tail_deleted" in done.stdout


def test_a_file_watch_reload_is_in_the_change_log(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'watch.db'}"
    srv = start_server(tmp_path, url, extra_env={"DECISION_RULES_WATCH": "true"})
    engine = sa.create_engine(url)
    try:
        rules = srv.rules_dir / "risk_appetite.yaml"
        text = rules.read_text()
        (old,) = re.findall(r"^version: (\S+)$", text, re.MULTILINE)  # the shipped policy's
        new = f"{old}.1"
        rules.write_text(text.replace(f"version: {old}\n", f"version: {new}\n"))
        deadline = time.monotonic() + 60
        changes: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not changes:
            time.sleep(0.2)
            changes = _rows(engine, "SELECT * FROM change_log WHERE action = 'rules.reload'")
        (change,) = changes
        assert change["actor"] == "file-watch"
        assert json.loads(change["before"])["version"] == old
        assert json.loads(change["after"])["version"] == new
    finally:
        srv.stop()
        engine.dispose()
