"""Reading one rule of a rule file: its header (id, priority, stage, `then` keys), the fields
it derives, and its body: the `when` condition and `then` expressions parsed and type-checked
against the input fields and the fields derived by earlier stages.
"""

from __future__ import annotations

from typing import Any

import yaml

from decision_service.decision import OUTCOMES
from decision_service.rules import expressions as ex
from decision_service.rules.limits import ID_CHARS, MAX_ID_CHARS, guard_expression, guard_tree
from decision_service.rules.ruleset import MAX_PRIORITY, Expr, Rule
from decision_service.rules.schema import BOOLEAN, NUMBER, FieldType
from decision_service.rules.yaml_reader import NodeReader, _Abort

_RULE_KEYS = {"id", "description", "priority", "stage", "when", "then"}
_THEN_KEYS = {"outcome", "reason", "code", "set", "compute", "max_amount"}


class RuleReader(NodeReader):
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

    def _derived_fields(
        self,
        h: dict,
        derived: dict[str, FieldType],
        derived_stage: dict[str, int],
        derived_set_values: dict[str, list[Any]],
    ) -> None:
        """Pass 1: register the fields a rule sets or computes, with their type and stage."""
        rid, then, stage = h["id"], h["then"], h["stage"]
        if then is None:
            return
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
                    self.error(knode, rid, f"derived field {fname!r} would shadow an input field")
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
