"""Reading a rule file's YAML nodes: values, mappings, text and whole numbers, each read
collecting a RuleFileError at the node's line and column instead of stopping at the first.

The base of the rule file loader (language.py) and of the readers of its parts: rules
(rule_reader.py), tests (file_tests.py) and decision tables (table_headers.py, table_rows.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml

from decision_service.rules.limits import RuleFileError, bad_number, problem
from decision_service.rules.schema import FactSchema


class _Abort(Exception):
    pass


class NodeReader:
    def __init__(self, text: str, file: str, schema: FactSchema) -> None:
        self.text = text
        self.file = file
        self.schema = schema
        self.errors: list[RuleFileError] = []
        self._constructor = yaml.SafeLoader("")

    # -- error helpers ----------------------------------------------------------------------
    def error(
        self, node: yaml.Node | None, rule_id: str | None, message: str, pos: int | None = None
    ):
        line, col = 1, 1
        if node is not None:
            line = node.start_mark.line + 1
            col = node.start_mark.column + 1
            if isinstance(node, yaml.ScalarNode) and pos is not None:
                style = node.style
                if style in {"|", ">"}:
                    # block scalar: the text starts on the next line
                    before = str(node.value)[:pos]
                    line += 1 + before.count("\n")
                    col = len(before) - (before.rfind("\n") + 1) + 1
                else:
                    col += pos + (1 if style in {"'", '"'} else 0)
        self.errors.append(RuleFileError(self.file, rule_id, line, col, message))

    def value(self, node: yaml.Node, rule_id: str | None = None) -> Any:
        try:
            v = self._constructor.construct_object(node, deep=True)
        except Exception as e:  # e.g. a timestamp like 2026-13-01, an int too long to read
            self.error(node, rule_id, f"cannot read this value: {problem(e)}")
            raise _Abort from None
        bad = bad_number(v)
        if bad is not None:
            self.error(node, rule_id, bad)
            raise _Abort
        return v

    def mapping(self, node: yaml.Node, rule_id: str | None, what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, rule_id, f"{what} must be a mapping")
            raise _Abort
        out: dict[str, yaml.Node] = {}
        for k, v in node.value:
            key = self.value(k, rule_id)
            if not isinstance(key, str):
                self.error(k, rule_id, f"{what}: keys must be text")
                continue
            if key in out:
                self.error(k, rule_id, f"{what}: duplicate key {key!r}")
            out[key] = v
        return out

    def unknown_keys(
        self, node: yaml.Node, m: dict[str, yaml.Node], allowed: set, rule_id, what
    ) -> None:
        for k, _v in node.value:
            key = self.value(k, rule_id)
            if key not in allowed:
                self.error(
                    k,
                    rule_id,
                    f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(allowed))})",
                )

    def text_of(self, node: yaml.Node | None, rule_id, what, required=False) -> str | None:
        if node is None:
            return None
        v = self.value(node, rule_id)
        if isinstance(v, dt.date):
            return v.isoformat()
        if isinstance(v, int | float) and not isinstance(v, bool) and what == "version":
            return str(v)
        if not isinstance(v, str):
            self.error(node, rule_id, f"{what} must be text")
            return None
        return v

    def _key_node(self, mapping_node: yaml.Node, key: str) -> yaml.Node:
        for k, _v in mapping_node.value:
            if self.value(k) == key:
                return k
        return mapping_node

    def _int(self, node: yaml.Node, rid, what, lo, hi) -> int | None:
        v = self.value(node, rid)
        if isinstance(v, bool) or not isinstance(v, int):
            self.error(node, rid, f"{what} must be a whole number ({lo}..{hi}), got {v!r}")
            return None
        if not lo <= v <= hi:
            self.error(node, rid, f"{what} must be between {lo} and {hi}, got {v}")
            return None
        return v
