"""Which ``fired_set`` a decision names: each distinct set of fired rules is stored once.

A writer keeps the ids of the sets it has seen (``FiredSets``). A set it has not seen is looked
up, or inserted with its rules, in the transaction of the decisions that need it: the set and
its rules commit together with them, or not at all. Two writers may insert the same set at
once: the insert does nothing on a key already there (PostgreSQL waits for the other
transaction to end first) and the id is read back; new sets are inserted in key order, so two
batches never wait for each other's sets in opposite orders (no deadlock). The cache learns a
batch's new ids only once that batch committed: a rolled-back set id is never reused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from decision_service.audit.bulk import insert_or_skip
from decision_service.audit.encoding import fired_set_key
from decision_service.audit.tables import fired_set_rule_table, fired_set_table


def resolve(conn: sa.Connection, sets: Iterable[frozenset[str]]) -> dict[frozenset[str], int]:
    """The id of each set, inserting (with its rules) those not stored yet; inside ``conn``'s
    transaction."""
    keys = {fired_set_key(rules): rules for rules in sets}
    if not keys:
        return {}
    fs = fired_set_table.c
    found = dict(conn.execute(sa.select(fs.sha256, fs.id).where(fs.sha256.in_(keys))).all())
    for key in sorted(keys.keys() - found.keys()):
        new_id = conn.execute(
            insert_or_skip(conn, fired_set_table, ["sha256"]).values(sha256=key).returning(fs.id)
        ).scalar()
        if new_id is None:  # another writer stored it meanwhile (and committed)
            new_id = conn.execute(sa.select(fs.id).where(fs.sha256 == key)).scalar_one()
        elif keys[key]:
            conn.execute(
                sa.insert(fired_set_rule_table),
                [{"set_id": new_id, "rule_id": r} for r in sorted(keys[key])],
            )
        found[key] = new_id
    return {rules: found[key] for key, rules in keys.items()}


class FiredSets:
    """One writer's set → id cache; ``ids`` runs inside the batch transaction, ``learn`` after
    its commit."""

    def __init__(self) -> None:
        self._ids: dict[frozenset[str], int] = {}

    def ids(
        self, conn: sa.Connection, rule_lists: Sequence[Sequence[str]]
    ) -> tuple[list[int], dict[frozenset[str], int]]:
        """Each record's set id, and the ids this batch found or stored (for ``learn``)."""
        sets = [frozenset(rules) for rules in rule_lists]
        known = self._ids
        missing = {s for s in sets if s not in known}
        new = resolve(conn, missing) if missing else {}
        return [known[s] if s in known else new[s] for s in sets], new

    def learn(self, new: dict[frozenset[str], int]) -> None:
        self._ids.update(new)
