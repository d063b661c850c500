"""Names the code behind a period: the serving processes' active stacks, ranked by self time.

Each top frame carries its share of all active samples of the serving processes in the
period, and the process (pid, role) that contributed most of it, so an API server's
tokenizer and an engine core's scheduler are told apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infersight.storage import render, stacks, thread_stacks
from infersight.storage.store import Store


def top_frames(store: Store, t_from: float, t_to: float, serving: dict[int, str], limit: int,
               active: bool | None = True) -> list[dict[str, Any]]:
    """Frames with the most self samples in [t_from, t_to) across ``serving`` pids
    (active samples by default; ``active=None`` counts waiting threads too)."""
    by_frame: dict[tuple[str, str], dict[int, float]] = {}
    lines: dict[tuple[str, str], dict[int, float]] = {}
    total = 0.0
    for pid in serving:
        prof = store.read_sync(stacks.profile, t_from, t_to, stacks.ProfileFilter(pids=(pid,), active=active))
        for path, value in prof.stacks.items():
            if not path:
                continue
            fn, file, line = path[-1]
            by_frame.setdefault((fn, file), {})
            by_frame[(fn, file)][pid] = by_frame[(fn, file)].get(pid, 0.0) + value
            lines.setdefault((fn, file), {})
            lines[(fn, file)][line] = lines[(fn, file)].get(line, 0.0) + value
            total += value
    if not total:
        return []
    ranked = sorted(by_frame.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:limit]
    out = []
    for (fn, file), per_pid in ranked:
        pid = _most(per_pid)
        out.append({"frame": fn, "file": file, "line": _most(lines[(fn, file)]),
                    "share": round(sum(per_pid.values()) / total, 4), "pid": pid, "role": serving[pid],
                    "samples": render.number(sum(per_pid.values()))})
    return out


def _most(counts: dict) -> Any:
    """The key with the largest count; ties go to the smallest key. Rankings here break ties by
    key too: the database returns grouped rows in no fixed order, and a finding must read the
    same however they came."""
    return min(counts, key=lambda k: (-counts[k], k))


def diff_summary(store: Store, a: tuple[float, float], b: tuple[float, float], limit: int = 10) -> list[dict]:
    """The functions whose share changed most from period ``a`` to ``b`` (regression evidence)."""
    pa = store.read_sync(stacks.profile, a[0], a[1], stacks.ProfileFilter(active=True))
    pb = store.read_sync(stacks.profile, b[0], b[1], stacks.ProfileFilter(active=True))
    return render.top_changes(render.diff_tree(pa, pb), limit)


@dataclass(frozen=True)
class Leader:
    """The thread with the most own-work CPU in one second (its process's CPU times the
    thread's share of the process's own-work samples, % of one core)."""

    pid: int
    tid: int
    role: str
    thread: str
    cpu_pct: float


def second_leader(second, rate_hz: float) -> Leader | None:
    """The leading thread of an analysis Second whose processes carry their thread split
    (analysis/threads.py); None when no thread did own work."""
    best: Leader | None = None
    for p in second.processes:
        if p.work is None or not p.work.own:
            continue
        own_cpu = p.own_cpu_pct(rate_hz) or 0.0
        for t in p.work.threads:
            share = own_cpu * t.own / p.work.own
            if share > (best.cpu_pct if best is not None else 0.0):
                best = Leader(p.pid, t.tid, p.role, t.name or str(t.tid), share)
    return best


def culprit(leaders: list[Leader | None]) -> dict[str, Any] | None:
    """The process and thread that starved the GPU over a period, from each second's
    leader: the thread that led most often, with its mean CPU while leading. None when no
    thread did own work."""
    votes: dict[tuple[int, int], list[Leader]] = {}
    for lead in leaders:
        if lead is not None:
            votes.setdefault((lead.pid, lead.tid), []).append(lead)
    if not votes:
        return None
    won = max(votes.values(), key=len)
    return {"pid": won[0].pid, "tid": won[0].tid, "role": won[0].role, "thread": won[-1].thread,
            "cpu_pct": round(sum(x.cpu_pct for x in won) / len(won), 1), "seconds_leading": len(won)}


class ThreadCode:
    """The stacks of the culprit threads of open runs, read from the database and kept
    while their run stays open, so a run re-described every tick reads only its new seconds.

    An entry is (process, thread, first second) -> (seconds read until, stack -> active
    samples); entries not asked for in a tick are dropped by ``keep_only``. What one entry
    holds is bounded by its thread's distinct stacks, not by the run's length.
    """

    def __init__(self) -> None:
        self.entries: dict[tuple[int, int, int], tuple[int, dict[tuple, int]]] = {}
        self.used: set[tuple[int, int, int]] = set()

    def stacks(self, store: Store, pid: int, tid: int, start: int, end: int) -> dict[tuple, int]:
        """Active samples of thread ``tid`` of ``pid`` in [start, end) by stack."""
        key = (pid, tid, start)
        until, acc = self.entries.get(key, (start, {}))
        if end < until:                 # the run was re-segmented shorter: read it again
            until, acc = start, {}
        if end > until:
            for path, n in store.read_sync(thread_stacks.thread_profile, until, end, pid, tid).items():
                acc[path] = acc.get(path, 0) + n
        self.entries[key] = (end, acc)
        self.used.add(key)
        return acc

    def keep_only_used(self) -> None:
        """Drop what this tick did not ask for (runs closed or re-segmented), then start a tick."""
        self.entries = {k: v for k, v in self.entries.items() if k in self.used}
        self.used = set()


def code_of(stacks: dict[tuple, int], who: dict[str, Any], limit: int) -> tuple[list[dict], list[dict]]:
    """A culprit thread's own work (``stacks``: own-work stack -> samples): its top frames
    by self samples, and its hot paths -- the frames below its common trunk by inclusive
    samples, so work spread over many small functions reads as the one caller that holds
    it. Shares are of the thread's own-work samples; waits and GPU waits are never in them."""
    total = sum(stacks.values())
    if not total:
        return [], []
    self_count: dict[tuple[str, str], int] = {}
    self_lines: dict[tuple[str, str], dict[int, int]] = {}
    incl: dict[tuple[str, str], int] = {}
    for path, n in stacks.items():
        if path:
            fn, file, line = path[-1]
            self_count[(fn, file)] = self_count.get((fn, file), 0) + n
            lines = self_lines.setdefault((fn, file), {})
            lines[line] = lines.get(line, 0) + n
        for frame in {(fn, file) for fn, file, _ in path}:
            incl[frame] = incl.get(frame, 0) + n
    base = {"pid": who["pid"], "role": who["role"], "thread": who["thread"]}
    frames = [{"frame": fn, "file": file, "line": _most(self_lines[(fn, file)]),
               "share": round(n / total, 4), "samples": n, **base}
              for (fn, file), n in sorted(self_count.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]
    return frames, hot_paths(stacks, limit, base)


def hot_paths(stacks: dict[tuple, int], limit: int, base: dict[str, Any]) -> list[dict]:
    """Where the thread's time splits: follow the call tree down while one child holds at
    least 80% of its parent (wrappers, the trunk), then list the children of that branching
    frame by inclusive share, each named by the deepest frame its own single-child chain
    reaches (``EngineCore.step`` -> ``Scheduler.schedule`` 30%, ``_prepare_inputs`` 25%)."""
    tree: dict = {}
    for path, n in stacks.items():
        node = tree
        for fn, file, _ in path:
            child = node.setdefault((fn, file), [0, {}])
            child[0] += n
            node = child[1]
    total = sum(c[0] for c in tree.values())
    if not total:
        return []

    def dominant(children: dict, value: int):
        best = max(children.items(), key=lambda kv: kv[1][0], default=None)
        return best if best is not None and best[1][0] >= 0.8 * value else None

    parent, children, value = None, tree, total
    while (nxt := dominant(children, value)) is not None:
        parent, (value, children) = nxt[0], nxt[1]
    out = []
    for key, (v, grandchildren) in sorted(children.items(), key=lambda kv: (-kv[1][0], kv[0]))[:limit]:
        name, sub, sub_v = key, grandchildren, v
        while (nxt := dominant(sub, sub_v)) is not None:
            name, (sub_v, sub) = nxt[0], nxt[1]
        out.append({"frame": name[0], "file": name[1], "via": parent[0] if parent else None,
                    "share": round(v / total, 4), **base})
    return out
