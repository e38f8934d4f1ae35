"""The audit store: every decision with its request, hash-chained, committed before it leaves.

Public surface::

    store = AuditStore.open(database_url, code_version="1.2.3+abc123")
    await store.start()
    await store.append(request_bytes, decision)   # returns once committed; AuditUnavailable if not
    await store.append_many([(request, decision), …], claim=idempotency.claim(key, body))
    await store.find_key(key)                      # what an idempotency key recorded
    await store.close()

Queries (sync over an engine for the CLI; ``store.get/page/verify`` are async wrappers):
``get``, ``page``, ``iter_records``, ``export_jsonl``, ``export_csv``, ``verify``,
``ruleset_text``, ``remember_ruleset``.
"""

from decision_service.audit.chain import ChainReport, Problem, VerifyReport, verify
from decision_service.audit.engine import make_engine
from decision_service.audit.idempotency import Claim, InvalidIdempotencyKey, KeyTaken
from decision_service.audit.queries import (
    CSV_COLUMNS,
    Filters,
    InvalidCursor,
    Page,
    RulesetText,
    StoredDecision,
    export_csv,
    export_jsonl,
    get,
    iter_records,
    page,
    ruleset_text,
)
from decision_service.audit.store import (
    AuditStore,
    AuditUnavailable,
    CommitOutcomeUnknown,
    WriterStats,
    remember_ruleset,
)
from decision_service.audit.tables import create_tables

__all__ = [
    "CSV_COLUMNS",
    "AuditStore",
    "AuditUnavailable",
    "ChainReport",
    "Claim",
    "CommitOutcomeUnknown",
    "Filters",
    "InvalidCursor",
    "InvalidIdempotencyKey",
    "KeyTaken",
    "Page",
    "Problem",
    "RulesetText",
    "StoredDecision",
    "VerifyReport",
    "WriterStats",
    "create_tables",
    "export_csv",
    "export_jsonl",
    "get",
    "iter_records",
    "make_engine",
    "page",
    "remember_ruleset",
    "ruleset_text",
    "verify",
]
