"""Interning of repeated values (frames, stacks, threads, targets, endpoints, series).

Owned by the writer thread only. Each table holds (id, value...) rows; ids are integers
assigned here, so samples carry small integers instead of strings. A stack is a node of a
prefix tree, (parent node, frame): the stacks a process shows share their prefixes, which
keeps the table small and lets a flame graph be built by walking parents. New rows
accumulate in ``pending`` and are appended by the writer in the same transaction as the
samples that refer to them.

Memory is bounded for the tables that grow with what the targets run (frames, stack nodes,
threads): each keeps two generations (:class:`Generations`), and an entry unused for one to two
``idle_s`` periods, or pushed out when a generation passes its size cap, is forgotten. A
forgotten value seen again gets a new id and a new row; readers resolve stacks through the
rows, so two ids of one stack are one stack to them, and the old rows go once retention has
deleted the samples that used them (:func:`prune_unreferenced`). Ids are never reused: the
high-water mark of each pruned table is kept in ``meta``, and the reader caches
(storage/stacks.py) rely on an id always meaning the same row.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable

import orjson

from infersight.storage.model import Frame, Target

# entries per generation (an interner holds at most twice this per table)
MAX_FRAMES = 50_000
MAX_NODES = 100_000
MAX_THREADS = 20_000
IDLE_S = 3600.0            # an entry unused for one to two of these is forgotten
_MAX_STACKS_SEEN = 4096    # frame tuples remembered by identity (Interner.stack)
PRUNED_TABLES = ("frames", "stack_nodes", "threads")


class Generations:
    """A key -> id map in two generations: a hit in ``old`` moves the entry to ``young``;
    :meth:`rotate` forgets ``old`` (the entries unused since the previous rotation) and makes
    ``young`` the old generation."""

    __slots__ = ("young", "old", "forgotten")

    def __init__(self) -> None:
        self.young: dict[Hashable, int] = {}
        self.old: dict[Hashable, int] = {}
        self.forgotten = 0

    def get(self, key: Hashable) -> int | None:
        id_ = self.young.get(key)
        if id_ is None:
            id_ = self.old.pop(key, None)
            if id_ is not None:
                self.young[key] = id_
        return id_

    def pop(self, key: Hashable, default: int | None = None) -> int | None:
        id_ = self.young.pop(key, None)
        old = self.old.pop(key, None)
        return id_ if id_ is not None else old if old is not None else default

    def rotate(self) -> int:
        dropped = len(self.old)
        self.old, self.young = self.young, {}
        self.forgotten += dropped
        return dropped

    def forget_ids(self, ids: set[int]) -> int:
        """Drop every entry whose id is in ``ids`` (rows deleted from the database)."""
        n = 0
        for gen in (self.young, self.old):
            for key in [k for k, v in gen.items() if v in ids]:
                del gen[key]
                n += 1
        return n

    def __len__(self) -> int:
        return len(self.young) + len(self.old)


class Interner:
    """Maps values to ids, loaded from the database at open (into the old generation)."""

    def __init__(self, con, *, max_frames: int = MAX_FRAMES, max_nodes: int = MAX_NODES,
                 max_threads: int = MAX_THREADS) -> None:
        self.frames = Generations()
        self.nodes = Generations()
        self.threads = Generations()
        self._caps = {"frames": (self.frames, max_frames), "stack_nodes": (self.nodes, max_nodes),
                      "threads": (self.threads, max_threads)}
        self.targets: dict[tuple[str, int, float], int] = {}
        self.endpoints: dict[str, int] = {}
        self.series: dict[tuple[int, str, str], int] = {}
        self._stacks_seen: dict[int, tuple[tuple, int]] = {}   # id(frames) -> (frames, leaf node)
        self.pending: dict[str, list[tuple]] = {}
        self.last_rotation: float | None = None
        for id_, fn, file, line, module in con.execute("SELECT id, function, file, line, module FROM frames").fetchall():
            self.frames.old[(fn, file, line, module)] = id_
        for id_, parent, frame in con.execute("SELECT id, parent, frame FROM stack_nodes").fetchall():
            self.nodes.old[(parent, frame)] = id_
        for id_, target, tid, name in con.execute("SELECT id, target, tid, name FROM threads").fetchall():
            self.threads.old[(target, tid, name)] = id_
        for id_, host, pid, start in con.execute("SELECT id, host, pid, start_time FROM targets").fetchall():
            self.targets[(host, pid, start)] = id_
        for id_, url in con.execute("SELECT id, url FROM endpoints").fetchall():
            self.endpoints[url] = id_
        for id_, endpoint, name, labels in con.execute("SELECT id, endpoint, name, labels FROM series").fetchall():
            self.series[(endpoint, name, labels)] = id_
        self._next = {table: next_id(con, table) for table in PRUNED_TABLES}

    def take_pending(self) -> dict[str, list[tuple]]:
        """New rows per table since the last call (the writer appends them); a generation over
        its cap is rotated here, between two flushes."""
        pending, self.pending = self.pending, {}
        for gens, cap in self._caps.values():
            if len(gens.young) > cap:
                gens.rotate()
                self._stacks_seen.clear()
        return pending

    def forget_pending(self, pending: dict[str, list[tuple]]) -> None:
        """Undo ids handed out for rows that were never written (a failed transaction)."""
        self._stacks_seen.clear()
        undo: dict[str, tuple[Any, Callable[[tuple], Any]]] = {
            "frames": (self.frames, lambda r: (r[1], r[2], r[3], r[4])),
            "stack_nodes": (self.nodes, lambda r: (r[1], r[2])),
            "threads": (self.threads, lambda r: (r[1], r[2], r[3])),
            "endpoints": (self.endpoints, lambda r: r[1]),
            "series": (self.series, lambda r: (r[1], r[2], r[3])),
        }
        for table, rows in pending.items():
            if table in undo:
                mapping, key = undo[table]
                for row in rows:
                    mapping.pop(key(row), None)
        for row in pending.get("targets_new", []):
            self.targets.pop((row[1], row[2], row[3]), None)

    def due(self, now: float, idle_s: float = IDLE_S) -> bool:
        """True (and the clock restarted) when ``idle_s`` has passed since the last time it was;
        the first call only starts the clock."""
        if self.last_rotation is None or now < self.last_rotation:
            self.last_rotation = now
            return False
        if now - self.last_rotation < idle_s:
            return False
        self.last_rotation = now
        return True

    def rotate(self) -> int:
        """Forget the entries of the bounded tables unused since the previous rotation."""
        self._stacks_seen.clear()
        return sum(gens.rotate() for gens, _ in self._caps.values())

    def forget_ids(self, table: str, ids: set[int]) -> int:
        """Forget the ids of rows deleted from ``table`` (one of PRUNED_TABLES)."""
        self._stacks_seen.clear()
        return self._caps[table][0].forget_ids(ids) if ids else 0

    def sizes(self) -> dict[str, int]:
        """Entries held per table (both generations) and how many were forgotten so far."""
        out = {table: len(gens) for table, (gens, _) in self._caps.items()}
        out["forgotten"] = sum(gens.forgotten for gens, _ in self._caps.values())
        return out

    def _add(self, table: str, row: tuple) -> None:
        self.pending.setdefault(table, []).append(row)

    def _new_id(self, table: str) -> int:
        id_ = self._next[table]
        self._next[table] = id_ + 1
        return id_

    def frame(self, f: Frame) -> int:
        key = (f.function, f.file, f.line, f.module)
        id_ = self.frames.young.get(key)          # the hot path: one lookup
        if id_ is None:
            id_ = self.frames.get(key)
            if id_ is None:
                id_ = self.frames.young[key] = self._new_id("frames")
                self._add("frames", (id_, *key))
        return id_

    def stack(self, frames: tuple[Frame, ...]) -> int:
        """The leaf node id of ``frames`` (root first); 0 is the empty stack. The same tuple
        object seen again (parsers hand out one per distinct stack) costs one lookup instead
        of a walk over its frames: 5,000 of them for a deep start-up stack."""
        seen = self._stacks_seen.get(id(frames))
        if seen is not None and seen[0] is frames:
            return seen[1]
        node = self._walk(frames)
        if len(self._stacks_seen) >= _MAX_STACKS_SEEN:
            self._stacks_seen.clear()
        self._stacks_seen[id(frames)] = (frames, node)     # the tuple is held: its id stays its own
        return node

    def _walk(self, frames: tuple[Frame, ...]) -> int:
        parent = 0
        young = self.nodes.young
        for depth, f in enumerate(frames, start=1):
            key = (parent, self.frame(f))
            node = young.get(key)
            if node is None:
                node = self.nodes.get(key)
                if node is None:
                    node = young[key] = self._new_id("stack_nodes")
                    self._add("stack_nodes", (node, parent, key[1], min(depth, 32767)))
            parent = node
        return parent

    def target(self, t: Target, now: float) -> int:
        """Target id; records it (new or seen again) for the writer's upsert."""
        id_ = self.targets.get(t.key)
        if id_ is None:
            id_ = self.targets[t.key] = len(self.targets) + 1
            self._add("targets_new", (id_, t.host, t.pid, t.start_time, t.cmdline, t.role, list(t.gpus),
                                      now, now, t.exited_at))
        else:
            self._add("targets_seen", (id_, t.cmdline, t.role, list(t.gpus), now, t.exited_at))
        return id_

    def target_of(self, host: str, pid: int, start_time: float, now: float) -> int:
        """Target id for samples that name a process not announced in a Target record."""
        id_ = self.targets.get((host, pid, start_time))
        if id_ is None:
            id_ = self.target(Target(host, pid, start_time, cmdline=""), now)
        return id_

    def thread(self, target: int, tid: int, name: str) -> int:
        key = (target, tid, name)
        id_ = self.threads.young.get(key)
        if id_ is None:
            id_ = self.threads.get(key)
            if id_ is None:
                id_ = self.threads.young[key] = self._new_id("threads")
                self._add("threads", (id_, target, tid, name))
        return id_

    def endpoint(self, url: str) -> int:
        id_ = self.endpoints.get(url)
        if id_ is None:
            id_ = self.endpoints[url] = len(self.endpoints) + 1
            self._add("endpoints", (id_, url))
        return id_

    def one_series(self, endpoint: int, name: str, labels: tuple[tuple[str, str], ...]) -> int:
        key = (endpoint, name, orjson.dumps(dict(labels)).decode())
        id_ = self.series.get(key)
        if id_ is None:
            id_ = self.series[key] = len(self.series) + 1
            self._add("series", (id_, *key))
        return id_


def _mark_key(table: str) -> str:
    return f"next_id:{table}"


def next_id(con, table: str) -> int:
    """The first id never used in ``table``: above its rows and its recorded high-water mark."""
    top = con.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
    mark = con.execute("SELECT max(TRY_CAST(value AS BIGINT)) FROM meta WHERE key = ?",
                       [_mark_key(table)]).fetchone()[0]
    return max(int(top) + 1, int(mark or 0))


def prune_unreferenced(con, interner: Interner) -> dict[str, int]:
    """Delete frames, stack nodes and threads no stored sample uses any more, and forget their
    ids in ``interner`` (the writer's, so a value seen again is interned anew). Returns the rows
    deleted per table. Runs on the writer thread, in one transaction."""
    out = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for table in PRUNED_TABLES:     # ids stay unique after the highest rows go
            mark = next_id(con, table)
            con.execute("DELETE FROM meta WHERE key = ?", [_mark_key(table)])
            con.execute("INSERT INTO meta VALUES (?, ?)", [_mark_key(table), str(mark)])
        # a node is in use while a sample's stack is it or below it
        con.execute("""CREATE TEMP TABLE _live_nodes AS
            WITH RECURSIVE up(id) AS (
                SELECT DISTINCT stack FROM stack_samples WHERE stack <> 0
                UNION
                SELECT n.parent FROM stack_nodes n JOIN up ON n.id = up.id WHERE n.parent <> 0)
            SELECT id FROM up""")
        deleted = {
            "stack_nodes": con.execute("DELETE FROM stack_nodes WHERE id NOT IN (SELECT id FROM _live_nodes) "
                                       "RETURNING id").fetchall(),
            # DISTINCT first: NOT IN hashes its subquery's rows as they come, one per sample,
            # and ran out of a 32 MiB buffer pool on a 1 h store (the set is a few hundred ids)
            "frames": con.execute("DELETE FROM frames WHERE id NOT IN (SELECT DISTINCT frame FROM stack_nodes) "
                                  "RETURNING id").fetchall(),
            "threads": con.execute("DELETE FROM threads WHERE id NOT IN (SELECT DISTINCT thread FROM stack_samples) "
                                   "RETURNING id").fetchall(),
        }
        con.execute("DROP TABLE _live_nodes")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    for table, rows in deleted.items():
        ids = {r[0] for r in rows}
        interner.forget_ids(table, ids)
        out[table] = len(ids)
    return out


def wants_interner(fn: Callable) -> Callable:
    """Marks a write command the writer calls as ``fn(con, *args, interner=its Interner)``."""
    fn.wants_interner = True  # type: ignore[attr-defined]
    return fn
