"""The challenger files of a rules directory: the checks a reload makes on them beside the
champion (`role: challenger` files run after the champion and never decide).
"""

from __future__ import annotations

from decision_service.rules.snapshot import RulesetSnapshot


def _by_name(snap: RulesetSnapshot) -> str:
    return snap.name


def challenger_errors(challengers: tuple[RulesetSnapshot, ...], champion: str) -> list[str]:
    """A challenger is reported by its `ruleset` name: it must be its own, and only one file
    may carry it (one challenger = one version; schedule a new one by replacing the file)."""
    errors: list[str] = []
    seen: dict[str, RulesetSnapshot] = {}
    for snap in challengers:
        where = f"{snap.file}:{snap.ruleset.positions.get('ruleset', (1, 1))[0]}:1"
        if len(snap.name) > 128 or len(snap.version) > 64:  # the challenger_result columns
            errors.append(
                f"{where}: a challenger's `ruleset` name is at most 128 characters and its "
                "`version` at most 64"
            )
        elif snap.name == champion:
            errors.append(
                f"{where}: challenger {snap.name!r} has the champion's name: give it its own "
                "`ruleset` name (reports and records are by that name)"
            )
        elif snap.name in seen:
            errors.append(
                f"{where}: two challengers named {snap.name!r} ({seen[snap.name].file} and "
                f"{snap.file}): one file per challenger"
            )
        seen.setdefault(snap.name, snap)
    return errors
