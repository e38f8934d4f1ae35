"""Rule files: YAML → a validated, type-checked Ruleset. Errors carry file, rule id, line, col.

What a file may hold at most, and the guards that keep a hostile file from hanging or crashing
anything, are in limits.py; this module gives the file its meaning: the file as a whole
here, its rules in rule_reader.py, its tests in file_tests.py, its decision tables in
table_headers.py and table_rows.py, all read through yaml_reader.py. ruleset.py is the result.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import yaml

from decision_service.decision import OUTCOMES
from decision_service.rules import tables as tb
from decision_service.rules.file_tests import FileTestReader
from decision_service.rules.limits import (
    MAX_FILE_BYTES,
    MAX_RULES,
    RuleFileError,
    compose_yaml,
    cyclic_gc_paused,
    read_rule_text,
    yaml_error,
)
from decision_service.rules.rule_reader import RuleReader
from decision_service.rules.ruleset import ROLES, Rule, Ruleset, sha256_text
from decision_service.rules.schema import FactSchema, FieldType
from decision_service.rules.table_headers import read_headers
from decision_service.rules.table_rows import lower
from decision_service.rules.yaml_reader import _Abort

__all__ = ["RuleFileError", "Ruleset", "load_ruleset", "load_ruleset_from_text", "read_rule_text"]


def load_ruleset(path: Path | str, schema: FactSchema) -> Ruleset:
    path = Path(path)
    return load_ruleset_from_text(read_rule_text(path), str(path), schema)


def load_ruleset_from_text(text: str, name_for_errors: str, schema: FactSchema) -> Ruleset:
    """Parse and type-check a rule file's text. Raises RuleFileError (with `.errors`)."""
    if len(text) > MAX_FILE_BYTES:
        raise RuleFileError(
            name_for_errors, None, 1, 1, f"file is larger than {MAX_FILE_BYTES} bytes"
        )
    try:
        with cyclic_gc_paused():
            return _Loader(text, name_for_errors, schema).load()
    except RecursionError:  # a guard below failed: still a refusal, never a crash
        raise RuleFileError(name_for_errors, None, 1, 1, "file is nested too deeply") from None


def parse_instant(value: Any) -> dt.datetime | None:
    """An effective date as an aware UTC datetime: a date means its midnight UTC, a time
    without a zone is UTC. None if `value` is not a date, datetime or ISO 8601 text."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return None


_TOP_KEYS = {
    "ruleset",
    "version",
    "description",
    "owner",
    "effective_from",
    "effective_to",
    "default",
    "rules",
    "tests",
    "tables",
    "role",
    "sample",
    "model",
}


class _Loader(RuleReader, FileTestReader):
    """One rule file's text → a Ruleset, collecting every error (raised together at the end)."""

    def load(self) -> Ruleset:
        try:
            root = compose_yaml(self.text, self.file)
        except yaml.YAMLError as e:
            raise yaml_error(e, self.text, self.file) from None
        if root is None:
            raise RuleFileError(self.file, None, 1, 1, "empty rule file")
        try:
            result = self._load(root)
        except _Abort:
            result = None
        if self.errors:
            first = self.errors[0]
            first.errors = list(self.errors)
            raise first
        assert result is not None
        return result

    def _load(self, root: yaml.Node) -> Ruleset:
        top = self.mapping(root, None, "rule file")
        self.unknown_keys(root, top, _TOP_KEYS, None, "the rule file")
        for key in ("ruleset", "version", "rules"):
            if key not in top and not (key == "rules" and "tables" in top):
                self.error(root, None, f"missing required key {key!r}")
        name = self.text_of(top.get("ruleset"), None, "ruleset") or ""
        version = self.text_of(top.get("version"), None, "version") or ""
        description = self.text_of(top.get("description"), None, "description") or ""
        owner = self.text_of(top.get("owner"), None, "owner") or ""
        eff_from = self.text_of(top.get("effective_from"), None, "effective_from")
        eff_to = self.text_of(top.get("effective_to"), None, "effective_to")
        eff_from_at = self._instant(top.get("effective_from"), "effective_from")
        eff_to_at = self._instant(top.get("effective_to"), "effective_to")
        if eff_from_at and eff_to_at and eff_to_at <= eff_from_at:
            self.error(top["effective_to"], None, "effective_to must be after effective_from")
        role = "champion"
        if "role" in top:
            r = self.value(top["role"])
            if r not in ROLES:
                self.error(top["role"], None, f"role must be one of {', '.join(ROLES)}")
            else:
                role = r
        sample, model = self._challenger_keys(top, role)
        positions = {k: (v.start_mark.line + 1, v.start_mark.column + 1) for k, v in top.items()}
        default_outcome = "refer"
        if "default" in top:
            dnode = top["default"]
            dmap = self.mapping(dnode, None, "default")
            self.unknown_keys(dnode, dmap, {"outcome"}, None, "default")
            if "outcome" in dmap:
                v = self.value(dmap["outcome"])
                if v not in OUTCOMES:
                    self.error(dmap["outcome"], None, f"default outcome must be one of {OUTCOMES}")
                else:
                    default_outcome = v

        rules_node = top.get("rules")
        raw_rules: list[tuple[int, yaml.Node]] = []
        if rules_node is not None:
            if not isinstance(rules_node, yaml.SequenceNode):
                self.error(rules_node, None, "rules must be a list")
            else:
                raw_rules = list(enumerate(rules_node.value))
            if (
                isinstance(rules_node, yaml.SequenceNode)
                and not rules_node.value
                and "tables" not in top
            ):
                self.error(rules_node, None, "a ruleset needs at least one rule")
            if len(raw_rules) > MAX_RULES:
                self.error(
                    rules_node, None, f"{len(raw_rules)} rules; the limit is {MAX_RULES} per file"
                )
                raise _Abort

        # pass 1: ids, stages, priorities, derived fields (so later stages can use them)
        headers = []
        seen_ids: dict[str, yaml.Node] = {}
        derived: dict[str, FieldType] = {}
        derived_stage: dict[str, int] = {}
        derived_set_values: dict[str, list[Any]] = {}
        for index, rnode in raw_rules:
            try:
                h = self._rule_header(index, rnode, seen_ids)
            except _Abort:
                continue
            headers.append(h)
            self._derived_fields(h, derived, derived_stage, derived_set_values)

        # decision tables (table_headers.py): pass 1 registers the fields they derive
        table_heads = read_headers(
            self, top.get("tables"), seen_ids, derived, derived_stage, derived_set_values
        )

        # pass 2: expressions, against schema + fields derived by earlier stages
        rules: list[Rule] = []
        for h in headers:
            try:
                rule = self._rule_body(h, derived, derived_stage)
            except _Abort:
                continue
            if rule is not None:
                rules.append(rule)

        row_rules, tables = lower(self, table_heads, derived, derived_stage, len(raw_rules))
        rules += row_rules  # a table's rows are rules: every engine matches them
        rules.sort(key=lambda r: (r.stage, -r.priority, r.index))
        rule_ids = {r.id for r in rules} | {t.id for t in tables}
        tests = self._tests(top.get("tests"), rule_ids, derived)
        return Ruleset(
            name=name,
            version=version,
            description=description,
            owner=owner,
            effective_from=eff_from,
            effective_to=eff_to,
            default_outcome=default_outcome,
            rules=tuple(rules),
            tests=tuple(tests),
            derived=derived,
            derived_stage=derived_stage,
            schema=self.schema,
            source=self.text,
            sha256=sha256_text(self.text),
            file=self.file,
            stages=tuple(sorted({r.stage for r in rules})),
            tables=tuple(tables),
            table_index=tb.index(tables) if tables else None,
            role=role,
            sample=sample,
            model=model,
            effective_from_at=eff_from_at,
            effective_to_at=eff_to_at,
            positions=positions,
        )

    def _challenger_keys(self, top: dict[str, yaml.Node], role: str) -> tuple[float, str | None]:
        """`sample` (a share in (0, 1]) and `model` (a model version): challengers only."""
        sample, model = 1.0, None
        for key in ("sample", "model"):
            if key in top and role != "challenger":
                self.error(top[key], None, f"{key!r} is for challengers only (role: challenger)")
        if role != "challenger":
            return sample, model
        if "sample" in top:
            v = self.value(top["sample"])
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
                self.error(top["sample"], None, "sample must be a share in (0, 1], e.g. 0.25")
            else:
                sample = float(v)
        if "model" in top:
            model = self.text_of(top["model"], None, "model")
            if model is not None and not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z._-]{0,31}", model):
                self.error(top["model"], None, "model must be a model version, e.g. 1.1.0")
                model = None
        return sample, model

    def _instant(self, node: yaml.Node | None, what: str) -> dt.datetime | None:
        if node is None:
            return None
        at = parse_instant(self.value(node))
        if at is None:
            self.error(node, None, f"{what} must be a date or an ISO 8601 time (2026-12-01T00:00Z)")
        return at
