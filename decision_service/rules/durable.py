"""The durable_rules engine, driven through its C module with every guard of RULES-ENGINE.md.

Guards (each has a test in tests/rules/test_durable_hazards.py):
- no `Host` (no timer threads): we assert, drain this session's actions and delete the session
  ourselves, under a lock, with `start_action_for_state` / `complete_and_start_action`;
- every session is deleted (`delete_state`) after each evaluation: no 1,024-session MemoryError;
- a lowest-priority catch-all rule per durable ruleset, so an action always runs (delete_state on
  a session where no action ran segfaults);
- a discriminator (`k == "app"`) on every pattern;
- floats are formatted by us (`1e-05` → `1.0e-05`; non-finite values are never sent);
- at most 25 rules per durable ruleset (error 303 / hangs with large rulesets), and at most
  MAX_PROPERTIES fact properties (error 302 beyond ~252);
- strict fact types (the schema's normalise) and only the fields each chunk's rules use;
- hits are de-duplicated by rule name (`$or` can fire a rule more than once);
- durable rule names are ASCII (`r<i>`), whatever our ids are: its messages escape the rest;
- no construct the engine cannot take: a `$or` of >= 512 alternatives hangs `assert_fact`
  (1,000 hang `create_ruleset`), nesting 15 deep is error 113. A condition wider than
  MAX_ALTERNATIVES, deeper than MAX_NESTING or with more than MAX_ATOMS comparisons is
  materialised whole: our code computes its (three-valued) truth before the assert and
  durable matches that boolean fact;
- versioned ruleset names; `delete_ruleset` when the engine is closed or garbage-collected.

How our rules become durable rulesets (conditions, synthetic facts, chunks, JSON) is in
durable_translation.py; this module holds the engine: creating and deleting durable rulesets,
and one session per chunk per evaluation. The trace is recomputed from our AST
(evaluation.run_stages).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import durable_rules_engine as dre

from decision_service.rules import expressions as ex
from decision_service.rules.compiled import compile_effects
from decision_service.rules.delta import Kept
from decision_service.rules.durable_translation import (
    MAX_PROPERTIES,
    Synthetic,
    SyntheticCondition,
    _groups,
    _RuleCompiler,
    to_json,
)
from decision_service.rules.evaluation import Evaluation, Matcher, run_stages
from decision_service.rules.ruleset import MAX_PRIORITY, Rule, Ruleset

CHUNK_SIZE = 25
DISCRIMINATOR = ("k", "app")
CATCH_ALL = "zz_catch_all"
_ruleset_ids = itertools.count(1)


class DurableEngineError(RuntimeError):
    pass


@dataclass
class _Chunk:
    name: str
    handle: int
    rules: dict[str, Rule]  # durable rule name → our rule
    fields: tuple[str, ...]  # application/derived fields to send
    synthetics: tuple[Synthetic | SyntheticCondition, ...]


_live: set[int] = set()  # handles of durable rulesets not yet deleted


def live_ruleset_count() -> int:
    """How many durable rulesets this process holds (for tests and metrics)."""
    return len(_live)


def _delete_rulesets(handles: list[int]) -> None:
    while handles:
        h = handles.pop()
        _live.discard(h)
        with contextlib.suppress(Exception):  # interpreter shutdown
            dre.delete_ruleset(h)


class DurableEngine:
    name = "durable_rules"

    def __init__(self, ruleset: Ruleset, chunk_size: int = CHUNK_SIZE) -> None:
        if not 1 <= chunk_size <= CHUNK_SIZE:
            raise ValueError(f"chunk_size must be 1..{CHUNK_SIZE}")
        self.ruleset = ruleset
        self._schema = ruleset.schema
        self._lock = threading.Lock()
        self._sids = itertools.count(1)
        self._handles: list[int] = []
        self._finalizer = weakref.finalize(self, _delete_rulesets, self._handles)
        self._stages: list[list[_Chunk]] = []
        self.definitions: dict[str, dict[str, Any]] = {}  # durable JSON, for inspection
        self.closed = False
        self._order = {r.id: i for i, r in enumerate(ruleset.rules)}
        self._effects = compile_effects(ruleset)
        tag = f"{ruleset.name}@{ruleset.version}#{next(_ruleset_ids)}"
        try:
            for si, stage in enumerate(ruleset.stages):
                rules = [r for r in ruleset.rules if r.stage == stage]
                chunks = [
                    self._chunk(f"{tag}/s{si}/c{ci}", group)
                    for ci, group in enumerate(_groups(rules, chunk_size))
                ]
                self._stages.append(chunks)
        except BaseException:
            self.close()
            raise

    def _chunk(self, name: str, rules: list[Rule]) -> _Chunk:
        compiler = _RuleCompiler({**self._schema.fields, **self.ruleset.derived})
        definition: dict[str, Any] = {}
        by_name: dict[str, Rule] = {}
        disc = {DISCRIMINATOR[0]: DISCRIMINATOR[1]}
        for i, rule in enumerate(rules):
            cond = compiler.rule_condition(ex.to_nnf(rule.when.node))
            rname = f"r{i}"
            by_name[rname] = rule
            definition[rname] = {
                "all": [{"m": {"$and": [disc, cond]}}],
                "pri": MAX_PRIORITY - rule.priority,
            }
        # lowest priority, matches every application: an action always runs
        definition[CATCH_ALL] = {"all": [{"m": disc}], "pri": MAX_PRIORITY + 1}
        synthetics = tuple(compiler.synthetics.values())
        used_directly = tuple(compiler.direct)
        if len(synthetics) + len(used_directly) > MAX_PROPERTIES:  # _groups keeps us below
            raise DurableEngineError(f"{name}: a fact would need over {MAX_PROPERTIES} properties")
        try:
            handle = dre.create_ruleset(name, to_json(definition))
        except dre.error as e:
            raise DurableEngineError(f"durable_rules rejected ruleset {name}: {e}") from e
        self._handles.append(handle)
        _live.add(handle)
        self.definitions[name] = definition
        return _Chunk(name, handle, by_name, used_directly, synthetics)

    def _run_chunk(self, chunk: _Chunk, env: Mapping[str, Any]) -> list[Rule]:
        sid = str(next(self._sids))
        parts = ['{"sid":"', sid, '","id":1,"k":"app"']
        for f in chunk.fields:
            v = env.get(f)
            if v is not None:
                parts.append(f',"{f}":{to_json(v)}')
        for s in chunk.synthetics:
            v = s.compute(env)
            if v is not None:
                parts.append(f',"{s.name}":{to_json(v)}')
        parts.append("}")
        fact = "".join(parts)
        h = chunk.handle
        hits: dict[str, None] = {}
        try:
            _code, state = dre.assert_fact(h, fact)
        except dre.error as e:
            # no action ran: deleting the session could crash the process; leave it
            raise DurableEngineError(f"durable_rules failed on {chunk.name}: {e}") from e
        try:
            result = dre.start_action_for_state(h, state)
            if result is None:
                raise DurableEngineError(f"no action ran on {chunk.name} (catch-all missing?)")
            message = result[1]
            while message:
                hits.setdefault(message[2 : message.index('"', 2)])
                message = dre.complete_and_start_action(h, state)
        finally:
            dre.delete_state(h, sid)
        hits.pop(CATCH_ALL, None)
        return [chunk.rules[n] for n in hits]

    def _match(self, si: int, env: dict[str, Any]) -> list[Rule]:
        found: list[Rule] = []
        for chunk in self._stages[si]:
            found += self._run_chunk(chunk, env)
        # de-duplicated already; firing order is ours (stage, priority desc, file order)
        order = self._order
        found.sort(key=lambda r: order[r.id])
        return found

    @property
    def _matchers(self) -> list[Matcher]:
        """One matcher per stage (built per call: kept, they would make a cycle via `self`)."""
        return [functools.partial(self._match, si) for si in range(len(self._stages))]

    def evaluate(
        self,
        facts: Mapping[str, Any],
        *,
        trace: bool = True,
        normalised: bool = False,
        keep: Kept | None = None,
    ) -> Evaluation:
        env = facts if normalised else self._schema.normalise(facts)
        with self._lock:
            if self.closed:
                raise DurableEngineError("this ruleset version has been unloaded")
            return run_stages(
                self.ruleset, env, self._matchers, self._effects, trace=trace, keep=keep
            )

    def evaluate_after(self, kept: Kept) -> Evaluation | None:
        """Always in full: durable_rules matches every rule (compiled.evaluate_after)."""
        return None

    def close(self) -> None:
        """Delete the durable rulesets (idempotent)."""
        with self._lock:
            self.closed = True
            self._finalizer()

    @property
    def ruleset_names(self) -> list[str]:
        return list(self.definitions)
