"""Classifier, runs, baselines and detectors on literal seconds and episodes (no recording involved)."""
from __future__ import annotations

import time

import pytest

from infersight.daemon.analysis.classify import ProcessSecond, Second, classify
from infersight.daemon.analysis.baselines import Baselines, is_mismatch
from infersight.daemon.analysis.engine_roof import mbu_features
from infersight.daemon.analysis.findings import saturation
from infersight.daemon.analysis.judge import judge
from infersight.daemon.analysis.observe import EpisodeSecond
from infersight.daemon.analysis.observe import ProcSecond as ProcSec
from infersight.daemon.analysis.observe import ThreadSecond as ThreadSec
from infersight.daemon.analysis.regression import RegressionDetector
from infersight.daemon.analysis.runs import RunTracker
from infersight.daemon.config.load import AnalysisConfig, Config
from infersight.storage import events as q_events
from infersight.storage.model import Batch, EngineSample, Frame, StackSample, Target, Window

CFG = AnalysisConfig()
RATE = 50.0


def sec(t=0, util=None, sm=None, tensor=None, dram=None, running=None, waiting=None, gen=None, procs=()):
    return Second(t=t, gpu=0, util_gpu=util, sm_util=sm, tensor_util=tensor, dram_bw_util=dram, running=running,
                  waiting=waiting, gen_tokens_s=gen, processes=list(procs))


def proc(cpu, active=50, wait=0, pid=1, role="engine"):
    return ProcessSecond(pid=pid, role=role, cpu_pct=cpu, active=active, gpu_wait=wait)


@pytest.mark.parametrize("second,expected", [
    # the DESIGN.md H100 table and README phase means
    (sec(util=100, sm=96.6, tensor=93.8, dram=25.8, running=1, gen=10, procs=[proc(100, wait=45)]), "compute_bound"),
    (sec(util=100, sm=99.5, tensor=0.0, dram=90.1, procs=[proc(100, wait=45)]), "memory_bound"),
    (sec(util=100, sm=82.5, tensor=2.4, dram=89.6, procs=[proc(100, wait=40)]), "memory_bound"),
    (sec(util=84, sm=74, tensor=6, dram=76, running=5, gen=3860, procs=[proc(99, wait=29, active=46)]),
     "memory_bound"),
    (sec(util=2, sm=1.8, tensor=1.7, dram=0.8, running=160, waiting=16, gen=120, procs=[proc(100)]), "host_bound"),
    (sec(util=47, sm=24, tensor=0.8, dram=26, running=6, gen=1445, procs=[proc(100)]), "launch_bound"),
    (sec(util=21, sm=17, tensor=5, dram=18, running=28, gen=3730, procs=[proc(100, wait=7, active=49)]),
     "host_bound"),
    (sec(util=7, sm=6, tensor=1, dram=6, running=22, gen=1000, procs=[proc(12, active=6, wait=3)]), "stall"),
    (sec(util=0, sm=0, tensor=0, dram=0, running=0, waiting=0, gen=0, procs=[proc(3, active=5)]), "idle"),
    # split layout: the busy process holds no GPU context; the engine's gauges read 0
    (sec(util=9, sm=7, tensor=4, dram=6, running=0, waiting=0, gen=2570,
         procs=[proc(100, pid=1, role="api_server"), proc(13, active=5, wait=2, pid=2, role="engine_core")]),
     "host_bound"),
])
def test_classify_measured_phases(second, expected):
    klass, features = classify(second, CFG, RATE)
    assert klass == expected, features


def test_waiting_on_the_gpu_is_not_starving_it():
    # 100% CPU, but 90% of it spinning in synchronize while the GPU is under-used: not host-bound
    s = sec(util=30, sm=30, tensor=1, dram=30, running=3, gen=100, procs=[proc(100, active=50, wait=45)])
    assert classify(s, CFG, RATE)[0] == "stall"


def test_nvml_only_says_so_and_never_guesses_compute_or_memory():
    busy = sec(util=100, running=5, gen=100, procs=[proc(99, wait=40)])
    klass, features = classify(busy, CFG, RATE)
    assert klass == "unknown" and features["mode"] == "nvml_only"
    starved = sec(util=3, running=10, procs=[proc(100)])
    assert classify(starved, CFG, RATE)[0] == "host_bound"
    assert classify(sec(util=0, running=0, waiting=0, gen=0), CFG, RATE)[0] == "idle"


def test_no_gpu_data_is_unknown():
    assert classify(sec(running=3), CFG, RATE)[0] == "unknown"


def test_stack_samples_stand_in_for_missing_cpu_numbers():
    s = sec(util=2, sm=1, running=10, procs=[ProcessSecond(pid=1, role="engine", cpu_pct=None, active=48)])
    assert classify(s, CFG, RATE)[0] == "host_bound"


def test_runs_merge_short_holes_and_ignore_one_noisy_second():
    tr = RunTracker(("host_bound", "stall"), merge_s=2, min_s=3)
    done = []
    for t, k in enumerate(["host_bound"] * 5 + ["stall"] + ["host_bound"] * 4 + ["idle"] * 2 + ["host_bound"] * 3):
        done += tr.feed(t, k)
    done += tr.flush_until(100)
    assert [(s.klass, s.start, s.end) for s in done] == [("host_bound", 0, 15)]


def test_runs_split_on_a_lasting_class_or_culprit_change():
    tr = RunTracker(("host_bound", "launch_bound"), merge_s=2, min_s=3)
    seq = [("host_bound", "a")] * 5 + [("host_bound", "b")] * 5 + [("launch_bound", "b")] * 4
    for t, (k, c) in enumerate(seq):
        tr.feed(t, k, c)
    segs = tr.open_segments()
    assert [(s.klass, s.start, s.end) for s in segs] == [("host_bound", 0, 5), ("host_bound", 5, 10),
                                                         ("launch_bound", 10, 14)]
    assert tr.flush_until(14) == [] and len(tr.flush_until(20)) == 3


def _episode(t0, n, **fields) -> list:
    core = fields.pop("core_cpu", 99.0)
    procs = (ProcSec(2, "engine_core", core, own=30, gpu_wait=20, threads=(ThreadSec(2, "MainThread", 30, 20),)),)
    return [EpisodeSecond(t=t, lifecycle=None, procs=procs, **fields) for t in range(t0, t0 + n)]


def test_mismatch_against_the_same_offered_load_not_the_same_throughput():
    """A neighbour's GEMMs at the same 5 requests in flight: tensor up, each request slower
    (the H100 scenario: 1.4 -> 3.4 ms per token). The baseline is found by load although
    the token flow fell by half; a load that brings more tokens is no mismatch."""
    base = judge(_episode(0, 20, util=84, sm=74, tensor=6, dram=76, running=5, waiting=0, gen_tps=3860),
                 CFG, RATE)
    slow = judge(_episode(20, 10, util=100, sm=83, tensor=57, dram=44, running=5, waiting=0, gen_tps=1900),
                 CFG, RATE)
    more = judge(_episode(40, 10, util=71, sm=62, tensor=9, dram=64, running=46, waiting=0, gen_tps=20000),
                 CFG, RATE)
    history = Baselines(900)
    assert history.compare(slow) is None                      # no baseline: nothing to say
    history.add(base)
    c = history.compare(slow)
    assert c is not None and c.base_span == (0, 20)
    assert c.per_request_ratio == pytest.approx(1900 / 3860, rel=1e-3)
    assert is_mismatch(c, CFG)
    assert history.compare(more) is None                      # 46 requests: another load
    same_load_faster = judge(_episode(60, 10, util=84, sm=75, tensor=6, dram=76, running=5, waiting=0,
                                      gen_tps=3900), CFG, RATE)
    assert not is_mismatch(history.compare(same_load_faster), CFG)


def test_saturation_when_busy_and_the_queue_grows():
    cfg = AnalysisConfig(saturation_min_s=5)
    growing = saturation([(t, t * 2.0) for t in range(30)], cfg)
    assert growing is not None and growing[0] == pytest.approx(2.0) and growing[1] == 58.0
    assert saturation([(t, 60 - t * 2.0) for t in range(30)], cfg) is None    # draining a backlog
    assert saturation([(t, 0.0) for t in range(30)], cfg) is None


def test_mbu_from_weights_tokens_and_peak():
    s = sec(dram=50.0, running=8, gen=800.0)
    f = mbu_features(s, peak_bw_bytes_s=3.35e12, weight_bytes=16e9)
    assert f["dram_bw_bytes_s"] == pytest.approx(1.675e12)
    assert f["mbu"] == pytest.approx(16e9 * 100 / 3.35e12, rel=1e-3)
    assert "mbu" not in mbu_features(s, 3.35e12, 0)


def test_regression_compares_two_periods_and_names_the_code_that_grew(store):
    w = 900
    base, cur = (0.0, float(w)), (float(w), float(2 * w))
    target = Target("h", 1, 1.0, "python engine.py", "engine")
    batch = Batch("t", time.time(), targets=[target])
    for t in range(0, 2 * w, 10):
        slow = t >= w
        batch.engine_samples += [
            EngineSample(t, "e", "vllm", "m", "ttft_seconds_p95", 0.9 if slow else 0.2),
            EngineSample(t, "e", "vllm", "m", "generation_tokens_per_s", 3000.0),
            EngineSample(t, "e", "vllm", "m", "requests_running", 8.0)]
        leaf = Frame("tokenize_slow" if slow else "decode_step", "engine.py", 10)
        batch.stack_samples.append(StackSample(t, 1, 1.0, 1, "Main", (Frame("main", "engine.py", 1), leaf), True, 50))
        batch.windows.append(Window(float(t), float(t + 1), 0, "host_bound" if slow else "memory_bound"))
    store.submit(batch)
    store.flush()
    events = RegressionDetector(AnalysisConfig(regression_window_s=w)).compare(store, "h", base, cur)
    assert len(events) == 1
    e = events[0]
    assert e.evidence["changes"]["ttft_seconds_p95"]["ratio"] == pytest.approx(4.5)
    assert "generation_tokens_per_s" not in e.evidence["changes"]
    assert e.evidence["changes"]["starved_share"]["after"] == 1.0
    assert e.top_frames[0]["frame"] in ("tokenize_slow", "decode_step")
    assert {c["name"] for c in e.evidence["profile_changes"][:2]} == {"tokenize_slow", "decode_step"}
    store.write_sync(q_events.upsert_events, events)
    assert store.read_sync(q_events.events, 0, 3 * w)[0]["kind"] == "regression"


def test_analysis_thresholds_are_documented_with_their_measurements():
    import dataclasses

    for f in dataclasses.fields(Config().analysis):
        doc = f.metadata["doc"]
        assert doc, f.name
        if f.name.endswith(("_pct", "_ratio", "_rise")):
            assert any(ch.isdigit() for ch in doc), f"{f.name}: doc should quote the measurement"
