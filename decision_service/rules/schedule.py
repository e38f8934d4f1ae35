"""Which version of the champion ruleset is in force when: effective dating.

Several versions of one ruleset may sit in rules/. At any instant the version in force is the
one with the latest `effective_from` not after that instant, unless its `effective_to` has
passed (then none is). A version without `effective_from` is in force from the beginning of
time. The timeline is computed once per load as segments [start, end) with their version, so a
decision finds its version with two comparisons, and a change scheduled for midnight goes live
at midnight without a reload.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from decision_service.rules.ruleset import Ruleset


class _HasRuleset(Protocol):
    @property
    def ruleset(self) -> Ruleset: ...


V = TypeVar("V", bound=_HasRuleset)


def iso(ts: float) -> str | None:
    if not math.isfinite(ts):
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _where(rs: Ruleset, key: str) -> str:
    line, col = rs.positions.get(key, (1, 1))
    return f"{rs.file}:{line}:{col}"


@dataclass(frozen=True)
class Segment(Generic[V]):
    start: float  # epoch seconds, -inf for "always"
    end: float  # +inf for "for ever"
    version: V | None  # None: no version in force


@dataclass(frozen=True)
class Schedule(Generic[V]):
    """The versions of one ruleset and the timeline they make (segments sorted by start)."""

    name: str
    versions: tuple[V, ...]  # sorted by effective_from
    segments: tuple[Segment[V], ...]

    def segment_at(self, ts: float) -> Segment[V]:
        starts = [s.start for s in self.segments]
        return self.segments[bisect.bisect_right(starts, ts) - 1]

    def at(self, ts: float) -> V | None:
        return self.segment_at(ts).version

    def status(self, now: float) -> list[dict[str, object]]:
        """Every version with its window of force: active, scheduled or past."""
        out = []
        for v in self.versions:
            windows = [s for s in self.segments if s.version is v]
            start = windows[0].start if windows else math.nan
            end = windows[-1].end if windows else math.nan
            if not windows or end <= now:
                state = "past"
            elif start > now:
                state = "scheduled"
            else:
                state = "active"
            rs = v.ruleset
            out.append(
                {
                    "version": rs.version,
                    "file": rs.file,
                    "sha256": rs.sha256,
                    "effective_from": rs.effective_from,
                    "effective_to": rs.effective_to,
                    "status": state,
                    "in_force_from": iso(start) if windows else None,
                    "in_force_until": iso(end) if windows else None,
                }
            )
        return out


class ScheduleError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


def build_schedule(
    versions: Sequence[V], now: float, *, require_now: bool = True, champion: str | None = None
) -> Schedule[V]:
    """Check the versions of the rules directory and lay out their timeline.

    Refused (ScheduleError, messages at file:line:col): champions of two different rulesets,
    two versions with the same `effective_from`, no version in force `now`, and (when
    `require_now`) a gap from now on (an `effective_to` with no successor): the service must
    never reach an instant with no rules.
    """
    errors: list[str] = []
    if not versions:
        raise ScheduleError(["no champion ruleset: every rule file is a challenger"])
    names: dict[str, list[V]] = {}
    for v in versions:
        names.setdefault(v.ruleset.name, []).append(v)
    if len(names) > 1:
        # the champion: the one serving now, else the name most files share
        if champion not in names:
            champion = max(names, key=lambda n: len(names[n]))
        listed = ", ".join(f"{n!r} ({names[n][0].ruleset.file})" for n in names)
        for name, vs in names.items():
            if name == champion:
                continue
            for v in vs:
                errors.append(
                    f"{_where(v.ruleset, 'ruleset')}: ruleset {name!r} is not the champion "
                    f"{champion!r}: one champion ruleset decides, found {len(names)} "
                    f"({listed}). Make this file a scheduled version of {champion!r} (same "
                    "`ruleset` name, its own `effective_from`) or a challenger "
                    "(`role: challenger`)"
                )
        raise ScheduleError(errors)
    ordered = sorted(versions, key=lambda v: v.ruleset.window[0])
    for a, b in itertools.pairwise(ordered):
        ra, rb = a.ruleset, b.ruleset
        if ra.effective_from_at == rb.effective_from_at:
            when = ra.effective_from or "no effective_from"
            errors.append(
                f"{_where(rb, 'effective_from')}: versions {ra.version!r} ({ra.file}) and "
                f"{rb.version!r} ({rb.file}) have the same effective_from ({when}); give each "
                "version its own"
            )
    if errors:
        raise ScheduleError(errors)
    segments: list[Segment[V]] = []
    first = ordered[0].ruleset.window[0]
    if first > -math.inf:
        segments.append(Segment(-math.inf, first, None))
    for i, v in enumerate(ordered):
        start, to = v.ruleset.window
        # only the first version can start unbounded (two such would share effective_from)
        nxt = ordered[i + 1].ruleset.window[0] if i + 1 < len(ordered) else math.inf
        segments.append(Segment(start, min(nxt, to), v))
        if to < nxt:
            segments.append(Segment(to, nxt, None))
    schedule = Schedule(next(iter(names)), tuple(ordered), tuple(segments))
    if require_now:
        current = schedule.segment_at(now)
        if current.version is None:
            errors.append(_gap_message(schedule, current, now))
        else:
            for seg in schedule.segments:
                if seg.version is None and seg.end > now and seg.start > now:
                    errors.append(_gap_message(schedule, seg, now))
                    break
    if errors:
        raise ScheduleError(errors)
    return schedule


def _gap_message(schedule: Schedule, seg: Segment, now: float) -> str:
    before = [s for s in schedule.segments if s.version is not None and s.end <= seg.start]
    after = [s for s in schedule.segments if s.version is not None and s.start >= seg.end]
    if seg.start <= now:
        if after:
            nxt = after[0].version.ruleset
            return (
                f"no version of {schedule.name!r} is in force now ({iso(now)}): the first, "
                f"{nxt.version!r} ({_where(nxt, 'effective_from')}), starts "
                f"{after[0].version.ruleset.effective_from}"
            )
        last = before[-1].version.ruleset if before else None
        where = f" ({_where(last, 'effective_to')})" if last else ""
        return (
            f"no version of {schedule.name!r} is in force now ({iso(now)}): "
            f"{last.version if last else '?'!r} ended at {iso(seg.start)}{where}"
        )
    last = before[-1].version.ruleset if before else None
    where = f"{_where(last, 'effective_to')}: " if last else ""
    return (
        f"{where}no version of {schedule.name!r} would be in force from {iso(seg.start)}"
        + (f" to {iso(seg.end)}" if math.isfinite(seg.end) else "")
        + ": schedule a successor (effective_from) or remove effective_to"
    )
