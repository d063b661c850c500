"""Names the code behind a period: the serving processes' active stacks, ranked by self time.

Each top frame carries its share of all active samples of the serving processes in the
period, and the process (pid, role) that contributed most of it, so an API server's
tokenizer and an engine core's scheduler are told apart.
"""
from __future__ import annotations

from typing import Any

from infersight.storage import render, stacks
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
    ranked = sorted(by_frame.items(), key=lambda kv: -sum(kv[1].values()))[:limit]
    out = []
    for (fn, file), per_pid in ranked:
        pid = max(per_pid, key=per_pid.get)
        line_counts = lines[(fn, file)]
        out.append({"frame": fn, "file": file, "line": max(line_counts, key=line_counts.get),
                    "share": round(sum(per_pid.values()) / total, 4), "pid": pid, "role": serving[pid],
                    "samples": render.number(sum(per_pid.values()))})
    return out


def diff_summary(store: Store, a: tuple[float, float], b: tuple[float, float], limit: int = 10) -> list[dict]:
    """The functions whose share changed most from period ``a`` to ``b`` (regression evidence)."""
    pa = store.read_sync(stacks.profile, a[0], a[1], stacks.ProfileFilter(active=True))
    pb = store.read_sync(stacks.profile, b[0], b[1], stacks.ProfileFilter(active=True))
    return render.top_changes(render.diff_tree(pa, pb), limit)
