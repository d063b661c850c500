"""Interning of repeated values (frames, stacks, threads, targets, endpoints, series).

Owned by the writer thread only. Each table holds (id, value...) rows; ids are dense
integers assigned here, so samples carry small integers instead of strings. A stack is a
node of a prefix tree, (parent node, frame): the stacks a process shows share their
prefixes, which keeps the table small and lets a flame graph be built by walking parents.
New rows accumulate in ``pending`` and are appended by the writer in the same
transaction as the samples that refer to them.
"""
from __future__ import annotations

import orjson

from infersight.storage.model import Frame, Target


class Interner:
    """Maps values to ids, loaded from the database at open."""

    def __init__(self, con) -> None:
        self.frames: dict[tuple, int] = {}
        self.nodes: dict[tuple[int, int], int] = {}
        self.threads: dict[tuple[int, int, str], int] = {}
        self.targets: dict[tuple[str, int, float], int] = {}
        self.endpoints: dict[str, int] = {}
        self.series: dict[tuple[int, str, str], int] = {}
        self.pending: dict[str, list[tuple]] = {}
        for id_, fn, file, line, module in con.execute("SELECT id, function, file, line, module FROM frames").fetchall():
            self.frames[(fn, file, line, module)] = id_
        for id_, parent, frame in con.execute("SELECT id, parent, frame FROM stack_nodes").fetchall():
            self.nodes[(parent, frame)] = id_
        for id_, target, tid, name in con.execute("SELECT id, target, tid, name FROM threads").fetchall():
            self.threads[(target, tid, name)] = id_
        for id_, host, pid, start in con.execute("SELECT id, host, pid, start_time FROM targets").fetchall():
            self.targets[(host, pid, start)] = id_
        for id_, url in con.execute("SELECT id, url FROM endpoints").fetchall():
            self.endpoints[url] = id_
        for id_, endpoint, name, labels in con.execute("SELECT id, endpoint, name, labels FROM series").fetchall():
            self.series[(endpoint, name, labels)] = id_
        self._depth: dict[int, int] = {}

    def take_pending(self) -> dict[str, list[tuple]]:
        """New rows per table since the last call (the writer appends them)."""
        pending, self.pending = self.pending, {}
        return pending

    def forget_pending(self, pending: dict[str, list[tuple]]) -> None:
        """Undo ids handed out for rows that were never written (a failed transaction)."""
        undo = {
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

    def _add(self, table: str, row: tuple) -> None:
        self.pending.setdefault(table, []).append(row)

    def frame(self, f: Frame) -> int:
        key = (f.function, f.file, f.line, f.module)
        id_ = self.frames.get(key)
        if id_ is None:
            id_ = self.frames[key] = len(self.frames) + 1
            self._add("frames", (id_, *key))
        return id_

    def stack(self, frames: tuple[Frame, ...]) -> int:
        """The leaf node id of ``frames`` (root first); 0 is the empty stack."""
        parent = 0
        for depth, f in enumerate(frames, start=1):
            frame_id = self.frame(f)
            node = self.nodes.get((parent, frame_id))
            if node is None:
                node = self.nodes[(parent, frame_id)] = len(self.nodes) + 1
                self._add("stack_nodes", (node, parent, frame_id, min(depth, 32767)))
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
        id_ = self.threads.get(key)
        if id_ is None:
            id_ = self.threads[key] = len(self.threads) + 1
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
