"""The dates the audit filters accept (`from`, `to`): one parser for the API and the CLI, so
both accept exactly the same texts and refuse the others with the same words.

Accepted: a calendar date `2026-11-24` (midnight UTC) or an RFC 3339 date-time
`2026-11-24T21:00:00Z` (`T` or a space; seconds and fractions optional; `Z`, `+hh:mm` or no
offset, which means UTC). Stdlib only: the CLI imports it before anything heavy.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DATE = r"\d{4}-\d{2}-\d{2}"
_TIME = r"\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?"
_OFFSET = r"(?:[Zz]|[+-]\d{2}:\d{2})?"
_INSTANT = re.compile(rf"{_DATE}(?:[Tt ]{_TIME}{_OFFSET})?")
EXPECTED = "expected a date (2026-11-24) or an RFC 3339 date-time (2026-11-24T21:00:00Z)"


class InvalidDate(ValueError):
    """The text is not one of the accepted forms; str() is the message shown to people."""


def parse_instant(text: str) -> datetime:
    """An accepted date or date-time → an aware UTC datetime (InvalidDate otherwise)."""
    shown = text if len(text) <= 64 else text[:64] + "…"
    if not _INSTANT.fullmatch(text):
        raise InvalidDate(f"{EXPECTED}, got {shown!r}")
    try:
        value = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError as exc:  # e.g. 2026-02-30 or 25:00
        raise InvalidDate(f"{EXPECTED}, got {shown!r}: {exc}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


DATES = "a date (2026-11-24) or an RFC 3339 date-time (2026-11-24T21:00:00Z), UTC if no offset"


def filter_date(text: str) -> datetime:
    """argparse `type=` for --from/--to: the API's parser, the API's words."""
    import argparse

    try:
        return parse_instant(text)
    except InvalidDate as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
