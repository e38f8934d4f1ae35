"""Rule files: YAML → a validated, type-checked Ruleset. Errors carry file, rule id, line, col."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from decision_service.rules import expressions as ex
from decision_service.rules.schema import BOOLEAN, NUMBER, FactSchema, FieldType

OUTCOMES = ("approve", "refer", "decline")
ROLES = ("champion", "challenger")
_Loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # same nodes and marks, faster
MAX_PRIORITY = 65534  # durable_rules' pri is an unsigned short; 65535 is our catch-all

# Limits on a rule file: a rule file is input, and no file may hang, crash or starve the
# service. Each is refused with a message naming the limit (README "Rule files: limits").
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_RULES = 10_000
MAX_TESTS = 5_000
MAX_YAML_DEPTH = 16  # nested mappings/lists (the shipped policy uses 4)
MAX_YAML_EVENTS = 2_000_000
MAX_SCALAR_CHARS = 200_000  # any one YAML value, expressions included
MAX_EXPRESSION_DEPTH = 32  # nested parentheses, `not`s and operators in one expression
MAX_LIST_VALUES = 10_000  # values in one `in [...]` list / alternatives in one `or`
MAX_ID_CHARS = 100
MAX_NUMBER = 2**53  # integers beyond this are not exact as JSON numbers
MAX_NUMBER_DIGITS = 40
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


class RuleFileError(Exception):
    """An error in a rule file, at a position an analyst can go to.

    `errors` holds every error found in the file (this one first).
    """

    def __init__(
        self, file: str, rule_id: str | None, line: int, column: int, message: str
    ) -> None:
        self.file = file
        self.rule_id = rule_id
        self.line = line
        self.column = column
        self.message = message
        self.errors: list[RuleFileError] = [self]
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        rule = f" {self.rule_id}:" if self.rule_id else ""
        return f"{where}:{rule} {self.message}"


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
    role: str = "champion"
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


def read_rule_text(path: Path, name_for_errors: str | None = None) -> str:
    """A rule file's text, refused (RuleFileError) when too big or not UTF-8."""
    name = name_for_errors or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RuleFileError(
                name, None, 1, 1, f"file is {size} bytes; the limit is {MAX_FILE_BYTES}"
            )
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise RuleFileError(name, None, 1, 1, f"cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise RuleFileError(name, None, 1, 1, f"file is larger than {MAX_FILE_BYTES} bytes")
    return decode_rule_bytes(raw, name)


def decode_rule_bytes(raw: bytes, name_for_errors: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        before = raw[: e.start]
        line = before.count(b"\n") + 1
        col = len(before) - (before.rfind(b"\n") + 1) + 1
        raise RuleFileError(
            name_for_errors, None, line, col, f"not UTF-8 text (byte 0x{raw[e.start]:02x})"
        ) from None


def load_ruleset_from_text(text: str, name_for_errors: str, schema: FactSchema) -> Ruleset:
    """Parse and type-check a rule file's text. Raises RuleFileError (with `.errors`)."""
    if len(text) > MAX_FILE_BYTES:
        raise RuleFileError(
            name_for_errors, None, 1, 1, f"file is larger than {MAX_FILE_BYTES} bytes"
        )
    try:
        with _cyclic_gc_paused():
            return _Loader(text, name_for_errors, schema).load()
    except RecursionError:  # a guard below failed: still a refusal, never a crash
        raise RuleFileError(name_for_errors, None, 1, 1, "file is nested too deeply") from None


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic GC while a file is parsed: every full collection would walk the whole node
    tree (half a million objects for a 10,000-rule file) holding the GIL, stalling /decide.
    The tree has no cycles (aliases are refused) and is freed by reference counting when the
    load returns; the collector then resumes as it was."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:  # loads in several threads: the first in disables, the last out enables
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = True


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
    "role",
}
_RULE_KEYS = {"id", "description", "priority", "stage", "when", "then"}
_THEN_KEYS = {"outcome", "reason", "code", "set", "compute", "max_amount"}
_TEST_KEYS = {"name", "given", "expect"}
_EXPECT_KEYS = {"outcome", "fired", "derived", "max_amount", "not_fired"}


class _Abort(Exception):
    pass


class _Mark(NamedTuple):
    """Where a node starts (0-based). A tuple of ints is not tracked by the cyclic GC: a
    10,000-rule file makes a million marks, and every full collection would walk them."""

    line: int
    column: int

    def __str__(self) -> str:
        return f"line {self.line + 1}, column {self.column + 1}"


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
            self.error(node, rule_id, f"cannot read this value: {_problem(e)}")
            raise _Abort from None
        bad = _bad_number(v)
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
    def compose(self) -> yaml.Node | None:
        """Build the node tree from the YAML events, in Python (no recursion; the C composer
        would hold the GIL for a whole large file), refusing on the way what the rest of the
        loader must never see: aliases and anchors (alias bombs, cycles), explicit tags
        (`!!python/object`, custom tags), nesting deeper than MAX_YAML_DEPTH, complex or
        duplicate keys anywhere, oversized values, more than one document."""
        loader = _Loader_cls(self.text)
        # per open collection: [node, keys seen, expecting a key, pending key node]
        stack: list[list[Any]] = []
        root: yaml.Node | None = None
        documents = events = 0
        try:
            while True:
                event = loader.get_event()
                if event is None:
                    return root
                events += 1
                if events > MAX_YAML_EVENTS:
                    self._fatal(event, f"file has more than {MAX_YAML_EVENTS} YAML nodes")
                if isinstance(event, yaml.DocumentStartEvent):
                    documents += 1
                    if documents > 1:
                        self._fatal(event, "one YAML document per rule file (found a second)")
                    continue
                if isinstance(event, yaml.AliasEvent):
                    self._fatal(event, "YAML aliases (*name) are not allowed in rule files")
                if getattr(event, "anchor", None) is not None:
                    self._fatal(event, "YAML anchors (&name) are not allowed in rule files")
                tag = getattr(event, "tag", None)
                if tag is not None and tag != "!":  # "!" = a quoted scalar's non-specific tag
                    self._fatal(event, f"YAML tags ({tag}) are not allowed in rule files")
                top = stack[-1] if stack else None
                is_key = top is not None and isinstance(top[0], yaml.MappingNode) and top[2]
                node: yaml.Node | None = None
                if isinstance(event, yaml.ScalarEvent):
                    if len(event.value) > MAX_SCALAR_CHARS:
                        self._fatal(
                            event,
                            f"value is {len(event.value)} characters long; the limit is "
                            f"{MAX_SCALAR_CHARS}",
                        )
                    if is_key:
                        if event.value in top[1]:
                            self._fatal(event, f"duplicate key {event.value!r}")
                        top[1].add(event.value)
                    mark = _Mark(event.start_mark.line, event.start_mark.column)
                    node = yaml.ScalarNode(
                        loader.resolve(yaml.ScalarNode, event.value, event.implicit),
                        event.value,
                        mark,
                        mark,
                        style=event.style,
                    )
                elif isinstance(event, yaml.CollectionStartEvent):
                    if is_key:
                        self._fatal(event, "keys must be text, not a mapping or a list")
                    if len(stack) >= MAX_YAML_DEPTH:
                        self._fatal(event, f"nested deeper than {MAX_YAML_DEPTH} levels")
                    kind = (
                        yaml.MappingNode
                        if isinstance(event, yaml.MappingStartEvent)
                        else yaml.SequenceNode
                    )
                    mark = _Mark(event.start_mark.line, event.start_mark.column)
                    collection = kind(
                        loader.resolve(kind, None, event.implicit),
                        [],
                        mark,
                        mark,
                        flow_style=event.flow_style,
                    )
                    stack.append([collection, set(), True, None])
                    continue
                elif isinstance(event, yaml.CollectionEndEvent):
                    node = stack.pop()[0]
                    top = stack[-1] if stack else None
                else:
                    continue
                if top is None:
                    root = node
                elif isinstance(top[0], yaml.SequenceNode):
                    top[0].value.append(node)
                elif top[2]:
                    top[3], top[2] = node, False
                else:
                    top[0].value.append((top[3], node))
                    top[2] = True
        finally:
            loader.dispose()

    def _fatal(self, event: yaml.Event, message: str) -> None:
        mark = event.start_mark
        raise RuleFileError(self.file, None, mark.line + 1, mark.column + 1, message)

    def _yaml_error(self, e: yaml.YAMLError) -> RuleFileError:
        if isinstance(e, yaml.MarkedYAMLError):
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else 1
            col = mark.column + 1 if mark else 1
            return RuleFileError(self.file, None, line, col, f"invalid YAML: {e.problem}")
        position = getattr(e, "position", None)  # ReaderError: a character YAML forbids
        if isinstance(position, int):
            before = self.text[:position]
            line = before.count("\n") + 1
            col = position - (before.rfind("\n") + 1) + 1
            return RuleFileError(self.file, None, line, col, f"invalid YAML: {_problem(e)}")
        return RuleFileError(self.file, None, 1, 1, f"invalid YAML: {_problem(e)}")

    def load(self) -> Ruleset:
        try:
            root = self.compose()
        except yaml.YAMLError as e:
            raise self._yaml_error(e) from None
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
            if key not in top:
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
            elif r == "challenger":
                # challenger execution is not built yet: refuse rather than accept a file
                # that would look live and decide nothing
                self.error(
                    top["role"], None, "challengers are not supported yet (role: challenger)"
                )
            else:
                role = r
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
            if isinstance(rules_node, yaml.SequenceNode) and not rules_node.value:
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

        # pass 2: expressions, against schema + fields derived by earlier stages
        rules: list[Rule] = []
        for h in headers:
            try:
                rule = self._rule_body(h, derived, derived_stage)
            except _Abort:
                continue
            if rule is not None:
                rules.append(rule)

        rules.sort(key=lambda r: (r.stage, -r.priority, r.index))
        rule_ids = {r.id for r in rules}
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
            role=role,
            effective_from_at=eff_from_at,
            effective_to_at=eff_to_at,
            positions=positions,
        )

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
        if not isinstance(rid, str) or not rid or not _ID_CHARS.issuperset(rid):
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
            _guard_expression(v)
            parsed = ex.parse(v)
            _guard_tree(parsed)
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
                problem = _expectation_problem(k, v, rule_ids, derived)
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


def _expectation_problem(k: str, v: Any, rule_ids: set[str], derived) -> str | None:
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


def _problem(e: BaseException) -> str:
    text = getattr(e, "problem", None) or str(e) or type(e).__name__
    if "integer string conversion" in text:
        return "number has too many digits"
    return text.splitlines()[0][:200]


def _bad_number(v: Any, depth: int = 0) -> str | None:
    """A number in a YAML value that no engine may see (NaN, infinities, huge integers)."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return f"{v!r} is not allowed: numbers must be finite"
    elif isinstance(v, int) and not isinstance(v, bool):
        if abs(v) > MAX_NUMBER:
            return f"number out of range (beyond ±{MAX_NUMBER})"
    elif isinstance(v, dict) and depth < MAX_YAML_DEPTH:
        for x in v.values():
            bad = _bad_number(x, depth + 1)
            if bad:
                return bad
    elif isinstance(v, list) and depth < MAX_YAML_DEPTH:
        for x in v:
            bad = _bad_number(x, depth + 1)
            if bad:
                return bad
    return None


def _guard_expression(text: str) -> None:
    """Refuse, before the recursive-descent parser sees it, an expression that would recurse
    too deeply (parentheses, runs of `not`/`-`), hold too many list values, or carry a
    number literal too long to read."""
    tokens = ex.tokenize(text)
    depth = run = values = 0
    for tok in tokens:
        if tok.kind == "op" and tok.text in "([":
            depth += 1
            if depth > MAX_EXPRESSION_DEPTH:
                raise ex.ExpressionError(
                    f"nested deeper than {MAX_EXPRESSION_DEPTH} levels", tok.pos
                )
        elif tok.kind == "op" and tok.text in ")]":
            depth = max(0, depth - 1)
        if (tok.kind == "kw" and tok.text == "not") or (tok.kind == "op" and tok.text == "-"):
            run += 1
            if run > MAX_EXPRESSION_DEPTH:
                raise ex.ExpressionError(
                    f"more than {MAX_EXPRESSION_DEPTH} `not`/`-` in a row", tok.pos
                )
        else:
            run = 0
        if tok.kind == "num" and len(tok.text) > MAX_NUMBER_DIGITS:
            raise ex.ExpressionError(f"number longer than {MAX_NUMBER_DIGITS} digits", tok.pos)
        if tok.kind == "op" and tok.text == ",":
            values += 1
        if tok.kind == "kw" and tok.text in ("or", "and"):
            values += 1
    if values >= MAX_LIST_VALUES:
        raise ex.ExpressionError(
            f"more than {MAX_LIST_VALUES} list values or `and`/`or` alternatives", 0
        )


def _guard_tree(node: ex.Node) -> None:
    """Depth of the parsed tree (iteratively: `a + a + … + a` is a deep tree of a flat text)
    and the range of its number literals."""
    stack: list[tuple[ex.Node, int]] = [(node, 1)]
    while stack:
        n, d = stack.pop()
        if d > MAX_EXPRESSION_DEPTH:
            raise ex.ExpressionError(
                f"expression nested deeper than {MAX_EXPRESSION_DEPTH} levels", n.pos
            )
        if isinstance(n, ex.Lit):
            bad = _bad_number(n.value)
            if bad:
                raise ex.ExpressionError(bad, n.pos)
        elif isinstance(n, ex.In):
            stack.append((n.operand, d + 1))
            stack.extend((v, d + 1) for v in n.values)
        elif isinstance(n, ex.Arith | ex.Cmp):
            stack += [(n.left, d + 1), (n.right, d + 1)]
        elif isinstance(n, ex.Neg | ex.Not | ex.Missing):
            stack.append((n.operand, d + 1))
        elif isinstance(n, ex.Call):
            stack.extend((a, d + 1) for a in n.args)
        elif isinstance(n, ex.And | ex.Or):
            stack.extend((i, d + 1) for i in n.items)
