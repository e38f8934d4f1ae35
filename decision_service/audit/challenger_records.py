"""Challenger results as stored rows, and their MAC.

Each ``challenger_result`` row carries its own HMAC (under the audit key of the decision's
commit) over a canonical JSON array of its columns, decision id first. Why a MAC of its own and
not a place in the decision's chained hash: the decision chain's format stays what it is (old
records, checkpoints and verify are untouched, and a decision verifies whether or not
challengers ran), while an edited challenger row, or one moved to another decision, no longer
verifies. The row is written in the SAME transaction as its decision, so it exists exactly when
the decision does.
"""

from __future__ import annotations

from typing import Any

import msgspec

from decision_service.audit.keys import Keyring

FORMAT = "challenger-v1"
# Every column of a row that goes into its MAC, in this order.
MACED_COLUMNS: tuple[str, ...] = (
    "decision_id",
    "challenger",
    "version",
    "ruleset_sha256",
    "engine",
    "model_version",
    "model_sha256",
    "outcome",
    "approved_amount",
    "risk_band",
    "pd",
    "fired_json",
    "reasons_json",
    "error",
)

_encode = msgspec.json.Encoder().encode


def row_message(key_id: str, row: dict[str, Any]) -> bytes:
    return _encode([FORMAT, key_id, *(row.get(c) for c in MACED_COLUMNS)])


def sign(keyring: Keyring, key_id: str, row: dict[str, Any]) -> dict[str, Any]:
    """The row with its ``key_id`` and ``mac`` (a copy)."""
    return {**row, "key_id": key_id, "mac": keyring.mac(row_message(key_id, row), key_id)}


def check(keyring: Keyring, row: dict[str, Any]) -> bool | None:
    """True if the row's MAC is right, False if not, None if its key is unknown."""
    return keyring.check(row_message(row["key_id"], row), row["key_id"], row["mac"])
