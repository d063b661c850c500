"""Retention by age and by size, and rollups, on a real DuckDB file through the writer thread."""
from __future__ import annotations

import duckdb
import pytest

from infersight.storage import events as q_events
from infersight.storage import retention, stacks
from infersight.storage.model import GPU_SIGNALS, Batch, Event, Frame, GpuSample, HostSample, StackSample, Target
from infersight.storage.store import Store

T0 = 472_222 * 3600  # a whole hour (2023-11-14), so minute and hour bins start at T0
HOUR = 3600
FRAMES = (Frame("main", "/srv/app.py", 1), Frame("step", "/srv/engine.py", 2))


def policy(**kw) -> retention.RetentionPolicy:
    base = dict(retention_s=1e9, max_bytes=1e15, rollup_after_s=1e9, rollup_bucket_s=60)
    base.update(kw)
    return retention.RetentionPolicy(**base)


def batch_at(t: float, gpu_value: float = 50.0, stack_count: int = 3) -> Batch:
    b = Batch("test", t)
    b.targets.append(Target("testhost", 4242, 1.0, "python serve.py", role="engine"))
    b.host_samples.append(HostSample(t, 25.0, 4, 100, 1000, 1.0, 1.0, 1.0))
    b.gpu_samples.append(GpuSample(t, 0, {"sm_util": gpu_value, "clocks_event_reasons": 1 if t % 2 else 4}))
    b.stack_samples.append(StackSample(int(t), 4242, 1.0, 1, "MainThread", FRAMES, True, stack_count))
    return b


def rows(store: Store, table: str, where: str = "TRUE", params=()) -> int:
    return store.read_sync(lambda c: c.execute(f"SELECT count(*) FROM {table} WHERE {where}", list(params))
                           .fetchone()[0])


def fill(store: Store, times) -> None:
    for t in times:
        store.submit(batch_at(float(t)))
    store.flush()


def event(id_: str, start: float, end: float, open_: bool) -> Event:
    return Event(id=id_, kind="cpu_gpu_gap", start=start, end=end, host="testhost", gpu=0, open=open_)


def test_delete_by_age_removes_only_old_rows(store):
    old = [T0 + i for i in range(0, 600, 10)]            # 60 seconds-worth, an hour before "now"
    new = [T0 + 2 * HOUR + i for i in range(0, 300, 10)]
    fill(store, old + new)
    store.write_sync(q_events.upsert_events, [event("closed-old", T0, T0 + 5, False),
                                              event("open-old", T0, T0 + 5, True),
                                              event("closed-new", T0 + 2 * HOUR, T0 + 2 * HOUR + 5, False)])
    now = T0 + 2 * HOUR + 300
    report = store.write_sync(retention.run_maintenance, policy(retention_s=HOUR), now)
    cutoff = now - HOUR
    for table, col in (("host_samples", "t"), ("gpu_samples", "t"), ("stack_samples", "bucket")):
        assert rows(store, table, f"{col} < ?", [cutoff]) == 0, table
        assert rows(store, table) == len(new), table
    assert report["deleted_by_age"] == 3 * len(old) + 1  # three tables + the closed old event
    ids = {e["id"] for e in store.read_sync(q_events.events, 0, now + 10)}
    assert ids == {"open-old", "closed-new"}  # an ongoing finding is never aged out
    assert store.read_sync(stacks.profile, T0, now).total == 3 * len(new)


def test_rollup_keeps_totals_and_averages_gauges(store):
    times = [T0 + i for i in range(0, 180)]               # three whole minutes at 1 s
    for t in times:
        store.submit(batch_at(float(t), gpu_value=float(t - T0), stack_count=2))
    store.flush()
    before_total = store.read_sync(stacks.profile, T0, T0 + 180).total
    report = store.write_sync(retention.rollup, T0 + 120, 60)  # the first two minutes roll up
    assert report > 0
    assert store.read_sync(stacks.profile, T0, T0 + 180).total == before_total == 360
    gpu = store.read_sync(lambda c: c.execute(
        "SELECT t, sm_util, clocks_event_reasons FROM gpu_samples WHERE t < ? ORDER BY t", [T0 + 120]).fetchall())
    assert [(t, round(v, 3)) for t, v, _ in gpu] == [(T0, 29.5), (T0 + 60, 89.5)]  # mean of 0..59, 60..119
    assert {bits for _, _, bits in gpu} == {5}  # event reasons are OR-ed, not averaged
    assert rows(store, "gpu_samples", "t >= ?", [T0 + 120]) == 60  # the newest minute is untouched
    assert rows(store, "host_samples", "t < ?", [T0 + 120]) == 2
    # the watermark makes a second run a no-op for the same range
    assert store.write_sync(retention.rollup, T0 + 120, 60) == 0
    assert store.read_sync(stacks.profile, T0, T0 + 180).total == 360


def test_rollup_keeps_the_last_value_of_raw_engine_series(store):
    store.write_sync(lambda c: c.execute(
        "INSERT INTO raw_samples SELECT ? + i, s, (i * s)::DOUBLE FROM range(180) r(i), range(1, 3) q(s)", [T0]))
    store.write_sync(retention.rollup, T0 + 120, 60)
    got = store.read_sync(lambda c: c.execute(
        "SELECT t, series, value FROM raw_samples WHERE t < ? ORDER BY series, t", [T0 + 120]).fetchall())
    assert got == [(T0, 1, 59.0), (T0 + 60, 1, 119.0), (T0, 2, 118.0), (T0 + 60, 2, 238.0)]
    assert rows(store, "raw_samples", "t >= ?", [T0 + 120]) == 120   # the newest minute is untouched


def test_maintenance_rolls_up_then_ages_out(store):
    fill(store, [T0 + i for i in range(0, 240)])
    now = T0 + 240
    report = store.write_sync(retention.run_maintenance, policy(rollup_after_s=120, retention_s=200), now)
    assert report["rolled_up"] > 0
    assert rows(store, "gpu_samples", "t < ?", [now - 200]) == 0
    remaining = store.read_sync(lambda c: c.execute("SELECT min(t), max(t) FROM gpu_samples").fetchone())
    assert remaining == (T0 + 60, T0 + 239)


def _fill_bulk(con, hours: int, rows_per_hour: int) -> None:
    """Many GPU rows quickly (SQL on the writer's connection; the writer path is tested elsewhere)."""
    n = hours * rows_per_hour
    cols = ", ".join(GPU_SIGNALS)
    values = ", ".join("(random() * 100)::FLOAT" if s != "clocks_event_reasons" else "0" for s in GPU_SIGNALS)
    con.execute(f"""INSERT INTO gpu_samples (t, gpu, source, {cols})
                    SELECT {T0} + i * {HOUR / rows_per_hour}, (i % 8)::SMALLINT, 'nvml', {values}
                    FROM range({n}) r(i)""")
    con.execute("CHECKPOINT")


def test_size_bound_deletes_oldest_hours_first(store):
    store.write_sync(_fill_bulk, 10, 80_000)
    fill(store, [T0 + 10 * HOUR + i for i in range(5)])  # the newest data, in other tables too
    used = store.write_sync(retention.used_bytes)
    assert used > 0
    bound = used * 0.6
    report = store.write_sync(retention.run_maintenance, policy(max_bytes=bound), T0 + 10 * HOUR + 5)
    assert report["deleted_by_size"] > 0 and report["deleted_by_age"] == 0
    assert store.write_sync(lambda c: retention.used_bytes(c) * retention.live_fraction(c)) <= bound
    lo, hi, n = store.read_sync(lambda c: c.execute("SELECT min(t), max(t), count(*) FROM gpu_samples").fetchone())
    assert hi == T0 + 10 * HOUR + 4                          # the newest rows survive
    assert n > 0 and (lo - T0) % HOUR == 0 and lo > T0         # whole oldest hours went
    assert n == rows(store, "gpu_samples", "t >= ?", [lo])     # nothing older than the cut is left
    assert rows(store, "host_samples") == 5 and rows(store, "stack_samples") == 5


def test_size_bound_on_a_small_store_cuts_hours_not_everything(store):
    # 10 h of one GPU at 0.5 s fit one DuckDB row group: deletes free no block until the
    # whole group is gone, so a bound judged on used blocks alone would delete all 10 hours
    store.write_sync(_fill_bulk, 10, 7200)
    used = store.write_sync(retention.used_bytes)
    now = T0 + 10 * HOUR
    report = store.write_sync(retention.run_maintenance, policy(max_bytes=used * 0.8), now)
    lo, n = store.read_sync(lambda c: c.execute("SELECT min(t), count(*) FROM gpu_samples").fetchone())
    assert (lo, n) == (T0 + 2 * HOUR, 8 * 7200)  # the two oldest hours, no more
    assert report["deleted_by_size"] == 2 * 7200
    # the next run finds the deleted rows still counted as dead space and deletes nothing more
    again = store.write_sync(retention.run_maintenance, policy(max_bytes=used * 0.8), now + 60)
    assert again["deleted_by_size"] == 0


def test_size_bound_does_nothing_when_under(store):
    fill(store, [T0 + i for i in range(10)])
    report = store.write_sync(retention.run_maintenance, policy(max_bytes=1e12), T0 + 10)
    assert report == {"rolled_up": 0, "deleted_by_age": 0, "deleted_by_size": 0, "interned_forgotten": 0,
                      "dimension_rows_pruned": 0, "memory_retries": 0}
    assert rows(store, "gpu_samples") == 10


@pytest.mark.parametrize("bucket", [2, 60, 3600])
def test_rollup_bins_are_aligned(store, bucket):
    fill(store, [T0 + i for i in range(0, 2 * bucket, max(1, bucket // 30))])
    store.write_sync(retention.rollup, T0 + 2 * bucket, bucket)
    ts = store.read_sync(lambda c: [r[0] for r in c.execute("SELECT DISTINCT t FROM host_samples").fetchall()])
    assert sorted(ts) == [T0, T0 + bucket]


def test_a_step_out_of_buffer_pool_runs_again_with_more_and_the_pool_comes_back(store):
    seen = []

    def step(con, n):
        seen.append(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
        if len(seen) == 1:
            raise duckdb.OutOfMemoryException("failed to pin block")
        return n

    def run(con):
        con.execute("SET memory_limit = '32MiB'")
        retries = [0]
        out = retention._with_room(con, retries, step, con, 7)
        return out, retries[0], con.execute("SELECT current_setting('memory_limit')").fetchone()[0]

    assert store.write_sync(run) == (7, 1, "32.0 MiB")
    assert seen == ["32.0 MiB", "128.0 MiB"]


def test_a_step_failing_for_another_reason_is_not_retried(store):
    def step(con):
        raise duckdb.CatalogException("no such table")

    with pytest.raises(duckdb.CatalogException):
        store.write_sync(lambda con: retention._with_room(con, [0], step, con))


@pytest.mark.parametrize("text, expected", [("32.0 MiB", 32 << 20), ("1.5 GiB", 1.5 * (1 << 30)),
                                            ("134217728B", 134217728), ("0 bytes", 0), ("500 MB", 5e8)])
def test_duckdb_size_settings_are_read_as_bytes(text, expected):
    assert retention._bytes(text) == expected


def test_maintenance_reports_its_memory_retries(store):
    report = store.write_sync(retention.run_maintenance, policy(), T0)
    assert report["memory_retries"] == 0
