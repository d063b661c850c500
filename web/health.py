"""What ``/api/health`` calls a problem: everything that fails, each in one line.

A problem makes the status ``degraded``. One line each for:

- a collector whose last run failed, or that has not finished a run for
  ``max(STALE_RUNS x its interval, STALE_MIN_S)`` (hung: APScheduler skips its next runs);
- an engine endpoint that failed ``ENDPOINT_FAILURES`` scrapes in a row (an endpoint down
  while the collector itself runs fine: 6 of 10 endpoints failing used to read ``ok``);
- a profiled process py-spy keeps failing on (``backoff``: it retries with growing waits);
- a component (analysis, alerts, exporters) whose health says ``ok: false``;
- storage: its writer stopped, or flushes failing (with since when and rows waiting).

Plain reads of the agent's in-memory state: no I/O, safe on the event loop.
"""
from __future__ import annotations

import time
from typing import Any

STALE_RUNS = 5
STALE_MIN_S = 60.0
ENDPOINT_FAILURES = 3


def problems(agent: Any, store: Any, stats: Any, now: float | None = None) -> list[str]:
    """The problem lines, most basic first (storage, collectors, endpoints, targets, components)."""
    now = time.time() if now is None else now
    out: list[str] = []
    if not store.read_only and not store.writer_alive:
        out.append("storage writer stopped")
    if stats.last_error:
        since = getattr(stats, "failing_since", None)
        how_long = f" for {now - since:.0f} s" if since else ""
        waiting = getattr(stats, "retained_rows", 0)
        out.append(f"storage: writes failing{how_long} ({waiting} rows waiting): {stats.last_error}")
    if agent is None:
        return out
    for name, st in agent.runner.status.items():
        if st.ok is False:
            out.append(f"collector {name}: {st.last_error}")
            continue
        last = st.last_success or agent.started_at
        stale_s = max(STALE_RUNS * st.interval_s, STALE_MIN_S)
        if now - last > stale_s:
            out.append(f"collector {name}: no run finished for {now - last:.0f} s (interval {st.interval_s:g} s)")
    engines = agent.collector("engines")
    if engines is not None and hasattr(engines, "endpoint_status"):
        for ep in engines.endpoint_status():
            if ep.get("consecutive_failures", 0) >= ENDPOINT_FAILURES:
                out.append(f"engine endpoint {ep['url']}: {ep['consecutive_failures']} scrapes failed in a row: "
                           f"{ep.get('last_error') or 'no answer'}")
    stacks = agent.collector("stacks")
    if stacks is not None and hasattr(stacks, "status"):
        for t in stacks.status():
            if t.get("exited_at") is None and t.get("state") == "backoff":
                out.append(f"target pid {t['pid']} ({t.get('role')}): py-spy failing "
                           f"({t.get('last_error_kind') or 'error'}): {t.get('last_error') or ''}".rstrip(": "))
    for name, component in agent.extras.items():
        if hasattr(component, "health"):
            h = component.health()
            if isinstance(h, dict) and h.get("ok") is False:
                out.append(f"{name}: {h.get('last_error') or 'failing'}")
    return out
