"""`decision-service batch`: a whole file through the pipeline, chunk by chunk, with progress.

Memory stays flat: one chunk of applications and its decisions at a time. Invalid rows go to
`OUTPUT.errors.jsonl` with their line (row) numbers and /decide's messages. Without `--audit`
nothing is recorded (portfolio scoring is not a credit decision); with it every decision is
appended to the audit store exactly as /decide appends it (the request's bytes, the Decision),
group-committed, and the run fails if the store cannot commit.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from random import getrandbits
from typing import Any

import msgspec
import numpy as np
import sqlalchemy as sa
import uuid_utils
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from decision_service.audit import AuditStore, AuditUnavailable
from decision_service.batch.io import Chunk, Writer, input_format, read_chunks, total_rows
from decision_service.batch.overlap import WriteBehind, read_ahead
from decision_service.batch.pipeline import OUTPUT_SCHEMA, BatchPipeline, BatchResult
from decision_service.deciding import utc_now
from decision_service.decision import OUTCOMES
from decision_service.pipeline import versions
from decision_service.rules.registry import RuleRegistry
from decision_service.scoring import Scorer, application_type
from decision_service.service import card_schema
from decision_service.settings import Settings

CHUNK_ROWS = 50_000
_encode = msgspec.json.Encoder().encode


@dataclass
class Loaded:
    pipeline: BatchPipeline
    ruleset_text: str
    app_type: type


def load_pipeline(
    settings: Settings, rules: Path | None = None, model_dir: Path | None = None
) -> Loaded:
    """The model and the ruleset (validated and tested like a reload), compiled for batch."""
    scorer = Scorer.load(model_dir or settings.model_dir)
    registry = RuleRegistry(
        rules or settings.rules_dir, card_schema(scorer.card), engine=settings.rules_engine
    )
    snap = registry.active()
    registry.close()
    # The decisions are the configured engine's (tested equal), so they record its name and
    # replay on it.
    refs = versions(scorer, snap.engine, snap.sha256)
    pipeline = BatchPipeline(scorer, snap.ruleset, refs, explain=settings.explain == "always")
    return Loaded(pipeline, snap.text, application_type(scorer.card))


@dataclass
class Summary:
    rows: int = 0
    decided: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    recorded: int = 0
    seconds: float = 0.0
    output: str = ""
    errors_file: str = ""

    def table(self) -> Table:
        t = Table(title=f"batch: {self.output}")
        t.add_column("", style="bold")
        t.add_column("applications", justify="right")
        t.add_column("share", justify="right")
        for outcome in ("approve", "refer", "decline"):
            n = self.outcomes.get(outcome, 0)
            t.add_row(outcome, f"{n:,}", f"{n / max(self.rows, 1):.1%}")
        t.add_row("invalid", f"{self.invalid:,}", f"{self.invalid / max(self.rows, 1):.1%}")
        t.add_row("total", f"{self.rows:,}", "", style="bold")
        t.caption = (
            f"{self.rows / max(self.seconds, 1e-9):,.0f} applications/s in {self.seconds:.1f} s"
            f"; recorded in the audit store: {self.recorded:,}"
            + (f"; invalid rows: {self.errors_file}" if self.invalid else "")
        )
        return t

    def to_builtins(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "decided": self.decided,
            "outcomes": dict(self.outcomes),
            "invalid": self.invalid,
            "recorded": self.recorded,
            "seconds": round(self.seconds, 3),
            "output": self.output,
            "errors_file": self.errors_file,
        }


def progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} rows/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def new_ids(n: int) -> list[str]:
    return [str(uuid_utils.uuid7()) for _ in range(n)]


def decisions_of(result: BatchResult, ids: list[str], decided_at: str, trace_id: str | None):
    return [
        result.decision(i, decision_id=ids[i], decided_at=decided_at, trace_id=trace_id)
        for i in range(result.n)
    ]


def requests_of(chunk: Chunk, app_type: type) -> list[bytes]:
    """The request bytes to record: JSONL's own lines; else the application as JSON."""
    if chunk.requests is not None:
        return chunk.requests
    assert chunk.arrow is not None
    rows = chunk.arrow.to_pylist()
    return [_encode(msgspec.convert(row, app_type)) for row in rows]


def run_batch(
    settings: Settings,
    source: Path,
    output: Path,
    fmt: str,
    *,
    audit: bool,
    console: Console,
    chunk_rows: int = CHUNK_ROWS,
    rules: Path | None = None,
    workers: int = 1,
) -> Summary:
    """Decide every application of `source` into `output`. `workers` > 1: that many worker
    processes (Parquet/CSV in, Parquet/CSV out, without --audit)."""
    loaded = load_pipeline(settings, rules)
    return asyncio.run(
        _run(settings, loaded, source, output, fmt, audit, console, chunk_rows, workers)
    )


async def _run(
    settings: Settings,
    loaded: Loaded,
    source: Path,
    output: Path,
    fmt: str,
    audit: bool,
    console: Console,
    chunk_rows: int,
    workers: int = 1,
) -> Summary:
    pipeline = loaded.pipeline
    specs = pipeline.scorer.card.request_fields  # rules may read fields the model does not
    summary = Summary(output=str(output), errors_file=f"{output}.errors.jsonl")
    store = None
    if audit:
        try:
            store = AuditStore.open(
                settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
            )
            await store.start()
            ruleset = pipeline.refs.ruleset
            store.remember_ruleset(
                ruleset.sha256, ruleset.name, ruleset.version, loaded.ruleset_text
            )
        except sa.exc.SQLAlchemyError as exc:  # nothing decided yet
            raise AuditUnavailable(f"audit store unavailable: {exc.__class__.__name__}") from exc
    trace_id = f"{getrandbits(128) or 1:032x}"  # one trace for the whole run
    writer = Writer(output, fmt, OUTPUT_SCHEMA)
    behind = WriteBehind()  # the output is written while the next chunk is decided
    start = time.perf_counter()
    try:
        with (
            Path(summary.errors_file).open("wb") as errors,
            progress(console) as bar,
        ):
            task = bar.add_task(
                "deciding", total=total_rows(source, input_format(source)), rate="-"
            )
            # worker processes: Parquet/CSV in and out, nothing recorded (see batch/parallel.py)
            parallel = workers > 1 and store is None and "jsonl" not in (fmt, input_format(source))
            if parallel:
                _run_parallel(
                    loaded, source, writer, errors, summary, bar, task, chunk_rows, workers
                )
            serial = () if parallel else read_chunks(source, loaded.app_type, specs, chunk_rows)
            for chunk in read_ahead(iter(serial)):
                result = pipeline.decide(chunk.apps)
                ids, decided_at = new_ids(result.n), utc_now()
                if fmt == "jsonl" or store is not None:
                    decisions = decisions_of(result, ids, decided_at, trace_id)
                    if store is not None:  # recorded first: no decision leaves unrecorded
                        requests = requests_of(chunk, loaded.app_type)
                        await asyncio.gather(
                            *(store.append(r, d) for r, d in zip(requests, decisions, strict=True))
                        )
                        summary.recorded += len(decisions)
                    if fmt == "jsonl":
                        behind.submit(writer.write_lines, [_encode(d) + b"\n" for d in decisions])
                if fmt != "jsonl":
                    behind.submit(writer.write_table, result.to_arrow(ids, decided_at))
                for line, ident, errs in chunk.errors:
                    record = {"line": line, "application_id": ident, "errors": errs}
                    errors.write(_encode(record) + b"\n")
                summary.rows += chunk.size
                summary.decided += result.n
                summary.invalid += len(chunk.errors)
                counts = np.bincount(result.outcome_codes, minlength=len(OUTCOMES))
                summary.outcomes.update(dict(zip(OUTCOMES, counts.tolist(), strict=True)))
                elapsed = time.perf_counter() - start
                bar.update(task, advance=chunk.size, rate=f"{summary.rows / elapsed:,.0f}")
    finally:
        try:
            behind.close()
        finally:
            writer.close()
        if store is not None:
            await store.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _run_parallel(loaded, source, writer, errors, summary, bar, task, chunk_rows, workers) -> None:
    from decision_service.batch.io import raw_batches
    from decision_service.batch.parallel import decide_arrow, decide_in_workers
    from decision_service.batch.spark import ship

    start = time.perf_counter()
    payload = ship(loaded.pipeline, loaded.ruleset_text)

    def local(batch, first_line):
        return decide_arrow(loaded.pipeline, loaded.app_type, batch, first_line)

    for table, errs, size, counts in decide_in_workers(
        payload, raw_batches(source, chunk_rows), workers, local
    ):
        writer.write_table(table)
        for line, ident, found in errs:
            record = {
                "line": line,
                "application_id": ident,
                "errors": [{"field": f, "message": m} for f, m in found],
            }
            errors.write(_encode(record) + b"\n")
        summary.rows += size
        summary.decided += table.num_rows
        summary.invalid += len(errs)
        summary.outcomes.update(dict(zip(OUTCOMES, counts.tolist(), strict=True)))
        elapsed = time.perf_counter() - start
        bar.update(task, advance=size, rate=f"{summary.rows / elapsed:,.0f}")
