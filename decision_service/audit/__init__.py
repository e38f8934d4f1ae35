"""The audit store: every decision with its request, hash-chained, committed before it leaves.

Public surface::

    store = AuditStore.open(database_url, code_version="1.2.3+abc123")
    await store.start()
    await store.append(request_bytes, decision)   # returns once committed; AuditUnavailable if not
    await store.append_many([(request, decision), …], claim=idempotency.claim(key, body))
    await store.find_key(key)                      # what an idempotency key recorded
    await store.record_access(actor, route, filters, returned)   # who read personal data
    await store.record_change(actor, action, subject, before, after)   # who changed what
    await store.close()

Records are MAC'd under the audit key (``Keyring``, keys.py); heads are signed into a
checkpoint file outside the database (``CheckpointFile``, checkpoints.py).

Queries (sync over an engine for the CLI; ``store.get/page/verify`` are async wrappers):
``get``, ``page``, ``iter_records``, ``export_jsonl``, ``export_csv``, ``verify``,
``ruleset_text``, ``remember_ruleset``.
"""

from decision_service.audit.bulk import remember_ruleset
from decision_service.audit.chain import ChainReport, Problem, VerifyReport
from decision_service.audit.checkpoints import DEFAULT_CHECKPOINT_FILE, CheckpointFile
from decision_service.audit.engine import make_engine
from decision_service.audit.idempotency import Claim, InvalidIdempotencyKey, KeyTaken
from decision_service.audit.keys import DEFAULT_KEY_FILE, AuditKeyError, Keyring
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
)
from decision_service.audit.tables import create_tables
from decision_service.audit.verify import verify

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_CHECKPOINT_FILE",
    "DEFAULT_KEY_FILE",
    "AuditKeyError",
    "AuditStore",
    "AuditUnavailable",
    "ChainReport",
    "CheckpointFile",
    "Claim",
    "CommitOutcomeUnknown",
    "Filters",
    "InvalidCursor",
    "InvalidIdempotencyKey",
    "KeyTaken",
    "Keyring",
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
