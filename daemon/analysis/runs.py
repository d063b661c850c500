"""Turns a stream of classified seconds into runs: contiguous periods of one condition.

A run is a maximal sequence of matching seconds whose holes are at most ``merge_s`` long.
Within a run, the class may change; a change splits the run into segments only when the new
class lasts at least ``min_s`` seconds, so one noisy second does not cut an event in two.
Live analysis feeds seconds tick by tick: ``feed`` returns the segments that are final, and
``open_segments`` those still growing.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Segment:
    label: str                   # the class, or "class|culprit"
    start: int                   # first second
    end: int                     # one past the last second
    seconds: list[int] = field(default_factory=list)

    @property
    def duration(self) -> int:
        return self.end - self.start

    @property
    def klass(self) -> str:
        return self.label.split("|", 1)[0]


class RunTracker:
    """Tracks one run at a time for one GPU over seconds whose class is in ``classes``."""

    def __init__(self, classes: tuple[str, ...], merge_s: float, min_s: float) -> None:
        self.classes = classes
        self.merge_s = merge_s
        self.min_s = min_s
        self._run: list[tuple[int, str]] = []

    def feed(self, t: int, klass: str, culprit: str | None = None) -> list[Segment]:
        """Add one second (in time order); returns segments of a run that just ended.

        ``culprit`` (what was busy: a process and its code) splits a run of one class when
        it changes for at least ``min_s`` seconds.
        """
        done: list[Segment] = []
        if self._run and t - self._run[-1][0] - 1 > self.merge_s:
            done = self._close()
        if klass in self.classes:
            self._run.append((t, f"{klass}|{culprit}" if culprit else klass))
        return done

    def flush_until(self, t: int) -> list[Segment]:
        """Close the run when nothing matched since before ``t - merge_s`` (end of a tick)."""
        if self._run and t - self._run[-1][0] - 1 > self.merge_s:
            return self._close()
        return []

    def last_label(self) -> str | None:
        """The label of the run's last second (None when no run is open)."""
        return self._run[-1][1] if self._run else None

    def open_since(self) -> int | None:
        """First second of the run in progress (None when there is none)."""
        return self._run[0][0] if self._run else None

    def open_segments(self) -> list[Segment]:
        """Segments of the run still in progress (the last may grow)."""
        return [s for s in _segment(self._run, self.min_s) if s.duration >= self.min_s]

    def _close(self) -> list[Segment]:
        segments = [s for s in _segment(self._run, self.min_s) if s.duration >= self.min_s]
        self._run = []
        return segments


def _segment(run: list[tuple[int, str]], min_s: float) -> list[Segment]:
    if not run:
        return []
    # smooth: a class counts as a change only if it holds for min_s consecutive samples
    labels = [k for _, k in run]
    smoothed = labels[:]
    i = 0
    current = _majority(labels[: max(1, int(min_s))])
    while i < len(labels):
        j = i
        while j < len(labels) and labels[j] == labels[i]:
            j += 1
        if labels[i] != current and j - i >= min_s:
            current = labels[i]
        for k in range(i, j):
            smoothed[k] = current
        i = j
    segments: list[Segment] = []
    for (t, _), k in zip(run, smoothed):
        if segments and segments[-1].label == k:
            segments[-1].end = t + 1
            segments[-1].seconds.append(t)
        else:
            segments.append(Segment(k, t, t + 1, [t]))
    return segments


def _majority(labels: list[str]) -> str:
    return Counter(labels).most_common(1)[0][0]
