"""The hash chains: how a record's MAC is computed, and how one chain is walked and checked.

Each log is a set of chains (decisions: one per writer process; ``access_log`` and
``change_log``: one each). Record ``seq`` n carries the hash of record n-1 (``prev_hash``; the
first carries ``GENESIS``) and its own ``record_hash``, which is an HMAC-SHA256 under the audit
key named by the record's ``key_id`` (keys.py) over a canonical JSON array of the format tag,
key id, chain id, seq, prev hash and every stored column in a fixed order. Without the key
nobody can compute a valid ``record_hash``, so an edited record cannot be re-hashed to pass.

Records written before keys existed (``key_id`` NULL) carry the plain sha256 of the same array
without the key id (``audit-v1``). They still verify, and are anchored by the first signed
checkpoint written after the upgrade (checkpoints.py): a plain-hashed record that no checkpoint
vouches for, or one that follows a keyed record, is a forgery.

What a walk names (``Problem.kind``):

- ``edited``: the stored columns do not match ``record_hash`` (wrong MAC, or plain hash);
- ``columns_disagree``: a decision's indexed columns differ from its decision JSON;
- ``deleted``: a gap in ``seq``; ``reordered``: ``prev_hash`` is not the previous hash;
- ``unknown_key``: the record names a key the key file does not hold;
- ``unanchored`` / ``downgraded``: a plain-hashed record no checkpoint vouches for, or one
  after keyed records: a chain re-hashed with the project's code but without the key;
- ``checkpoint_mismatch``: the record at a signed checkpoint's seq has another hash;
- ``tail_deleted``: the chain ends before its head or a signed checkpoint says it did;
- ``head_mismatch`` / ``head_missing``: the head row disagrees with the chain, or is gone;
- ``rules_index``: a decision's fired set (``fired_set_rule`` rows of its ``fired_set``) differs
  from its fired rules, or a set is stored under another set's key;
- ``checkpoint_forged``: a checkpoint line whose MAC does not verify.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from decision_service.audit.keys import Keyring

FORMAT = "audit-v1"  # plain sha256 (records from before the audit key)
KEYED_FORMAT = "audit-v2"  # HMAC-SHA256 under the audit key
GENESIS = "0" * 64

# Every stored column of a decision that goes into its hash, in this order.
HASHED_COLUMNS: tuple[str, ...] = (
    "decision_id",
    "decided_at",
    "application_id",
    "outcome",
    "pd",
    "risk_band",
    "approved_amount",
    "model_name",
    "model_version",
    "model_sha256",
    "ruleset_name",
    "ruleset_version",
    "ruleset_sha256",
    "engine",
    "code_version",
    "trace_id",
    "request_json",
    "decision_json",
)

ProblemKind = Literal[
    "edited",
    "columns_disagree",
    "deleted",
    "reordered",
    "unknown_key",
    "unanchored",
    "downgraded",
    "checkpoint_mismatch",
    "tail_deleted",
    "head_mismatch",
    "head_missing",
    "rules_index",
    "checkpoint_forged",
]


def canonical_time(value: datetime) -> str:
    """RFC 3339 UTC with microseconds: how a timestamp enters the hash."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_values(head: list[Any], row: Mapping[str, Any], columns: tuple[str, ...]) -> bytes:
    for name in columns:
        value = row[name]
        head.append(canonical_time(value) if isinstance(value, datetime) else value)
    return msgspec.json.encode(head)


def record_hash(chain_id: str, seq: int, prev_hash: str, row: Mapping[str, Any]) -> str:
    """The plain sha256 (hex) of a decision record from before the audit key (legacy)."""
    message = canonical_values([FORMAT, chain_id, seq, prev_hash], row, HASHED_COLUMNS)
    return hashlib.sha256(message).hexdigest()


def record_message(
    key_id: str, chain_id: str, seq: int, prev_hash: str, row: Mapping[str, Any]
) -> bytes:
    """What a decision record's MAC covers."""
    return canonical_values([KEYED_FORMAT, key_id, chain_id, seq, prev_hash], row, HASHED_COLUMNS)


def record_mac(
    keyring: Keyring, chain_id: str, seq: int, prev_hash: str, row: Mapping[str, Any]
) -> str:
    """HMAC-SHA256 (hex) of a decision record under the current key (``row["key_id"]``)."""
    message = record_message(row["key_id"], chain_id, seq, prev_hash, row)
    return keyring.mac(message, row["key_id"])


class Problem(msgspec.Struct, frozen=True):
    """The first broken record of one chain."""

    chain_id: str
    seq: int  # the seq where the chain breaks (expected seq for a gap)
    decision_id: str | None  # the stored record found there (None if nothing is left)
    kind: ProblemKind
    detail: str
    log: str = "decision"  # decision | access_log | change_log | checkpoints | fired_set
    record_id: str | None = None  # decision_id, or the access/change record's id


class ChainReport(msgspec.Struct, frozen=True):
    chain_id: str
    records: int
    last_seq: int  # highest seq found (0 if none)
    head_seq: int | None  # what the head row says (None if the head row is missing)
    ok: bool
    log: str = "decision"
    checkpoint_seq: int | None = None  # the highest seq a signed checkpoint vouches for
    legacy_records: int = 0  # plain-hashed records (from before the audit key)


class VerifyReport(msgspec.Struct, frozen=True):
    ok: bool
    records: int  # decision records checked
    chains: list[ChainReport]  # the decision chains
    problems: list[Problem]  # at most one per chain: its first broken record
    logs: list[ChainReport] = msgspec.field(default_factory=list)  # access_log, change_log
    checkpoints: int = 0  # signed checkpoint lines read
    warnings: list[str] = msgspec.field(default_factory=list)
    mode: str = "full"  # or "incremental": from each chain's last verified checkpoint on

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None


@dataclass(frozen=True)
class Anchor:
    """What the signed checkpoints say about one chain: the highest seq they vouch for, its
    hash, and up to which seq the chain may hold plain-hashed (pre-key) records."""

    seq: int
    hash: str
    at: str
    legacy_through: int = 0


@dataclass(frozen=True)
class LogSpec:
    """How the records of one log are hashed and what else each record must satisfy."""

    log: str
    id_column: str
    message: Callable[[str, str, int, str, Mapping[str, Any]], bytes]  # keyed MAC input
    legacy_hash: Callable[[str, int, str, Mapping[str, Any]], str] | None = None
    check_row: Callable[[Mapping[str, Any]], str | None] | None = None  # columns_disagree


class ChainWalk:
    """Checks one chain record by record, in seq order; stops at the first problem."""

    def __init__(
        self,
        spec: LogSpec,
        chain_id: str,
        keyring: Keyring,
        anchor: Anchor | None = None,
        *,
        legacy_needs_anchor: bool = True,
        start: Anchor | None = None,
    ) -> None:
        """``start``: walk from this verified checkpoint on (incremental verify): the rows
        given begin at its seq, and that record must still have its hash."""
        self.spec = spec
        self.chain_id = chain_id
        self.keyring = keyring
        self.anchor = anchor
        self.start = start
        self.legacy_needs_anchor = legacy_needs_anchor
        self.expected_seq = 1 if start is None else start.seq
        self.prev_hash: str | None = GENESIS if start is None else None
        self.records = 0
        self.legacy = 0
        self.keyed = False
        self.last_seq = 0
        self.last_hash: str | None = None
        self.problem: Problem | None = None

    def check(self, row: Mapping[str, Any]) -> None:
        self.records += 1
        seq = row["seq"]
        self.last_seq = seq
        self.last_hash = row["record_hash"]
        if self.problem is not None:
            return
        record_id = row[self.spec.id_column]
        if seq != self.expected_seq:
            first, last = self.expected_seq, seq - 1
            missing = f"seq {first}" if first == last else f"seq {first}..{last}"
            self._fail(first, record_id, "deleted", f"{missing} missing before seq {seq}: deleted")
        elif self.prev_hash is not None and row["prev_hash"] != self.prev_hash:
            self._fail(
                seq,
                record_id,
                "reordered",
                "prev_hash is not the hash of the previous record: reordered or re-linked",
            )
        else:
            self._check_record(seq, record_id, row)
        for anchor in (self.anchor, self.start):
            if (
                self.problem is None
                and anchor is not None
                and seq == anchor.seq
                and row["record_hash"] != anchor.hash
            ):
                self._fail(
                    seq,
                    record_id,
                    "checkpoint_mismatch",
                    f"the signed checkpoint of {anchor.at} holds another hash for seq {seq}: "
                    "the chain was rewritten",
                )
        self.expected_seq = seq + 1
        self.prev_hash = row["record_hash"]

    def _check_record(self, seq: int, record_id: str, row: Mapping[str, Any]) -> None:
        spec = self.spec
        if spec.check_row is not None and (disagreement := spec.check_row(row)) is not None:
            self._fail(seq, record_id, "columns_disagree", disagreement)
            return
        key_id = row["key_id"]
        if key_id is None:
            self._check_legacy(seq, record_id, row)
            return
        self.keyed = True
        message = spec.message(key_id, self.chain_id, seq, row["prev_hash"], row)
        ok = self.keyring.check(message, key_id, row["record_hash"])
        if ok is None:
            self._fail(seq, record_id, "unknown_key", f"audit key {key_id} is not in the key file")
        elif not ok:
            self._fail(seq, record_id, "edited", "stored columns do not match their MAC: edited")

    def _check_legacy(self, seq: int, record_id: str, row: Mapping[str, Any]) -> None:
        spec, anchor = self.spec, self.anchor
        rehashed = "re-hashed without the audit key"
        if spec.legacy_hash is None:
            self._fail(seq, record_id, "downgraded", f"record has no key id: {rehashed}")
        elif self.keyed:
            self._fail(
                seq, record_id, "downgraded", f"plain-hashed record after keyed ones: {rehashed}"
            )
        elif spec.legacy_hash(self.chain_id, seq, row["prev_hash"], row) != row["record_hash"]:
            self._fail(seq, record_id, "edited", "stored columns do not match record_hash: edited")
        elif self.legacy_needs_anchor and (anchor is None or seq > anchor.legacy_through):
            vouched = (
                "no signed checkpoint vouches for this chain"
                if anchor is None
                else f"the signed checkpoint of {anchor.at} vouches for plain-hashed records "
                f"up to seq {anchor.legacy_through} only"
            )
            self._fail(
                seq, record_id, "unanchored", f"plain-hashed record, but {vouched}: {rehashed}"
            )
        else:
            self.legacy += 1

    def finish(self, head: Mapping[str, Any] | None, *, heads_kept: bool = True) -> ChainReport:
        """Close the walk: the head row (``heads_kept``: the log keeps one) and the anchor."""
        head_seq = None if head is None else head["last_seq"]
        start = self.start
        if self.problem is None and start is not None and self.records == 0:
            self._fail(
                start.seq,
                None,
                "tail_deleted",
                f"seq {start.seq}, verified by the checkpoint of {start.at}, is gone: deleted "
                "(a full verify shows where the chain now ends)",
            )
        if self.problem is None and heads_kept:
            self._check_head(head)
        anchor = self.anchor
        if self.problem is None and anchor is not None and anchor.seq > self.last_seq:
            first = self.last_seq + 1
            self._fail(
                first,
                None,
                "tail_deleted",
                f"seq {first}..{anchor.seq} missing at the end of the chain: the signed "
                f"checkpoint of {anchor.at} saw seq {anchor.seq}: deleted",
            )
        return ChainReport(
            self.chain_id,
            self.records,
            self.last_seq,
            head_seq,
            ok=self.problem is None,
            log=self.spec.log,
            checkpoint_seq=None if anchor is None else anchor.seq,
            legacy_records=self.legacy,
        )

    def _check_head(self, head: Mapping[str, Any] | None) -> None:
        if head is None:
            if self.records:
                self._fail(self.last_seq, None, "head_missing", "head row missing for this chain")
            return
        head_seq, head_hash = head["last_seq"], head["last_hash"]
        if head_seq > self.last_seq:
            first = self.last_seq + 1
            missing = f"seq {first}" if first == head_seq else f"seq {first}..{head_seq}"
            self._fail(
                first, None, "tail_deleted", f"{missing} missing at the end of the chain: deleted"
            )
        elif head_seq < self.last_seq or head_hash != self.last_hash:
            self._fail(
                self.last_seq,
                None,
                "head_mismatch",
                f"head row (seq {head_seq}) does not match the last record (seq {self.last_seq})",
            )

    def _fail(self, seq: int, record_id: str | None, kind: ProblemKind, detail: str) -> None:
        decision_id = record_id if self.spec.log == "decision" else None
        self.problem = Problem(
            self.chain_id, seq, decision_id, kind, detail, log=self.spec.log, record_id=record_id
        )


DECISIONS = LogSpec(
    log="decision", id_column="decision_id", message=record_message, legacy_hash=record_hash
)
