"""Per second, per process and per thread: the stacks sampled, as frame paths.

The analysis reads these to tell which thread of which process was busy, whether its time
went to its own code, to waiting on the GPU or to start-up work, and how its profile moved
from one second to the next. Frames are (function, file, line), root first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from infersight.storage import stacks

Frame = tuple[str, str, int]     # (function, file, line)


@dataclass
class ThreadSecond:
    """One thread of one process during one second: active stacks with their sample
    counts, and how many samples found it idle (waiting in the kernel)."""

    pid: int
    tid: int
    name: str
    active: dict[tuple[Frame, ...], int] = field(default_factory=dict)
    idle: int = 0

    @property
    def active_samples(self) -> int:
        return sum(self.active.values())


def thread_seconds(cur, t_from: float, t_to: float, pids: list[int]) -> dict[int, list[ThreadSecond]]:
    """Unix second -> the threads of ``pids`` sampled in it (seconds in [t_from, t_to))."""
    if not pids:
        return {}
    rows = cur.execute("""
        SELECT s.bucket, g.pid, coalesce(th.tid, 0), coalesce(th.name, ''), s.stack, s.active, sum(s.count)::BIGINT
        FROM stack_samples s JOIN targets g ON g.id = s.target LEFT JOIN threads th ON th.id = s.thread
        WHERE s.bucket >= ? AND s.bucket < ? AND g.pid IN (SELECT unnest(?))
        GROUP BY 1, 2, 3, 4, 5, 6""", [int(t_from // 1), int(-(-t_to // 1)), list(pids)]).fetchall()
    # a grouped result comes in no fixed order, and the analysis breaks ties (the busiest of two
    # equally busy threads) by order: by second, pid, thread and stack, the same every run
    rows.sort(key=lambda r: (r[0], r[1], r[2], r[4], r[5]))
    # one tuple per stack, shared by every second that sampled it
    paths = {k: tuple(v) for k, v in stacks.paths(cur, list({r[4] for r in rows if r[5]})).items()}
    by_key: dict[tuple[int, int, int], ThreadSecond] = {}
    for sec, pid, tid, name, stack, active, count in rows:
        ts = by_key.get((sec, pid, tid))
        if ts is None:
            ts = by_key[(sec, pid, tid)] = ThreadSecond(int(pid), int(tid), name)
        if active:
            path = paths.get(stack, ())
            ts.active[path] = ts.active.get(path, 0) + int(count)
        else:
            ts.idle += int(count)
    out: dict[int, list[ThreadSecond]] = {}
    for (sec, _, _), ts in by_key.items():
        out.setdefault(int(sec), []).append(ts)
    return out


def thread_profile(cur, t_from: float, t_to: float, pid: int, tid: int,
                   active_only: bool = True) -> dict[tuple[Frame, ...], int]:
    """One thread's active samples in [t_from, t_to) (whole seconds, as ``thread_seconds``)
    summed by stack: frame path -> samples; with ``active_only`` False its idle samples too
    (where py-spy recorded them: what a waiting thread waits in). ``tid`` 0 is the samples
    recorded without a thread. The sum happens in the database, so a long period costs its
    distinct stacks, not its seconds."""
    rows = cur.execute("""
        SELECT s.stack, sum(s.count)::BIGINT
        FROM stack_samples s JOIN targets g ON g.id = s.target LEFT JOIN threads th ON th.id = s.thread
        WHERE s.bucket >= ? AND s.bucket < ? AND g.pid = ? AND coalesce(th.tid, 0) = ? AND (s.active OR NOT ?)
        GROUP BY 1""", [int(t_from // 1), int(-(-t_to // 1)), int(pid), int(tid), bool(active_only)]).fetchall()
    paths = stacks.paths(cur, [r[0] for r in rows])
    out: dict[tuple[Frame, ...], int] = {}
    for stack, count in rows:
        path = tuple(paths.get(stack, ()))
        out[path] = out.get(path, 0) + int(count)
    return out
