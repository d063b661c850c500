"""Storage: schema migrations, the writer's batching and overflow accounting, interning."""
from __future__ import annotations

import subprocess
import sys
import threading

import duckdb
import pytest

from infersight.storage import schema, stacks
from infersight.storage.model import Batch, Frame, GpuSample, HostSample, StackSample, Target
from infersight.storage.store import Store, StoreError


def host_batch(t: float, n: int = 1) -> Batch:
    b = Batch("host", t)
    for i in range(n):
        b.host_samples.append(HostSample(t + i * 0.01, 10.0 + i, 8, 1 << 30, 1 << 34, 0.5, 0.4, 0.3))
    return b


def count(store: Store, table: str) -> int:
    return store.read_sync(lambda cur: cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# -- schema ------------------------------------------------------------------------------------

def test_new_file_gets_every_migration(tmp_path):
    path = tmp_path / "sub" / "dir" / "new.duckdb"
    s = Store.open(str(path))
    try:
        assert path.exists()
        versions = s.read_sync(lambda c: [r[0] for r in c.execute(
            "SELECT version FROM schema_migrations ORDER BY 1").fetchall()])
        assert versions == [m[0] for m in schema.MIGRATIONS]
    finally:
        s.close()


def test_migration_from_version_1_keeps_rows(tmp_path):
    path = str(tmp_path / "old.duckdb")
    con = duckdb.connect(path)
    assert schema.migrate(con, upto=1) == [1]
    con.execute("INSERT INTO host_samples VALUES (100.0, 12.5, 8, 1, 2, 0.1, 0.2, 0.3)")
    con.execute("INSERT INTO targets VALUES (1, 'h', 42, 5.0, 'python serve.py', 'engine', [0], 1.0, 2.0, NULL)")
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "outbox" not in tables  # migration 2 really is not there yet
    con.close()

    s = Store.open(path)
    try:
        assert s.read_sync(schema.applied_version) == schema.CURRENT_VERSION >= 2
        assert s.read_sync(lambda c: c.execute("SELECT t, cpu_percent FROM host_samples").fetchall()) == [(100.0, 12.5)]
        assert s.read_sync(lambda c: c.execute("SELECT pid, cmdline FROM targets").fetchall()) == [
            (42, "python serve.py")]
        assert count(s, "outbox") == 0 and count(s, "rollups") == 0  # migration 2's tables exist
        # the interner picked up the old target: the same process gets the same id
        s.submit(_batch_with_target(Target("h", 42, 5.0, "python serve.py", role="engine"), t=200.0))
        s.flush()
        assert count(s, "targets") == 1
    finally:
        s.close()


def test_events_keep_their_rows_when_their_text_moves_to_zstd(tmp_path):
    path = str(tmp_path / "v4.duckdb")
    con = duckdb.connect(path)
    assert schema.migrate(con, upto=4)[-1] == 4
    con.execute("INSERT INTO events VALUES ('e1', 'cpu_gpu_gap', 'h', 0, 1.0, 5.0, 'warning', 'stall', "
                "'GPU 0 stall', '{\"lost_gpu_s\": 3.5}', '[{\"frame\": \"f\"}]', false, 9.0)")
    con.close()
    s = Store.open(path)
    try:
        from infersight.storage import events as q_events
        got = s.read_sync(q_events.event, "e1")
        assert (got["summary"], got["evidence"], got["top_frames"], got["class"]) == (
            "GPU 0 stall", {"lost_gpu_s": 3.5}, [{"frame": "f"}], "stall")
        s.write_sync(lambda c: c.execute("CHECKPOINT"))
        used = s.read_sync(lambda c: dict(c.execute(
            "SELECT column_name, any_value(compression) FROM pragma_storage_info('events') "
            "WHERE segment_type <> 'VALIDITY' GROUP BY 1").fetchall()))
        assert {used[c] for c in ("summary", "evidence", "top_frames")} == {"ZSTD"}
    finally:
        s.close()


def test_file_from_a_newer_version_is_refused(tmp_path):
    path = str(tmp_path / "future.duckdb")
    Store.open(path).close()
    con = duckdb.connect(path)
    con.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', 0)", [schema.CURRENT_VERSION + 7])
    con.close()
    for read_only in (False, True):
        with pytest.raises(StoreError, match=f"newer.*{schema.CURRENT_VERSION + 7}|{schema.CURRENT_VERSION + 7}.*newer"):
            Store.open(path, read_only=read_only)


def test_unopenable_paths_raise_store_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the folder"):
        Store.open(str(blocker / "db.duckdb"))
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"this is not a database" * 1000)
    with pytest.raises(StoreError, match="cannot open"):
        Store.open(str(garbage))


def test_second_process_on_one_file_is_refused_clearly(tmp_path):
    path = str(tmp_path / "one.duckdb")
    first = Store.open(path)
    try:
        code = ("import sys\nfrom infersight.storage.store import Store, StoreError\n"
                "try:\n    Store.open(sys.argv[1])\nexcept StoreError as exc:\n    print(exc)\n    sys.exit(3)\n")
        proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 3, proc.stderr
        assert proc.stdout.startswith(f"cannot open {path}:")
        assert len(proc.stdout.splitlines()) == 1
    finally:
        first.close()


# -- the writer --------------------------------------------------------------------------------

def test_batches_are_written_together_at_the_flush(tmp_path):
    # an hour-long flush interval: only flush() (a command) writes, so batching is observable
    s = Store.open(str(tmp_path / "b.duckdb"), flush_interval_s=3600)
    try:
        for i in range(25):
            assert s.submit(host_batch(1000.0 + i, n=4))
        assert s.stats().flushes == 0
        s.flush()
        st = s.stats()
        assert st.flushes == 1  # 25 batches, one transaction
        assert st.batches_written == 25 and st.rows_written == 100
        assert st.by_collector == {"host": 100}
        assert count(s, "host_samples") == 100
    finally:
        s.close()


def test_flush_interval_bounds_the_wait(tmp_path):
    s = Store.open(str(tmp_path / "f.duckdb"), flush_interval_s=0.05)
    try:
        s.submit(host_batch(5.0, n=3))
        done = threading.Event()
        for _ in range(600):  # without any flush() call, the writer writes on its own
            if s.stats().rows_written == 3:
                done.set()
                break
            done.wait(0.05)
        assert done.is_set(), s.stats()
    finally:
        s.close()


def test_close_writes_what_is_queued(tmp_path):
    path = str(tmp_path / "c.duckdb")
    s = Store.open(path, flush_interval_s=3600)
    for i in range(10):
        s.submit(host_batch(float(i), n=2))
    s.close()
    s.close()  # idempotent
    assert not s.submit(host_batch(99.0))  # closed stores drop, never raise
    again = Store.open(path, read_only=True)
    try:
        assert count(again, "host_samples") == 20
    finally:
        again.close()


def test_queue_overflow_is_dropped_and_counted(tmp_path):
    s = Store.open(str(tmp_path / "q.duckdb"), queue_max_batches=3, flush_interval_s=3600)
    entered, gate = threading.Event(), threading.Event()

    def block(con):  # holds the writer thread so the queue fills up
        entered.set()
        gate.wait(30)

    blocker = threading.Thread(target=s.write_sync, args=(block,))
    blocker.start()
    try:
        assert entered.wait(30)
        accepted = [s.submit(host_batch(float(i), n=i + 1)) for i in range(8)]
        assert accepted == [True] * 3 + [False] * 5
        st = s.stats()
        assert st.batches_dropped == 5
        assert st.rows_dropped == sum(range(4, 9))  # n = 4..8 for the dropped ones
    finally:
        gate.set()
        blocker.join(30)
    s.flush()
    assert count(s, "host_samples") == 1 + 2 + 3
    s.close()


def test_a_batch_the_schema_refuses_does_not_block_the_others(store):
    store.submit(host_batch(1.0))
    bad = Batch("gpu", 2.0, gpu_samples=[GpuSample(2.0, 100_000, {"sm_util": 5.0})])  # gpu is SMALLINT
    store.submit(bad)
    store.flush()
    for i in range(3):
        store.submit(host_batch(3.0 + i))
        store.flush()
    st = store.stats()
    assert count(store, "host_samples") == 4
    assert count(store, "gpu_samples") == 0
    assert st.batches_rejected == 1 and st.batches_dropped == 1 and st.rows_dropped == 1
    assert st.last_error is None  # the writer recovered


def test_write_commands_see_earlier_batches_and_errors_reach_the_caller(store):
    store.submit(host_batch(1.0, n=5))
    assert store.write_sync(lambda con: con.execute("SELECT count(*) FROM host_samples").fetchone()[0]) == 5
    with pytest.raises(duckdb.CatalogException):
        store.write_sync(lambda con: con.execute("SELECT * FROM no_such_table"))
    store.submit(host_batch(2.0))
    store.flush()
    assert count(store, "host_samples") == 6  # the failed command left the writer working


def test_read_only_store_refuses_writes(tmp_path):
    path = str(tmp_path / "ro.duckdb")
    Store.open(path).close()
    ro = Store.open(path, read_only=True)
    try:
        assert not ro.submit(host_batch(1.0))
        with pytest.raises(StoreError, match="read-only"):
            ro.write_sync(lambda con: None)
        assert ro.stats().rows_written == 0
    finally:
        ro.close()


# -- interning ---------------------------------------------------------------------------------

MAIN = Frame("main", "/srv/app.py", 10)
STEP = Frame("step", "/srv/engine.py", 30)
MATMUL = Frame("matmul", "/srv/engine.py", 40)
SLEEP = Frame("sleep", "/srv/engine.py", 55)


def _batch_with_target(target: Target, t: float) -> Batch:
    b = Batch("stacks", t)
    b.targets.append(target)
    return b


def stack_batch(t: int, pid: int = 42, start: float = 5.0, stacks_counts=None) -> Batch:
    b = Batch("stacks", float(t))
    b.targets.append(Target("testhost", pid, start, f"python serve.py {pid}", role="engine"))
    for frames, n in (stacks_counts or [((MAIN, STEP, MATMUL), 7), ((MAIN, STEP, SLEEP), 3)]):
        b.stack_samples.append(StackSample(t, pid, start, 1001, "MainThread", frames, True, n))
    return b


def test_stacks_share_prefixes_and_survive_reopen(tmp_path):
    path = str(tmp_path / "s.duckdb")
    s = Store.open(path, host="testhost")
    for t in range(100, 110):
        s.submit(stack_batch(t))
    s.flush()
    assert count(s, "frames") == 4
    assert count(s, "stack_nodes") == 4  # main -> step -> {matmul, sleep}
    assert count(s, "targets") == 1 and count(s, "threads") == 1
    prof = s.read_sync(stacks.profile, 100, 110)
    s.close()

    key = lambda f: (f.function, f.file, f.line)  # noqa: E731
    assert prof.stacks == {(key(MAIN), key(STEP), key(MATMUL)): 70.0, (key(MAIN), key(STEP), key(SLEEP)): 30.0}
    s = Store.open(path, host="testhost")
    try:
        s.submit(stack_batch(200))
        s.flush()
        assert count(s, "frames") == 4 and count(s, "stack_nodes") == 4  # ids reloaded, nothing duplicated
        assert count(s, "targets") == 1
        assert s.read_sync(stacks.profile, 0, 1000).total == 110
    finally:
        s.close()


def test_a_reused_pid_is_a_new_target(store):
    store.submit(stack_batch(100, pid=7, start=1.0))
    store.submit(stack_batch(101, pid=7, start=2.0))
    store.flush()
    assert store.read_sync(lambda c: c.execute("SELECT pid, start_time FROM targets ORDER BY 2").fetchall()) == [
        (7, 1.0), (7, 2.0)]
    only_new = stacks.ProfileFilter(pids=(7,))
    assert store.read_sync(stacks.profile, 100, 102, only_new).total == 20


def test_duckdb_threads_and_memory_limit_come_from_the_config(tmp_path):
    from infersight.daemon.config.load import Config, store_options, with_overrides
    cfg = with_overrides(Config(), **{"storage.duckdb_threads": 3, "storage.duckdb_memory_limit_mb": 96})
    store = Store.open(str(tmp_path / "lim.duckdb"), **store_options(cfg.storage))
    try:
        got = store.read_sync(lambda c: c.execute(
            "SELECT current_setting('threads'), current_setting('memory_limit')").fetchone())
        assert got == (3, "96.0 MiB")
    finally:
        store.close()
    ro = Store.open(str(tmp_path / "lim.duckdb"), read_only=True, threads=1, memory_limit_mb=40)
    try:
        assert ro.read_sync(lambda c: c.execute("SELECT current_setting('threads')").fetchone()) == (1,)
    finally:
        ro.close()
