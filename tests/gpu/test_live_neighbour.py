"""The real agent names another tenant of the GPU in its mismatch finding (issue 16, live).

A serving-like process (gpu_engine.py: DRAM-bound copies about 70% of the time, tensor cores
idle, a steady 2,000 generated tokens/s on vLLM-style /metrics) runs on one GPU
(``INFERSIGHT_TEST_GPU``, default 0). ``infersight run`` watches it (``--pid``, ``--scrape``,
analysis every second 5 s behind) until it has at least ``BASELINE_SECONDS`` busy seconds with
tokens. Then another process, started by the test and so no descendant of the engine
(gpu_workload.py), runs bf16 GEMMs on the same GPU for ``GEMM_S`` seconds and keeps its
CUDA context ``IDLE_S`` seconds more. The engine's token flow does not change.

Why that must give a finding (daemon/analysis/detectors.py MismatchDetector with the default
AnalysisConfig): the engine's seconds are busy (SM about 70% >= busy_sm_pct 40) with tokens,
so they form the baseline (>= 5 seconds within a factor 1.5 of the same token flow); with the
neighbour, SM rises (>= 0.95 x baseline), the token flow stays, and tensor activity per token
goes from a floor of 1% to tens of percent (>= mismatch_work_rise 1.5 x and >= 10 points).
Discovery (daemon/stacks/discovery.py) sees a CUDA process outside every serving tree on a
GPU where a serving process holds a context: ``other_gpu_process``; the finding's summary and
``evidence.foreign_processes`` name it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from live_agent import (BUSY_CLASSES, JsonLinesProcess, analysed_until, class_counts, feature_medians, fmt,
                        get_json, gpu_status, wait_for, write_config)

pytestmark = pytest.mark.gpu

HERE = Path(__file__).parent
ENGINE = HERE / "gpu_engine.py"
WORKLOAD = HERE / "gpu_workload.py"
GPU = int(os.environ.get("INFERSIGHT_TEST_GPU", "0"))
BASELINE_SECONDS = 20      # busy seconds with tokens before the neighbour starts (the detector needs 5)
GEMM_S = 25
IDLE_S = 10                # the neighbour keeps its context: the closing finding still sees it on the GPU
FINDING_KINDS = ("util_throughput_mismatch", "saturation")
SIGNALS = ("sm_util", "tensor_util", "dram_bw_util", "gen_tokens_s")


def _agent_config(path: Path, pyspy: str) -> Path:
    return write_config(path, {
        "storage": {"flush_interval_s": 0.2},
        "targets": {"discovery_interval_s": 1.0},
        # analysis.lag_s must exceed recording_s + handover_s + flush_interval_s
        "collectors.stacks": {"pyspy_path": pyspy, "recording_s": 2, "handover_s": 0.5},
        # the per-process list (who holds a context) comes with the slow tick
        "collectors.gpu": {"fast_interval_s": 0.25, "slow_interval_s": 1.0, "dcgm_url": "off"},
        # a sample in every second: a second without engine data has no token flow to compare
        "collectors.engines": {"interval_s": 0.5, "autodiscover": False},
        "analysis": {"interval_s": 1.0, "lag_s": 5.0},
    })


def _windows(url: str, t_from: float, t_to: float | None = None) -> list[dict]:
    return get_json(url, "/api/windows", gpu=GPU, **{"from": t_from, "to": t_to})["windows"]


def _baseline(url: str, t_from: float) -> list[dict]:
    busy = [w for w in _windows(url, t_from)
            if w["class"] in BUSY_CLASSES and (w["features"].get("gen_tokens_s") or 0) > 0]
    return busy if len(busy) >= BASELINE_SECONDS else []


def _row(rows: list[dict], pid: int) -> dict | None:
    mine = [r for r in rows if r["pid"] == pid]
    return max(mine, key=lambda r: r["last_seen"] or 0) if mine else None


def _naming(url: str, pid: int, t_from: float) -> list[dict]:
    """Findings of FINDING_KINDS since ``t_from`` whose summary and evidence name ``pid``."""
    out = []
    for kind in FINDING_KINDS:
        for e in get_json(url, "/api/events", kind=kind, gpu=GPU, **{"from": t_from})["events"]:
            foreign = e["evidence"].get("foreign_processes") or []
            if f"pid {pid}" in e["summary"] and any(f.get("pid") == pid for f in foreign):
                out.append(e)
    return out


def _stop_agent(agent) -> None:
    if agent.proc.poll() is None:
        agent.proc.send_signal(signal.SIGTERM)
        try:
            agent.proc.wait(30)
        except subprocess.TimeoutExpired:
            agent.proc.kill()
            agent.proc.wait(10)
    print("agent log (tail):\n" + "\n".join(agent.drain().splitlines()[-80:]))


def test_the_mismatch_finding_names_the_other_gpu_process(tmp_path, agent_process, pyspy, gpu_figures):
    env = {**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    engine = JsonLinesProcess([sys.executable, str(ENGINE), "--device", str(GPU)], tmp_path / "engine.err", env)
    neighbour: JsonLinesProcess | None = None
    agent = None
    try:
        ready = engine.wait_event("ready", 180)
        agent = agent_process(["--config", str(_agent_config(tmp_path / "agent.toml", pyspy)),
                               "--db", str(tmp_path / "agent.duckdb"), "--listen", "127.0.0.1:0",
                               "--pid", str(ready["pid"]), "--scrape", f"http://127.0.0.1:{ready['port']}/metrics"])
        url = agent.wait_started(90)
        t_agent = time.time()
        status = wait_for(lambda: gpu_status(url, GPU), 60, f"the agent's GPU collector opening GPU {GPU}")
        if status.get("mig_mode"):
            pytest.skip(f"GPU {GPU} is in MIG mode: pick a whole GPU with INFERSIGHT_TEST_GPU")
        if not status.get("gpm"):
            pytest.skip(f"GPU {GPU} ({status.get('name')}) has no NVML GPM: the mismatch detector compares SM, "
                        "tensor and DRAM activity, which NVML alone does not give")

        def explain_baseline() -> str:
            ws = _windows(url, t_agent)
            return (f"engine {ready}; windows since the agent started: {class_counts(ws)}; medians "
                    f"{fmt(feature_medians(ws, SIGNALS))}")

        base = wait_for(lambda: _baseline(url, t_agent), 150,
                        f"{BASELINE_SECONDS} busy seconds with tokens (the mismatch baseline)",
                        explain=explain_baseline)
        t_baseline_end = time.time()

        neighbour = JsonLinesProcess([sys.executable, str(WORKLOAD), "--phases", f"gemm:{GEMM_S},idle:{IDLE_S}",
                                      "--device", str(GPU), "--copy-gib", "0.25"], tmp_path / "neighbour.err", env)
        npid = neighbour.wait_event("ready", 180)["pid"]
        seen: dict[str, float] = {}    # what the API first showed, and when (wall clock)

        def watch() -> bool:
            rows = get_json(url, "/api/processes", all=1)["processes"]
            row = _row(rows, npid)
            if row is not None and row["role"] == "other_gpu_process":
                seen.setdefault("role", time.time())
            if _naming(url, npid, t_baseline_end - 30):
                seen.setdefault("finding", time.time())
            gemm_done = next((e for e in neighbour.take() if e.get("event") == "phase"), None)
            if gemm_done is None and neighbour.ended:
                pytest.fail(f"the neighbour exited with {neighbour.proc.wait()} during its GEMMs; stderr:\n"
                            f"{neighbour.stderr_tail()}", pytrace=False)
            return gemm_done is not None and analysed_until(url) >= gemm_done["t1"] + 4

        wait_for(watch, GEMM_S + 120, "the neighbour's GEMM phase, analysed",
                 explain=lambda: f"neighbour stderr:\n{neighbour.stderr_tail()}")
        gemm = next(e for e in neighbour.events if e.get("event") == "phase")
        rows = get_json(url, "/api/processes", all=1)["processes"]
        findings = _naming(url, npid, t_baseline_end - 30)
        during = _windows(url, gemm["t0"] + 3, gemm["t1"] - 1)
        other_kinds = {k: len(get_json(url, "/api/events", kind=k, gpu=GPU, **{"from": t_baseline_end - 30})["events"])
                       for k in FINDING_KINDS}
        neighbour.wait_event("done", IDLE_S + 60)
    finally:
        if neighbour is not None:
            neighbour.stop()
        engine.stop()
        if agent is not None:
            _stop_agent(agent)

    n_row, e_row = _row(rows, npid), _row(rows, ready["pid"])
    gpu_figures.append(f"GPU {GPU} {status.get('name')}, live neighbour: engine pid {ready['pid']} "
                       f"(a burst of {ready['burst_copies']} copies, {ready['burst_ms']} ms alone, every 40 ms), "
                       f"neighbour pid {npid} (bf16 GEMM 8192^3 for {GEMM_S} s)")
    gpu_figures.append(f"  baseline ({len(base)} busy s): {class_counts(base)}; medians "
                       f"{fmt(feature_medians(base, SIGNALS))}")
    gpu_figures.append(f"  with the neighbour ({len(during)} s): {class_counts(during)}; medians "
                       f"{fmt(feature_medians(during, SIGNALS))}")
    for name, at in seen.items():
        gpu_figures.append(f"  {name} first shown by the API {at - gemm['t0']:.1f} s after the GEMMs began")
    for e in findings:
        gpu_figures.append(f"  {e['kind']} {e['start'] - gemm['t0']:+.0f}..{e['end'] - gemm['t1']:+.0f} s around the "
                           f"GEMM phase: {e['summary']}")

    assert n_row is not None, f"the neighbour pid {npid} is not among the agent's targets: {rows}"
    assert n_row["role"] == "other_gpu_process", n_row
    assert GPU in (n_row["gpus"] or []), n_row
    assert e_row is not None and e_row["role"] == "engine", e_row     # serving: a CUDA process named with --pid
    assert findings, (f"no {' or '.join(FINDING_KINDS)} finding names pid {npid}; findings since the baseline by kind: "
                      f"{other_kinds}; windows with the neighbour: {class_counts(during)}, medians "
                      f"{fmt(feature_medians(during, SIGNALS))}; baseline medians "
                      f"{fmt(feature_medians(base, SIGNALS))}")
    assert any(e["start"] <= gemm["t1"] and e["end"] >= gemm["t0"] for e in findings), (gemm, findings)
