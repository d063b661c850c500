"""Flame graphs and diffs of any range within a per-request time and memory budget.

:func:`stacks.profile` spells out every distinct stack's frames: a range with 332,000
distinct leaves under 5,000-frame stacks is billions of frame references (the web server
grew past 20 GB on bench/heavy_queries.py's store). Here the stored stack trie is used as it
is instead:

1. one aggregate query gives every leaf's value (NumPy arrays, not Python rows), heaviest
   first; the range's total comes from all of them;
2. the ancestors of the heaviest leaves are read (storage/stacks.py ``load_nodes``: a chain in
   one query), in batches, until ``QueryBudget.max_nodes`` trie nodes are held or the
   deadline nears; the leaves not reached are left out, their value counted as omitted and
   the answer marked truncated;
3. a flame tree (storage/render.py's nodes, merged by function and file) is built from the
   trie in one pass over node ids (a child's id is always above its parent's).

Memory is bounded by the node budget (about 1.5 KB per trie node held, frames and tree node
included), time by the deadline: DuckDB's statement is interrupted when it passes
(``cur.interrupt()`` from a timer), and the Python loops check it. An exceeded budget that
leaves nothing to show raises :class:`BudgetExceeded`; the web answers it with 503 and the
reason, never with a 500.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import duckdb
import numpy as np

from infersight.storage import stacks
from infersight.storage.render import _Node, ROOT
from infersight.storage.stacks import FrameKey, Profile, ProfileFilter

LEAF_BATCH = 20_000          # leaves whose ancestors are read per round, at most
_DEADLINE_MARGIN = 0.2       # fraction of the time budget kept for building and encoding


class BudgetExceeded(Exception):
    """A query passed its budget with nothing to show; ``kind`` is ``time`` or ``memory``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class QueryBudget:
    """``timeout_s`` from ``started`` (monotonic seconds); at most ``max_nodes`` trie nodes held."""

    timeout_s: float
    max_nodes: int
    started: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        return self.started + self.timeout_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, what: str = "the query") -> None:
        if self.remaining() <= 0:
            raise BudgetExceeded("time", f"{what} took longer than its {self.timeout_s:g} s budget")

    def split(self, parts: int) -> "QueryBudget":
        """The same deadline with 1/``parts`` of the node budget (a diff's two profiles)."""
        return QueryBudget(self.timeout_s, max(1, self.max_nodes // parts), self.started)


@dataclass
class TrieProfile:
    """The heaviest part of a range's profile as stack-trie rows (see the module docstring)."""

    t_from: float
    t_to: float
    nodes: dict[int, tuple[int, int]]          # trie node id -> (parent id, frame id)
    frames: dict[int, FrameKey]                # frame id -> (function, file, line)
    leaves: np.ndarray                         # the leaf ids used, heaviest first
    values: np.ndarray                         # their values
    total: float                               # of every leaf of the range
    leaves_total: int                          # distinct leaves in the range
    truncated_by: str | None = None            # "memory" (node budget) or "time", or None

    @property
    def omitted_value(self) -> float:
        return max(0.0, self.total - float(self.values.sum()))


def _execute(cur, sql: str, params: list, budget: QueryBudget):
    """``cur.execute`` interrupted at the deadline; DuckDB's own memory limit is reported too."""
    remaining = budget.remaining()
    if remaining <= 0:
        budget.check()
    timer = threading.Timer(remaining, cur.interrupt)
    timer.start()
    try:
        return cur.execute(sql, params)
    except duckdb.InterruptException:
        raise BudgetExceeded("time", f"the query took longer than its {budget.timeout_s:g} s budget") from None
    except duckdb.OutOfMemoryException:
        raise BudgetExceeded("memory", "the query needs more memory than storage.duckdb_memory_limit_mb "
                             "allows") from None
    finally:
        timer.cancel()


def trie_profile(cur, t_from: float, t_to: float, flt: ProfileFilter = ProfileFilter(), *,
                 weight: str = "samples", gpu: int | None = None, budget: QueryBudget) -> TrieProfile:
    """Steps 1 and 2 of the module docstring. Raises BudgetExceeded when even the leaf
    values do not come within the budget."""
    sql, params = stacks.leaf_query(t_from, t_to, flt, weight=weight, gpu=gpu)
    arrays = _execute(cur, sql, params, budget).fetchnumpy()
    ids = np.asarray(arrays["stack"], dtype=np.int64)
    values = np.asarray(arrays[list(arrays)[1]], dtype=np.float64)
    keep = (values > 0) & (ids > 0)
    ids, values = ids[keep], values[keep]
    order = np.lexsort((ids, -values))      # heaviest first; ties by id, so answers repeat
    ids, values = ids[order], values[order]
    total, leaves_total = float(values.sum()), len(ids)
    nodes: dict[int, tuple[int, int]] = {}
    used, truncated_by = 0, None
    kept = np.ones(len(ids), dtype=bool)
    soft_deadline = budget.started + budget.timeout_s * (1 - _DEADLINE_MARGIN)
    batch_size = min(256, LEAF_BATCH)   # grows while the stacks are cheap: a batch of deep, distinct ones is big
    complete: set[int] = set()  # nodes whose ancestry is read (load_nodes)
    while used < len(ids) and truncated_by is None:
        if time.monotonic() > soft_deadline:
            truncated_by = "time"
            break
        batch = ids[used:used + batch_size].tolist()
        before = len(nodes)
        try:
            stacks.load_nodes(cur, set(batch), nodes, deadline=lambda: _soft_check(soft_deadline),
                              max_nodes=budget.max_nodes, complete=complete)
        except BudgetExceeded:
            truncated_by = "time"
        if truncated_by is not None or len(nodes) >= budget.max_nodes:
            truncated_by = truncated_by or "memory"
            # the batch may hold chains the budget cut: only complete stacks are shown
            memo: dict[int, bool] = {0: True}
            kept[used:used + len(batch)] = [_complete(leaf, nodes, memo) for leaf in batch]
        used += len(batch)
        if len(nodes) - before < budget.max_nodes // 20:
            batch_size = min(LEAF_BATCH, batch_size * 2)
    ids, values = ids[:used][kept[:used]], values[:used][kept[:used]]
    if truncated_by is not None and not len(ids):
        raise BudgetExceeded(truncated_by, "not one stack of the range could be read within the query's "
                             + (f"{budget.timeout_s:g} s" if truncated_by == "time" else
                                f"{budget.max_nodes:,} stack nodes (web.query_max_stack_nodes)"))
    frames: dict[int, FrameKey] = {}
    stacks.load_frames(cur, {frame for _, frame in nodes.values()}, frames)
    return TrieProfile(t_from, t_to, nodes, frames, ids, values, total, leaves_total, truncated_by)


def _complete(leaf: int, nodes: dict[int, tuple[int, int]], memo: dict[int, bool]) -> bool:
    """Whether every ancestor of ``leaf`` is in ``nodes`` (``memo`` shares the climbs)."""
    path = []
    node = leaf
    while node not in memo:
        if node not in nodes:
            memo[node] = False
            break
        path.append(node)
        node = nodes[node][0]
    result = memo[node]
    for n in path:
        memo[n] = result
    return result


def _soft_check(soft_deadline: float) -> None:
    if time.monotonic() > soft_deadline:
        raise BudgetExceeded("time", "reading the stacks reached the query's time budget")


def flame_root(tp: TrieProfile, budget: QueryBudget | None = None) -> _Node:
    """The flame tree of ``tp`` (storage/render.py's nodes): root value = the whole range's
    total, so what the budget left out still counts in the root's share."""
    nodes = tp.nodes
    value: dict[int, float] = {}
    for leaf, v in zip(tp.leaves.tolist(), tp.values.tolist()):
        value[leaf] = value.get(leaf, 0.0) + v
    # ids are assigned in creation order, a parent before its children: descending ids add
    # every child's value into its parent before the parent's is passed on
    order = sorted(nodes, reverse=True)
    for i, n in enumerate(order):
        if budget is not None and i % 50_000 == 0:
            budget.check("building the tree")
        v = value.get(n)
        if v:
            parent = nodes[n][0]
            if parent:
                value[parent] = value.get(parent, 0.0) + v
    root = _Node(ROOT, "")
    root.value = tp.total
    flame_of: dict[int, _Node] = {0: root}
    for i, n in enumerate(reversed(order)):
        if budget is not None and i % 50_000 == 0:
            budget.check("building the tree")
        v = value.get(n)
        if not v:
            continue
        parent, frame = nodes[n]
        up = flame_of.get(parent, root)   # an ancestor deleted by retention between the reads: the root
        fn, file, line = tp.frames.get(frame, stacks._GONE)
        child = up.children.get((fn, file))
        if child is None:
            child = up.children[(fn, file)] = _Node(fn, file)
        child.value += v
        child.lines[line] = child.lines.get(line, 0.0) + v
        flame_of[n] = child
    return root


def leaf_shares(tp: TrieProfile) -> dict[tuple[str, str], float]:
    """Share of the range's total per leaf function (function, file), of the leaves read."""
    total = tp.total or 1.0
    out: dict[tuple[str, str], float] = {}
    for leaf, v in zip(tp.leaves.tolist(), tp.values.tolist()):
        node = tp.nodes.get(leaf)
        if node is None:
            continue
        fn, file, _ = tp.frames.get(node[1], stacks._GONE)
        out[(fn, file)] = out.get((fn, file), 0.0) + v / total
    return out


def export_profile(tp: TrieProfile, max_frames: int) -> tuple[Profile, int, float]:
    """The heaviest stacks spelled out, within ``max_frames`` frame references; returns
    (profile, distinct leaves of the range, value left out)."""
    out: dict[tuple[FrameKey, ...], float] = {}
    frames_used = 0
    for leaf, v in zip(tp.leaves.tolist(), tp.values.tolist()):
        path: list[FrameKey] = []
        node = leaf
        while node and node in tp.nodes:
            parent, frame = tp.nodes[node]
            path.append(tp.frames.get(frame, stacks._GONE))
            node = parent
        if frames_used + len(path) > max_frames:
            break
        frames_used += len(path)
        key = tuple(reversed(path))
        out[key] = out.get(key, 0.0) + v
    kept = sum(out.values())
    return Profile(tp.t_from, tp.t_to, out), tp.leaves_total, max(0.0, tp.total - kept)
