"""Analysis windows as typed columns: the features dict comes back exactly as it went in
(through both write paths, a migrated old file and the Parquet export's JSON), and windows and
histogram deltas roll up past ``rollup_after`` keeping class seconds and bucket counts."""
from __future__ import annotations

import math

import duckdb
import orjson
import pytest

from infersight.storage import events as q_events
from infersight.storage import export, retention, schema, ui_queries
from infersight.storage import window_features as wf
from infersight.storage.model import Batch, HistogramDelta, Window
from infersight.storage.store import Store

T0 = 472_222 * 3600

# what the analysis writes (classify + mbu_features, in their order), and the odd cases
CLASSIFIED = {"util_gpu": 83.11111111111111, "sm_util": 68.52500025431316, "tensor_util": 4.525555531183879,
              "dram_bw_util": 0.0010000000474974513, "running": 3.0, "waiting": 0.0, "gen_tokens_s": 2672.510648684933,
              "busiest_pid": 644, "busiest_role": "engine", "busiest_own_cpu_pct": 34.8, "mode": "gpm",
              "dram_bw_bytes_s": 2361322071826.2, "dram_bw_of_peak": 0.7044, "mbu": 0.4123}
ODD = [
    {},
    {"util_gpu": None, "sm_util": None, "busiest_pid": None, "mode": "nvml_only"},    # None is not absent
    {"running": 3, "busiest_pid": 12.0, "mode": 1},          # the wrong type for the column: kept as is
    {"mfu": 0.31, "new_feature": [1, 2], "note": None},      # unknown keys, a null among them
    {"busiest_pid": 2**40, "sm_util": True},                 # out of INTEGER range; a bool is not a float
    {"zz": 1, "util_gpu": 5.5},                              # extras before known keys
]


@pytest.mark.parametrize("features", [CLASSIFIED] + ODD)
def test_encode_decode_round_trip(features):
    row = wf.encode(features)
    got = wf.Decoder()(row[0], row[1:-1], row[-1])
    assert got == features
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in features.items()}


def test_known_features_use_their_columns_and_no_json():
    row = wf.encode(CLASSIFIED)
    assert row[-1] is None                                 # nothing left for the JSON column
    assert row[0] == (1 << 14) - 1                         # the first 14 known keys present, mfu not
    assert wf.encode({"mfu": 0.5, "mbu": None})[0] == (1 << 14) | (1 << 13)


def test_non_finite_floats_read_back_as_null_like_the_json_text_did():
    row = wf.encode({"sm_util": math.nan, "util_gpu": math.inf})
    assert wf.Decoder()(row[0], row[1:-1], row[-1]) == {"sm_util": None, "util_gpu": None}


def _windows(features_list, gpu=0, start=T0):
    return [Window(float(start + i), float(start + i + 1), gpu, "compute_bound", f) for i, f in enumerate(features_list)]


def test_both_write_paths_and_the_export_give_the_features_back(store):
    cases = [CLASSIFIED] + ODD
    store.write_sync(q_events.replace_windows, 0, float(T0), float(T0 + len(cases)), _windows(cases))
    b = Batch("analysis", float(T0))
    b.windows = _windows(cases, gpu=1)
    store.submit(b)
    store.flush()
    for gpu in (0, 1):
        got = store.read_sync(q_events.windows, T0, T0 + 100, gpu)
        assert [w["features"] for w in got] == cases
        assert [(w["start"], w["end"], w["class"]) for w in got] == [
            (float(T0 + i), float(T0 + i + 1), "compute_bound") for i in range(len(cases))]
    exported = store.read_sync(lambda c: c.execute(
        f"SELECT features FROM ({export.select_hour('windows')[0]}) WHERE gpu = 0 ORDER BY start",
        [T0 - T0 % 3600, T0 - T0 % 3600 + 3600]).fetchall())
    assert [orjson.loads(r[0]) for r in exported] == cases


def test_a_version_3_file_is_converted_with_every_feature_kept(tmp_path):
    path = str(tmp_path / "v3.duckdb")
    con = duckdb.connect(path)
    assert schema.migrate(con, upto=3) == [1, 2, 3]
    cases = [CLASSIFIED] + ODD
    for i, f in enumerate(cases):
        con.execute("INSERT INTO windows VALUES (?, ?, 0, 'idle', ?)", [T0 + i, T0 + i + 1, orjson.dumps(f).decode()])
    con.execute("INSERT INTO windows VALUES (?, ?, 0, 'idle', NULL)", [T0 + 50, T0 + 51])
    con.close()
    store = Store.open(path)
    try:
        assert store.read_sync(schema.applied_version) == schema.CURRENT_VERSION >= 4
        got = store.read_sync(q_events.windows, T0, T0 + 100)
        assert [w["features"] for w in got] == cases + [{}]
        columns = store.read_sync(lambda c: [r[0] for r in c.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'windows' "
            "ORDER BY ordinal_position").fetchall()])
        assert tuple(columns) == wf.COLUMNS   # the codec and the migrated table agree
    finally:
        store.close()


def test_windows_roll_up_to_the_seconds_of_each_class_per_bin(store):
    # minute 1: 20 s compute, 25 s idle, 15 s compute; minute 2: 60 s memory-bound but for a
    # missing second; minute 3 stays at 1 s
    classes = ["compute_bound"] * 20 + ["idle"] * 25 + ["compute_bound"] * 15 + ["memory_bound"] * 60
    ws = [Window(float(T0 + i), float(T0 + i + 1), 0, k,
                 {"sm_util": float(i), "busiest_pid": 7 if i % 3 else 8, "mode": "gpm", "running": 1.0})
          for i, k in enumerate(classes + ["idle"] * 60) if i != 90]
    ws.append(Window(float(T0 + 30), float(T0 + 31), 1, "idle", {"util_gpu": 0.0}))   # another GPU, one second
    store.write_sync(q_events.replace_windows, 0, float(T0), float(T0 + 180), [w for w in ws if w.gpu == 0])
    store.write_sync(q_events.replace_windows, 1, float(T0), float(T0 + 180), [w for w in ws if w.gpu == 1])
    seconds_before = store.read_sync(q_events.class_seconds, T0, T0 + 180)
    removed = store.write_sync(retention.rollup, T0 + 120, 60)
    assert removed == (120 - 1 + 1) - 4
    got = store.read_sync(q_events.windows, T0, T0 + 120)
    # each class's seconds laid end to end from the bin's first window, in order of appearance
    assert [(w["gpu"], w["start"] - T0, w["end"] - T0, w["class"]) for w in got] == [
        (0, 0, 35, "compute_bound"), (0, 35, 60, "idle"), (0, 60, 119, "memory_bound"), (1, 30, 31, "idle")]
    # the mean of each float over the class's seconds (to 3 decimals), the most common pid (7: two
    # seconds in three)
    assert got[0]["features"] == {"sm_util": round((sum(range(20)) + sum(range(45, 60))) / 35, 3), "running": 1.0,
                                  "busiest_pid": 7, "mode": "gpm"}
    assert got[3]["features"] == {"util_gpu": 0.0}
    assert store.read_sync(q_events.class_seconds, T0, T0 + 180) == seconds_before
    runs = store.read_sync(ui_queries.class_runs, T0, T0 + 180)
    assert [(s - T0, e - T0, k) for s, e, k in runs[0]] == [
        (0, 35, "compute_bound"), (35, 60, "idle"), (60, 119, "memory_bound"), (120, 180, "idle")]
    assert len(store.read_sync(q_events.windows, T0 + 120, T0 + 180)) == 60   # the newest minute stays at 1 s


def test_histogram_deltas_roll_up_to_bucket_sums_per_bin(store):
    bounds = (0.1, 1.0, math.inf)
    b = Batch("engines", float(T0))
    for i in range(120):
        for model, scale in (("a", 1.0), ("b", 10.0)):
            b.histogram_deltas.append(HistogramDelta(float(T0 + i), "http://e/metrics", "vllm", model, "ttft_seconds",
                                                     bounds, (scale * i, scale * i * 2, scale * i * 3), 1.0))
    store.submit(b)
    store.flush()
    store.write_sync(retention.rollup, T0 + 60, 60)
    got = store.read_sync(lambda c: c.execute(
        "SELECT t, model, bounds, counts, interval_s FROM histogram_deltas WHERE t < ? ORDER BY model",
        [T0 + 60]).fetchall())
    s = sum(range(60))
    assert got == [(float(T0), "a", list(bounds), [s, 2.0 * s, 3.0 * s], 60.0),
                   (float(T0), "b", list(bounds), [10.0 * s, 20.0 * s, 30.0 * s], 60.0)]
    assert store.read_sync(lambda c: c.execute(
        "SELECT count(*) FROM histogram_deltas WHERE t >= ?", [T0 + 60]).fetchone()[0]) == 120
