"""Reading the `tests:` of a rule file: each case's facts (normalised by the schema) and its
expectations, checked against the file's rule ids and derived fields. file_test_runs.py runs them.
"""

from __future__ import annotations

from typing import Any

import yaml

from decision_service.decision import OUTCOMES
from decision_service.rules.limits import MAX_ID_CHARS, MAX_TESTS
from decision_service.rules.ruleset import TestCase
from decision_service.rules.yaml_reader import NodeReader, _Abort

_TEST_KEYS = {"name", "given", "expect"}
_EXPECT_KEYS = {"outcome", "fired", "derived", "max_amount", "not_fired"}


class FileTestReader(NodeReader):
    def _tests(self, node: yaml.Node | None, rule_ids: set[str], derived) -> list[TestCase]:
        if node is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, None, "tests must be a list")
            return []
        if len(node.value) > MAX_TESTS:
            self.error(node, None, f"{len(node.value)} tests; the limit is {MAX_TESTS} per file")
            return []
        out = []
        for i, tnode in enumerate(node.value):
            try:
                case = self._test(i, tnode, rule_ids, derived)
            except _Abort:
                continue
            if case is not None:
                out.append(case)
        return out

    def _test(self, i: int, tnode: yaml.Node, rule_ids: set[str], derived) -> TestCase | None:
        label = f"tests[{i}]"
        m = self.mapping(tnode, label, "a test")
        name = self.value(m["name"], label) if "name" in m else label
        if not isinstance(name, str | int | float) or isinstance(name, bool):
            self.error(m["name"], label, "a test's name must be text")
            return None
        label = f"test {str(name)[:MAX_ID_CHARS]!r}"
        self.unknown_keys(tnode, m, _TEST_KEYS, label, "a test")
        given_node = m.get("given")
        given = {}
        if given_node is not None:
            gmap = self.mapping(given_node, label, "given")
            given = {k: self.value(v, label) for k, v in gmap.items()}
            for fname in given:
                if fname not in self.schema.fields:
                    self.error(self._key_node(given_node, fname), label, f"unknown fact {fname!r}")
        try:
            given = self.schema.normalise(given)
        except ValueError as e:
            self.error(given_node, label, str(e))
            return None
        expect_node = m.get("expect")
        expect: dict[str, Any] = {}
        if expect_node is not None:
            emap = self.mapping(expect_node, label, "expect")
            ok = True
            for k, vnode in emap.items():
                v = self.value(vnode, label)
                problem = _expectationproblem(k, v, rule_ids, derived)
                if problem is not None:
                    self.error(
                        vnode if k in _EXPECT_KEYS else self._key_node(expect_node, k),
                        label,
                        problem,
                    )
                    ok = False
                expect[k] = v
            if not ok:
                return None
        return TestCase(str(name), given, expect, tnode.start_mark.line + 1)


def _expectationproblem(k: str, v: Any, rule_ids: set[str], derived) -> str | None:
    """What is wrong with one `expect` entry, or None."""
    if k not in _EXPECT_KEYS:
        return f"unknown expectation {k!r} (allowed: {', '.join(sorted(_EXPECT_KEYS))})"
    if k == "outcome":
        if not isinstance(v, str) or v not in OUTCOMES:
            return f"expected outcome must be one of {', '.join(OUTCOMES)}"
    elif k in ("fired", "not_fired"):
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            return f"{k} must be a list of rule ids"
        unknown = [x for x in v if x not in rule_ids]
        if unknown:
            return f"{k}: no rule with id {unknown[0]!r}"
    elif k == "derived":
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v):
            return "derived must be a mapping of derived field → expected value"
        for name, want in v.items():
            if name not in derived:
                return f"derived: no rule derives {name!r}"
            if isinstance(want, list | dict):
                return f"derived {name}: expected a number, text or true/false"
    elif k == "max_amount" and v is not None and not _is_number(v):
        return "max_amount must be a number (or null for no cap)"
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
