"""Rule files are input: the limits on them, and the guards that enforce them.

No rule file may hang, crash or starve the service. Everything here refuses with a
RuleFileError at file:line:col naming the limit: size and encoding, a YAML node tree composed
from the parser's events in Python (no aliases, anchors or tags; bounded depth; no duplicate
keys), numbers every engine can hold, and expressions the recursive-descent parser can take.
The limits are documented in the README ("Rule files are input").
"""

from __future__ import annotations

import contextlib
import gc
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import yaml

from decision_service.rules import expressions as ex

_Loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # same events and marks, faster

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
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


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


class Mark(NamedTuple):
    """Where a node starts (0-based). A tuple of ints is not tracked by the cyclic GC: a
    10,000-rule file makes a million marks, and every full collection would walk them."""

    line: int
    column: int

    def __str__(self) -> str:
        return f"line {self.line + 1}, column {self.column + 1}"


def compose_yaml(text: str, file: str) -> yaml.Node | None:
    """Build the node tree from the YAML events, in Python (no recursion; the C composer
    would hold the GIL for a whole large file), refusing on the way what the rest of the
    loader must never see: aliases and anchors (alias bombs, cycles), explicit tags
    (`!!python/object`, custom tags), nesting deeper than MAX_YAML_DEPTH, complex or
    duplicate keys anywhere, oversized values, more than one document."""
    loader = _Loader_cls(text)
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
                _fatal(file, event, f"file has more than {MAX_YAML_EVENTS} YAML nodes")
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    _fatal(file, event, "one YAML document per rule file (found a second)")
                continue
            if isinstance(event, yaml.AliasEvent):
                _fatal(file, event, "YAML aliases (*name) are not allowed in rule files")
            if getattr(event, "anchor", None) is not None:
                _fatal(file, event, "YAML anchors (&name) are not allowed in rule files")
            tag = getattr(event, "tag", None)
            if tag is not None and tag != "!":  # "!" = a quoted scalar's non-specific tag
                _fatal(file, event, f"YAML tags ({tag}) are not allowed in rule files")
            top = stack[-1] if stack else None
            is_key = top is not None and isinstance(top[0], yaml.MappingNode) and top[2]
            node: yaml.Node | None = None
            if isinstance(event, yaml.ScalarEvent):
                if len(event.value) > MAX_SCALAR_CHARS:
                    _fatal(
                        file,
                        event,
                        f"value is {len(event.value)} characters long; the limit is "
                        f"{MAX_SCALAR_CHARS}",
                    )
                if is_key:
                    if event.value in top[1]:
                        _fatal(file, event, f"duplicate key {event.value!r}")
                    top[1].add(event.value)
                mark = Mark(event.start_mark.line, event.start_mark.column)
                node = yaml.ScalarNode(
                    loader.resolve(yaml.ScalarNode, event.value, event.implicit),
                    event.value,
                    mark,
                    mark,
                    style=event.style,
                )
            elif isinstance(event, yaml.CollectionStartEvent):
                if is_key:
                    _fatal(file, event, "keys must be text, not a mapping or a list")
                if len(stack) >= MAX_YAML_DEPTH:
                    _fatal(file, event, f"nested deeper than {MAX_YAML_DEPTH} levels")
                kind = (
                    yaml.MappingNode
                    if isinstance(event, yaml.MappingStartEvent)
                    else yaml.SequenceNode
                )
                mark = Mark(event.start_mark.line, event.start_mark.column)
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


def _fatal(file: str, event: yaml.Event, message: str) -> NoReturn:
    mark = event.start_mark
    raise RuleFileError(file, None, mark.line + 1, mark.column + 1, message)


def yaml_error(e: yaml.YAMLError, text: str, file: str) -> RuleFileError:
    """A YAML parser error as a RuleFileError at its position."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        col = mark.column + 1 if mark else 1
        return RuleFileError(file, None, line, col, f"invalid YAML: {e.problem}")
    position = getattr(e, "position", None)  # ReaderError: a character YAML forbids
    if isinstance(position, int):
        before = text[:position]
        line = before.count("\n") + 1
        col = position - (before.rfind("\n") + 1) + 1
        return RuleFileError(file, None, line, col, f"invalid YAML: {problem(e)}")
    return RuleFileError(file, None, 1, 1, f"invalid YAML: {problem(e)}")


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
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


def problem(e: BaseException) -> str:
    text = getattr(e, "problem", None) or str(e) or type(e).__name__
    if "integer string conversion" in text:
        return "number has too many digits"
    return text.splitlines()[0][:200]


def bad_number(v: Any, depth: int = 0) -> str | None:
    """A number in a YAML value that no engine may see (NaN, infinities, huge integers)."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return f"{v!r} is not allowed: numbers must be finite"
    elif isinstance(v, int) and not isinstance(v, bool):
        if abs(v) > MAX_NUMBER:
            return f"number out of range (beyond ±{MAX_NUMBER})"
    elif isinstance(v, dict) and depth < MAX_YAML_DEPTH:
        for x in v.values():
            bad = bad_number(x, depth + 1)
            if bad:
                return bad
    elif isinstance(v, list) and depth < MAX_YAML_DEPTH:
        for x in v:
            bad = bad_number(x, depth + 1)
            if bad:
                return bad
    return None


def guard_expression(text: str) -> None:
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


def guard_tree(node: ex.Node) -> None:
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
            bad = bad_number(n.value)
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
