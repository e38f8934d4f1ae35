"""Deciding: decide → record (committed) → answer, the one use case behind every entrypoint.

POST /decide, POST /decide/batch, the batch CLI and challengers call ``Deciding``; the HTTP
adapters only parse requests and map results and exceptions to status codes. The decision
itself is the pure pipeline (pipeline.decide) on the active snapshot; this module adds what
varies (id, clock), the record (committed before anything is answered) and idempotency:

- without a key, a decision is made and recorded; ``AuditUnavailable`` if it could not be
  (nothing was made), ``CommitOutcomeUnknown`` if it may have been (the store lost the answer
  to COMMIT and could not be asked);
- with a key (``audit.idempotency.claim``), the key's stored decisions are answered again if it
  was seen with the same request (``Decided.replayed``), ``IdempotencyConflict`` if with
  another; otherwise the decisions are recorded with the key in one commit. Two requests
  racing with one key: the database's unique key picks one, the other answers its decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
import uuid_utils

from decision_service.audit import AuditStore, AuditUnavailable, Claim, KeyTaken
from decision_service.audit.idempotency import Stored
from decision_service.challengers.shadow import Shadow
from decision_service.decision import Decision
from decision_service.pipeline import RuleFacts, Versions, decide, versions
from decision_service.rules.registry import RuleRegistry, Snapshot
from decision_service.scoring import Scorer
from decision_service.scoring.registry import ModelRegistry

log = structlog.get_logger("decision_service.deciding")


def new_decision_id() -> str:
    return str(uuid_utils.uuid7())


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Ask:
    """One application to decide, as an entrypoint received it."""

    app: Any  # validated: an instance of the model card's Application type
    body: bytes | str  # exactly as received: the audit record keeps it for replay
    explain: bool = False  # model reasons on approvals too
    trace_id: str | None = None
    timings_us: dict[str, int] | None = None  # filled per stage by the pipeline
    facts: RuleFacts | None = None  # the facts the champion's rules saw, for the challengers


@dataclass(slots=True)
class Decided:
    """The decisions of one request, committed; ``replayed``: answered again from its key."""

    decisions: list[Decision]
    replayed: bool = False

    @property
    def decision(self) -> Decision:
        return self.decisions[0]


class IdempotencyConflict(Exception):
    """The key was already used with a different request (HTTP 422): nothing was decided."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request; "
            "use a new key for a new request"
        )
        self.key = key


class KnownRulesets:
    """Ruleset versions the log can replay: each text is kept in the store (by sha256) before
    the first decision that cites it, and its version refs are built once per (model version,
    ruleset sha256): the registry may switch the live model at any time."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self._refs: dict[tuple[str, str], Versions] = {}
        self._kept: set[str] = set()

    def remember(self, snap: Snapshot) -> None:
        if snap.sha256 not in self._kept:
            try:
                self.store.remember_ruleset(snap.sha256, snap.name, snap.version, snap.text)
            except Exception as exc:  # no decision may cite a ruleset the log cannot replay
                raise AuditUnavailable(f"cannot keep ruleset {snap.sha256}: {exc}") from exc
            self._kept.add(snap.sha256)

    def refs(self, scorer: Scorer, snap: Snapshot) -> Versions:
        key = (scorer.card.version, snap.sha256)
        refs = self._refs.get(key)
        if refs is None:
            self.remember(snap)  # first decision on a new version: its text is kept first
            refs = self._refs[key] = versions(scorer, snap.engine, snap.sha256)
        return refs


_decode_decision = msgspec.json.Decoder(Decision).decode


class Deciding:
    """The use case, over the components the composition root built."""

    def __init__(
        self,
        models: ModelRegistry,
        rules: RuleRegistry,
        store: AuditStore,
        rulesets: KnownRulesets,
        *,
        explain_always: bool = False,
        shadow: Shadow | None = None,
    ) -> None:
        self.models, self.rules, self.store, self.rulesets = models, rules, store, rulesets
        self.explain_always = explain_always
        self.shadow = shadow  # challengers (None: none run)

    @property
    def scorer(self) -> Scorer:
        """The live model now; a decision takes it once (``decide``) and keeps it."""
        return self.models.active()

    def decide(
        self,
        app: Any,
        *,
        explain: bool = False,
        trace_id: str | None = None,
        timings_us: dict[str, int] | None = None,
        seen: RuleFacts | None = None,
    ) -> Decision:
        """A decision on the active snapshot with a new id and the clock; not recorded.
        `seen`: filled with the facts its rules saw (pipeline.RuleFacts)."""
        snap = self.rules.active()  # held for the whole decision, whatever reloads meanwhile
        scorer = self.models.active()  # likewise, whatever the registry switches meanwhile
        return decide(
            app,
            scorer,
            snap.engine,
            self.rulesets.refs(scorer, snap),
            explain=explain or self.explain_always,
            decision_id=new_decision_id(),
            decided_at=utc_now(),
            trace_id=trace_id,
            timings_us=timings_us,
            seen=seen,
        )

    def _decide(self, one: Ask) -> Decision:
        # the challengers see the same facts (_challenge): kept for them, per decision
        one.facts = RuleFacts() if self.shadow is not None and self.rules.challengers() else None
        return self.decide(
            one.app,
            explain=one.explain,
            trace_id=one.trace_id,
            timings_us=one.timings_us,
            seen=one.facts,
        )

    # -- challengers: a separate step AFTER the champion's decision, which it never changes --
    def _challenge(self, one: Ask, decision: Decision) -> list[dict[str, Any]]:
        """The challenger_result rows of one decision; [] when none is sampled or on any
        failure (a challenger never fails or changes a decision)."""
        shadow = self.shadow
        if shadow is None:
            return []
        challengers = self.rules.challengers()
        if not challengers:
            return []
        try:
            for snap in challengers:  # replay needs each challenger's text (kept once)
                self.rulesets.remember(snap)
            return shadow.run(challengers, one.app, decision, one.facts)
        except Exception as exc:  # e.g. the store cannot keep a text now: record none
            shadow.errors += 1
            log.warning("challengers_skipped", decision_id=decision.decision_id, error=str(exc))
            return []
        finally:
            one.facts = None  # kept for the challengers only: not held across the commit

    def _challenge_many(self, many: list[Ask], decisions: list[Decision]) -> list[dict[str, Any]]:
        return [
            row for one, d in zip(many, decisions, strict=True) for row in self._challenge(one, d)
        ]

    # -- decide → record → answer -------------------------------------------------------------
    async def decide_and_record(self, one: Ask, *, claim: Claim | None = None) -> Decided:
        """Decide one application and commit its record; see the module doc for errors."""
        if claim is None:  # the hot path: no lookups
            decision = self._decide(one)
            await self.store.append(one.body, decision, challengers=self._challenge(one, decision))
            return Decided([decision])
        return await self._once(claim, [one])

    async def decide_many_and_record(
        self, many: list[Ask], *, claim: Claim | None = None
    ) -> Decided:
        """Decide a request's applications and commit all their records in ONE commit."""
        if not many:
            return Decided([])
        if claim is None:
            decisions = [self._decide(one) for one in many]
            await self.store.append_many(
                [(one.body, d) for one, d in zip(many, decisions, strict=True)],
                challengers=self._challenge_many(many, decisions),
            )
            return Decided(decisions)
        return await self._once(claim, many)

    async def _once(self, claim: Claim, many: list[Ask]) -> Decided:
        stored = await self._find(claim.key)
        if stored is not None:
            return self._replay(claim, stored)
        decisions = [self._decide(one) for one in many]
        try:
            await self.store.append_many(
                [(one.body, d) for one, d in zip(many, decisions, strict=True)],
                claim=claim,
                challengers=self._challenge_many(many, decisions),
            )
        except KeyTaken:  # a concurrent request with this key committed first
            stored = await self._find(claim.key)
            if stored is None:
                raise AuditUnavailable(
                    f"idempotency key {claim.key!r} was taken but cannot be read back"
                ) from None
            return self._replay(claim, stored)
        return Decided(decisions)

    async def _find(self, key: str) -> Stored | None:
        try:
            return await self.store.find_key(key)
        except Exception as exc:
            raise AuditUnavailable(f"cannot read idempotency keys: {exc}") from exc

    @staticmethod
    def _replay(claim: Claim, stored: Stored) -> Decided:
        if stored.request_sha256 != claim.request_sha256:
            raise IdempotencyConflict(claim.key)
        log.info("idempotent_replay", key=claim.key, decisions=len(stored.decisions_json))
        return Decided([_decode_decision(text) for text in stored.decisions_json], replayed=True)
