"""``infersight demo``: the whole agent watching a simulated inference engine, on a temporary DB.

Starts the demo engine (daemon/demo/engine.py) as a child process in its own session,
waits until it serves, then runs the full daemon against it: the engine as the profiled
target (psutil and py-spy), its ``/metrics`` scraped, and either the real GPU collector
(the engine found a CUDA GPU) or :class:`SimulatedGpuCollector` reading the engine's
simulated GPU timeline (CPU mode). The analysis runs every 2 s with a lag just long enough
for py-spy recordings to land, so the first finding (a host-bound gap blamed on the slow
tokenizer) shows within about a minute.

Ctrl-C or SIGTERM (or ``duration`` seconds) stops the daemon, then the engine (SIGINT,
then SIGKILL if it lingers), and removes the temporary directory. Returns the exit code:
0 after a clean stop, 1 when the engine or the daemon could not run. Config errors (a bad
``--listen``) raise ConfigError for the CLI to report.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infersight.daemon.config.load import Config, with_overrides
from infersight.daemon.demo.engine import DEFAULT_PHASES

log = logging.getLogger("infersight.demo")

ENGINE_START_TIMEOUT_S = 120.0   # torch import and CUDA warm-up can take a while
ENGINE_STOP_TIMEOUT_S = 5.0
DAEMON_STOP_TIMEOUT_S = 8.0
DEMO_CPU_BUSY_PCT = 35.0
STATUS_FILE = "engine.json"


def demo_config(tmp: Path, listen: str, engine: dict[str, Any]) -> Config:
    """The daemon's config for the demo: temp DB, only the demo engine as target and endpoint,
    quick analysis, NVML off when the GPU is simulated."""
    base = Config()
    return with_overrides(base, **{
        "storage.path": str(tmp / "demo.duckdb"),
        "storage.flush_interval_s": 0.5,
        "web.listen": listen,
        "targets.pids": (int(engine["pid"]),),
        # watch this demo's engine, not other engines on this host; matched by its own status
        # file's path, so discovery gives it the role a serving process of no known layout
        # has (``engine``), not ``other`` (which reads like a neighbour's child)
        "targets.cmdline_patterns": (re.escape(str(tmp / STATUS_FILE)),),
        "targets.use_nvml_processes": False,
        "collectors.engines.endpoints": (engine["metrics_url"],),
        "collectors.engines.autodiscover": False,
        "collectors.gpu.enabled": not engine["simulated"],
        "analysis.interval_s": 2.0,
        # the demo engine, the agent and py-spy share this machine's cores (often two, with other
        # work): a saturated engine then gets 55-100% of a core, while its quiet phases use
        # under 7% (CPU mode; 12% when stalled on a real GPU), so 35% tells them apart
        "analysis.cpu_busy_pct": DEMO_CPU_BUSY_PCT,
        # stacks of a second land after its py-spy recording ends, plus handover, flush and one
        # collect run (each <= 1 s): wait that long and no longer, so findings come quickly
        "analysis.lag_s": float(base.collectors.stacks.recording_s + 3),
    })


def main(listen: str, duration: float = 0.0) -> int:
    from infersight.daemon.config.listen import validate_runtime

    # reject a bad --listen before starting anything
    validate_runtime(with_overrides(Config(), **{"web.listen": listen}))
    tmp = Path(tempfile.mkdtemp(prefix="infersight-demo-"))
    try:
        return asyncio.run(_demo(tmp, listen, duration))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _demo(tmp: Path, listen: str, duration: float) -> int:
    from infersight.daemon.demo.simgpu import SimulatedGpuCollector
    from infersight.daemon.runtime import Daemon
    from infersight.storage.store import StoreError

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    daemon: Daemon | None = None

    def on_signal() -> None:
        stop.set()
        if daemon is not None:
            daemon.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    status_path = tmp / STATUS_FILE
    engine_proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "infersight.daemon.demo.engine", "--port", "0", "--phases", DEFAULT_PHASES,
        "--repeat", "--status-file", str(status_path), "--parent-pid", str(os.getpid()),
        stdin=asyncio.subprocess.DEVNULL, start_new_session=True)  # our Ctrl-C is not its Ctrl-C: we stop it
    daemon_task: asyncio.Task | None = None
    try:
        engine = await _wait_for_engine(engine_proc, status_path, stop)
        if engine is None:
            return 0 if stop.is_set() else 1
        config = demo_config(tmp, listen, engine)
        extra = [SimulatedGpuCollector(engine["sim_gpu_url"], 0.5)] if engine["simulated"] else []
        daemon = Daemon(config, extra_collectors=extra)
        daemon_task = asyncio.create_task(daemon.run())
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait({daemon_task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if daemon_task.done():
            daemon_task.result()     # it failed to start: raises
            return 0
        _announce(daemon.site_url, engine)
        phases = asyncio.create_task(_follow_phases(status_path))
        engine_exit = asyncio.create_task(engine_proc.wait())
        waits = {daemon_task, engine_exit, asyncio.create_task(stop.wait())}
        if duration and duration > 0:
            waits.add(asyncio.create_task(asyncio.sleep(duration)))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        phases.cancel()
        for task in waits - {daemon_task, engine_exit}:
            task.cancel()
        engine_died = engine_exit.done() and not stop.is_set()
        engine_exit.cancel()
        if engine_died:
            print(f"infersight demo: the demo engine exited on its own (code {engine_proc.returncode})",
                  file=sys.stderr)
        daemon.request_stop()
        code = await asyncio.wait_for(daemon_task, DAEMON_STOP_TIMEOUT_S)
        return 1 if engine_died else code
    except StoreError as exc:
        print(f"infersight demo: storage error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"infersight demo: cannot start: {exc}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print("infersight demo: the daemon did not stop in time", file=sys.stderr)
        return 1
    finally:
        if daemon_task is not None and not daemon_task.done():
            daemon.request_stop()
            try:
                await asyncio.wait_for(daemon_task, DAEMON_STOP_TIMEOUT_S)
            except (asyncio.TimeoutError, Exception):
                pass
        await _stop_engine(engine_proc)


async def _wait_for_engine(proc: asyncio.subprocess.Process, status_path: Path,
                           stop: asyncio.Event) -> dict[str, Any] | None:
    """The engine's status once it serves; None when it exited, timed out or we were stopped."""
    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    while not stop.is_set():
        if proc.returncode is not None:
            print(f"infersight demo: the demo engine exited with code {proc.returncode} before serving",
                  file=sys.stderr)
            return None
        status = _read_status(status_path)
        if status is not None:
            return status
        if time.monotonic() > deadline:
            print(f"infersight demo: the demo engine did not start within {ENGINE_START_TIMEOUT_S:.0f} s",
                  file=sys.stderr)
            return None
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass
    return None


def _read_status(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _announce(url: str | None, engine: dict[str, Any]) -> None:
    gpu = ("a SIMULATED GPU (no CUDA device here: GPU figures come from the engine's own timing)"
           if engine["simulated"] else f"{engine['device_name']} (real)")
    print(f"infersight demo: UI at {url}  - engine pid {engine['pid']} on {gpu}", flush=True)
    print("Look at the Events list: within about a minute a host-bound CPU-GPU gap appears, blamed on "
          "tokenize_slow_python; launch-bound, stall and idle periods follow. Ctrl-C stops.", flush=True)


async def _follow_phases(status_path: Path) -> None:
    """Print one line when the engine enters a phase, so the UI's timeline can be matched up."""
    seen = None
    while True:
        status = _read_status(status_path)
        if status is not None and (status.get("phase"), status.get("cycle")) != seen:
            seen = (status.get("phase"), status.get("cycle"))
            what = next((p["what"] for p in status.get("phases", []) if p["name"] == seen[0]), "")
            stamp = time.strftime("%H:%M:%S", time.localtime(status.get("phase_started", time.time())))
            print(f"[demo {stamp}] phase {seen[0]}: {what}", flush=True)
        await asyncio.sleep(1.0)


async def _stop_engine(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    try:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), ENGINE_STOP_TIMEOUT_S)
    except ProcessLookupError:
        pass
    except asyncio.TimeoutError:
        log.warning("event=demo_engine_kill pid=%s note=\"did not stop after SIGINT\"", proc.pid)
        proc.kill()
        await proc.wait()
