"""The heavy routes: flame graphs, diffs and their exports, each within a budget and in line.

Every such request:

- waits for one of ``web.heavy_queries`` slots (:class:`QueryGate`); with ``web.heavy_queue``
  requests already waiting it is answered ``503`` at once (``Retry-After``), and one that
  waits longer than ``QUEUE_WAIT_BUDGETS`` x ``web.query_timeout_s`` gets ``503`` too; once it
  has a slot, its time budget starts. Six heavy requests at once used to run six
  DuckDB aggregations in one 32 MB buffer pool (three to six failed with 500) and add up
  their Python trees past the unit's 1 GB;
- reads its profile within ``web.query_timeout_s`` and ``web.query_max_stack_nodes``
  (storage/flame_query.py): a range bigger than the node budget answers its heaviest part,
  ``"truncated": true`` with ``"truncated_by"``, ``"leaves"``/``"leaves_shown"`` and
  ``"omitted"`` on the root (exports: the ``X-Infersight-*`` headers); a budget passed with
  nothing to show is ``503`` with the reason, never a 500.

Handlers only parse, wait and serialise; the reading and building run on the store's reader
threads (ARCHITECTURE.md rule 2).
"""
from __future__ import annotations

import asyncio

from aiohttp import web

from infersight.storage import render, stacks
from infersight.storage.flame_query import BudgetExceeded, QueryBudget, TrieProfile, export_profile, flame_root, \
    leaf_shares, trie_profile
from infersight.storage.stack_formats import Selection
from infersight.storage.waits import WAITS_MODES
from infersight.web import params as p
from infersight.web.keys import CONFIG_KEY, STORE_KEY
from infersight.web.responses import bytes_response, dumps

# Exports keep the heaviest stacks within the JSON tree's node budget and at most this many
# frame references (folded text is about 50-80 bytes per frame: some 30 MB at the bound).
EXPORT_MAX_FRAMES = 500_000
ADVICE = "narrow the range, or filter by pid, tid or role"
QUEUE_WAIT_BUDGETS = 3       # a request waits in line at most this many web.query_timeout_s


class QueryGate:
    """At most ``slots`` heavy queries at once and ``queue`` waiting; see the module docstring."""

    def __init__(self, slots: int, queue: int) -> None:
        self.slots = slots
        self.queue = queue
        self.waiting = 0
        self.running = 0
        self._sem: asyncio.Semaphore | None = None     # made on first use, on the serving loop

    async def enter(self, timeout_s: float) -> None:
        """Take a slot; web.HTTPServiceUnavailable when the line is full or the wait too long."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        if self._sem.locked() and self.waiting >= self.queue:
            raise _unavailable(f"{self.running} heavy queries running and {self.waiting} waiting; try again shortly",
                               "busy", retry_after=5)
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), timeout_s)
        except asyncio.TimeoutError:
            raise _unavailable(f"waited {timeout_s:g} s for the heavy queries before it; try again shortly",
                               "busy", retry_after=5) from None
        finally:
            self.waiting -= 1
        self.running += 1

    def leave(self) -> None:
        self.running -= 1
        assert self._sem is not None
        self._sem.release()


GATE_KEY = web.AppKey("query_gate", QueryGate)


def _unavailable(message: str, reason: str, retry_after: int | None = None) -> web.HTTPServiceUnavailable:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return web.HTTPServiceUnavailable(text=dumps({"error": message, "reason": reason}).decode(),
                                      content_type="application/json", headers=headers)


async def _run(request: web.Request, fn, *args):
    """``fn(cursor, budget, *args)`` on a reader thread, in line and within the budget."""
    cfg = request.app[CONFIG_KEY].web
    gate = request.app[GATE_KEY]
    await gate.enter(QUEUE_WAIT_BUDGETS * cfg.query_timeout_s)   # waits in line a few budgets at most...
    budget = QueryBudget(cfg.query_timeout_s, cfg.query_max_stack_nodes)   # ...then gets a whole one
    try:
        return await request.app[STORE_KEY].read(fn, budget, *args)
    except BudgetExceeded as exc:
        raise _unavailable(f"{exc}; {ADVICE}", exc.kind) from None
    finally:
        gate.leave()


def _filter(request: web.Request) -> stacks.ProfileFilter:
    """pid, tid, role, active and ``waits`` (show: every sample, the default; hide: leave out
    the pure waits, as the UI does by default; only: nothing else; storage/waits.py)."""
    return stacks.ProfileFilter(pids=p.integers(request, "pid"), tids=p.integers(request, "tid"),
                                roles=p.strings(request, "role"), active=p.boolean(request, "active"),
                                waits=p.choice(request, "waits", WAITS_MODES, "show"))


def _truncation(tp: TrieProfile) -> dict:
    return {"truncated_by": tp.truncated_by, "leaves": tp.leaves_total, "leaves_shown": int(len(tp.leaves)),
            "omitted": render.number(tp.omitted_value)}


def _flame_body(cur, budget: QueryBudget, t_from, t_to, flt, weight, gpu, max_nodes) -> bytes:
    tp = trie_profile(cur, t_from, t_to, flt, weight=weight, gpu=gpu, budget=budget)
    root = flame_root(tp, budget)
    extra = {"from": t_from, "to": t_to, "weight": weight, "total": render.number(tp.total), **_truncation(tp)}
    return render.flame_json_root(root, max_nodes=max_nodes, extra=extra, truncated=tp.truncated_by is not None)


def _export_body(cur, budget: QueryBudget, t_from, t_to, flt, weight, gpu, max_nodes, fmt) -> tuple[bytes, dict]:
    tp = trie_profile(cur, t_from, t_to, flt, weight=weight, gpu=gpu, budget=budget)
    prof, leaves, _ = export_profile(tp, EXPORT_MAX_FRAMES)
    sel = render.heaviest_stacks(prof, max_nodes=max_nodes, max_frames=EXPORT_MAX_FRAMES)
    kept = sum(v for _, v in sel.stacks)
    sel = Selection(sel.stacks, leaves, max(0.0, tp.total - kept), sel.nodes)
    if fmt == "folded":
        return render.folded(prof, sel).encode(), sel.headers()
    return dumps(render.speedscope(prof, name=f"infersight {int(t_from)}-{int(t_to)}", selection=sel)), sel.headers()


def _diff_body(cur, budget: QueryBudget, a_range, b_range, flt, weight, gpu, max_nodes) -> bytes:
    half = budget.split(2)
    ta = trie_profile(cur, *a_range, flt, weight=weight, gpu=gpu, budget=half)
    tb = trie_profile(cur, *b_range, flt, weight=weight, gpu=gpu, budget=half)
    extra = {"a_total": render.number(ta.total), "b_total": render.number(tb.total),
             "top_changes": render.ranked_changes(leaf_shares(ta), leaf_shares(tb)),
             "a_range": list(a_range), "b_range": list(b_range),
             "a_truncation": _truncation(ta), "b_truncation": _truncation(tb)}
    truncated = ta.truncated_by is not None or tb.truncated_by is not None
    return render.diff_json_roots(flame_root(ta, budget), flame_root(tb, budget), max_nodes=max_nodes, extra=extra,
                                  truncated=truncated)


async def flamegraph(request: web.Request) -> web.Response:
    """The profile of a range as a tree (json), folded text or a speedscope file, bounded by
    ``max_nodes`` (default 50,000) and the query budget (module docstring)."""
    t_from, t_to = p.time_range(request)
    fmt = p.choice(request, "format", ("json", "folded", "speedscope"), "json")
    weight = p.choice(request, "weight", ("samples", "gpu_idle"), "samples")
    gpu = p.integer(request, "gpu", None, lo=0, hi=1024)
    max_nodes = p.integer(request, "max_nodes", 50_000, lo=1, hi=1_000_000)
    flt = _filter(request)
    if fmt == "json":
        return bytes_response(await _run(request, _flame_body, t_from, t_to, flt, weight, gpu, max_nodes))
    body, headers = await _run(request, _export_body, t_from, t_to, flt, weight, gpu, max_nodes, fmt)
    if fmt == "folded":
        headers["Content-Disposition"] = 'attachment; filename="infersight.folded.txt"'
        return web.Response(body=body, content_type="text/plain", charset="utf-8", headers=headers)
    headers["Content-Disposition"] = 'attachment; filename="infersight.speedscope.json"'
    return bytes_response(body, headers=headers)


async def diff(request: web.Request) -> web.Response:
    """Range a (baseline) against range b as one tree, bounded like the flame graph (each
    range gets half the node budget); ``top_changes`` comes from the leaves read."""
    a_range = p.time_range(request, prefix="a_")
    b_range = p.time_range(request, prefix="b_")
    weight = p.choice(request, "weight", ("samples", "gpu_idle"), "samples")
    gpu = p.integer(request, "gpu", None, lo=0, hi=1024)
    max_nodes = p.integer(request, "max_nodes", 50_000, lo=1, hi=1_000_000)
    return bytes_response(await _run(request, _diff_body, a_range, b_range, _filter(request), weight, gpu, max_nodes))

