"""The reads behind ``GET /metrics``: cheap, bounded, and incremental where a counter is asked for.

Gauges come from bounded queries over the most recent rows (the latest GPU values of the
last minute, the current class from the windows of the last hours). Counters
(:class:`Counters`) only ever grow within one process: the first refresh totals what the
file holds, later refreshes add only rows that are new since the previous one, so a scrape
never rescans the history and a row that retention deletes never makes a counter go
down. A counter starts again from the file's contents when the agent restarts, which
Prometheus' ``rate()`` and ``increase()`` treat as the reset it is.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from infersight.storage import window_features as wf
from infersight.storage.model import GAP_CLASSES, GPU_SIGNALS

LATEST_HORIZON_S = 60.0         # a GPU value older than this is stale: not exposed
CLASS_HORIZON_S = 300.0         # the newest window must end within this of now for a class to be current
SINCE_HORIZON_S = 6 * 3600.0    # how far back "since when" looks for the last change of class
LATE_WINDOW_S = 900.0           # py-spy sampling stats arriving up to this late are still counted
EVENT_ID_KEEP_S = 6 * 3600.0    # an event id not updated for this long is forgotten (bounded memory)
WINDOW_SKEW_S = 2 * 3600.0      # > one analysis step (analyzer.MAX_CATCH_UP_S): see Counters._windows


@dataclass
class GpuLatest:
    """The newest non-null value of every GPU signal over the last LATEST_HORIZON_S."""

    gpu: int
    t: float
    values: dict[str, float]


@dataclass
class GpuClass:
    """The class of a GPU's newest window, since when it holds, and when that window ends."""

    gpu: int
    klass: str
    since: float
    until: float


@dataclass
class CounterValues:
    """A copy of the counters at one refresh. Seconds are window seconds (1 s each)."""

    class_seconds: dict[tuple[int, str], float] = field(default_factory=dict)
    gap_seconds: dict[int, float] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    pyspy_samples: int = 0
    pyspy_errors: int = 0


@dataclass
class DbSnapshot:
    """Everything /metrics reads from the file in one reader-thread call."""

    now: float
    gpus: dict[int, dict[str, str | None]]
    latest: list[GpuLatest]
    classes: list[GpuClass]
    counters: CounterValues


def gpu_info(cur) -> dict[int, dict[str, str | None]]:
    """uuid and name of every GPU the file knows."""
    rows = cur.execute("SELECT gpu, uuid, name FROM gpus").fetchall()
    return {int(g): {"uuid": u, "name": n} for g, u, n in rows}


def gpu_latest(cur, now: float) -> list[GpuLatest]:
    """Per GPU with a sample in [now - LATEST_HORIZON_S, now + 60): the newest value of each
    signal (a NULL — unsupported at that tick — never hides an older real value)."""
    cols = ", ".join(f"arg_max({name}, t)" for name in GPU_SIGNALS)
    rows = cur.execute(f"SELECT gpu, max(t), {cols} FROM gpu_samples WHERE t >= ? AND t < ? GROUP BY gpu "
                       "ORDER BY gpu", [now - LATEST_HORIZON_S, now + 60.0]).fetchall()
    out = []
    for row in rows:
        values = {name: float(v) for name, v in zip(GPU_SIGNALS, row[2:]) if v is not None and math.isfinite(v)}
        out.append(GpuLatest(int(row[0]), float(row[1]), values))
    return out


def current_classes(cur, now: float) -> list[GpuClass]:
    """Per GPU whose newest window ends within CLASS_HORIZON_S of ``now``: its class, and the
    start of the run of that class (the first window of it after the last window of another
    class, looking back at most SINCE_HORIZON_S)."""
    rows = cur.execute("""
        WITH recent AS (SELECT gpu, start, "end", klass FROM windows WHERE start >= ? AND start < ?),
        cur AS (SELECT gpu, arg_max(klass, start) AS klass, max("end") AS until FROM recent GROUP BY gpu),
        other AS (SELECT r.gpu, max(r."end") AS changed FROM recent r JOIN cur c ON c.gpu = r.gpu
                  WHERE r.klass <> c.klass GROUP BY r.gpu)
        SELECT c.gpu, c.klass, min(r.start), c.until
        FROM cur c JOIN recent r ON r.gpu = c.gpu AND r.klass = c.klass
        LEFT JOIN other o ON o.gpu = c.gpu
        WHERE c.until >= ? AND r.start >= coalesce(o.changed, '-infinity'::DOUBLE)
        GROUP BY c.gpu, c.klass, c.until ORDER BY c.gpu""",
                       [now - SINCE_HORIZON_S, now + 60.0, now - CLASS_HORIZON_S]).fetchall()
    return [GpuClass(int(g), k, float(since), float(until)) for g, k, since, until in rows]


# in flight as the analysis decides it (classify.Second.in_flight) from the features a window
# keeps: unknown (no engine data) counts as in flight; prompt tokens are not kept in features
_RUNNING, _WAITING, _TOKENS = (wf.number_sql(name, "w") for name in ("running", "waiting", "gen_tokens_s"))
_IN_FLIGHT = f"""(
    ({_RUNNING} IS NULL AND {_WAITING} IS NULL AND {_TOKENS} IS NULL)
    OR coalesce({_RUNNING} > 0.5, false) OR coalesce({_WAITING} > 0.5, false) OR coalesce({_TOKENS} > 0, false))"""


class Counters:
    """Monotonic totals for /metrics; ``refresh(cur, now)`` runs on a reader thread.

    - class seconds per (gpu, class), from windows newer than each GPU's watermark (the end
      of the newest window already counted: the analysis writes each GPU's range at once and
      only moves forward);
    - gap seconds per GPU: seconds the GPU was under-used while work was in flight, i.e.
      classes host_bound, launch_bound and stall, with the analysis' own rule that a
      host- or launch-bound second with nothing in flight (engine data present and idle)
      is not a gap;
    - events per kind: each event id counts once, when first seen (an open finding counts
      as soon as it is written; one the analysis later re-segments under a new id counts
      again);
    - py-spy samples and errors: stats arrive late (a recording is written when it ends),
      so the last LATE_WINDOW_S of buckets are re-read and only their growth is added.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = CounterValues()
        self._window_marks: dict[int, float] = {}
        self._event_seen: dict[str, float] = {}
        self._event_mark: float | None = None
        self._stat_buckets: dict[int, tuple[int, int]] = {}
        self._stats_started = False

    def refresh(self, cur, now: float) -> CounterValues:
        with self._lock:
            self._windows(cur)
            self._events(cur)
            self._sampling(cur, now)
            v = self._values
            return CounterValues(dict(v.class_seconds), dict(v.gap_seconds), dict(v.events), v.pyspy_samples,
                                 v.pyspy_errors)

    def _windows(self, cur) -> None:
        marks = self._window_marks
        # a plain lower bound lets DuckDB skip old row groups by their min/max. A GPU without a
        # mark yet (one the analysis wrote after another GPU of the same step) has no window
        # older than the others' marks minus one analysis step (at most an hour of catch-up)
        floor = min(marks.values()) - WINDOW_SKEW_S if marks else float("-inf")
        gap = ", ".join(f"'{c}'" for c in GAP_CLASSES)
        rows = cur.execute(f"""
            SELECT w.gpu, w.klass, sum(w."end" - w.start), max(w."end"),
                   sum(CASE WHEN w.klass = 'stall' OR (w.klass IN ({gap}) AND {_IN_FLIGHT})
                            THEN w."end" - w.start ELSE 0 END)
            FROM windows w LEFT JOIN (SELECT unnest(?::INTEGER[]) AS gpu, unnest(?::DOUBLE[]) AS mark) m
                 ON m.gpu = w.gpu
            WHERE w.start >= ? AND w.start >= coalesce(m.mark, '-infinity'::DOUBLE)
            GROUP BY 1, 2""", [list(marks), list(marks.values()), floor]).fetchall()
        v = self._values
        new_marks: dict[int, float] = {}
        for gpu, klass, seconds, end, gap_s in rows:
            gpu = int(gpu)
            v.class_seconds[(gpu, klass)] = v.class_seconds.get((gpu, klass), 0.0) + float(seconds)
            v.gap_seconds[gpu] = v.gap_seconds.get(gpu, 0.0) + float(gap_s or 0.0)
            new_marks[gpu] = max(new_marks.get(gpu, float("-inf")), float(end))
        marks.update(new_marks)

    def _events(self, cur) -> None:
        if self._event_mark is None:
            rows = cur.execute("SELECT id, kind, updated FROM events").fetchall()
        else:
            rows = cur.execute("SELECT id, kind, updated FROM events WHERE updated >= ?", [self._event_mark]).fetchall()
        v, seen = self._values, self._event_seen
        for id_, kind, updated in rows:
            updated = float(updated or 0.0)
            if id_ not in seen:
                v.events[kind] = v.events.get(kind, 0) + 1
            seen[id_] = max(updated, seen.get(id_, updated))
        if rows:
            self._event_mark = max(self._event_mark or float("-inf"), max(float(r[2] or 0.0) for r in rows))
        elif self._event_mark is None:
            self._event_mark = float("-inf")
        cutoff = self._event_mark - EVENT_ID_KEEP_S
        for id_ in [i for i, u in seen.items() if u < cutoff]:
            del seen[id_]

    def _sampling(self, cur, now: float) -> None:
        cutoff = int(now - LATE_WINDOW_S)
        v = self._values
        if not self._stats_started:
            old = cur.execute("SELECT coalesce(sum(samples), 0), coalesce(sum(errors), 0) FROM sampling_stats "
                              "WHERE bucket < ?", [cutoff]).fetchone()
            v.pyspy_samples += int(old[0])
            v.pyspy_errors += int(old[1])
            self._stats_started = True
        rows = cur.execute("SELECT bucket, sum(samples), sum(errors) FROM sampling_stats WHERE bucket >= ? "
                           "GROUP BY 1", [cutoff]).fetchall()
        seen = self._stat_buckets
        for bucket, samples, errors in rows:
            before = seen.get(int(bucket), (0, 0))
            samples, errors = int(samples or 0), int(errors or 0)
            v.pyspy_samples += max(0, samples - before[0])
            v.pyspy_errors += max(0, errors - before[1])
            seen[int(bucket)] = (max(samples, before[0]), max(errors, before[1]))
        for bucket in [b for b in seen if b < cutoff]:
            del seen[bucket]


def snapshot(cur, now: float, counters: Counters) -> DbSnapshot:
    """One reader-thread call: GPU facts, latest values, current classes and the counters."""
    return DbSnapshot(now=now, gpus=gpu_info(cur), latest=gpu_latest(cur, now), classes=current_classes(cur, now),
                      counters=counters.refresh(cur, now))
