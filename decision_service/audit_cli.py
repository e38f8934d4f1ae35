"""`decision-service audit …`: verify the chains, replay decisions, export for auditors, rotate
the audit key. Reads of personal data (export, replay) are recorded in access_log as
``cli:<os user>``."""

from __future__ import annotations

import argparse
import functools
import getpass
import sys
from collections.abc import Callable
from typing import Any, TextIO

import msgspec

from decision_service.audit import (
    AuditStore,
    CheckpointFile,
    Filters,
    Keyring,
    VerifyReport,
    export_csv,
    export_jsonl,
    get,
    iter_records,
    verify,
)
from decision_service.audit.verify import SchemaBehind
from decision_service.settings import Settings


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (containers)
        import os

        return f"cli:uid-{os.getuid()}"


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(
        from_=args.from_,
        to=args.to,
        application_id=args.application_id,
        outcome=args.outcome,
        rule=args.rule,
        model_version=args.model_version,
        ruleset_version=args.ruleset_version,
    )


def _query(args: argparse.Namespace) -> dict[str, Any]:
    return msgspec.to_builtins(_filters(args))


def render_report(report: VerifyReport, out: TextIO) -> None:
    for chain in [*report.chains, *report.logs]:
        anchor = (
            "" if chain.checkpoint_seq is None else f", checkpoint at seq {chain.checkpoint_seq}"
        )
        legacy = f", {chain.legacy_records} pre-key" if chain.legacy_records else ""
        state = "ok" if chain.ok else "BROKEN"
        head = f"{chain.log} chain {chain.chain_id}: {chain.records} records"
        out.write(f"{head}{legacy}{anchor}: {state}\n")
    for problem in report.problems:
        where = problem.record_id or "-"
        out.write(
            f"BROKEN {problem.log} chain {problem.chain_id} seq {problem.seq} record {where}: "
            f"{problem.kind}: {problem.detail}\n"
        )
    for warning in report.warnings:
        out.write(f"warning: {warning}\n")
    if report.mode == "incremental":
        out.write("incremental: each chain checked from its last verified checkpoint on\n")
    out.write(
        f"{'intact' if report.ok else 'BROKEN'}: {report.records} records, "
        f"{len(report.chains)} chains, {report.checkpoints} signed checkpoints\n"
    )


def _verify(settings: Settings, store: AuditStore, args: argparse.Namespace, out: TextIO) -> int:
    try:
        report = verify(
            store.reader,
            Keyring.load(settings.audit_key_file),
            CheckpointFile(settings.audit_checkpoint_file),
            incremental=args.incremental,
            mark_verified=True,
        )
    except SchemaBehind as exc:
        print(f"decision-service: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        out.write(msgspec.json.encode(report).decode() + "\n")
    else:
        render_report(report, out)
    return 0 if report.ok else 1


def _count(store: AuditStore, args: argparse.Namespace) -> int:
    """How many decisions the filters select: the progress bar's total (only when shown)."""
    from decision_service.audit import queries

    return queries.count(store.reader, _filters(args))


def _replay(store: AuditStore, settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from decision_service.cli.progress import progress
    from decision_service.replay import Replayer, ReplayError  # the model: only to replay

    replayer = Replayer(settings.models_dir, store)
    if args.all:
        records = iter_records(store.reader, _filters(args))
        query = _query(args)
        total_of: Callable[[], int] = functools.partial(_count, store, args)
    else:
        records = (get(store.reader, i) for i in args.ids)
        query = {"decision_id": args.ids}
        total_of = args.ids.__len__
    as_json = args.format == "json"
    different: list[Any] = []
    failures: list[dict[str, str | None]] = []
    total = 0
    try:
        with progress("replaying", total_of, quiet=args.quiet) as advance:
            for stored in records:
                total += 1
                advance(1)
                if stored is None:
                    failures.append({"decision_id": None, "error": "not found"})
                    if not as_json:
                        out.write("not found\n")
                    continue
                try:
                    result = replayer.replay(stored)
                except ReplayError as exc:
                    failures.append({"decision_id": stored.decision_id, "error": str(exc)})
                    if not as_json:
                        out.write(f"{stored.decision_id}: cannot replay: {exc}\n")
                    continue
                if not result.identical:
                    different.append(result)
                    if not as_json:
                        out.write(msgspec.json.encode(result).decode() + "\n")
    finally:
        replayer.close()
        store.record_access_sync(cli_actor(), "audit replay", query, total - len(failures))
    identical = total - len(different) - len(failures)
    if as_json:
        body = {
            "replayed": total,
            "identical": identical,
            "different": different,
            "failed": failures,
        }
        out.write(msgspec.json.encode(body).decode() + "\n")
    else:
        out.write(
            f"replayed {total}: {identical} identical, {len(different)} "
            f"different, {len(failures)} could not be replayed\n"
        )
    return 0 if not different and not failures else 1


def _export(store: AuditStore, args: argparse.Namespace) -> int:
    from decision_service.cli.progress import progress

    if args.format == "parquet":
        from decision_service.audit.queries import export_parquet

        sink = args.output if args.output else sys.stdout.buffer
        returned = export_parquet(store.reader, _filters(args), sink)
        store.record_access_sync(
            cli_actor(), "audit export --format parquet", _query(args), returned
        )
        return 0
    export = export_jsonl if args.format == "jsonl" else export_csv
    out = args.output.open("w", newline="") if args.output else sys.stdout
    returned = 0
    try:
        with progress(
            "exporting", functools.partial(_count, store, args), quiet=args.quiet
        ) as advance:
            for line in export(store.reader, _filters(args)):
                out.write(line)
                returned += 1
                if returned % 256 == 0:  # the bar needs no finer grain
                    advance(256)
            advance(returned % 256)
    finally:
        if args.output:
            out.close()
        if args.format == "csv":
            returned = max(returned - 1, 0)  # the header line
        store.record_access_sync(
            cli_actor(), f"audit export --format {args.format}", _query(args), returned
        )
    return 0


def _rotate_key(settings: Settings, store: AuditStore, out: TextIO) -> int:
    before = store.keyring.current_id
    rotated = store.keyring.rotate()
    store.keyring = rotated
    store.logs.keyring = rotated
    store.record_change_sync(
        cli_actor(), "audit.key_rotated", str(settings.audit_key_file), before, rotated.current_id
    )
    out.write(
        f"new audit key {rotated.current_id} appended to {settings.audit_key_file}; restart the "
        "service (worker by worker) to sign with it; keep the old keys in the file\n"
    )
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    command = args.audit_command
    keyring = (
        Keyring.load(settings.audit_key_file)
        if command == "verify"
        else Keyring.load_or_create(settings.audit_key_file)
    )
    # An audit command creates an empty database (like `serve`) but never migrates an existing
    # one behind the operator's back: an older schema is one line naming `db upgrade`.
    store = AuditStore.open(settings.database_url, keyring=keyring, create=False)
    try:
        from decision_service.audit import migrations

        status = migrations.status(store.engine)
        if status.state == "empty":
            migrations.upgrade(store.engine)
        elif status.state != "current":
            print(
                f"decision-service: error: the audit database is {status.describe()}\n"
                "  hint: run `decision-service db upgrade` first (it keeps every record and chain)",
                file=sys.stderr,
            )
            return 2
        if command == "verify":
            return _verify(settings, store, args, sys.stdout)
        if command == "replay":
            return _replay(store, settings, args, sys.stdout)
        if command == "rotate-key":
            return _rotate_key(settings, store, sys.stdout)
        return _export(store, args)
    finally:
        store.engine.dispose()
        store.reader.dispose()
