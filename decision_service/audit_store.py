"""The audit store as settings describe it: the service's, and the commands' that write to the
change log (keys, models). Its own module so those commands need not import the service."""

from __future__ import annotations

from decision_service.audit import AuditStore, CheckpointFile, Keyring
from decision_service.settings import Settings


def open_store(settings: Settings) -> AuditStore:
    return AuditStore.open(
        settings.database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        commit_wait_s=settings.audit_commit_wait_ms / 1000,
        idempotency_ttl=settings.idempotency_window,
        keyring=Keyring.load_or_create(settings.audit_key_file),
        checkpoints=CheckpointFile(settings.audit_checkpoint_file),
        checkpoint_interval_s=settings.audit_checkpoint_interval_s,
    )
