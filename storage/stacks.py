"""Stack queries: the profile of a time range, as the neutral model renderers consume.

A :class:`Profile` is a set of stacks (tuples of frame keys, root first) with a value
each: samples, or samples weighted by how idle a GPU was in their second. Renderers
(storage/render.py) turn it into a tree, folded text or speedscope JSON.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from infersight.storage.waits import WAIT_LEAF, WAITS_MODES

FrameKey = tuple[str, str, int]  # (function, file, line)


@dataclass(frozen=True)
class ProfileFilter:
    """Which samples a profile counts. None means no restriction.

    ``waits``: ``show`` counts every sample; ``hide`` leaves out the pure waits (samples
    py-spy found idle, and active ones whose leaf frame is a wait: storage/waits.py);
    ``only`` counts nothing else.
    """

    pids: tuple[int, ...] | None = None
    tids: tuple[int, ...] | None = None
    roles: tuple[str, ...] | None = None
    active: bool | None = None
    target_ids: tuple[int, ...] | None = None
    waits: str = "show"

    def __post_init__(self) -> None:
        if self.waits not in WAITS_MODES:
            raise ValueError(f"unknown waits mode {self.waits!r} ({', '.join(WAITS_MODES)})")


@dataclass
class Profile:
    """Stacks with values over [t_from, t_to); ``total`` is the sum of values."""

    t_from: float
    t_to: float
    stacks: dict[tuple[FrameKey, ...], float] = field(default_factory=dict)
    weight: str = "samples"
    gpu: int | None = None

    @property
    def total(self) -> float:
        return float(sum(self.stacks.values()))


class _NodeCache:
    """Leaf node id -> tuple of frame keys, per database, bounded.

    Node and frame rows never change under an id (ids are never reused: storage/intern.py),
    so what is cached stays true; rows retention deleted just stay until the cache is cleared.
    Only the ancestries of the leaves asked for are loaded. Each database's cache is cleared
    when it holds more than ``max_items`` nodes, frames and frames of memoized paths, and only
    the ``max_dbs`` databases used last are kept.
    """

    def __init__(self, max_items: int = 1_000_000, max_dbs: int = 4) -> None:
        self.lock = threading.Lock()
        self.max_items = max_items
        self.max_dbs = max_dbs
        self.by_db: dict[str, _DbPaths] = {}

    def paths(self, cur, leaves: list[int]) -> dict[int, tuple[FrameKey, ...]]:
        db_id = cur.execute("SELECT value FROM meta WHERE key = 'db_id'").fetchone()
        key = db_id[0] if db_id else "?"
        with self.lock:
            db = self.by_db.pop(key, None) or _DbPaths()
            self.by_db[key] = db                       # the most recently used last
            while len(self.by_db) > self.max_dbs:
                del self.by_db[next(iter(self.by_db))]
            if db.items > self.max_items:
                db.clear()
            missing = [leaf for leaf in leaves if leaf and leaf not in db.nodes]
            if missing:
                db.load(cur, missing)
            return {leaf: db.path(leaf) for leaf in leaves}


_GONE: FrameKey = ("[pruned]", "", 0)   # a frame retention deleted between two of our reads
_CHECKPOINT = 256                       # paths of nodes at depths divisible by this are memoized
# The first query reads the leaves with their depth; every later one also reads, below each
# missing ancestor, as many ids as it is deep: a stack interned at once has consecutive ids,
# so a 5,000-frame chain comes in one query instead of one query per level.
_NODES_QUERY = """
    SELECT id, parent, frame, depth FROM stack_nodes WHERE id IN (SELECT unnest(?))
    UNION ALL
    SELECT n.id, n.parent, n.frame, n.depth FROM stack_nodes n
    JOIN (SELECT unnest(?) AS lo, unnest(?) AS hi) r ON n.id >= r.lo AND n.id <= r.hi"""
_MAX_RANGE_ROWS = 200_000               # ids read ahead in one query at most


def load_nodes(cur, wanted: set[int], nodes: dict[int, tuple[int, int]], deadline=None,
               max_nodes: int | None = None, complete: set[int] | None = None) -> list[int]:
    """Into ``nodes`` (id -> (parent, frame)): ``wanted`` and all their ancestors not there yet
    (and whatever else the read-ahead ranges held). Returns the ids added. ``deadline()`` (if
    given) is called between queries and may raise to stop; once ``nodes`` holds ``max_nodes``
    it stops too, and some chains stay incomplete (the caller checks). ``complete`` (kept by a
    caller across calls) holds nodes whose whole ancestry is in ``nodes``: a climb stops there,
    so 20,000 leaves under one 5,000-frame chain cost 20,000 steps, not 100 million."""
    complete = set() if complete is None else complete
    depths: dict[int, int] = {}
    pending = {w for w in wanted if w and w not in nodes}
    need_depth: dict[int, int] = {}          # a missing ancestor -> its depth, when known
    added: list[int] = []
    while pending:
        if deadline is not None:
            deadline()
        if max_nodes is not None and len(nodes) >= max_nodes:
            break
        exact = sorted(w for w in pending if w not in need_depth)
        lo, hi, budget = [], [], _MAX_RANGE_ROWS
        for w in sorted(w for w in pending if w in need_depth):
            span = max(1, need_depth[w])
            if span > budget:
                exact.append(w)
                continue
            budget -= span
            lo.append(max(1, w - span + 1))
            hi.append(w)
        rows = cur.execute(_NODES_QUERY, [exact, lo, hi]).fetchall()
        for id_, parent, frame, depth in rows:
            if id_ not in nodes:
                nodes[id_] = (parent, frame)
                depths[id_] = depth or 0
                added.append(id_)
        nxt: set[int] = set()
        for w in pending:                     # climb each chain to its first missing ancestor
            node, climbed, missing = w, [], False
            while node and node not in complete:
                if node not in nodes:         # deleted by retention meanwhile: nothing to climb
                    missing = True
                    break
                climbed.append(node)
                parent = nodes[node][0]
                if parent and parent not in nodes:
                    nxt.add(parent)
                    if depths.get(node):
                        need_depth[parent] = depths[node] - 1
                    missing = True
                    break
                node = parent
            if not missing:
                complete.update(climbed)
        pending = nxt
    return added


def load_frames(cur, ids: set[int], frames: dict[int, FrameKey]) -> None:
    """Frame rows of ``ids`` into ``frames`` (id -> (function, file, line))."""
    if ids:
        for id_, fn, file, line in cur.execute(
                "SELECT id, function, file, line FROM frames WHERE id IN (SELECT unnest(?))",
                [sorted(ids)]).fetchall():
            frames[id_] = (fn, file, line or 0)


class _DbPaths:
    """One database's cached nodes (id -> (parent, frame)), frames and resolved paths."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.nodes: dict[int, tuple[int, int]] = {}
        self.frames: dict[int, FrameKey] = {}
        self.memo: dict[int, tuple[FrameKey, ...]] = {}
        self.items = 0          # nodes + frames + frames held in memoized paths

    def load(self, cur, leaves: list[int]) -> None:
        """Nodes of ``leaves`` and their ancestors not cached yet, and their frames (a
        recursive query took about 25 MB of DuckDB's allocator for a few hundred rows)."""
        added = load_nodes(cur, set(leaves), self.nodes)
        frames = {self.nodes[n][1] for n in added} - self.frames.keys()
        # a frame goes only with the last node using it: missing only if retention ran
        # between these reads (path() then shows _GONE)
        n_frames = len(self.frames)
        load_frames(cur, frames, self.frames)
        self.items += len(added) + len(self.frames) - n_frames

    def path(self, node: int) -> tuple[FrameKey, ...]:
        """Frames of ``node``, root first. Only the asked-for nodes and every _CHECKPOINT-th
        level are memoized: memoizing every node of a chain held depth² frames."""
        nodes, frames, memo = self.nodes, self.frames, self.memo
        if node == 0 or node not in nodes:
            return ()
        cached = memo.get(node)
        if cached is not None:
            return cached
        chain = []
        cur = node
        while cur and cur not in memo and cur in nodes:
            chain.append(cur)
            cur = nodes[cur][0]
        prefix = list(memo.get(cur, ())) if cur else []
        depth = len(prefix)
        for n in reversed(chain):
            prefix.append(frames.get(nodes[n][1], _GONE))
            depth += 1
            if depth % _CHECKPOINT == 0 and n != node:
                memo[n] = tuple(prefix)
                self.items += depth
        memo[node] = out = tuple(prefix)
        self.items += depth
        return out


_CACHE = _NodeCache()


def _filter_sql(f: ProfileFilter, params: list) -> str:
    clauses = []
    if f.active is not None:
        clauses.append("s.active = ?")
        params.append(f.active)
    if f.target_ids is not None:
        clauses.append("s.target IN (SELECT unnest(?))")
        params.append(list(f.target_ids))
    if f.pids is not None or f.roles is not None:
        sub = []
        if f.pids is not None:
            sub.append("pid IN (SELECT unnest(?))")
            params.append(list(f.pids))
        if f.roles is not None:
            sub.append("role IN (SELECT unnest(?))")
            params.append(list(f.roles))
        clauses.append(f"s.target IN (SELECT id FROM targets WHERE {' AND '.join(sub)})")
    if f.tids is not None:
        clauses.append("s.thread IN (SELECT id FROM threads WHERE tid IN (SELECT unnest(?)))")
        params.append(list(f.tids))
    return "".join(f" AND {c}" for c in clauses)


def leaf_query(t_from: float, t_to: float, flt: ProfileFilter = ProfileFilter(), *, weight: str = "samples",
               gpu: int | None = None) -> tuple[str, list]:
    """(SQL, parameters) of ``(leaf node id, value)`` rows, one per stack: samples with bucket
    in [t_from, t_to), or with ``weight="gpu_idle"`` each second's samples times that second's
    GPU idle fraction, 1 - SM activity (GPM/DCGM, or NVML utilization where GPM is absent) / 100,
    of ``gpu`` or, when None, the mean over all GPUs (seconds without a GPU sample weigh 0).

    ``flt.waits``: ``hide`` leaves out the samples py-spy found idle and those whose leaf frame
    is a wait (storage/waits.py: the leaf's ``file:function`` against WAIT_LEAF, evaluated by
    DuckDB's regular expressions); ``only`` keeps just those."""
    params: list = [int(t_from // 1), _ceil(t_to)]
    where = "s.bucket >= ? AND s.bucket < ?" + _filter_sql(flt, params)
    join = ""
    if flt.waits != "show":
        # left joins: an empty stack (no Python frame) has no leaf and is a wait only when idle
        join = " LEFT JOIN stack_nodes wn ON wn.id = s.stack LEFT JOIN frames wf ON wf.id = wn.frame"
        wait = "(NOT s.active OR coalesce(regexp_matches(wf.file || ':' || wf.function, ?), false))"
        where += f" AND {'NOT ' if flt.waits == 'hide' else ''}{wait}"
        params.append(WAIT_LEAF.pattern)
    if weight == "gpu_idle":
        gparams: list = [float(int(t_from // 1)), float(_ceil(t_to))]
        gpu_clause = ""
        if gpu is not None:
            gpu_clause = " AND gpu = ?"
            gparams.append(gpu)
        sql = f"""
            WITH idle AS (
                SELECT floor(t)::INTEGER AS b,
                       greatest(0.0, 1.0 - avg(coalesce(sm_util, util_gpu)) / 100.0) AS w
                FROM gpu_samples WHERE t >= ? AND t < ?{gpu_clause}
                  AND coalesce(sm_util, util_gpu) IS NOT NULL
                GROUP BY 1)
            SELECT s.stack, sum(s.count * idle.w) FROM stack_samples s JOIN idle ON s.bucket = idle.b{join}
            WHERE {where} GROUP BY 1"""
        return sql, gparams + params
    if weight == "samples":
        return f"SELECT s.stack, sum(s.count) FROM stack_samples s{join} WHERE {where} GROUP BY 1", params
    raise ValueError(f"unknown weight {weight!r} (samples or gpu_idle)")


def profile(cur, t_from: float, t_to: float, flt: ProfileFilter = ProfileFilter(), *,
            weight: str = "samples", gpu: int | None = None) -> Profile:
    """Samples with bucket in [t_from, t_to), by stack (see :func:`leaf_query` for ``weight``
    and ``flt.waits``). Materializes every stack's frames: for flame graphs and diffs of
    arbitrary ranges, the web uses storage/flame_query.py, which works on the stack trie
    within a budget."""
    sql, params = leaf_query(t_from, t_to, flt, weight=weight, gpu=gpu)
    rows = cur.execute(sql, params).fetchall()
    paths = _CACHE.paths(cur, [r[0] for r in rows])
    stacks: dict[tuple[FrameKey, ...], float] = {}
    for leaf, value in rows:
        if value:
            path = paths[leaf]
            stacks[path] = stacks.get(path, 0.0) + float(value)
    return Profile(t_from, t_to, stacks, weight, gpu)


def _ceil(t: float) -> int:
    i = int(t // 1)
    return i if i == t else i + 1


def thread_names(cur, t_from: float, t_to: float) -> list[dict]:
    """Threads with samples in the range: pid, role, tid, name, samples."""
    rows = cur.execute("""
        SELECT g.pid, g.role, th.tid, th.name, sum(s.count)
        FROM stack_samples s JOIN threads th ON th.id = s.thread JOIN targets g ON g.id = s.target
        WHERE s.bucket >= ? AND s.bucket < ?
        GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC""", [int(t_from // 1), _ceil(t_to)]).fetchall()
    return [{"pid": r[0], "role": r[1], "tid": r[2], "name": r[3], "samples": int(r[4])} for r in rows]


def per_second_by_target(cur, t_from: float, t_to: float) -> list[tuple[int, int, str, bool, int]]:
    """(bucket, pid, role, active, samples) per second and target, for the analysis."""
    return cur.execute("""
        SELECT s.bucket, g.pid, g.role, s.active, sum(s.count)::BIGINT
        FROM stack_samples s JOIN targets g ON g.id = s.target
        WHERE s.bucket >= ? AND s.bucket < ? GROUP BY 1, 2, 3, 4 ORDER BY 1""",
                       [int(t_from // 1), _ceil(t_to)]).fetchall()


def sampling_coverage(cur, t_from: float, t_to: float) -> list[dict]:
    """Per target: seconds with samples, samples and errors in the range (for health)."""
    rows = cur.execute("""
        SELECT g.pid, g.role, count(DISTINCT st.bucket), sum(st.samples), sum(st.errors)
        FROM sampling_stats st JOIN targets g ON g.id = st.target
        WHERE st.bucket >= ? AND st.bucket < ? GROUP BY 1, 2""", [int(t_from // 1), _ceil(t_to)]).fetchall()
    return [{"pid": r[0], "role": r[1], "seconds": r[2], "samples": int(r[3] or 0), "errors": int(r[4] or 0)}
            for r in rows]


def paths(cur, leaves: list[int]) -> dict[int, tuple[FrameKey, ...]]:
    """Leaf stack node id -> its frames, root first (through the bounded node cache)."""
    return _CACHE.paths(cur, leaves)
