"""Where each decide/textbook phase writes, how the decision ids are read back, and the
PostgreSQL backends' CPU."""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness.common import PhaseError, log


def pg_conninfo(url: str, dbname: str | None = None) -> str:
    """SQLAlchemy URL → libpq URL (psycopg), optionally for another database."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    if dbname is not None:
        conninfo = f"{conninfo.rsplit('/', 1)[0]}/{dbname}"
    return conninfo


@dataclass
class Store:
    label: str  # "SQLite" | "PostgreSQL"
    url: str  # SQLAlchemy URL
    pg_admin: str | None = None  # PostgreSQL: the admin conninfo (drop, backend pids)
    pg_name: str | None = None

    @property
    def sqlite_path(self) -> Path | None:
        return Path(self.url.removeprefix("sqlite:///")) if self.url.startswith("sqlite") else None

    def decision_ids(self) -> set[str]:
        path = self.sqlite_path
        if path is not None:
            if not path.exists():
                return set()
            with contextlib.closing(sqlite3.connect(path)) as conn:
                try:
                    return {r[0] for r in conn.execute("SELECT decision_id FROM decision")}
                except sqlite3.OperationalError:
                    return set()
        import psycopg

        with psycopg.connect(pg_conninfo(self.url), connect_timeout=5) as conn:
            return {r[0] for r in conn.execute("SELECT decision_id FROM decision")}

    def backend_pids(self) -> list[int]:
        """PostgreSQL backend pids connected to this database (for their CPU time)."""
        if self.pg_name is None:
            return []
        import psycopg

        with psycopg.connect(self.pg_admin or "", connect_timeout=5, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.pg_name,),
            ).fetchall()
        return [r[0] for r in rows]

    def drop(self) -> None:
        if self.pg_name is None:
            return
        import psycopg

        with psycopg.connect(self.pg_admin or "", connect_timeout=5, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')


class Stores:
    """Creates the stores of the run (temp SQLite files, PostgreSQL databases) and drops them."""

    def __init__(self, tmp: Path, pg_base: str | None) -> None:
        self.tmp = tmp
        self.pg_base = pg_base.rstrip("/") + "/" if pg_base else None
        self.tag = secrets.token_hex(4)
        self.created: list[Store] = []

    def sqlite(self, name: str) -> Store:
        path = self.tmp / "db" / f"{name}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        store = Store("SQLite", f"sqlite:///{path}")
        self.created.append(store)
        return store

    def postgres(self, name: str) -> Store:
        if self.pg_base is None:
            raise PhaseError("PostgreSQL disabled (--no-postgres)")
        import psycopg

        admin = pg_conninfo(self.pg_base + "postgres")
        dbname = f"bench_{self.tag}_{name}".replace("-", "_")
        try:
            with psycopg.connect(admin, connect_timeout=5, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{dbname}"')
        except psycopg.Error as exc:
            raise PhaseError(f"PostgreSQL at {self.pg_base} unusable: {exc}") from exc
        store = Store("PostgreSQL", self.pg_base + dbname, pg_admin=admin, pg_name=dbname)
        self.created.append(store)
        return store

    def drop_all(self) -> None:
        for store in self.created:
            try:
                store.drop()
            except Exception as exc:
                log(f"warning: could not drop {store.pg_name}: {exc}")


def pids_cpu(pids: Sequence[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total
