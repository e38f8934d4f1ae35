"""`decision-service models list | promote VERSION | rollback | retire VERSION`."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

import msgspec
import structlog
from rich.console import Console
from rich.table import Table

from decision_service.settings import Settings

if TYPE_CHECKING:
    from decision_service.audit import AuditStore
    from decision_service.scoring.registry import ModelEvent, ModelRegistry


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return args.actor
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return f"cli:uid-{os.getuid()}"


def record_model_change(store: AuditStore, model_name: str, event: ModelEvent) -> str | None:
    """The switch in change_log too (model.promote|rollback|retire, before/after versions);
    the model_event row is already committed, so a failure here is reported, not undone.
    Returns the error, or None once recorded."""
    before: dict[str, Any] = {"version": event.from_version}  # the live version, before
    after: dict[str, Any] = {"version": event.to_version, "seq": event.seq, "reason": event.reason}
    if event.action == "retire":  # the live version does not change; the retired one does
        before = {"version": event.to_version, "status": "available"}
        after |= {"status": "retired", "live": event.from_version}
    try:
        store.record_change_sync(event.actor, f"model.{event.action}", model_name, before, after)
    except Exception as exc:
        structlog.get_logger("decision_service.models").error(
            "change_log_write_failed", action=f"model.{event.action}", error=str(exc)
        )
        return str(exc)
    return None


def listing(registry: ModelRegistry) -> dict[str, Any]:
    """What `models list` and GET /models show: versions, the live one, gates, the log."""
    state = registry.state()
    versions = []
    for v in registry.describe():
        gate = registry.gate(v.version) if v.status != "invalid" else None
        versions.append(
            msgspec.to_builtins(v)
            | {
                "gate": None
                if gate is None
                else {
                    "passed": gate.passed,
                    "failed": [f"{c.name}: {c.detail}" for c in gate.failed],
                    "warnings": gate.warnings,
                }
            }
        )
    return {
        "model": registry.model_name,
        "live": state.live,
        "default": state.default,
        "rollback_to": state.rollback_target(),
        "retired": state.retired,
        "versions": versions,
        "events": msgspec.to_builtins(state.events),
    }


def _print_listing(data: dict[str, Any], console: Console) -> None:
    table = Table(title=f"model {data['model']}: live {data['live']}")
    for col in ("version", "status", "test AUC", "features", "gate", "sha256", "created"):
        table.add_column(col)
    for v in data["versions"]:
        gate = v["gate"]
        verdict = "—" if gate is None else ("pass" if gate["passed"] else "FAIL: ")
        if gate and not gate["passed"]:
            verdict += "; ".join(gate["failed"])
        style = (
            "bold green" if v["status"] == "live" else ("dim" if v["status"] == "retired" else "")
        )
        table.add_row(
            v["version"],
            v["status"],
            "" if v["test_auc"] is None else f"{v['test_auc']:.4f}",
            str(v["features"] or ""),
            verdict,
            (v["sha256"] or "")[:12],
            v["created"] or "",
            style=style,
        )
    console.print(table)
    if data["events"]:
        log = Table(title="model log")
        for col in ("seq", "at", "action", "from", "to", "actor", "reason"):
            log.add_column(col)
        for e in data["events"]:
            log.add_row(
                str(e["seq"]),
                e["at"],
                e["action"],
                e["from_version"] or "",
                e["to_version"],
                e["actor"],
                e["reason"] or "",
            )
        console.print(log)
    else:
        console.print(f"no registry record yet: the default version {data['default']} serves")


def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    # Log lines to stderr: stdout is the report (and JSON that scripts parse).
    previous = structlog.get_config()
    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))
    try:
        return _run(args, settings, out)
    finally:
        structlog.configure(**previous)


def _run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from decision_service.scoring.registry import ModelRegistry, RegistryError

    registry = ModelRegistry.from_settings(settings)
    console = Console(file=out, width=160)
    try:
        if args.models_command == "list":
            data = listing(registry)
            if args.format == "json":
                out.write(msgspec.json.encode(data).decode() + "\n")
            else:
                _print_listing(data, console)
            return 0
        try:
            if args.models_command == "promote":
                event = registry.promote(args.version, _actor(args), args.reason)
            elif args.models_command == "rollback":
                event = registry.rollback(_actor(args), args.reason)
            else:
                event = registry.retire(args.version, _actor(args), args.reason)
        except RegistryError as exc:
            gate = msgspec.to_builtins(exc.gate) if exc.gate is not None else None
            if args.format == "json":
                body = {"ok": False, "error": str(exc), "status": exc.status, "gate": gate}
                out.write(msgspec.json.encode(body).decode() + "\n")
            else:
                console.print(f"[bold red]refused[/]: {exc}")
                for check in exc.gate.checks if exc.gate else []:
                    mark = "[green]ok[/]" if check.ok else "[red]FAIL[/]"
                    console.print(f"  {mark} {check.name}: {check.detail}")
            return 1
        unrecorded = _record(settings, registry.model_name, event)
        if unrecorded is not None:
            Console(stderr=True).print(f"[bold red]change_log not written[/]: {unrecorded}")
        if args.format == "json":
            body = {
                "ok": True,
                "event": msgspec.to_builtins(event),
                "live": registry.state().live,
                "change_log": unrecorded is None,
            }
            out.write(msgspec.json.encode(body).decode() + "\n")
        else:
            change = (
                f"retired {event.to_version}"
                if event.action == "retire"
                else f"{event.action}: {event.from_version} → {event.to_version}"
            )
            console.print(
                f"{change} by {event.actor}; live: [bold]{registry.state().live}[/] "
                "(servers follow within seconds)"
            )
        return 0
    finally:
        registry.close()


def _record(settings: Settings, model_name: str, event: ModelEvent) -> str | None:
    from decision_service.audit_store import open_store

    try:
        store = open_store(settings)
    except Exception as exc:
        return str(exc)
    try:
        return record_model_change(store, model_name, event)
    finally:
        store.engine.dispose()
        store.reader.dispose()
