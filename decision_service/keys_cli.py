"""`decision-service keys create | list | revoke`: API keys in the audit database."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from decision_service.access.keys import KeyRefused, create_key, list_keys, revoke_key
from decision_service.settings import Settings


def _engine(settings: Settings) -> sa.Engine:
    from decision_service.audit import create_tables, make_engine

    engine = make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    create_tables(engine)
    return engine


def _when(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _record(
    settings: Settings, action: str, name: str, before: object, after: object, err: Console
) -> None:
    """change_log: who made or revoked which key (the key itself is never recorded)."""
    from decision_service.audit_cli import cli_actor
    from decision_service.audit_store import open_store

    try:
        store = open_store(settings)
        try:
            store.record_change_sync(cli_actor(), action, name, before, after)
        finally:
            store.engine.dispose()
            store.reader.dispose()
    except Exception as exc:
        err.print(f"[red]warning:[/] the change was made but not recorded in change_log: {exc}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    err = Console(stderr=True)
    engine = _engine(settings)
    try:
        if args.keys_command == "create":
            key = create_key(engine, args.name, args.role)
            _record(settings, "key.create", args.name, None, {"role": args.role}, err)
            if args.format == "json":
                print(json.dumps({"name": args.name, "role": args.role, "key": key}))
            else:
                err.print(f"[bold]{args.role}[/] key [bold]{args.name}[/] (shown once, keep it):")
                print(key)
        elif args.keys_command == "list":
            keys = list_keys(engine)
            if args.format == "json":
                rows = [
                    {
                        "name": k.name,
                        "role": k.role,
                        "created_at": _when(k.created_at),
                        "last_used_at": _when(k.last_used_at) or None,
                        "revoked_at": _when(k.revoked_at) or None,
                    }
                    for k in keys
                ]
                print(json.dumps(rows))
            else:
                table = Table("name", "role", "created", "last used", "revoked")
                for k in keys:
                    revoked = f"[red]{_when(k.revoked_at)}[/]" if k.revoked_at else ""
                    table.add_row(
                        k.name, k.role, _when(k.created_at), _when(k.last_used_at), revoked
                    )
                Console().print(table)
        else:
            info = revoke_key(engine, args.name)
            revoked = {"role": info.role, "revoked_at": _when(info.revoked_at)}
            _record(settings, "key.revoke", args.name, None, revoked, err)
            err.print(f"revoked [bold]{info.name}[/] ({info.role}) at {_when(info.revoked_at)}")
    except KeyRefused as exc:
        err.print(f"[red]error:[/] {exc}")
        return 1
    finally:
        engine.dispose()
    return 0
