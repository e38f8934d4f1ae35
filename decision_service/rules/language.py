"""Rule files: YAML → a validated, type-checked Ruleset. Errors carry file, rule id, line, col.

What a file may hold at most, and the guards that keep a hostile file from hanging or crashing
anything, are in limits.py; this module gives the file its meaning.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decision_service.rules import expressions as ex
from decision_service.rules.limits import (
    ID_CHARS,
    MAX_FILE_BYTES,
    MAX_ID_CHARS,
    MAX_RULES,
    MAX_TESTS,
    RuleFileError,
    bad_number,
    compose_yaml,
    cyclic_gc_paused,
    guard_expression,
    guard_tree,
    problem,
    read_rule_text,
    yaml_error,
)
from decision_service.rules.schema import BOOLEAN, NUMBER, FactSchema, FieldType

__all__ = ["RuleFileError", "Ruleset", "load_ruleset", "load_ruleset_from_text", "read_rule_text"]

OUTCOMES = ("approve", "refer", "decline")
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

    def rules_in_stage(self, stage: int) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.stage == stage)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


# ---------------------------------------------------------------------------------------------

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
_RULE_KEYS = {"id", "description", "priority", "stage", "when", "then"}
_THEN_KEYS = {"outcome", "reason", "code", "set", "compute", "max_amount"}
_TEST_KEYS = {"name", "given", "expect"}
_EXPECT_KEYS = {"outcome", "fired", "derived", "max_amount", "not_fired"}


class _Abort(Exception):
    pass


class _Loader:
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

    # -- main ------------------------------------------------------------------------------
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
            rid, m, then, stage = h["id"], h["m"], h["then"], h["stage"]
            if then is None:
                continue
            for kind in ("set", "compute"):
                if kind not in then:
                    continue
                tnode = then[kind]
                try:
                    tm = self.mapping(tnode, rid, f"then.{kind}")
                except _Abort:
                    continue
                for fname, vnode in tm.items():
                    knode = self._key_node(tnode, fname)
                    if fname in self.schema.fields:
                        self.error(
                            knode, rid, f"derived field {fname!r} would shadow an input field"
                        )
                        continue
                    if (
                        not (fname.isascii() and fname.isidentifier())
                        or fname in ex.KEYWORDS
                        or fname.startswith("_")
                    ):
                        self.error(knode, rid, f"invalid derived field name {fname!r}")
                        continue
                    prev = derived_stage.get(fname)
                    if prev is not None and prev != stage:
                        self.error(
                            knode,
                            rid,
                            f"{fname!r} is already derived in stage {prev}; a derived field "
                            f"belongs to one stage",
                        )
                        continue
                    derived_stage[fname] = stage
                    if kind == "compute":
                        if fname in derived and derived[fname].kind != "number":
                            self.error(knode, rid, f"{fname!r} is both set and computed")
                        derived[fname] = NUMBER
                        continue
                    lit = self.value(vnode, rid)
                    if isinstance(lit, bool):
                        t = BOOLEAN
                    elif isinstance(lit, int | float):
                        t = NUMBER
                    elif isinstance(lit, str):
                        t = FieldType("category", (lit,))
                    else:
                        self.error(vnode, rid, f"set {fname}: value must be text, number or bool")
                        continue
                    old = derived.get(fname)
                    if old is not None and old.kind != t.kind:
                        self.error(vnode, rid, f"set {fname}: {t.kind} here, {old.kind} elsewhere")
                        continue
                    derived_set_values.setdefault(fname, []).append(lit)
                    if t.kind == "category":
                        vals = tuple(dict.fromkeys(derived_set_values[fname]))
                        t = FieldType("category", vals)
                    derived[fname] = t
            del m

        # decision tables (rules/table_loader.py): pass 1 registers the fields they derive
        from decision_service.rules import table_loader as tb

        table_heads = tb.read_headers(
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

        row_rules, tables = tb.lower(self, table_heads, derived, derived_stage, len(raw_rules))
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

    def _rule_header(self, index: int, rnode: yaml.Node, seen_ids: dict) -> dict:
        m = self.mapping(rnode, f"rules[{index}]", "a rule")
        rid = None
        if "id" not in m:
            self.error(rnode, f"rules[{index}]", "rule has no id")
            raise _Abort
        rid = self.value(m["id"], f"rules[{index}]")
        # ASCII only: ids go into traces, logs, reason codes and engine names, and two ids
        # that look the same (Latin A, Cyrillic А) must not be two different rules
        if not isinstance(rid, str) or not rid or not ID_CHARS.issuperset(rid):
            shown = rid if not isinstance(rid, str) else rid[:MAX_ID_CHARS]
            self.error(
                m["id"],
                f"rules[{index}]",
                f"invalid rule id {shown!r} (ASCII letters, digits, - _ . only)",
            )
            raise _Abort
        if len(rid) > MAX_ID_CHARS:
            self.error(m["id"], f"rules[{index}]", f"rule id longer than {MAX_ID_CHARS} characters")
            raise _Abort
        if rid in seen_ids:
            prev = seen_ids[rid].start_mark.line + 1
            self.error(m["id"], rid, f"duplicate rule id {rid!r} (first defined on line {prev})")
            raise _Abort
        seen_ids[rid] = m["id"]
        self.unknown_keys(rnode, m, _RULE_KEYS, rid, "a rule")
        priority = 0
        if "priority" in m:
            p = self._int(m["priority"], rid, "priority", 0, MAX_PRIORITY)
            priority = p if p is not None else 0
        stage = 1
        if "stage" in m:
            s = self._int(m["stage"], rid, "stage", 1, 99)
            stage = s if s is not None else 1
        then = None
        if "then" not in m:
            self.error(rnode, rid, "rule has no `then`")
        else:
            try:
                then = self.mapping(m["then"], rid, "then")
                self.unknown_keys(m["then"], then, _THEN_KEYS, rid, "then")
            except _Abort:
                then = None
        if "when" not in m:
            self.error(rnode, rid, "rule has no `when` condition")
        return {
            "id": rid,
            "index": index,
            "node": rnode,
            "m": m,
            "then": then,
            "priority": priority,
            "stage": stage,
        }

    def _expr(self, node: yaml.Node, rid: str, kind: str, env) -> Expr | None:
        v = self.value(node, rid)
        if isinstance(v, bool) or (isinstance(v, int | float) and kind == "condition"):
            self.error(node, rid, f"expected an expression, got {v!r}")
            return None
        if isinstance(v, int | float):
            v = repr(v)
        if not isinstance(v, str):
            self.error(node, rid, "expected an expression (text)")
            return None
        try:
            guard_expression(v)
            parsed = ex.parse(v)
            guard_tree(parsed)
            if kind == "condition":
                parsed = ex.check_condition(parsed, env)
            else:
                parsed = ex.check_number(parsed, env)
        except ex.ExpressionError as e:
            self.error(node, rid, e.message, e.pos)
            return None
        return Expr(v.strip(), parsed)

    def _rule_body(self, h: dict, derived, derived_stage) -> Rule | None:
        rid, m, then, stage = h["id"], h["m"], h["then"], h["stage"]
        env: dict[str, FieldType] = dict(self.schema.fields)
        same_stage = set()
        for fname, t in derived.items():
            if derived_stage[fname] < stage:
                env[fname] = t
            elif derived_stage[fname] == stage:
                same_stage.add(fname)
        ok = True

        def check(node: yaml.Node, kind: str) -> Expr | None:
            # give a precise message for same-stage / later-stage use of derived fields
            text = self.value(node, rid)
            if isinstance(text, str):
                try:
                    for tok in ex.tokenize(text):
                        if tok.kind == "name" and tok.text in derived and tok.text not in env:
                            s = derived_stage[tok.text]
                            where = "the same stage" if s == stage else f"a later stage ({s})"
                            self.error(
                                node,
                                rid,
                                f"{tok.text!r} is derived in {where}; only fields derived by "
                                f"earlier stages can be used (put this rule in stage {s + 1})",
                                tok.pos,
                            )
                            return None
                except ex.ExpressionError:
                    pass
            return self._expr(node, rid, kind, env)

        when = check(m["when"], "condition") if "when" in m else None
        if when is None:
            ok = False
        outcome = reason = None
        code = f"RUL-{rid}"
        set_: dict[str, Any] = {}
        compute: dict[str, Expr] = {}
        cap = None
        then_written: dict[str, Any] = {}
        if then is None:
            return None
        then_written = self.value(h["m"]["then"], rid)
        if "outcome" in then:
            outcome = self.value(then["outcome"], rid)
            if outcome not in OUTCOMES:
                self.error(then["outcome"], rid, f"outcome must be one of {', '.join(OUTCOMES)}")
                ok = False
        if "reason" in then:
            reason = self.text_of(then["reason"], rid, "reason")
        if "code" in then:
            code = self.text_of(then["code"], rid, "code") or code
        if outcome is not None and not reason:
            self.error(m["then"], rid, "a rule with an outcome needs a `reason`")
            ok = False
        if "set" in then and isinstance(then["set"], yaml.MappingNode):
            set_ = {self.value(k, rid): self.value(v, rid) for k, v in then["set"].value}
        if "compute" in then and isinstance(then["compute"], yaml.MappingNode):
            for k, vnode in then["compute"].value:
                e = check(vnode, "number")
                if e is None:
                    ok = False
                else:
                    compute[self.value(k, rid)] = e
        if "max_amount" in then:
            cap = check(then["max_amount"], "number")
            if cap is None:
                ok = False
        if not (outcome or set_ or compute or cap):
            self.error(m["then"], rid, "`then` does nothing: give an outcome, set, compute or cap")
            ok = False
        if not ok or when is None:
            return None
        desc = self.text_of(m.get("description"), rid, "description") or ""
        return Rule(
            id=rid,
            description=desc,
            priority=h["priority"],
            stage=stage,
            when=when,
            outcome=outcome,
            reason=reason,
            code=code,
            set=set_,
            compute=compute,
            max_amount=cap,
            then=then_written,
            index=h["index"],
            line=h["node"].start_mark.line + 1,
            reads=tuple(ex.fields_of(when.node)),
        )

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


# ---------------------------------------------------------------------------------------------
# Guards and helpers


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
