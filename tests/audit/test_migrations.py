"""Schema migrations on SQLite and PostgreSQL: the head equals the code's tables; a database made
by release 0.1.0 (no alembic_version) upgrades in place with every decision kept and every chain
verifying; databases that are no known schema, or newer than the code, are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from decision_service.audit import AuditStore, make_engine, migrations, verify
from decision_service.audit import tables as audit_tables
from decision_service.audit.migrations import runner
from decision_service.audit.migrations.metadata import target_metadata
from decision_service.audit.tables import TABLES
from decision_service.audit.testing import sample_decision, sample_request, stored_texts
from decision_service.audit.verify import SchemaBehind
from tests.audit.conftest import Database
from tests.conftest import ROOT

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "release_0_1_0.json").read_text())
TIME_COLUMNS = {"decided_at", "first_seen", "updated_at"}


def make_release_database(url: str) -> None:
    """The database release 0.1.0 made: its DDL, then the rows its AuditStore wrote."""
    engine = make_engine(url)
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    with engine.begin() as conn:
        for statement in FIXTURE["ddl"][dialect]:
            conn.exec_driver_sql(statement)
        for name, rows in FIXTURE["rows"].items():
            if dialect == "postgresql":  # SQLite kept naive UTC text; PostgreSQL takes timestamptz
                rows = [
                    {
                        k: datetime.fromisoformat(v).replace(tzinfo=UTC) if k in TIME_COLUMNS else v
                        for k, v in row.items()
                    }
                    for row in rows
                ]
            # untyped columns: the values go in exactly as the release stored them
            table = sa.table(name, *(sa.column(c) for c in rows[0]))
            conn.execute(sa.insert(table), rows)
    engine.dispose()


def rule_pairs(engine: sa.Engine) -> set[tuple[str, str]]:
    """Every (decision, fired rule) pair the database holds, at the schema it is at: rows of
    decision_rule before 0006, each decision's fired set from 0006 on."""
    if "decision_rule" in sa.inspect(engine).get_table_names():
        sql = "SELECT decision_id, rule_id FROM decision_rule"
    else:
        sql = (
            "SELECT d.decision_id, r.rule_id FROM decision d "
            "JOIN fired_set_rule r ON r.set_id = d.fired_set"
        )
    with engine.connect() as conn:
        return {(d, r) for d, r in conn.execute(sa.text(sql))}


FIXTURE_PAIRS = {(r["decision_id"], r["rule_id"]) for r in FIXTURE["rows"]["decision_rule"]}


def counts(engine: sa.Engine) -> dict[str, int]:
    """Rows per release table (decision_rule: the decision/rule pairs, whatever holds them)."""
    with engine.connect() as conn:
        return {
            name: len(rule_pairs(engine))
            if name == "decision_rule"
            else conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()
            for name in FIXTURE["rows"]
        }


def schema_diffs(engine: sa.Engine, tables: tuple[sa.Table, ...] = TABLES) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, target_metadata(tables))


def cli(database: Database, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECISION_")}
    env |= {"DATABASE_URL": database.url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "decision_service", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_head_is_exactly_the_code_tables(database: Database) -> None:
    """A table or column added to TABLES without a migration fails here."""
    engine = make_engine(database.url, writer=True)
    before, after = migrations.upgrade(engine)
    assert (before.state, after.state, after.current) == ("empty", "current", migrations.head())
    assert schema_diffs(engine) == []
    # and the comparison does see a table that has no migration yet
    extra = sa.Table("api_key_probe", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    assert [d[0] for d in schema_diffs(engine, (*TABLES, extra))] == ["add_table"]
    engine.dispose()


def test_release_0_1_0_database_upgrades_in_place(database: Database) -> None:
    make_release_database(database.url)
    engine = make_engine(database.url)
    assert migrations.status(engine).state == "release"
    with pytest.raises(SchemaBehind, match="db upgrade"):  # verify needs the code's schema
        verify(engine)

    result = cli(database, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "upgraded from release 0.1.0 schema" in result.stdout
    assert migrations.status(engine).state == "current"
    assert schema_diffs(engine) == []
    assert counts(engine) == {name: len(rows) for name, rows in FIXTURE["rows"].items()}
    assert rule_pairs(engine) == FIXTURE_PAIRS
    after = verify(engine)
    assert after.ok, after.problems
    assert after.records == 60 and len(after.chains) == 2
    # every record byte for byte as the release stored it (now packed: encoding.py)
    stored = stored_texts(engine)
    assert stored == {
        r["decision_id"]: (r["request_json"], r["decision_json"])
        for r in FIXTURE["rows"]["decision"]
    }

    again = cli(database, "db", "upgrade", "--format", "json")  # idempotent
    assert again.returncode == 0 and json.loads(again.stdout)["from_state"] == "current"
    engine.dispose()


async def test_the_upgraded_log_keeps_growing_and_verifying(database: Database) -> None:
    make_release_database(database.url)
    store = AuditStore.open(database.url)  # create=True: migrates (adopts) instead of create_all
    await store.start()
    try:
        for i in range(5):
            app_id = f"APP-NEW-{i}"
            await store.append(sample_request(app_id), sample_decision(application_id=app_id))
        assert await store.ping()  # readiness probe writes its heartbeat in the new table
    finally:
        await store.close()
    engine = make_engine(database.url)
    report = verify(engine)
    assert report.ok and report.records == 65 and len(report.chains) == 3
    assert migrations.status(engine).state == "current"
    engine.dispose()


def test_compact_decisions_downgrade_and_upgrade_keep_every_record(database: Database) -> None:
    """0005 both ways: the texts come back from `record` and go into it again, decision_rule
    is rebuilt each time with every row, and every chain still verifies."""
    from alembic import command

    make_release_database(database.url)
    engine = make_engine(database.url)
    migrations.upgrade(engine)
    before = counts(engine)
    with engine.begin() as conn:
        command.downgrade(runner._config(conn), "0004")
    with engine.connect() as conn:
        texts = conn.execute(sa.text("SELECT count(*) FROM decision WHERE request_json <> ''"))
        assert texts.scalar_one() == before["decision"]
    assert counts(engine) == before
    migrations.upgrade(engine)
    assert counts(engine) == before and not schema_diffs(engine)
    report = verify(engine)
    assert report.ok and report.records == before["decision"]
    engine.dispose()


def test_fired_sets_downgrade_and_upgrade_keep_every_rule(database: Database) -> None:
    """0006 both ways: decision_rule comes back from the sets pair for pair, and the sets
    from it again (one per distinct set, the empty one included); every chain verifies."""
    from alembic import command

    make_release_database(database.url)
    engine = make_engine(database.url)
    migrations.upgrade(engine)
    distinct = {
        frozenset(r for d, r in FIXTURE_PAIRS if d == row["decision_id"])
        for row in FIXTURE["rows"]["decision"]
    }
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM fired_set")).scalar_one() == len(distinct)
    with engine.begin() as conn:
        command.downgrade(runner._config(conn), "0005")
    assert {"fired_set", "fired_set_rule"}.isdisjoint(sa.inspect(engine).get_table_names())
    assert rule_pairs(engine) == FIXTURE_PAIRS
    migrations.upgrade(engine)
    assert rule_pairs(engine) == FIXTURE_PAIRS and not schema_diffs(engine)
    assert verify(engine).ok
    engine.dispose()


def test_a_rule_lost_before_the_upgrade_is_named_after_it(database: Database) -> None:
    """The sets are built from decision_rule as it is: a row missing there is missing from
    the decision's set, and verify names the decision."""
    from alembic import command

    make_release_database(database.url)
    engine = make_engine(database.url)
    migrations.upgrade(engine, "0005")
    decision_id, rule_id = sorted(FIXTURE_PAIRS)[3]
    with engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM decision_rule WHERE decision_id = :d AND rule_id = :r"),
            {"d": decision_id, "r": rule_id},
        )
        command.upgrade(runner._config(conn), "0006")
    assert rule_pairs(engine) == FIXTURE_PAIRS - {(decision_id, rule_id)}
    (problem,) = verify(engine).problems
    assert (problem.decision_id, problem.kind) == (decision_id, "rules_index")
    assert rule_id in problem.detail
    engine.dispose()


def test_tables_of_no_known_schema_are_refused(database: Database) -> None:
    make_release_database(database.url)
    engine = make_engine(database.url, writer=True)
    with engine.begin() as conn:  # someone changed the release's tables by hand
        conn.execute(sa.text("ALTER TABLE decision ADD COLUMN branch VARCHAR(8)"))
    assert migrations.status(engine).state == "foreign"
    with pytest.raises(migrations.SchemaError, match="not any known schema"):
        migrations.upgrade(engine)
    result = cli(database, "db", "upgrade")
    assert result.returncode == 2
    assert result.stderr.startswith("decision-service: error: database ")
    assert "not any known schema" in result.stderr and "Traceback" not in result.stderr
    with engine.connect() as conn:  # untouched
        assert conn.execute(sa.text("SELECT count(*) FROM decision")).scalar_one() == 60
    engine.dispose()


def test_a_database_newer_than_the_code_is_refused(database: Database) -> None:
    engine = make_engine(database.url, writer=True)
    migrations.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    status = migrations.status(engine)
    assert (status.state, status.current) == ("ahead", "9999")
    with pytest.raises(migrations.SchemaError, match="newer than this code"):
        migrations.upgrade(engine)
    current = cli(database, "db", "current", "--format", "json")
    assert current.returncode == 0 and json.loads(current.stdout)["state"] == "ahead"
    engine.dispose()


def test_history_lists_every_migration() -> None:
    history = migrations.history()
    assert [rev for rev, _, _ in history][:2] == ["0001", "0002"]
    assert history[-1][0] == migrations.head() == runner.head()  # file names == Alembic's graph
    alembic_view = [
        (r.revision, r.down_revision, (r.doc or "").splitlines()[0])
        for r in reversed(list(runner._script().walk_revisions()))
    ]
    assert history == alembic_view
    pairs = zip(history[1:], history, strict=False)
    assert all(down == prev for (_, down, _), (prev, _, _) in pairs)


def test_revision_writes_the_next_migration_from_the_tables(
    sqlite_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`db revision -m …` (what adding a table takes): autogenerate against head, one file."""
    probe = sa.Table(
        "probe_key",
        sa.MetaData(),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", audit_tables.UTCDateTime(), nullable=False),
    )
    monkeypatch.setattr(audit_tables, "TABLES", (*TABLES, probe))
    path = migrations.revision("probe key table")
    try:
        text = path.read_text()
        assert path.name == f"{int(migrations.head()):04d}_probe_key_table.py"
        assert "op.create_table(" in text and "'probe_key'" in text
        assert "sa.DateTime(timezone=True)" in text and "decision_service" not in text
        engine = make_engine(sqlite_database.url, writer=True)
        migrations.upgrade(engine)
        assert "probe_key" in sa.inspect(engine).get_table_names()
        engine.dispose()
    finally:
        path.unlink()
    assert not path.exists()
