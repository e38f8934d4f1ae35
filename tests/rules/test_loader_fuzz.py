"""Fuzzing the loader: random edits of the shipped policy (bytes replaced, lines dropped or
duplicated, YAML punctuation inserted) either load or are refused with a RuleFileError at a
position; building a snapshot from whatever loads raises nothing but RulesetInvalid."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decision_service.rules.language import RuleFileError, load_ruleset_from_text
from decision_service.rules.limits import decode_rule_bytes
from decision_service.rules.snapshot import RulesetInvalid, build_snapshot

from ._data import POLICY, SCHEMA

BASE = POLICY.read_bytes()
LINES = BASE.split(b"\n")
SPECIAL = [
    b"&a ",
    b"*a",
    b"!!",
    b"!x ",
    b"[",
    b"]",
    b"{",
    b"}",
    b": ",
    b"- ",
    b"? ",
    b"|",
    b">",
    b"'",
    b'"',
    b"#",
    b"%",
    b"@",
    b"`",
    b"\t",
    b"\x00",
    b"\xff",
    b"\xef\xbb\xbf",
    b".nan",
    b".inf",
    b"1e999",
    b"9" * 50,
    b"\xc3\x89",
    b"2026-13-01",
    b"((((",
    b"not ",
]


@st.composite
def mutated(draw) -> bytes:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["insert", "drop", "dup", "replace", "bytes"]))
        if kind == "insert":
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(st.sampled_from(SPECIAL)) + line[at:]
        elif kind == "drop" and len(lines) > 1:
            del lines[i]
        elif kind == "dup":
            lines.insert(i, lines[i])
        elif kind == "replace":
            lines[i] = draw(st.binary(max_size=40))
        else:
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(st.binary(min_size=1, max_size=8)) + line[at + 1 :]
    return b"\n".join(lines)


def _load(raw: bytes):
    text = decode_rule_bytes(raw, "fuzz.yaml")
    return text, load_ruleset_from_text(text, "fuzz.yaml", SCHEMA)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_a_mutated_policy_loads_or_is_refused_with_a_position(raw: bytes) -> None:
    try:
        text, _rs = _load(raw)
    except RuleFileError as e:
        assert e.file == "fuzz.yaml" and e.line >= 1 and e.column >= 1
        assert str(e).startswith(f"fuzz.yaml:{e.line}:{e.column}: ")
        return
    try:
        snap = build_snapshot(text, "fuzz.yaml", SCHEMA)
    except RulesetInvalid as e:
        assert e.errors
        return
    for eng in snap.engines.values():
        eng.close()


@pytest.mark.parametrize("special", SPECIAL)
def test_each_special_token_at_each_kind_of_place(special: bytes) -> None:
    for i in (0, 3, 12, 20, len(LINES) - 3):
        for raw in (LINES[i] + special, special + LINES[i], special):
            lines = list(LINES)
            lines[i] = raw
            try:
                _load(b"\n".join(lines))
            except RuleFileError as e:
                assert e.line >= 1 and e.column >= 1
