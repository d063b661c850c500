"""Episodes on every recording in tests/fixtures: one stable answer per labelled phase.

Per recording (analysis_criteria.py): no labelled phase of 10 s or more changes class more
than once in its inner seconds; at most one cpu_gpu_gap finding per phase, within 2 s of the
phase's edges; every neighbour phase has an event naming the foreign process. The real
recordings (vLLM 0.24 and transformers code on H100/H200) and the synthetic H100 scenario
(our engine on a real GPU) are held to the same rules.

The remedy pairs (the same load before and after a change of engine flags, tests/fixtures/
vllm-qwen-*): the process the "before" finding names first is the one whose relief raised
the client's throughput, and is not the one whose relief did not.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from analysis_criteria import gaps_in, phase_report, violations
from analysis_helpers import labels as read_labels
from analysis_helpers import replay_shared

FIXTURES = Path(__file__).parent / "fixtures"
RECORDINGS = sorted(p.parent.name for p in FIXTURES.glob("*/labels.jsonl"))


def _real_vllm(name: str) -> bool:
    readme = FIXTURES / name / "README.md"
    return name.startswith("vllm-") and "Real vLLM 0.24" in readme.read_text()


def test_at_least_four_real_vllm_recordings():
    real = [n for n in RECORDINGS if _real_vllm(n)]
    assert len(real) >= 4, real


@pytest.mark.parametrize("name", RECORDINGS)
def test_one_stable_answer_per_phase(name):
    root = FIXTURES / name
    windows, events, _ = replay_shared(root)
    rows = phase_report(root, read_labels(root), windows, events)
    assert violations(rows) == []


def _phase(root: Path, name: str) -> dict:
    return next(p for p in read_labels(root) if p["phase"] == name)


def _client_rps(root: Path, phase: str) -> float:
    p = _phase(root, phase)
    return p["load"]["completed"] / (p["t1"] - p["t0"])


def _named_first(root: Path, phase: str) -> tuple[str, dict]:
    windows, events, _ = replay_shared(root)
    p = _phase(root, phase)
    gaps = gaps_in(events, p["t0"], p["t1"])
    assert len(gaps) == 1, (phase, gaps)
    return gaps[0]["evidence"]["culprit"]["role"], gaps[0]["evidence"]


# (before, after, phase, the role the change relieves): --api-server-count 4 relieves the API
# server (and --stream-interval 10 its per-chunk work); CUDA graphs relieve the engine core's launches
PAIRS = [
    ("vllm-qwen-graphs", "vllm-qwen-api4", "flood", "api_server"),
    ("vllm-qwen-graphs", "vllm-qwen-api4", "stream128", "api_server"),
    ("vllm-qwen-eager", "vllm-qwen-graphs", "steady48", "engine_core"),
]


@pytest.mark.parametrize("before,after,phase,relieved", PAIRS)
def test_the_named_throttle_is_the_one_whose_relief_raised_throughput(before, after, phase, relieved):
    gain = _client_rps(FIXTURES / after, phase) / _client_rps(FIXTURES / before, phase)
    role, evidence = _named_first(FIXTURES / before, phase)
    if gain >= 1.2:
        assert role == relieved, (phase, gain, role)
    else:
        assert gain <= 1.1, gain          # the pairs were chosen clear either way
        assert role != relieved, (phase, gain, role)
    assert evidence["throttle"]["decided_by"] == "queueing"


def test_two_saturated_processes_one_finding_the_throttle_first():
    """The flood of 1-token requests: the API server (109 % of a core) and the engine core
    (98 %) both saturated; one finding, the API server first because the front end holds the
    requests, the engine core named after it."""
    root = FIXTURES / "vllm-qwen-graphs"
    role, evidence = _named_first(root, "flood")
    order = evidence["throttle"]["order"]
    assert role == "api_server" and [o["role"] for o in order[:2]] == ["api_server", "engine_core"]
    assert evidence["throttle"]["front_end_share"] >= 0.5
    summary_roles = [o["role"] for o in order]
    assert "engine_core" in summary_roles


def test_readme_pairs_quote_the_client_counts():
    """The READMEs' before/after figures are the labels' own client counts."""
    api4 = (FIXTURES / "vllm-qwen-api4" / "README.md").read_text()
    for phase in ("flood", "stream128"):
        for rec in ("vllm-qwen-graphs", "vllm-qwen-api4"):
            assert f"{_client_rps(FIXTURES / rec, phase):.1f}" in api4.replace(",", "")
    assert json.loads((FIXTURES / "vllm-qwen-api4" / "labels.jsonl").read_text().splitlines()[0])["phase"] == "starting"


@pytest.mark.parametrize("name", RECORDINGS)
def test_a_gap_finding_leads_with_the_code_of_the_thread_it_names(name):
    """Frames of one thread never appear under another's name; a stall names the serving
    thread (the one that did the process's own work or waited on its GPU) and what it waits
    in, never a thread that only ever sleeps (an HTTP server's selector)."""
    _, events, _ = replay_shared(FIXTURES / name)
    for e in events:
        if e["kind"] != "cpu_gpu_gap":
            continue
        who = e["evidence"]["culprit"]
        assert who is not None, e["summary"]
        assert all((f["pid"], f["thread"]) == (who["pid"], who["thread"]) for f in e["top_frames"]), e
        if e["class"] == "stall":
            assert who["decided_by"] == "serving_thread" and who["role"] in ("engine", "engine_core", "worker")
