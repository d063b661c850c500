"""Grouping and cooldown: which findings become which messages, per target and group.

A group is (target, event kind, host, GPU). Per group an episode runs:

- quiet -> a finding at or above the target's ``min_severity`` arrives: one message,
  ``firing`` when it is ongoing, ``occurred`` when it was already over (a closed finding,
  e.g. a regression or an XID). Later findings of the group join the episode silently,
  whatever their severity and id (the analyzer re-emits an open finding every tick and may
  re-segment it under a new id);
- a finding of higher severity than told so far sends ``escalated`` (at most twice);
- when nothing is ongoing any more (the open finding closed, or an analysis tick that
  made progress no longer reports it) the group settles; a finding that returns while it
  settles continues the episode (a flapping condition stays one alert);
- after ``cooldown_s`` of settling without new findings: one ``resolved`` message (when
  ``send_resolved`` and the last message said ongoing, or findings came after it), and the
  group is quiet again. So a new alert of a group comes at least ``cooldown_s`` after the
  previous episode's last finding.

Closed findings whose end is not after the newest closed finding seen (``closed_until``)
are repeats (a restarted analyzer re-analyses the last hour) and ignored, as are closed
findings older than ``max_age_s``. Pure logic: :meth:`Grouper.fold` and
:meth:`Grouper.expire` return a :class:`Decision` without changing the grouper, the caller
persists it (with the messages, in one transaction) and then calls :meth:`Grouper.apply`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson

from infersight.daemon.alerts.formats import event_dict
from infersight.daemon.config.load import WebhookConfig
from infersight.storage.model import Event

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def rank(severity: str | None) -> int:
    return SEVERITY_RANK.get(severity or "", 1)


@dataclass(frozen=True)
class GroupKey:
    target: str
    kind: str
    host: str
    gpu: int | None


@dataclass(frozen=True)
class GroupState:
    """What one target was told about one group. Times are Unix seconds."""

    status: str                   # firing (ongoing), settling (over, waiting out the cooldown), quiet
    severity: str                 # highest severity told in this episode
    event: dict[str, Any]         # the latest finding folded in (formats.event_dict)
    first_start: float            # start of the episode's first finding
    last_end: float               # latest end of its findings
    closed_until: float           # end of the newest closed finding folded in (older ones are repeats)
    open: bool                    # the latest finding was ongoing
    occurrences: int              # findings in this episode
    announced: int                # occurrences when the last message was made
    ongoing_announced: bool       # the last message said "ongoing": a resolution must follow
    settle_since: float | None    # when the group last saw a finding end (settling only)
    last_sent: float              # when the last message was made


@dataclass(frozen=True)
class Notice:
    """A message to make: ``state`` (formats.STATES) of group ``key`` as ``group`` now stands."""

    key: GroupKey
    state: str
    group: GroupState


@dataclass
class Decision:
    changed: dict[GroupKey, GroupState] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.notices)


def matches(target: WebhookConfig, event: Event) -> bool:
    """The target's kind and GPU filters (empty = all; a host-wide event needs an empty ``gpus``)."""
    if target.kinds and event.kind not in target.kinds:
        return False
    if target.gpus and (event.gpu is None or event.gpu not in target.gpus):
        return False
    return True


class Grouper:
    def __init__(self, targets: Iterable[WebhookConfig], *, cooldown_s: float, send_resolved: bool,
                 max_age_s: float, states: dict[GroupKey, GroupState] | None = None) -> None:
        self.targets = tuple(targets)
        self.cooldown_s = cooldown_s
        self.send_resolved = send_resolved
        self.max_age_s = max_age_s
        self.states: dict[GroupKey, GroupState] = dict(states or {})

    def apply(self, decision: Decision) -> None:
        self.states.update(decision.changed)

    # -- findings arrive ----------------------------------------------------------------------
    def fold(self, events: list[Event], now: float, progressed: bool) -> Decision:
        """Fold one analysis tick's findings in. ``progressed``: the tick analysed new time, so
        an ongoing finding it does not report has ended."""
        decision = Decision()
        for target in self.targets:
            by_group: dict[GroupKey, list[Event]] = {}
            for e in events:
                if matches(target, e):
                    by_group.setdefault(GroupKey(target.name, e.kind, e.host, e.gpu), []).append(e)
            keys = set(by_group)
            if progressed:
                keys |= {k for k, s in self.states.items() if k.target == target.name and s.status == "firing"}
            for key in sorted(keys, key=_order):
                self._step(key, self.states.get(key), by_group.get(key, []), now, progressed,
                           rank(target.min_severity), decision)
        return decision

    def _step(self, key: GroupKey, st: GroupState | None, evs: list[Event], now: float, progressed: bool,
              min_rank: int, decision: Decision) -> None:
        floor = st.closed_until if st is not None else -math.inf
        closed = sorted((e for e in evs if not e.open and e.end > floor and e.end >= now - self.max_age_s),
                        key=lambda e: (e.end, e.start))
        opens = [e for e in evs if e.open]
        open_ev = max(opens, key=lambda e: (e.start, e.end)) if opens else None
        fresh = closed + ([open_ev] if open_ev is not None else [])
        if st is None or st.status == "quiet":
            eligible = [e for e in fresh if rank(e.severity) >= min_rank]
            if not eligible:
                return
            if open_ev is not None and rank(open_ev.severity) >= min_rank:
                lead = open_ev
            else:
                lead = max(eligible, key=lambda e: (rank(e.severity), e.end))
            occurrences = len(fresh)
            new = GroupState(
                status="firing" if open_ev is not None else "settling",
                severity=_top(fresh), event=event_dict(lead), first_start=min(e.start for e in fresh),
                last_end=max(e.end for e in fresh), closed_until=max([floor] + [e.end for e in closed]),
                open=open_ev is not None, occurrences=occurrences, announced=occurrences,
                ongoing_announced=lead.open, settle_since=None if open_ev is not None else now, last_sent=now)
            decision.changed[key] = new
            decision.notices.append(Notice(key, "firing" if lead.open else "occurred", new))
            return
        new_findings = sum(1 for e in closed if not (st.open and e.id == st.event.get("id")))
        if open_ev is not None and not st.open:
            new_findings += 1
        status, settle_since, is_open = st.status, st.settle_since, st.open
        if open_ev is not None:
            status, settle_since, is_open = "firing", None, True
        elif st.status == "firing" and (closed or progressed):
            status, settle_since, is_open = "settling", now, False
        elif st.status == "settling" and closed:
            settle_since = now
        latest = open_ev if open_ev is not None else (closed[-1] if closed else None)
        new = dataclasses.replace(
            st, status=status, settle_since=settle_since, open=is_open,
            event=event_dict(latest) if latest is not None else st.event,
            first_start=min([st.first_start] + [e.start for e in fresh]),
            last_end=max([st.last_end] + [e.end for e in fresh]),
            closed_until=max([st.closed_until] + [e.end for e in closed]),
            occurrences=st.occurrences + new_findings)
        top = max(fresh, key=lambda e: (rank(e.severity), e.open, e.end)) if fresh else None
        if top is not None and rank(top.severity) > rank(st.severity) and rank(top.severity) >= min_rank:
            new = dataclasses.replace(new, severity=top.severity, event=event_dict(top), last_sent=now,
                                      announced=new.occurrences, ongoing_announced=top.open)
            decision.notices.append(Notice(key, "escalated", new))
        if new != st:
            decision.changed[key] = new

    # -- time passes ----------------------------------------------------------------------------
    def expire(self, now: float) -> Decision:
        """Resolve the groups that settled for ``cooldown_s`` without a new finding."""
        decision = Decision()
        for key in sorted(self.states, key=_order):
            st = self.states[key]
            if st.status != "settling" or st.settle_since is None or now - st.settle_since < self.cooldown_s:
                continue
            tell = self.send_resolved and (st.ongoing_announced or st.occurrences > st.announced)
            new = dataclasses.replace(st, status="quiet", settle_since=None, open=False,
                                      closed_until=max(st.closed_until, st.last_end),
                                      last_sent=now if tell else st.last_sent)
            decision.changed[key] = new
            if tell:
                decision.notices.append(Notice(key, "resolved", new))
        return decision

    # -- persistence ------------------------------------------------------------------------------
    @staticmethod
    def to_row(key: GroupKey, st: GroupState) -> dict[str, Any]:
        """The storage row (storage.outbox.GROUP_COLUMNS without ``updated``); event as JSON text."""
        row = {"target": key.target, "kind": key.kind, "host": key.host, "gpu": key.gpu}
        row.update({f.name: getattr(st, f.name) for f in dataclasses.fields(st)})
        row["event"] = orjson.dumps(st.event).decode()
        return row

    @staticmethod
    def from_row(row: dict[str, Any]) -> tuple[GroupKey, GroupState]:
        key = GroupKey(row["target"], row["kind"], row["host"], row["gpu"])
        values = {f.name: row[f.name] for f in dataclasses.fields(GroupState)}
        values["event"] = orjson.loads(values["event"] or "{}")
        return key, GroupState(**values)


def _top(events: list[Event]) -> str:
    return max(events, key=lambda e: rank(e.severity)).severity


def _order(key: GroupKey) -> tuple:
    return (key.target, key.kind, key.host, -1 if key.gpu is None else key.gpu)
