"""The analysis on a real HuggingFace transformers recording (tests/fixtures/hf-transformers:
transformers and PyTorch code on an H200, recorded with bench/real_engine/record.py
--workload; its README gives the phases and the ground truth).

No engine metrics here: a finding can only be split from the next by the culprit's stack
profile. What is checked comes from the labels and, for the code, from the raw py-spy
windows through bench/real_engine/summarize.py: no finding during start-up, idle or prefill;
each phase's main class; every finding inside one phase (the decode and tokenizer phases
run back to back with the same process and thread starving the GPU); the starved phases
covered; the tokenizer phase's finding names code that sets it apart from the phase before.
"""
from __future__ import annotations

import collections
import importlib.util
from pathlib import Path

import pytest
from analysis_helpers import labels as read_labels
from analysis_helpers import replay_shared

ROOT = Path(__file__).resolve().parent.parent
REC = ROOT / "tests" / "fixtures" / "hf-transformers"
_spec = importlib.util.spec_from_file_location("summarize", ROOT / "bench" / "real_engine" / "summarize.py")
summarize = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summarize)

GAP = ("host_bound", "launch_bound")
BOUNDARY_S = 2.2        # one-second windows against fractional phase edges
# with no load signal, a change of code is seen over the episode tracker's pooling window
# (4 s, confirmed on 2): a finding may run this far into the next phase
CODE_CHANGE_LAG_S = 3.2
CLASSES = {"starting": ("starting",), "idle": ("idle",), "batch1_decode": GAP, "chat_tokenize": GAP,
           "batch64_decode": GAP, "prefill": ("compute_bound",)}
STARVED = ("batch1_decode", "chat_tokenize", "batch64_decode")


@pytest.fixture(scope="module")
def replayed():
    windows, events, errors = replay_shared(REC)
    assert not errors, errors
    return windows, [e for e in events if e["kind"] == "cpu_gpu_gap"], read_labels(REC)


def _overlap(e, t0, t1):
    return max(0.0, min(e["end"], t1) - max(e["start"], t0))


def test_each_phase_gets_its_class(replayed):
    windows, _, labels = replayed
    for phase in labels:
        counts = collections.Counter(w["class"] for w in windows if phase["t0"] + 1 <= w["start"] < phase["t1"] - 1)
        want = CLASSES[phase["phase"]]
        assert sum(counts[k] for k in want) >= 0.6 * sum(counts.values()), (phase["phase"], counts, want)


def test_no_finding_where_nothing_starves(replayed):
    _, gaps, labels = replayed
    for phase in labels:
        if phase["phase"] not in STARVED:
            hits = [e["summary"] for e in gaps if _overlap(e, phase["t0"], phase["t1"]) >= BOUNDARY_S]
            assert not hits, (phase["phase"], hits)


def test_every_finding_stays_inside_one_phase_and_the_starved_phases_are_covered(replayed):
    _, gaps, labels = replayed
    assert gaps
    for e in gaps:
        home = max(labels, key=lambda p: _overlap(e, p["t0"], p["t1"]))
        outside = (e["end"] - e["start"]) - _overlap(e, home["t0"], home["t1"])
        assert outside <= CODE_CHANGE_LAG_S, (e["summary"], home["phase"], outside)
        assert e["evidence"]["culprit"]["role"] == "engine" and e["evidence"]["culprit"]["thread"] == "MainThread"
    for phase in labels:
        if phase["phase"] in STARVED:
            covered = sum(_overlap(e, phase["t0"], phase["t1"]) for e in gaps)
            assert covered >= 0.8 * (phase["t1"] - phase["t0"]), (phase["phase"], covered)


def test_the_tokenizer_phase_names_what_sets_it_apart(replayed):
    """The finding of ``chat_tokenize`` names, among its first three frames, one of the
    phase's top self frames (raw windows) that is not among the previous phase's."""
    _, gaps, labels = replayed
    truth = summarize.load(REC)
    i = next(i for i, p in enumerate(labels) if p["phase"] == "chat_tokenize")
    phase, before = labels[i], labels[i - 1]

    def top_self(p):
        procs = summarize.phase_summary(truth, p["t0"], p["t1"])["processes"]
        return {f.split(" (")[0] for f, _ in next(iter(procs.values()))["self"][:5]}

    new = top_self(phase) - top_self(before)
    assert new
    mine = [e for e in gaps if _overlap(e, phase["t0"], phase["t1"]) > 0.5 * (e["end"] - e["start"])]
    assert len(mine) == 1, [(e["start"] - phase["t0"], e["end"] - phase["t0"]) for e in mine]
    named = {f["frame"] for f in mine[0]["top_frames"][:3]}
    assert new & named, (named, new)
