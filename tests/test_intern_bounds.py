"""The interner's memory bounds and retention's pruning of frames, stack nodes and threads.

Real DuckDB files through the real writer; an interner alone on a migrated connection where
its caps are the point.
"""
from __future__ import annotations

import duckdb

from infersight.storage import intern, retention, schema, stacks
from infersight.storage.model import Batch, Frame, StackSample, Target
from infersight.storage.store import Store

T0 = 472_222 * 3600
HOUR = 3600
MAIN = Frame("main", "/srv/app.py", 10)
STEP = Frame("step", "/srv/engine.py", 30)
MATMUL = Frame("matmul", "/srv/engine.py", 40)
TOKENIZE = Frame("tokenize", "/srv/api.py", 7)
ENCODE = Frame("encode", "/srv/tok.py", 99)
HOT = (MAIN, STEP, MATMUL)
RARE = (MAIN, TOKENIZE, ENCODE)


def key(frames) -> tuple:
    return tuple((f.function, f.file, f.line) for f in frames)


def batch(t: int, stack_counts, tid: int = 1001, name: str = "MainThread") -> Batch:
    b = Batch("stacks", float(t))
    b.targets.append(Target("testhost", 42, 5.0, "python serve.py", role="engine"))
    for frames, n in stack_counts:
        b.stack_samples.append(StackSample(t, 42, 5.0, tid, name, frames, True, n))
    return b


def table_ids(store: Store, table: str) -> set[int]:
    return store.read_sync(lambda c: {r[0] for r in c.execute(f"SELECT id FROM {table}").fetchall()})


def policy(**kw) -> retention.RetentionPolicy:
    base = dict(retention_s=HOUR, max_bytes=1e15, rollup_after_s=1e9, rollup_bucket_s=60, intern_idle_s=60)
    base.update(kw)
    return retention.RetentionPolicy(**base)


def test_rows_no_sample_uses_are_pruned_and_a_pruned_stack_comes_back_right(tmp_path):
    path = str(tmp_path / "p.duckdb")
    store = Store.open(path, host="testhost", flush_interval_s=0.05)
    try:
        for t in range(T0, T0 + 10):            # the rare stack (on its own thread) is interned last:
            store.submit(batch(t, [(HOT, 5)]))   # its rows hold the highest ids
            store.submit(batch(t, [(RARE, 2)], tid=2002, name="tokenizer"))
        store.flush()
        rare_nodes_before = table_ids(store, "stack_nodes")
        # the reader cache learns the rare stack's ids now, before they are pruned
        assert store.read_sync(stacks.profile, T0, T0 + 10).stacks[key(RARE)] == 20
        for t in range(T0 + HOUR, T0 + HOUR + 10):
            store.submit(batch(t, [(HOT, 5)]))
        store.flush()

        now = T0 + HOUR + 100                     # the first 10 s are older than retention (1 h)
        first = store.write_sync(retention.run_maintenance, policy(), now)
        assert first["deleted_by_age"] > 0 and first["dimension_rows_pruned"] == 0  # the clock starts
        second = store.write_sync(retention.run_maintenance, policy(), now + 61)
        # the rare stack's own rows go (tokenize and encode: 2 nodes, 2 frames; its thread); main is shared
        assert second["dimension_rows_pruned"] == 5
        frames = store.read_sync(lambda c: sorted(r[0] for r in c.execute("SELECT function FROM frames").fetchall()))
        assert frames == ["main", "matmul", "step"]
        assert store.read_sync(lambda c: c.execute("SELECT name FROM threads").fetchall()) == [("MainThread",)]
        assert len(table_ids(store, "stack_nodes")) == 3
        assert store.read_sync(stacks.profile, T0 + HOUR, now).stacks == {key(HOT): 50.0}

        # seen again: new rows under new ids (never a pruned one), and the flame graph is right
        store.submit(batch(int(now) + 70, [(RARE, 3), (HOT, 1)], tid=2002, name="tokenizer"))
        store.flush()
        new_nodes = table_ids(store, "stack_nodes") - rare_nodes_before
        assert len(new_nodes) == 2 and min(new_nodes) > max(rare_nodes_before)
        got = store.read_sync(stacks.profile, now + 70, now + 71)
        assert got.stacks == {key(RARE): 3.0, key(HOT): 1.0}
        assert store.read_sync(lambda c: c.execute("SELECT count(*) FROM threads").fetchone()[0]) == 2
        high = max(table_ids(store, "stack_nodes"))
        # prune the rare stack again (its samples age out), then reopen: its ids, the highest,
        # are not handed out again
        third = store.write_sync(retention.run_maintenance, policy(retention_s=1), now + 200)
        assert third["deleted_by_age"] > 0
        store.write_sync(retention.run_maintenance, policy(retention_s=1), now + 300)
        assert max(table_ids(store, "stack_nodes") or {0}) < high
    finally:
        store.close()
    store = Store.open(path, host="testhost", flush_interval_s=0.05)
    try:
        store.submit(batch(int(now) + 400, [(RARE, 4)], tid=2002, name="tokenizer"))
        store.flush()
        assert min(table_ids(store, "stack_nodes")) > high
        assert store.read_sync(stacks.profile, now + 400, now + 401).stacks == {key(RARE): 4.0}
    finally:
        store.close()


def _interner(tmp_path, **caps) -> intern.Interner:
    con = duckdb.connect(str(tmp_path / "i.duckdb"))
    schema.migrate(con)
    return intern.Interner(con, **caps)


def _distinct_stack(i: int) -> tuple[Frame, ...]:
    return (MAIN, Frame(f"handler_{i}", "/srv/routes.py", i), Frame("leaf", "/srv/util.py", 1))


def test_generations_hold_at_most_twice_the_cap_and_forgotten_stacks_get_new_ids(tmp_path):
    it = _interner(tmp_path, max_frames=8, max_nodes=8, max_threads=4)
    first = it.stack(_distinct_stack(0))
    for i in range(1, 200):
        it.stack(_distinct_stack(i))
        it.thread(1, i, f"worker-{i}")
        it.take_pending()                     # a flush: where generations past their cap rotate
        sizes = it.sizes()
        assert sizes["frames"] <= 2 * 8 + 2 and sizes["stack_nodes"] <= 2 * 8 + 2 and sizes["threads"] <= 2 * 4 + 1
    assert it.sizes()["forgotten"] > 0
    again = it.stack(_distinct_stack(0))
    assert again != first and again > first
    rows = it.take_pending()
    # the forgotten rows are written again (main and leaf, used by every stack, were kept)
    assert [r[1] for r in rows["frames"]] == ["handler_0"]
    assert [r[0] for r in rows["stack_nodes"]] == [again - 1, again]


def test_entries_in_use_survive_rotations_and_idle_ones_go(tmp_path):
    it = _interner(tmp_path)
    hot, cold = it.stack(HOT), it.stack(RARE)
    it.take_pending()
    assert not it.due(T0, idle_s=60)          # starts the clock
    assert not it.due(T0 + 59, idle_s=60)
    assert it.due(T0 + 60, idle_s=60)
    it.rotate()                               # both were used since the start: kept (now old)
    assert it.stack(HOT) == hot and it.stack(RARE) == cold
    it.rotate()
    assert it.stack(HOT) == hot               # used since the last rotation: kept
    it.rotate()
    it.rotate()                               # RARE unused for two rotations, HOT for two as well
    assert it.stack(RARE) != cold and it.stack(HOT) != hot


def test_the_reader_node_cache_stays_bounded_and_right(tmp_path):
    store = Store.open(str(tmp_path / "c.duckdb"), host="testhost", flush_interval_s=0.05)
    try:
        stacks_ = [_distinct_stack(i) for i in range(40)]
        for i, frames in enumerate(stacks_):
            store.submit(batch(T0 + i, [(frames, 1)]))
        store.flush()
        leaves = store.read_sync(lambda c: [r[0] for r in c.execute(
            "SELECT stack FROM stack_samples ORDER BY bucket").fetchall()])
        cache = stacks._NodeCache(max_items=30, max_dbs=2)
        for _ in range(3):
            for i in range(0, 40, 5):        # a few leaves at a time, as queries ask
                got = store.read_sync(cache.paths, leaves[i:i + 5])
                assert [got[leaf] for leaf in leaves[i:i + 5]] == [key(f) for f in stacks_[i:i + 5]]
                db = next(iter(cache.by_db.values()))
                assert db.items <= 30 + 5 * 7     # cleared once past the cap, then one query's worth
    finally:
        store.close()
