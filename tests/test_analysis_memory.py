"""What the analysis keeps between ticks stays small while an episode stays open.

A host-bound run of 40 threads once held every thread's stacks of every second in memory
(the accelerated soak grew 0.4 MB/s per GPU): an open episode keeps one small record per
second (counts, no stacks) and reads its culprit thread's stacks back from the database, a
tick's new seconds at a time. These tests pin both halves: the memory kept, and that the code named from the
database read in pieces equals the code of the whole run read at once.
"""
from __future__ import annotations

from collections import Counter

from infersight.daemon.analysis.analyzer import Analyzer
from infersight.daemon.analysis.observe import EpisodeSecond
from infersight.daemon.config.load import Config, with_overrides
from infersight.storage import events as q_events
from infersight.storage.model import Batch, EngineSample, Frame, GpuSample, ProcessSample, StackSample, Target

PID, START, T0 = 4242, 1.0, 1_700_000_000
THREADS = 40
LEAVES = ["encode_batch"] * 18 + ["pad_batch"] * 9 + ["detokenize"] * 3   # 30 stacks, 60/30/10 %


def _stack(i: int) -> tuple[Frame, ...]:
    return (Frame("serve", "engine.py", 1), Frame("tokenize", "engine.py", 20 + i % 5),
            Frame(LEAVES[i], "tok.py", 100 + i))


def _record(store, seconds: int) -> Counter:
    """A busy tokenizer thread (tid 1) on a starved GPU, 39 threads idle; returns the
    leaf functions' samples written, by function."""
    written: Counter = Counter()
    for k in range(seconds):
        t = T0 + k
        batch = Batch("t", float(t), targets=[Target("testhost", PID, START, "python -m engine", "engine", (0,))])
        batch.gpu_samples.append(GpuSample(t + 0.5, 0, {"util_gpu": 10.0, "sm_util": 9.0, "sm_occupancy": 5.0,
                                                         "tensor_util": 1.0, "dram_bw_util": 2.0}, "gpm"))
        batch.process_samples.append(ProcessSample(t + 0.5, PID, START, 100.0, 1 << 30, THREADS, 0, 0))
        batch.engine_samples += [EngineSample(t + 0.5, "e", "vllm", "m", "requests_running", 8.0),
                                 EngineSample(t + 0.5, "e", "vllm", "m", "generation_tokens_per_s", 50.0)]
        for i in range(len(LEAVES)):             # the same mix every second: one behaviour
            batch.stack_samples.append(StackSample(t, PID, START, 1, "Main", _stack(i), True, 1 + k % 2))
            written[(t, LEAVES[i])] += 1 + k % 2
        for tid in range(2, THREADS + 1):
            batch.stack_samples.append(StackSample(t, PID, START, tid, f"worker-{tid}",
                                                   (Frame("run", "pool.py", 1), Frame(f"wait_{tid}", "pool.py", tid)),
                                                   False, 50))
        while not store.submit(batch):
            store.flush()
    store.flush()
    return written


def _analyser(store, now: list[float]) -> Analyzer:
    config = with_overrides(Config(), **{"agent.host": "testhost", "collectors.stacks.rate_hz": 50})
    return Analyzer(config, store, clock=lambda: now[0])


def _gap(store) -> dict:
    gaps = [e for e in store.read_sync(q_events.events, T0 - 10, T0 + 10_000) if e["kind"] == "cpu_gpu_gap"]
    assert len(gaps) == 1, gaps
    return gaps[0]


def test_an_open_run_keeps_a_small_record_per_second_and_its_culprits_stacks_once(store):
    written = _record(store, 300)
    now = [float(T0)]
    analyzer = _analyser(store, now)
    for k in range(10, 300, 10):             # ticks of 10 s while the run stays open
        now[0] = T0 + k + analyzer.cfg.lag_s
        analyzer.step(now[0])
    assert analyzer.last_error is None
    st = analyzer.gpus[0]
    assert st.open and all(type(v) is EpisodeSecond for v in st.open)
    # per process and second: sample counts and module counts, never a stack
    assert all(isinstance(p.modules, tuple) and not hasattr(p, "work") for v in st.open for p in v.procs)
    assert len(st.second_class) <= len(st.open) + analyzer.cfg.episode_min_s
    # one thread's stacks, each once, however many seconds and threads the run has
    assert len(st.code.entries) == 1
    (pid, tid, _), (_, acc) = next(iter(st.code.entries.items()))
    assert (pid, tid) == (PID, 1) and len(acc) == len(LEAVES)

    gap = _gap(store)
    assert gap["open"] and gap["class"] == "host_bound"
    assert gap["evidence"]["culprit"]["thread"] == "Main"
    expected = Counter()
    for (t, fn), n in written.items():
        if gap["start"] <= t < gap["end"]:
            expected[fn] += n
    total = sum(expected.values())
    shares = {f["frame"]: f["share"] for f in gap["top_frames"]}
    assert shares == {fn: round(n / total, 4) for fn, n in expected.items()}
    assert gap["top_frames"][0]["frame"] == "encode_batch"


def test_the_code_read_a_tick_at_a_time_equals_the_code_read_at_once(tmp_path):
    from infersight.storage.store import Store

    def run(name: str, ticks: list[int]) -> dict:
        store = Store.open(str(tmp_path / f"{name}.duckdb"), host="testhost", flush_interval_s=0.05)
        try:
            _record(store, 240)
            now = [float(T0)]
            analyzer = _analyser(store, now)
            for k in ticks:
                now[0] = T0 + k + analyzer.cfg.lag_s
                analyzer.step(now[0])
            return _gap(store)
        finally:
            store.close()

    pieces = run("pieces", [*range(7, 240, 7), 240])
    whole = run("whole", [240])
    assert (pieces["start"], pieces["end"]) == (whole["start"], whole["end"])
    assert pieces["top_frames"] == whole["top_frames"]
    assert pieces["evidence"]["hot_paths"] == whole["evidence"]["hot_paths"]
    assert pieces["evidence"]["culprit"] == whole["evidence"]["culprit"]


def test_a_step_whose_writes_failed_takes_no_second_in_twice(store, monkeypatch):
    """A full disk fails the step's writes: the next step runs over the same range again, and
    neither the open episode's seconds nor the findings are doubled or lost."""
    _record(store, 60)
    now = [float(T0)]
    analyzer = _analyser(store, now)
    real_write = store.write_sync
    failing = [True]

    def write(fn, *args, **kwargs):
        if failing[0] and fn is q_events.upsert_events:
            raise OSError(28, "No space left on device")
        return real_write(fn, *args, **kwargs)

    monkeypatch.setattr(store, "write_sync", write)
    now[0] = T0 + 40 + analyzer.cfg.lag_s
    try:
        analyzer.step(now[0])
    except OSError:
        pass
    failing[0] = False
    analyzer.step(now[0])
    now[0] = T0 + 60 + analyzer.cfg.lag_s
    analyzer.step(now[0])
    ts = [s.t for s in analyzer.gpus[0].open]
    assert len(ts) == len(set(ts)) and ts == sorted(ts)
    assert _gap(store)["start"] <= T0 + 2
