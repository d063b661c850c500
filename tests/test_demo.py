"""``infersight demo`` and its parts: the simulated GPU timeline, the demo engine's metrics and
HTTP endpoints, the simulated GPU collector, the engine process, and (slow) the whole demo
producing a host-bound finding blamed on the slow tokenizer."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infersight.daemon.config.load import ConfigError
from infersight.daemon.demo.backend import CpuBackend
from infersight.daemon.demo.command import demo_config
from infersight.daemon.demo.command import main as demo_main
from infersight.daemon.demo.engine import Engine, Req, parse_phases
from infersight.daemon.demo.metrics import MODEL_NAME, EngineMetrics, serve
from infersight.daemon.demo.simgpu import SIMULATED_NAME, SimulatedGpuCollector, to_batch
from infersight.daemon.demo.timeline import GEMM, GEMV, TINY, SimTimeline
from infersight.daemon.engines import promtext
from infersight.daemon.engines import specs as engine_specs


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def by_start(ticks: list[dict]) -> dict[float, dict]:
    return {round(x["t"], 3): x for x in ticks}


# -- the simulated timeline -------------------------------------------------------------------

def test_kernels_queue_on_one_stream_and_bin_into_ticks():
    clock = FakeClock(100.0)
    tl = SimTimeline(0.1, clock)
    assert tl.launch(GEMV, 0.05) == pytest.approx(100.05)
    # launched while the first still runs: it waits for it, as on a CUDA stream
    assert tl.launch(GEMV, 0.08) == pytest.approx(100.13)
    assert tl.pending_s() == pytest.approx(0.13)
    clock.t = 100.35
    ticks = by_start(tl.ticks())
    assert sorted(ticks) == [100.0, 100.1, 100.2]          # 100.3 has not ended yet
    assert ticks[100.0]["busy"] == pytest.approx(1.0)
    assert ticks[100.0]["sm"] == pytest.approx(100 * GEMV.sm, abs=0.01)
    assert ticks[100.0]["dram"] == pytest.approx(100 * GEMV.dram, abs=0.01)
    assert ticks[100.1]["busy"] == pytest.approx(0.3)
    assert ticks[100.1]["tensor"] == pytest.approx(0.3 * 100 * GEMV.tensor, abs=0.01)
    assert ticks[100.2] == {"t": 100.2, "busy": 0.0, "sm": 0.0, "tensor": 0.0, "dram": 0.0}
    assert tl.pending_s() == 0.0


def test_a_long_kernel_fills_every_tick_it_spans():
    clock = FakeClock(50.05)
    tl = SimTimeline(0.1, clock)
    tl.launch(GEMM, 0.25)      # 50.05 .. 50.30
    clock.t = 50.5
    ticks = by_start(tl.ticks())
    assert [ticks[t]["busy"] for t in (50.0, 50.1, 50.2, 50.3, 50.4)] == pytest.approx([0.5, 1, 1, 0, 0])
    assert ticks[50.1]["tensor"] == pytest.approx(100 * GEMM.tensor, abs=0.01)


def test_tiny_kernels_launched_slowly_leave_the_device_mostly_idle():
    clock = FakeClock(10.0)
    tl = SimTimeline(0.1, clock)
    for _ in range(9990):      # one 2.5 us kernel every 10 us of host time, for ~0.1 s
        tl.launch(TINY, 2.5e-6)
        clock.t += 1e-5
    clock.t = 10.2
    busy = [x["busy"] for x in tl.ticks() if x["t"] < 10.01]
    assert busy == [pytest.approx(0.25, abs=0.001)]
    assert by_start(tl.ticks())[10.0]["sm"] < 1.0


def test_ticks_since_returns_each_finished_tick_once():
    clock = FakeClock(200.0)
    tl = SimTimeline(0.1, clock)
    clock.t = 200.45
    first = tl.ticks()
    assert [x["t"] for x in first] == pytest.approx([200.0, 200.1, 200.2, 200.3])
    clock.t = 200.72
    nxt = tl.ticks(since=first[-1]["t"] + 0.05)
    assert [x["t"] for x in nxt] == pytest.approx([200.4, 200.5, 200.6])


# -- the engine -------------------------------------------------------------------------------

def test_engine_steps_show_in_vllm_style_metrics():
    backend = CpuBackend(SimTimeline())
    metrics = EngineMetrics()
    engine = Engine(backend, metrics)
    now = time.time()
    engine.waiting.extend(Req(prompt_tokens=10, max_new=2, arrive=now) for _ in range(3))
    assert engine.step() and engine.step()
    assert not engine.step()           # all three finished after two tokens each
    text = promtext_text(metrics)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    value = {s.name: s.value for f in families.values() for s in f.samples
             if s.labels.get("model_name") == MODEL_NAME and "le" not in s.labels}
    assert value["vllm:prompt_tokens_total"] == 30
    assert value["vllm:generation_tokens_total"] == 6
    assert value["vllm:num_requests_running"] == 0
    assert value["vllm:num_requests_waiting"] == 0
    assert value["vllm:time_to_first_token_seconds_count"] == 3
    assert value["vllm:inter_token_latency_seconds_count"] == 3
    assert value["vllm:e2e_request_latency_seconds_count"] == 3
    # the agent's own parser recognises the endpoint as vLLM
    names = [s.name for s in promtext.parse(text).samples]
    assert [spec.name for spec in engine_specs.detect(names)] == ["vllm"]
    # the work went to the simulated device: one prefill and two decode steps
    assert backend.timeline.launches == 3


def promtext_text(metrics: EngineMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def test_engine_caps_the_batch_and_keeps_the_rest_waiting():
    engine = Engine(CpuBackend(SimTimeline()), EngineMetrics())
    engine.waiting.extend(Req(5, 100, time.time()) for _ in range(300))
    engine.step()
    assert len(engine.running) == 256 and len(engine.waiting) == 44


def test_parse_phases():
    assert parse_phases("healthy:20, idle:2.5") == [("healthy", 20.0), ("idle", 2.5)]
    for bad, words in (("healthy", "NAME:SECONDS"), ("warp:3", "unknown phase 'warp'"), ("idle:0", "SECONDS > 0"),
                       ("idle:x", "NAME:SECONDS")):
        with pytest.raises(ValueError, match=re.escape(words)):
            parse_phases(bad)


# -- the engine's HTTP endpoints and the collector reading them --------------------------------

@pytest.fixture
def served():
    """A demo HTTP server over a fake-clock timeline; yields (base URL, timeline, clock)."""
    clock = FakeClock(1000.0)
    timeline = SimTimeline(0.1, clock)
    metrics = EngineMetrics()
    server = serve(metrics.registry, timeline, SIMULATED_NAME)
    yield f"http://127.0.0.1:{server.server_address[1]}", timeline, clock
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_http_serves_metrics_and_the_simulated_timeline(served):
    base, timeline, clock = served
    timeline.launch(GEMV, 0.1)
    clock.t = 1000.25
    status, ctype, body = get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert b"vllm:num_requests_running{" in body
    status, ctype, body = get(base + "/sim-gpu")
    doc = json.loads(body)
    assert status == 200 and ctype == "application/json"
    assert doc["simulated"] is True and doc["device"] == SIMULATED_NAME and doc["pid"] == os.getpid()
    assert [x["t"] for x in doc["ticks"]] == pytest.approx([1000.0, 1000.1])
    assert doc["ticks"][0]["busy"] == pytest.approx(1.0)
    status, _, body = get(base + "/sim-gpu?since=soon")
    assert status == 400 and b"since" in body
    assert get(base + "/nothing")[0] == 404


def test_http_without_a_simulated_gpu_says_so():
    server = serve(EngineMetrics().registry, None, "NVIDIA H100 80GB HBM3")
    try:
        status, _, body = get(f"http://127.0.0.1:{server.server_address[1]}/sim-gpu")
    finally:
        server.shutdown()
        server.server_close()
    assert status == 404 and b"real GPU" in body


async def test_collector_reads_each_tick_once_and_labels_it_simulated(served):
    base, timeline, clock = served
    collector = SimulatedGpuCollector(base + "/sim-gpu", 0.5)
    await collector.start()
    try:
        timeline.launch(GEMV, 0.15)
        clock.t = 1000.32
        first = await collector.collect(time.time())
        clock.t = 1000.55
        second = await collector.collect(time.time())
    finally:
        await collector.close()
    assert [s.t for s in first.gpu_samples] == pytest.approx([1000.05, 1000.15, 1000.25])
    assert {s.source for s in first.gpu_samples + second.gpu_samples} == {"simulated"}
    assert first.gpu_samples[0].values["util_gpu"] == pytest.approx(100.0)
    assert first.gpu_samples[1].values["sm_util"] == pytest.approx(50 * GEMV.sm, abs=0.01)
    assert [i.name for i in first.gpu_info] == [SIMULATED_NAME]
    assert [p.pid for p in first.gpu_processes] == [os.getpid()]
    # the second read starts where the first ended, and announces the GPU only once
    assert [s.t for s in second.gpu_samples] == pytest.approx([1000.35, 1000.45])
    assert second.gpu_info == [] and second.gpu_processes == []
    status = collector.status()
    assert status["simulated"] is True and status["state"] == "ok" and status["gpus"][0]["source"] == "simulated"


async def test_collector_fails_the_run_when_the_engine_is_gone():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed again: nothing listens there
    collector = SimulatedGpuCollector(f"http://127.0.0.1:{port}/sim-gpu", 0.5)
    try:
        with pytest.raises(RuntimeError, match="unreachable"):
            await collector.collect(time.time())
    finally:
        await collector.close()
    assert collector.status()["state"] == "error"


def test_to_batch_without_new_ticks_is_no_data():
    batch = to_batch({"pid": 5, "started": 1.0, "tick_s": 0.1, "ticks": []}, 2.0, announce=False)
    assert batch.gpu_samples == [] and batch.no_data


# -- the engine process --------------------------------------------------------------------------

def test_engine_process_serves_then_stops_cleanly_on_sigint(tmp_path):
    status_file = tmp_path / "engine.json"
    proc = subprocess.Popen([sys.executable, "-m", "infersight.daemon.demo.engine", "--device", "cpu",
                             "--phases", "healthy:60", "--status-file", str(status_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status = wait_for_json(status_file, proc)
        assert status["pid"] == proc.pid and status["simulated"] is True and status["phase"] == "healthy"
        families = {}
        for _ in range(100):   # the first decode steps take a moment to reach the counter
            text = get(status["metrics_url"])[2].decode()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            if families["vllm:generation_tokens"].samples[0].value > 0:
                break
            time.sleep(0.1)
        assert families["vllm:generation_tokens"].samples[0].value > 0
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert not status_file.exists()
    assert "Traceback" not in err


def wait_for_json(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout} s")


# -- the demo runner ---------------------------------------------------------------------------------

def test_demo_config_watches_only_the_engine(tmp_path):
    engine = {"pid": 4242, "metrics_url": "http://127.0.0.1:5/metrics", "simulated": True}
    cfg = demo_config(tmp_path, "127.0.0.1:0", engine)
    assert cfg.storage.path == str(tmp_path / "demo.duckdb")
    assert cfg.targets.pids == (4242,) and len(cfg.targets.cmdline_patterns) == 1
    assert cfg.collectors.engines.endpoints == ("http://127.0.0.1:5/metrics",)
    assert cfg.collectors.gpu.enabled is False          # the simulated collector stands in for NVML
    assert cfg.analysis.lag_s > cfg.collectors.stacks.recording_s
    assert demo_config(tmp_path, "127.0.0.1:0", {**engine, "simulated": False}).collectors.gpu.enabled is True


def test_the_demo_engine_is_discovered_as_an_engine_and_nothing_else_is(tmp_path):
    """Its role is ``engine`` (a serving process), not ``other`` (which reads like a neighbour's child);
    an engine of another demo (another status file) is not watched."""
    from infersight.daemon.stacks.discovery import Discovery

    mine = tmp_path / "mine"
    mine.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "--status-file", str(d / "engine.json")],
                              stdin=subprocess.DEVNULL) for d in (mine, tmp_path / "other")]
    try:
        cfg = demo_config(mine, "127.0.0.1:0", {"pid": procs[0].pid, "metrics_url": "http://x/metrics", "simulated": True})
        found = {t.pid: t.role for t in Discovery(cfg.targets, "h").scan()}
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert found == {procs[0].pid: "engine"}


def test_demo_refuses_an_open_listen_address_before_starting_anything(monkeypatch):
    started = []
    monkeypatch.setattr(asyncio, "run", lambda *a, **k: started.append(a))
    with pytest.raises(ConfigError, match="web.listen"):
        demo_main(listen="0.0.0.0:8321", duration=1)
    assert started == []


def test_a_busy_port_stops_the_demo_before_its_engine_with_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "demo", "--listen", f"127.0.0.1:{port}",
                               "--duration", "5"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(port) in lines[0] and "--listen" in lines[0] and "PORT=" in lines[0]
    assert time.monotonic() - started < 20, "no engine was started first"


# -- the whole demo --------------------------------------------------------------------------------

FINDING_DEADLINE_S = 90.0   # the promise: a finding within 90 s of starting the demo


@pytest.mark.slow
def test_demo_finds_the_slow_tokenizer_and_stops_cleanly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "infersight.daemon.cli", "demo", "--listen", f"127.0.0.1:{port}",
                             "--duration", "600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_lines: list[str] = []
    err_lines: list[str] = []
    readers = [threading.Thread(target=lambda f=f, sink=sink: sink.extend(f), daemon=True)
               for f, sink in ((proc.stdout, out_lines), (proc.stderr, err_lines))]
    for r in readers:
        r.start()
    events: list[dict] = []
    try:
        finding = None
        while finding is None and time.monotonic() - started < FINDING_DEADLINE_S:
            assert proc.poll() is None, "".join(err_lines)
            time.sleep(2)
            try:
                events = json.loads(get(base + "/api/events?kind=cpu_gpu_gap")[2])["events"]
            except (OSError, ValueError):
                continue   # not listening yet
            finding = next((e for e in events if e["top_frames"]
                            and e["top_frames"][0]["frame"] == "tokenize_slow_python"), None)
        assert finding is not None, (f"no cpu_gpu_gap blamed on tokenize_slow_python within {FINDING_DEADLINE_S} s; "
                                     f"events: {events!r}\nstderr: {''.join(err_lines)[-4000:]}")
        assert finding["class"] == "host_bound"
        # every gap finding (stalls too) leads with frames of the thread it names, never with
        # the wait of a thread that serves nothing (the demo's HTTP thread in its selector)
        for e in events:
            who = e["evidence"].get("culprit") or {}
            assert all((f.get("pid"), f.get("thread")) == (who.get("pid"), who.get("thread"))
                       for f in e["top_frames"]), e
        gpus = json.loads(get(base + "/api/gpus")[2])
        announced = "".join(out_lines)
        assert f"UI at {base}" in announced
        if importlib.util.find_spec("torch") is None or "SIMULATED GPU" in announced:
            assert [g["name"] for g in gpus["gpus"]] == [SIMULATED_NAME]
            assert gpus["collector"]["simulated"] is True
        engine_pid = int(re.search(r"engine pid (\d+)", announced).group(1))
        roles = {p["pid"]: p["role"] for p in json.loads(get(base + "/api/processes")[2])["processes"]}
        assert roles.get(engine_pid) == "engine", roles
        db = re.search(r"event=started .*db=(\S+)", "".join(err_lines)).group(1).strip('"')
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for r in readers:
            r.join(5)
        proc.stdout.close()
        proc.stderr.close()
    assert rc == 0, "".join(err_lines)[-4000:]
    assert not pid_alive(engine_pid), "the demo engine outlived the demo"
    assert not Path(db).parent.exists(), "the demo's temporary directory was left behind"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
