"""A loaded rule file: the Ruleset, its Rules, their Exprs and the file's TestCases.

What language.py builds from YAML and every engine, check and report reads; no parsing here.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from decision_service.rules import expressions as ex
from decision_service.rules.schema import FactSchema, FieldType

ROLES = ("champion", "challenger")
MAX_PRIORITY = 65534  # durable_rules' pri is an unsigned short; 65535 is our catch-all


@dataclass(frozen=True, slots=True)
class Expr:
    text: str
    node: ex.Node


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    description: str
    priority: int
    stage: int
    when: Expr
    outcome: str | None
    reason: str | None
    code: str
    set: dict[str, Any]
    compute: dict[str, Expr]
    max_amount: Expr | None
    then: dict[str, Any]  # as written
    index: int  # position in the file
    line: int
    reads: tuple[str, ...]  # fields the condition reads


@dataclass(frozen=True, slots=True)
class TestCase:
    name: str
    given: dict[str, Any]
    expect: dict[str, Any]
    line: int
    __test__ = False  # not a pytest class


@dataclass(frozen=True)
class Ruleset:
    name: str
    version: str
    description: str
    owner: str
    effective_from: str | None
    effective_to: str | None
    default_outcome: str
    rules: tuple[Rule, ...]  # in firing order: stage asc, priority desc, file order
    tests: tuple[TestCase, ...]
    derived: dict[str, FieldType]  # fields set/computed by rules
    derived_stage: dict[str, int]
    schema: FactSchema
    source: str
    sha256: str
    file: str
    stages: tuple[int, ...] = field(default=())
    tables: tuple[Any, ...] = field(default=())  # tables.Table, in file order
    table_index: Any = None  # tables.TableIndex when the file has tables
    role: str = "champion"
    # challengers only: the share of decisions they run on, and a model version of their own
    sample: float = 1.0
    model: str | None = None
    # effective_from / effective_to as aware UTC datetimes (None: unbounded)
    effective_from_at: dt.datetime | None = None
    effective_to_at: dt.datetime | None = None
    # (line, column) of each top-level key's value, for errors about the file as a whole
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)

    @functools.cached_property
    def window(self) -> tuple[float, float]:
        """[effective_from, effective_to) in POSIX seconds, unbounded as -inf / inf (once:
        challengers check it on every decision)."""
        start, end = self.effective_from_at, self.effective_to_at
        return (
            -math.inf if start is None else start.timestamp(),
            math.inf if end is None else end.timestamp(),
        )

    def rules_in_stage(self, stage: int) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.stage == stage)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
