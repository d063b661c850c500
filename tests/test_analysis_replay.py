"""The analysis on the real H100 recordings, through `infersight replay` (same code as live).

Ground truth is the recordings' README; detectors must work from behaviour, so one test
replays the real phases in another order with the culprit functions renamed.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from analysis_helpers import (
    BUSY,
    EXPECTED_CLASS,
    FIXTURES,
    class_counts,
    labels,
    overlapping,
    reorder_recording,
    replay,
    replay_shared,
)
from infersight.daemon.config.load import Config
from infersight.daemon.replay.command import main as replay_main

CULPRITS = {"host_bound": "tokenize_slow_python", "core_bound": "schedule_slow_python",
            "launch_bound": "sample_unfused"}


# recordings with their culprit names and layout; h100-rec* were recorded for these tests with
# other phase orders and names than the two the analysis was developed on
RECORDINGS = {
    "h100-scenario": (CULPRITS, False),
    "h100-scenario-split": (CULPRITS, True),
    "h100-recA": ({"host_bound": "apply_chat_template_py", "core_bound": "build_batch_metadata",
                   "launch_bound": "sample_unfused"}, False),
    "h100-recB": ({"host_bound": "detok_stream_slow", "core_bound": "kv_block_bookkeeping",
                   "launch_bound": "sample_unfused"}, True),
}


@pytest.fixture(scope="module", params=sorted(RECORDINGS))
def replayed(request):
    root = FIXTURES / request.param
    windows, events, errors = replay_shared(root)
    return root, windows, events, errors


def check_recording(root: Path, windows: list[dict], events: list[dict], culprits: dict[str, str],
                    split: bool) -> None:
    """Every README claim the issue lists, for one recording (original or reordered)."""
    for phase in labels(root):
        counts = class_counts(windows, phase["t0"], phase["t1"])
        assert counts, f"{phase['phase']}: no windows"
        top = counts.most_common(1)[0][0]
        expected = EXPECTED_CLASS[phase["phase"]]
        if expected is None:
            assert top in BUSY, (phase["phase"], counts)
            assert overlapping(events, "util_throughput_mismatch", phase["t0"], phase["t1"]), phase
        else:
            assert top == expected, (phase["phase"], counts)
        if phase["phase"] in culprits:
            klass = "launch_bound" if phase["phase"] == "launch_bound" else "host_bound"
            gaps = overlapping(events, "cpu_gpu_gap", phase["t0"], phase["t1"], klass)
            assert gaps, f"{phase['phase']}: no {klass} gap event"
            top_frame = gaps[0]["top_frames"][0]
            assert top_frame["frame"].split(".")[-1] == culprits[phase["phase"]], (phase["phase"], gaps[0])
            assert top_frame["share"] >= 0.5
            if split and phase["phase"] == "host_bound":
                assert top_frame["role"] == "api_server"
            if split and phase["phase"] == "core_bound":
                assert top_frame["role"] == "engine_core"
        if phase["phase"] == "idle":
            assert not overlapping(events, "cpu_gpu_gap", phase["t0"] + 1, phase["t1"] - 1)
        if phase["phase"] == "stall":
            assert overlapping(events, "cpu_gpu_gap", phase["t0"], phase["t1"], "stall")


def test_each_phase_gets_its_class_and_each_gap_names_its_code(replayed):
    root, windows, events, errors = replayed
    # the recorder's own scrape failures (a reset connection) are reported, never fatal
    assert all("replay:" in e for e in errors), errors
    culprits, split = RECORDINGS[root.name]
    check_recording(root, windows, events, culprits, split=split)


def test_gap_events_carry_duration_lost_time_and_processes(replayed):
    _, _, events, _ = replayed
    gaps = [e for e in events if e["kind"] == "cpu_gpu_gap"]
    assert gaps
    for e in gaps:
        ev = e["evidence"]
        assert ev["duration_s"] == pytest.approx(e["end"] - e["start"])
        assert 0 < ev["lost_gpu_s"] <= ev["duration_s"]
        for f in e["top_frames"]:
            assert {"frame", "share", "pid", "role", "file", "line"} <= set(f)
        assert abs(sum(f["share"] for f in e["top_frames"])) <= 1.0001


def test_noisy_neighbour_names_the_other_gpu_process():
    root = FIXTURES / "h100-scenario"
    _, events, _ = replay_shared(root)
    mismatches = [e for e in events if e["kind"] == "util_throughput_mismatch"]
    assert mismatches
    foreign = mismatches[0]["evidence"]["foreign_processes"]
    assert [f["role"] for f in foreign] == ["other_gpu_process"]


@pytest.mark.parametrize("source,order,renames", [
    ("h100-scenario",
     ["idle", "healthy", "launch_bound", "memory_bound", "core_bound", "stall", "host_bound", "compute_bound",
      "noisy_neighbor"],
     {"tokenize_slow_python": "render_chat_template", "schedule_slow_python": "plan_batch_in_python",
      "sample_unfused": "apply_penalties_loop"}),
    ("h100-scenario-split",
     ["stall", "healthy", "core_bound", "idle", "launch_bound", "host_bound"],
     {"tokenize_slow_python": "detokenize_incrementally", "schedule_slow_python": "update_block_tables",
      "sample_unfused": "logits_processor_chain"}),
])
def test_other_order_and_names_same_answers(tmp_path, source, order, renames):
    dst = tmp_path / "reordered"
    reorder_recording(FIXTURES / source, dst, order, renames)
    windows, events, errors = replay(dst)
    culprits = {phase: renames[name] for phase, name in CULPRITS.items()}
    check_recording(dst, windows, events, culprits, split=source.endswith("split"))


def test_replay_json_lines_follow_the_contract():
    out = io.StringIO()
    rc = replay_main(str(FIXTURES / "h100-scenario"), db=":memory:", as_json=True, config=Config(), out=out)
    assert rc == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    windows = [x for x in lines if x["type"] == "window"]
    events = [x for x in lines if x["type"] == "event"]
    assert len(windows) > 60 and events
    classes = {"idle", "compute_bound", "memory_bound", "host_bound", "launch_bound", "stall", "unknown"}
    for w in windows:
        assert w["class"] in classes and w["end"] - w["start"] == 1 and w["gpu"] == 0
        assert w["start"] > 1.7e9  # the recording's own clock, Unix seconds
    for e in events:
        assert {"kind", "start", "end", "gpu", "top_frames"} <= set(e)
        for f in e["top_frames"]:
            assert isinstance(f["frame"], str) and 0 <= f["share"] <= 1


def test_replay_cli_rejects_a_directory_that_is_not_a_recording(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "replay", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "processes.json" in proc.stderr


def test_replay_json_into_a_closed_pipe_exits_quietly():
    proc = subprocess.run(f"{sys.executable} -m infersight.daemon.cli replay {FIXTURES / 'h100-scenario'} --json | head -n 1",
                          shell=True, capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout)["type"] == "window"
    assert "Traceback" not in proc.stderr
