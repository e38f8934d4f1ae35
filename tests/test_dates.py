"""The audit filters' date parser, shared by GET /decisions and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from decision_service.dates import InvalidDate, parse_instant


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24", datetime(2026, 11, 24, tzinfo=UTC)),
        ("2026-11-24T21:00:00Z", datetime(2026, 11, 24, 21, tzinfo=UTC)),
        ("2026-11-24 21:00", datetime(2026, 11, 24, 21, tzinfo=UTC)),
        ("2026-11-24T21:00:00.5+02:00", datetime(2026, 11, 24, 19, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-24t21:00:00z", datetime(2026, 11, 24, 21, tzinfo=UTC)),
    ],
)
def test_accepted_forms_are_utc(text: str, expected: datetime) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "20261124",
        "yesterday",
        "2026-02-30",
        "2026-11-24T25:00",
        "2026-11-24T21:00+0200",
        "",
        "2026-11-24\n",
        "2026-11-24T21:00:00.1234567Z",
    ],
)
def test_everything_else_is_refused_with_the_expected_forms(text: str) -> None:
    with pytest.raises(InvalidDate, match=r"expected a date \(2026-11-24\) or an RFC 3339"):
        parse_instant(text)
