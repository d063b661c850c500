"""The analysis on real vLLM 0.24 recordings (tests/fixtures/vllm-*: recorded on an H200 with
bench/real_engine/record.py; each folder's README gives the workload and ground truth).

What is checked comes from the recordings' labels and, for the culprit code, from the raw
py-spy windows through bench/real_engine/summarize.py: ground truth computed without the
analysis. Per recording: no finding during start-up or shutdown, those seconds classed
``starting``; each phase's main class; one CPU-GPU gap finding per starved phase with its
boundaries within one analysis second plus one of the phase's; the culprit process role and
thread; the culprit code among the finding's first three frames; the neighbour named.
"""
from __future__ import annotations

import collections
import importlib.util
import json
from pathlib import Path

import pytest
from analysis_helpers import labels as read_labels
from analysis_helpers import replay_shared

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
_spec = importlib.util.spec_from_file_location("summarize", ROOT / "bench" / "real_engine" / "summarize.py")
summarize = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summarize)

GAP = ("host_bound", "launch_bound")
BOUNDARY_S = 2.2        # one-second windows against fractional phase edges
# phase -> (classes its seconds mostly get, culprit role of its finding or None for no finding)
EXPECTED = {
    "vllm-small": {
        "idle": (("idle",), None), "prefill": (("compute_bound",), None),
        "heavy_decode": (GAP, "engine_core"), "single_stream": (GAP, "engine_core"),
        "logprobs": (GAP, "api_server"), "structured": (GAP, "engine_core"),
        "neighbor": (("compute_bound", "latency_bound"), None),
    },
    "vllm-large": {
        "idle": (("idle",), None), "single_stream": (("memory_bound",), None),
        "neighbor": (("compute_bound", "latency_bound"), None),
        # 128 streams of a 7 B model: SM 80, tensor 32, DRAM 50 -- neither roof near
        "heavy_decode": (("latency_bound", "memory_bound"), None), "prefill": (("compute_bound",), None),
        "logprobs": (GAP, "api_server"), "structured": (("memory_bound", "latency_bound"), None),
    },
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def replayed(request):
    root = FIXTURES / request.param
    windows, events, _ = replay_shared(root)
    return request.param, root, windows, events, read_labels(root)


def _classes(windows, t0, t1):
    c = collections.Counter()
    for w in windows:
        if t0 + 1 <= w["start"] < t1 - 1:
            c[w["class"]] += 1
    return c


def _overlap(e, t0, t1):
    return min(e["end"], t1) - max(e["start"], t0)


def test_start_up_and_shutdown_raise_no_finding(replayed):
    _, _, windows, events, labels = replayed
    for phase in labels:
        if phase["phase"] not in ("starting", "shutdown"):
            continue
        # one-second windows: a finding may start in the second the phase ends
        hits = [e for e in events if e["kind"] == "cpu_gpu_gap" and _overlap(e, phase["t0"], phase["t1"]) >= 1.0]
        assert not hits, f"{phase['phase']} at {phase['t0']:.0f}: {[e['summary'] for e in hits]}"
        if phase["phase"] == "starting":
            counts = _classes(windows, phase["t0"], phase["t1"])
            assert counts.most_common(1)[0][0] == "starting", counts


def test_each_phase_gets_its_class(replayed):
    name, _, windows, _, labels = replayed
    for phase in labels:
        want = EXPECTED[name].get(phase["phase"])
        if want is None:
            continue
        counts = _classes(windows, phase["t0"], phase["t1"])
        inside = sum(counts[k] for k in want[0])
        assert inside >= 0.6 * sum(counts.values()), f"{phase['phase']}: {counts} (want {want[0]})"


def test_no_compute_bound_far_from_the_tensor_roof(replayed):
    _, _, windows, _, _ = replayed
    for w in windows:
        if w["class"] == "compute_bound" and w.get("sm_util"):
            assert w["tensor_util"] / w["sm_util"] >= 0.5, w


def test_one_finding_per_starved_phase_with_culprit_process_thread_and_code(replayed):
    name, root, _, events, labels = replayed
    truth = summarize.load(root)
    gaps = [e for e in events if e["kind"] == "cpu_gpu_gap"]
    starved = 0
    for phase in labels:
        want = EXPECTED[name].get(phase["phase"])
        if want is None or want[1] is None:
            continue
        starved += 1
        t0, t1 = phase["t0"], phase["t1"]
        mine = [e for e in gaps if _overlap(e, t0, t1) > 0.5 * (e["end"] - e["start"])]
        assert len(mine) == 1, f"{phase['phase']} at {t0:.0f}: {[(e['start'] - t0, e['end'] - t0) for e in mine]}"
        e = mine[0]
        assert abs(e["start"] - t0) <= BOUNDARY_S and abs(e["end"] - t1) <= BOUNDARY_S, (phase["phase"], e["start"] - t0,
                                                                                        e["end"] - t1)
        who = e["evidence"]["culprit"]
        assert who["role"] == want[1], (phase["phase"], who)
        assert who["thread"] == "MainThread", (phase["phase"], who)
        # the culprit process's own top self frames in the phase, from the raw py-spy windows
        gt = summarize.phase_summary(truth, t0, t1)["processes"]
        procs = [v for k, v in gt.items() if k.startswith(f"{want[1]} ")]
        assert procs, gt.keys()
        expected = {f.split(" (")[0] for f, _ in procs[0]["self"][:5]}
        named = [f["frame"] for f in e["top_frames"][:3]]
        assert expected & set(named), (phase["phase"], named, expected)
        assert not {"Runner.run", "Condition.wait", "select"} & set(named), named
    assert starved


def test_the_neighbour_is_named(replayed):
    """A noisy_neighbor finding names the other GPU process in its neighbour phase, also where
    no earlier phase ran at the same load (vllm-large: the neighbour comes second)."""
    name, root, _, events, labels = replayed
    neighbour = [p for p in json.loads((root / "processes.json").read_text())["processes"]
                 if p["role"] == "other_gpu_process"]
    assert neighbour
    phase = next(p for p in labels if p["phase"] == "neighbor")
    found = [e for e in events if e["kind"] == "noisy_neighbor" and _overlap(e, phase["t0"], phase["t1"]) > 0]
    assert found, [(e["kind"], e["summary"]) for e in events]
    assert any(f"pid {neighbour[0]['pid']}" in e["summary"] for e in found), [e["summary"] for e in found]
    assert abs(found[0]["start"] - phase["t0"]) <= BOUNDARY_S
    if name == "vllm-large":
        assert found[0]["evidence"]["comparison"] is None
