"""The real agent watching real vLLM 0.24 from before it starts (issue 15, live).

Needs the offline vLLM bundle installed on this host (``/tmp/site/vllm-env.sh``, or the
script ``INFERSIGHT_VLLM_ENV`` names: see ../shared/tools/vllm/README.md) and a model
directory: ``INFERSIGHT_VLLM_MODEL`` (a directory with config.json, served with dummy
weights), or ``INFERSIGHT_VLLM_MKMODEL`` pointing at
shared/tools/vllm/mkmodel.py, which then writes its default 0.8 B Llama into the test's
temp folder. Skips, saying which is missing, otherwise.

``infersight run`` starts first, as a new user runs it (default command-line patterns, the
metrics endpoint discovered); then ``vllm serve`` with bench/real_engine/vllm_session.sh's
flags, on one GPU (``INFERSIGHT_TEST_GPU``, default 0, through CUDA_VISIBLE_DEVICES) at a
free port, in its own process group. Once /health answers, bench/real_engine/load.py's
``heavy_decode`` pattern (128 streams x 256 tokens) runs for ``LOAD_S`` seconds. Checked:
discovery's roles on vLLM's real layout (API server, ``VLLM::EngineCore``, the
multiprocessing resource tracker as a helper), the endpoint found as vLLM, no CPU-GPU gap
finding during start-up (launch to /health), and no idle second under load. vLLM is stopped
with SIGINT to its process group whatever happens.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from live_agent import analysed_until, class_counts, feature_medians, fmt, get_json, gpu_status, wait_for, write_config

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[2]
# the bundle's environment script (install.sh writes it there); another path for another install
VLLM_ENV = Path(os.environ.get("INFERSIGHT_VLLM_ENV", "/tmp/site/vllm-env.sh"))
GPU = int(os.environ.get("INFERSIGHT_TEST_GPU", "0"))
HEALTH_TIMEOUT_S = 240      # vLLM 0.24 took 70-100 s to start on an H200
LOAD_S = 30
SIGNALS = ("sm_util", "tensor_util", "dram_bw_util", "gen_tokens_s", "running")
# bench/real_engine/load.py run in a child: its client session and cancelled requests stay
# out of this process (pytest turns stray warnings into errors)
LOAD = ("import asyncio, json, sys; sys.path.insert(0, sys.argv[1]); from load import run_pattern; "
        "print(json.dumps(asyncio.run(run_pattern(sys.argv[2], sys.argv[3], 'heavy_decode', float(sys.argv[4])))"
        ".as_dict()))")


def serve_cmd(model: str, port: int) -> str:
    """bench/real_engine/vllm_session.sh's serve_cmd, at ``port``."""
    return (f"source {VLLM_ENV} && exec vllm serve {model} --load-format dummy --port {port} --max-model-len 8192 "
            "--gpu-memory-utilization 0.80 --enable-mfu-metrics")


def _model_dir(tmp_path: Path) -> str:
    if not VLLM_ENV.exists():
        pytest.skip(f"the offline vLLM bundle is not installed ({VLLM_ENV} is missing): install it with "
                    "shared/tools/vllm's install.sh (see its README)")
    given = os.environ.get("INFERSIGHT_VLLM_MODEL")
    if given:
        if not (Path(given) / "config.json").is_file():
            pytest.fail(f"INFERSIGHT_VLLM_MODEL={given} is not a model directory (no config.json)", pytrace=False)
        return given
    maker = os.environ.get("INFERSIGHT_VLLM_MKMODEL")
    if not maker:
        pytest.skip("no model for vLLM: set INFERSIGHT_VLLM_MODEL to a model directory or INFERSIGHT_VLLM_MKMODEL "
                    "to shared/tools/vllm/mkmodel.py")
    if not Path(maker).is_file():
        pytest.fail(f"INFERSIGHT_VLLM_MKMODEL={maker} is not a file", pytrace=False)
    out = tmp_path / "model"
    made = subprocess.run([sys.executable, maker, str(out)], capture_output=True, text=True, timeout=600)
    if made.returncode != 0:
        pytest.fail(f"{maker} failed ({made.returncode}):\n{made.stderr[-3000:]}", pytrace=False)
    return str(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGINT to vLLM's process group (its own shutdown path), SIGKILL after 40 s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(40)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:   # children that outlived the API server (an engine core) go too
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def _stop_agent(agent) -> None:
    if agent.proc.poll() is None:
        agent.proc.send_signal(signal.SIGTERM)
        try:
            agent.proc.wait(30)
        except subprocess.TimeoutExpired:
            agent.proc.kill()
            agent.proc.wait(10)
    print("agent log (tail):\n" + "\n".join(agent.drain().splitlines()[-80:]))


def _roles(rows: list[dict]) -> str:
    def one(r: dict) -> str:
        cmdline = " ".join((r["cmdline"] or "").split())[:100]
        return f"  pid {r['pid']} {r['role']} gpus {r['gpus']}: {cmdline}"

    return "\n".join(one(r) for r in rows)


def test_the_agent_watches_real_vllm_from_before_it_starts(tmp_path, agent_process, pyspy, gpu_figures):
    model = _model_dir(tmp_path)
    config = write_config(tmp_path / "agent.toml", {
        "storage": {"flush_interval_s": 0.5},
        # lag_s must exceed recording_s + handover_s + flush_interval_s (stacks arrive that late)
        "collectors.stacks": {"pyspy_path": pyspy, "recording_s": 4},
        "analysis": {"interval_s": 2.0, "lag_s": 8.0},
    })
    agent = agent_process(["--config", str(config), "--db", str(tmp_path / "agent.duckdb"), "--listen", "127.0.0.1:0"])
    vllm: subprocess.Popen | None = None
    log_path = tmp_path / "vllm.log"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        url = agent.wait_started(90)
        status = wait_for(lambda: gpu_status(url, GPU), 60, f"the agent's GPU collector opening GPU {GPU}")
        if status.get("mig_mode"):
            pytest.skip(f"GPU {GPU} is in MIG mode: pick a whole GPU with INFERSIGHT_TEST_GPU")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # vLLM runs on its bundle only
        env.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=str(GPU))
        with open(log_path, "wb") as log:
            t_launch = time.time()
            vllm = subprocess.Popen(["bash", "-c", serve_cmd(model, port)], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)

        def up() -> bool:
            if vllm.poll() is not None:
                pytest.fail(f"vllm serve exited with {vllm.returncode} before /health answered; log:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}", pytrace=False)
            return _healthy(base)

        wait_for(up, HEALTH_TIMEOUT_S, f"vLLM's {base}/health", interval=1.0,
                 explain=lambda: log_path.read_text(errors="replace")[-4000:])
        t_ready = time.time()

        t_load0 = time.time()
        load = subprocess.run([sys.executable, "-c", LOAD, str(REPO / "bench" / "real_engine"), base, model,
                               str(LOAD_S)], capture_output=True, text=True, timeout=LOAD_S + 120)
        t_load1 = time.time()
        assert load.returncode == 0, load.stderr[-3000:]
        counts = json.loads(load.stdout.strip().splitlines()[-1])
        wait_for(lambda: analysed_until(url) >= t_load1, 90, "the analysis reaching the end of the load")
        rows = get_json(url, "/api/processes", all=1)["processes"]
        endpoints = get_json(url, "/api/engines")["endpoints"]
        gaps = get_json(url, "/api/events", kind="cpu_gpu_gap", **{"from": t_launch, "to": t_ready})["events"]
        startup = get_json(url, "/api/windows", gpu=GPU, **{"from": t_launch, "to": t_ready})["windows"]
        loaded = get_json(url, "/api/windows", gpu=GPU, **{"from": t_load0 + 3, "to": t_load1 - 2})["windows"]
        findings = get_json(url, "/api/events", **{"from": t_launch})["events"]
    finally:
        if vllm is not None:
            _stop_group(vllm)
        _stop_agent(agent)

    gpu_figures.append(f"GPU {GPU} {status.get('name')}, live vLLM ({model}): /health after {t_ready - t_launch:.0f} s")
    gpu_figures.append(f"  start-up windows: {class_counts(startup)}; gap findings in start-up: {len(gaps)}")
    gpu_figures.append(f"  heavy_decode {LOAD_S} s: {counts['completed']} requests done, {counts['failed']} failed, "
                       f"{counts['completion_tokens'] / LOAD_S:.0f} completion tokens/s")
    gpu_figures.append(f"  under load: {class_counts(loaded)}; medians {fmt(feature_medians(loaded, SIGNALS))}")
    for ep in endpoints:
        gpu_figures.append(f"  endpoint {ep['url']} ({ep['origin']}): engine {ep['engine']}, "
                           f"{ep['scrapes_ok']} scrapes ok, {ep['scrapes_failed']} failed, "
                           f"last latency {ep['last_latency_s']} s")
    for e in findings:
        gpu_figures.append(f"  finding {e['kind']} {e['start'] - t_launch:.0f}..{e['end'] - t_launch:.0f} s after "
                           f"launch: {e['summary'][:160]}")
    gpu_figures.append("  targets:\n" + _roles(rows))

    api = [r for r in rows if r["pid"] == vllm.pid]
    core = [r for r in rows if "VLLM::EngineCore" in (r["cmdline"] or "")]
    tracker = [r for r in rows if "resource_tracker" in (r["cmdline"] or "")]
    assert api and all(r["role"] == "api_server" for r in api), f"API server pid {vllm.pid}:\n{_roles(rows)}"
    assert core and all(r["role"] == "engine_core" for r in core), _roles(rows)
    assert any(GPU in (r["gpus"] or []) for r in core), _roles(rows)
    assert tracker and all(r["role"] == "helper" for r in tracker), _roles(rows)
    assert any(ep["engine"] == "vllm" and ep["url"].endswith(f":{port}/metrics") and ep["scrapes_ok"] > 0
               for ep in endpoints), endpoints
    assert not gaps, [(g["start"] - t_launch, g["end"] - t_launch, g["summary"]) for g in gaps]
    assert counts["completed"] > 0 and counts["completion_tokens"] > 0, counts
    assert len(loaded) >= (LOAD_S - 5) * 0.8, f"{len(loaded)} windows under load: {class_counts(loaded)}"
    idle = [w["start"] - t_load0 for w in loaded if w["class"] == "idle"]
    assert not idle, f"idle seconds under load (s after its start): {idle}; {class_counts(loaded)}"
