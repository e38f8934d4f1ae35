"""`decision-service audit …`: verify the chains, replay decisions, export for auditors."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import msgspec

from decision_service.audit import (
    AuditStore,
    Filters,
    export_csv,
    export_jsonl,
    get,
    iter_records,
    verify,
)
from decision_service.replay import Replayer, ReplayError
from decision_service.settings import Settings


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


def _verify(store: AuditStore, out: TextIO) -> int:
    report = verify(store.reader)
    for chain in report.chains:
        out.write(f"chain {chain.chain_id}: {chain.records} records\n")
    for problem in report.problems:
        out.write(f"BROKEN: {msgspec.json.encode(problem).decode()}\n")
    out.write(
        f"{'intact' if report.ok else 'BROKEN'}: {report.records} records, "
        f"{len(report.chains)} chains\n"
    )
    return 0 if report.ok else 1


def _replay(store: AuditStore, settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    replayer = Replayer(settings.models_dir, store)
    if args.all:
        records = iter_records(store.reader, _filters(args))
    else:
        records = (get(store.reader, i) for i in args.ids)
    total = differing = failed = 0
    try:
        for stored in records:
            total += 1
            if stored is None:
                failed += 1
                out.write("not found\n")
                continue
            try:
                result = replayer.replay(stored)
            except ReplayError as exc:
                failed += 1
                out.write(f"{stored.decision_id}: cannot replay: {exc}\n")
                continue
            if not result.identical:
                differing += 1
                out.write(msgspec.json.encode(result).decode() + "\n")
    finally:
        replayer.close()
    out.write(
        f"replayed {total}: {total - differing - failed} identical, {differing} "
        f"different, {failed} could not be replayed\n"
    )
    return 0 if differing == failed == 0 else 1


def run(args: argparse.Namespace, settings: Settings) -> int:
    # The composition root's store; imported here, as the service module loads LightGBM.
    from decision_service.service import open_store

    store = open_store(settings)
    try:
        if args.audit_command == "verify":
            return _verify(store, sys.stdout)
        if args.audit_command == "replay":
            return _replay(store, settings, args, sys.stdout)
        if args.format == "parquet":
            from decision_service.audit.queries import export_parquet

            sink = args.output if args.output else sys.stdout.buffer
            export_parquet(store.reader, _filters(args), sink)
            return 0
        export = export_jsonl if args.format == "jsonl" else export_csv
        out = args.output.open("w", newline="") if args.output else sys.stdout
        try:
            for line in export(store.reader, _filters(args)):
                out.write(line)
        finally:
            if args.output:
                out.close()
        return 0
    finally:
        store.engine.dispose()
        store.reader.dispose()
