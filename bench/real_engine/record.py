"""Records a real serving engine (vLLM) under labelled load, in the replay layout.

usage (on a GPU host with py-spy, psutil, nvidia-ml-py, aiohttp):

    python3 bench/real_engine/record.py --out /tmp/rec/NAME --model /tmp/m --port 8011 \\
        --serve "source /tmp/site/vllm-env.sh && exec vllm serve /tmp/m --load-format dummy --port 8011" \\
        --phases start,idle:10,prefill:20,heavy_decode:20,neighbor:20,restart,idle:10 \\
        --pyspy /tmp/pyspy/bin/py-spy [--after "bash overhead.sh"]

Everything starts BEFORE the engine, so its start-up is in the recording. While the phases
run, threads record (all wall-clock Unix seconds):

- ``gpu.jsonl``: NVML and GPM every 0.1 s (the fields of shared/fixtures/h100-scenario),
  each watched process's CPU, the NVML compute processes and their GPU memory;
- ``stacks/PID.raw.jsonl.gz``: for every serving process (API server, engine core, workers)
  a ``py-spy record --nonblocking --threads --format raw --duration 1`` launched every
  second, one JSON line per window (py-spy's raw output verbatim, its sample/error counts);
- ``engine_metrics.jsonl.gz``: the engine's /metrics once a second, never overlapping, with
  a long deadline so that a slow-but-alive API server still yields a sample; each line has
  the scrape's start ``t`` and its ``latency_s``;
- ``processes.json``: every process of the engine's tree and the neighbour, with its role
  as the recorder knows it (ground truth by construction: it started them), command line,
  parent, start and last-seen times;
- ``labels.jsonl``: one line per phase ``{"phase", "t0", "t1", "load": {...}}``.

With ``--workload CMD`` there is no server: CMD execs one program (role ``engine``) that
writes its own labels to ``$LABELS``, and the recording lasts until it exits.

Phases: ``start`` (launch the engine, wait for /health: label ``starting``), ``restart``
(SIGINT, wait for exit: ``shutdown``; then ``starting``), ``KIND:SECONDS`` for the load
patterns of load.py and ``idle:SECONDS``; a kind starting with ``neighbor`` also runs
neighbor.py's GEMMs.

With ``--api-server-count N`` vLLM's launcher process (the command line ``vllm serve`` ran)
only supervises ``VLLM::APIServer_i`` children after start-up; it keeps the role
``api_server``, the role live discovery gives its command line. ``gpu.jsonl``
also carries ``gpu_proc_sm`` (NVML's per-process SM share, %, where the driver gives one) and
each scrape line ``server_conns`` (established TCP connections to the serving port: the
clients the front end holds, counted from the host's socket table).
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import run_pattern  # noqa: E402

HERE = Path(__file__).resolve().parent


ROOT_ROLE = ["api_server"]       # "engine" for --workload: one process that does everything


def role_of(cmdline: str, is_root: bool) -> str:
    """The role the recorder gives a process of the engine's tree (it launched them)."""
    if "resource_tracker" in cmdline:
        return "helper"
    if cmdline.startswith("VLLM::EngineCore") or "EngineCore" in cmdline.split(" ")[0]:
        return "engine_core"
    if cmdline.startswith("VLLM::APIServer"):      # --api-server-count N: one process per server
        return "api_server"
    if re.match(r"^(VLLM::)?(VllmWorker|Worker)", cmdline):
        return "worker"
    if is_root:
        return ROOT_ROLE[0]
    return "helper"


class Recorder:
    def __init__(self, out: Path, pyspy: str, rate: int, metrics_url: str, port: int = 0):
        self.out = out
        self.pyspy = pyspy
        self.rate = rate
        self.metrics_url = metrics_url
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.procs: dict[int, dict] = {}          # pid -> record
        self.roots: list[int] = []                # engine launcher pids (one per start)
        self.neighbor_pid: int | None = None
        self.sampling: set[int] = set()
        self.threads: list[threading.Thread] = []
        (out / "stacks").mkdir(parents=True, exist_ok=True)
        (out / "tmp").mkdir(exist_ok=True)

    # -- processes ------------------------------------------------------------------------
    def watch(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            seen = []
            for root in list(self.roots):
                try:
                    p = psutil.Process(root)
                    seen.append((p, True))
                    seen += [(c, False) for c in p.children(recursive=True)]
                except psutil.Error:
                    pass
            if self.neighbor_pid:
                try:
                    seen.append((psutil.Process(self.neighbor_pid), False))
                except psutil.Error:
                    pass
            for p, is_root in seen:
                try:
                    cmd = " ".join(p.cmdline())
                    ppid, created = p.ppid(), p.create_time()
                except psutil.Error:
                    continue
                with self.lock:
                    rec = self.procs.get(p.pid)
                    if rec is None:
                        role = "other_gpu_process" if p.pid == self.neighbor_pid else role_of(cmd, is_root)
                        rec = self.procs[p.pid] = {"pid": p.pid, "role": role, "cmdline": cmd, "ppid": ppid,
                                                   "create_time": created, "first_seen": now, "last_seen": now}
                    rec["last_seen"] = now
                    if rec["cmdline"] != cmd and cmd:
                        # exec and setproctitle rename processes after start: keep the final title
                        rec["cmdline"] = cmd
                        if rec["role"] != "other_gpu_process":
                            rec["role"] = role_of(cmd, p.pid in self.roots)
                    if rec["role"] in ("api_server", "engine_core", "worker", "engine") and p.pid not in self.sampling:
                        self.sampling.add(p.pid)
                        t = threading.Thread(target=self.sample_windows, args=(p.pid,), daemon=True)
                        t.start()
                        self.threads.append(t)
            self.stop.wait(0.25)

    def sample_windows(self, pid: int) -> None:
        """One 1 s py-spy window launched every second while ``pid`` lives."""
        tmp = self.out / "tmp" / str(pid)
        tmp.mkdir(exist_ok=True)
        pending: list[tuple[int, float, subprocess.Popen]] = []
        seq = 0
        path = self.out / "stacks" / f"{pid}.raw.jsonl.gz"
        with gzip.open(path, "wt", compresslevel=9) as fh:
            next_launch = time.time()
            while True:
                alive = psutil.pid_exists(pid) and not self.stop.is_set()
                if alive and time.time() >= next_launch:
                    launch = time.time()
                    proc = subprocess.Popen(
                        [self.pyspy, "record", "--pid", str(pid), "--rate", str(self.rate), "--nonblocking",
                         "--threads", "--format", "raw", "--duration", "1", "-o", str(tmp / f"{seq}.txt")],
                        stdout=open(tmp / f"{seq}.log", "wb"), stderr=subprocess.STDOUT)
                    with self.lock:
                        self.procs[pid].setdefault("pyspy_launch_wall", launch)
                    pending.append((seq, launch, proc))
                    seq += 1
                    next_launch += 1.0
                    if next_launch < time.time():
                        next_launch = time.time() + 1.0
                still = []
                for s, launch, proc in pending:
                    if proc.poll() is None:
                        if time.time() - launch > 10:
                            proc.kill()
                        still.append((s, launch, proc))
                        continue
                    log = (tmp / f"{s}.log").read_text(errors="replace")
                    m = re.search(r"Samples: (\d+) Errors: (\d+)", log)
                    raw_path = tmp / f"{s}.txt"
                    raw = raw_path.read_text(errors="replace") if raw_path.exists() else None
                    fh.write(json.dumps({"launch_wall": launch, "duration_s": 1, "rate_hz": self.rate,
                                         "samples": int(m.group(1)) if m else None,
                                         "errors": int(m.group(2)) if m else None, "raw": raw}) + "\n")
                    for f in (raw_path, tmp / f"{s}.log"):
                        f.unlink(missing_ok=True)
                pending = still
                if not alive and not pending:
                    break
                time.sleep(0.02)
        with self.lock:
            self.procs[pid]["stacks_windows"] = f"stacks/{pid}.raw.jsonl.gz"

    # -- GPU ------------------------------------------------------------------------------
    def sample_gpu(self, interval: float = 0.1) -> None:
        import pynvml as n
        out = open(self.out / "gpu.jsonl", "w")
        n.nvmlInit()
        h = n.nvmlDeviceGetHandleByIndex(0)
        gpm = bool(n.nvmlGpmQueryDeviceSupport(h).isSupportedDevice)
        ids = {"sm_util": n.NVML_GPM_METRIC_SM_UTIL, "sm_occupancy": n.NVML_GPM_METRIC_SM_OCCUPANCY,
               "tensor_util": n.NVML_GPM_METRIC_ANY_TENSOR_UTIL, "dram_bw_util": n.NVML_GPM_METRIC_DRAM_BW_UTIL,
               "graphics_util": n.NVML_GPM_METRIC_GRAPHICS_UTIL, "pcie_tx_mib_s": n.NVML_GPM_METRIC_PCIE_TX_PER_SEC,
               "pcie_rx_mib_s": n.NVML_GPM_METRIC_PCIE_RX_PER_SEC}
        info = {"gpu": n.nvmlDeviceGetName(h), "uuid": n.nvmlDeviceGetUUID(h), "driver": n.nvmlSystemGetDriverVersion(),
                "mem_bus_width_bits": n.nvmlDeviceGetMemoryBusWidth(h),
                "max_mem_clock_mhz": n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_MEM),
                "power_limit_w": n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000, "gpm_supported": gpm,
                "interval_s": interval, "memory_total_mib": n.nvmlDeviceGetMemoryInfo(h).total // 2**20}
        out.write(json.dumps({"info": info}) + "\n")
        s_old, s_new = n.nvmlGpmSampleAlloc(), n.nvmlGpmSampleAlloc()
        n.nvmlGpmSampleGet(h, s_old)
        cpu_old: dict[int, tuple[float, float]] = {}
        proc_ts = 0
        handles: dict[int, psutil.Process] = {}
        while not self.stop.is_set():
            time.sleep(interval)
            t0 = time.perf_counter()
            rec: dict = {"t": time.time()}
            u = n.nvmlDeviceGetUtilizationRates(h)
            rec["util_gpu"], rec["util_mem"] = u.gpu, u.memory
            fv = n.nvmlDeviceGetFieldValues(h, [n.NVML_FI_DEV_POWER_INSTANT])
            rec["power_w"] = fv[0].value.uiVal / 1000 if fv[0].nvmlReturn == 0 else None
            rec["sm_clock_mhz"] = n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)
            rec["mem_used_mib"] = n.nvmlDeviceGetMemoryInfo(h).used // 2**20
            rec["clocks_event_reasons"] = n.nvmlDeviceGetCurrentClocksEventReasons(h)
            n.nvmlGpmSampleGet(h, s_new)
            g = n.c_nvmlGpmMetricsGet_t()
            g.version = n.NVML_GPM_METRICS_GET_VERSION
            g.numMetrics = len(ids)
            g.sample1, g.sample2 = s_old, s_new
            for i, mid in enumerate(ids.values()):
                g.metrics[i].metricId = mid
            n.nvmlGpmMetricsGet(g)
            for i, k in enumerate(ids):
                rec[k] = round(g.metrics[i].value, 3) if g.metrics[i].nvmlReturn == 0 else None
            s_old, s_new = s_new, s_old
            now = time.time()
            cpu = {}
            with self.lock:
                pids = [p for p, r in self.procs.items() if r["role"] != "helper"]
            for pid in pids:
                try:
                    pr = handles.setdefault(pid, psutil.Process(pid))
                    c = sum(pr.cpu_times()[:2])
                    if pid in cpu_old:
                        c0, w0 = cpu_old[pid]
                        cpu[str(pid)] = round(100 * (c - c0) / max(now - w0, 1e-3), 1)
                    cpu_old[pid] = (c, now)
                except psutil.Error:
                    handles.pop(pid, None)
            rec["proc_cpu_pct"] = cpu
            procs = n.nvmlDeviceGetComputeRunningProcesses(h)
            rec["gpu_pids"] = [p.pid for p in procs]
            rec["gpu_proc_mem_mib"] = {str(p.pid): (p.usedGpuMemory or 0) // 2**20 for p in procs}
            proc_sm, proc_ts = self._process_sm(n, h, proc_ts)
            if proc_sm:
                rec["gpu_proc_sm"] = proc_sm
            rec["sample_cost_ms"] = round((time.perf_counter() - t0) * 1000, 2)
            out.write(json.dumps(rec) + "\n")
        out.close()

    @staticmethod
    def _process_sm(n, h, since_us: int) -> tuple[dict[str, float], int]:
        """NVML's per-process SM share since ``since_us`` (its CPU timestamp, µs): pid -> the
        largest sample, and the newest timestamp; ({}, since_us) when the driver has none."""
        try:
            samples = n.nvmlDeviceGetProcessUtilization(h, since_us)
        except n.NVMLError:
            return {}, since_us
        out: dict[str, float] = {}
        for smp in samples:
            out[str(smp.pid)] = max(out.get(str(smp.pid), 0.0), float(smp.smUtil))
            since_us = max(since_us, int(smp.timeStamp))
        return out, since_us

    def server_conns(self) -> int | None:
        """Established TCP connections whose local port is the serving port (None: unreadable)."""
        try:
            return sum(1 for c in psutil.net_connections(kind="tcp")
                       if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port)
        except (psutil.Error, OSError):
            return None

    # -- engine metrics -------------------------------------------------------------------
    def scrape(self, deadline_s: float = 15.0) -> None:
        with gzip.open(self.out / "engine_metrics.jsonl.gz", "wt", compresslevel=9) as fh:
            while not self.stop.is_set():
                t = time.time()
                try:
                    body = urllib.request.urlopen(self.metrics_url, timeout=deadline_s).read().decode()
                    fh.write(json.dumps({"t": t, "latency_s": round(time.time() - t, 4), "text": body,
                                         "server_conns": self.server_conns()}) + "\n")
                except Exception as exc:  # a refused connection during start-up is a record too
                    fh.write(json.dumps({"t": t, "latency_s": round(time.time() - t, 4), "error": repr(exc)[:300]}) + "\n")
                self.stop.wait(max(0.0, 1.0 - (time.time() - t)))

    def start_threads(self, scrape: bool = True) -> None:
        for target in (self.watch, self.sample_gpu, *((self.scrape,) if scrape else ())):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self) -> None:
        self.stop.set()
        for t in list(self.threads):
            t.join(timeout=30)
        with self.lock:
            procs = sorted(self.procs.values(), key=lambda r: r["first_seen"])
        (self.out / "processes.json").write_text(json.dumps({"processes": procs}, indent=1))
        for d in (self.out / "tmp").glob("*"):
            for f in d.glob("*"):
                f.unlink()
            d.rmdir()
        (self.out / "tmp").rmdir()


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=timeout).status == 200
    except Exception:
        return False


def launch_neighbour(out: Path, flag: Path, stop_flag: Path) -> int:
    """Start neighbor.py outside the recorder's process tree (a shell that exits at once leaves
    it to init), as a real neighbour is: another tenant, not a child of anything the agent
    watches. Returns its pid once its CUDA context is ready."""
    ready = out / "neighbor.ready"
    ready.unlink(missing_ok=True)
    cmd = (f"{sys.executable} {HERE / 'neighbor.py'} {flag} {stop_flag} > {ready} "
           f"2> {out / 'neighbor.log'} < /dev/null & echo $!")
    pid = int(subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True).stdout.split()[-1])
    deadline = time.time() + 120
    while time.time() < deadline and not (ready.exists() and ready.read_text().strip()):
        time.sleep(0.2)
    return pid


def wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and psutil.pid_exists(pid):
        time.sleep(0.2)


class Engine:
    """The engine under test, launched in its own session so it can be stopped as a group."""

    def __init__(self, serve: str, base_url: str, log: Path):
        self.serve, self.base_url, self.log = serve, base_url, log
        self.proc: subprocess.Popen | None = None

    def launch(self) -> int:
        self.proc = subprocess.Popen(["bash", "-c", self.serve], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc.pid

    async def wait_healthy(self, limit_s: float = 420.0) -> None:
        t0 = time.time()
        while not await asyncio.to_thread(http_ok, f"{self.base_url}/health"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode} before /health answered; see {self.log}")
            if time.time() - t0 > limit_s:
                raise RuntimeError(f"engine not healthy after {limit_s} s")
            await asyncio.sleep(0.5)

    async def stop(self, grace_s: float = 40.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        t0 = time.time()
        while self.proc.poll() is None and time.time() - t0 < grace_s:
            await asyncio.sleep(0.2)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        # the group may still hold children that outlived the leader
        await asyncio.sleep(1.0)


async def run_workload(args: argparse.Namespace) -> None:
    """A workload that labels its own phases (hf_workload.py): launch it, record until it exits."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ROOT_ROLE[0] = "engine"
    rec = Recorder(out, args.pyspy, args.rate, "")
    rec.start_threads(scrape=False)
    await asyncio.sleep(2.0)
    (out / "labels.jsonl").write_text("")
    proc = subprocess.Popen(["bash", "-c", args.workload], env=dict(os.environ, LABELS=str(out / "labels.jsonl")),
                            stdout=open(out / "engine.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    rec.roots.append(proc.pid)
    try:
        while proc.poll() is None:
            await asyncio.sleep(0.5)
        print(f"workload exited with {proc.returncode}", flush=True)
        await asyncio.sleep(1.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        rec.finish()


async def run(args: argparse.Namespace) -> None:
    if args.workload:
        return await run_workload(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{args.port}"
    rec = Recorder(out, args.pyspy, args.rate, f"{base}/metrics", args.port)
    serve = os.environ[args.serve[1:]] if args.serve.startswith("@") else args.serve
    engine = Engine(serve, base, out / "engine.log")
    labels = open(out / "labels.jsonl", "w")
    flag, stop_flag = out / "neighbor.go", out / "neighbor.stop"
    neighbor = None

    def label(phase: str, t0: float, **extra) -> None:
        labels.write(json.dumps({"phase": phase, "t0": t0, "t1": time.time(), **extra}) + "\n")
        labels.flush()
        print(f"{time.strftime('%H:%M:%S')} {phase} {time.time() - t0:.1f}s {extra}", flush=True)

    rec.start_threads()
    await asyncio.sleep(2.0)        # the recorders' first samples precede the engine
    try:
        for n, item in enumerate(args.phases.split(",")):
            kind, _, secs = item.partition(":")
            if kind in ("start", "restart"):
                if kind == "restart":
                    t0 = time.time()
                    await engine.stop()
                    label("shutdown", t0)
                t0 = time.time()
                rec.roots.append(engine.launch())
                await engine.wait_healthy()
                label("starting", t0)
                if neighbor is None and "neighbor" in args.phases:
                    neighbor = launch_neighbour(out, flag, stop_flag)
                    rec.neighbor_pid = neighbor
                continue
            seconds = float(secs)
            t0 = time.time()
            if kind == "idle":
                await asyncio.sleep(seconds)
                label("idle", t0)
                continue
            if kind.startswith("neighbor"):
                flag.touch()
            counts = await run_pattern(base, args.model, kind, seconds, seed=n)
            if kind.startswith("neighbor"):
                flag.unlink()
            label(kind, t0, load=counts.as_dict())
    finally:
        stop_flag.touch()
        rec.finish()
        labels.close()
        if args.after:
            print(f"{time.strftime('%H:%M:%S')} after: {args.after}", flush=True)
            env = dict(os.environ, BASE_URL=base, MODEL=args.model)
            subprocess.run(["bash", "-c", args.after], env=env)
        await engine.stop()
        if neighbor is not None:
            wait_gone(neighbor, 30.0)
        flag.unlink(missing_ok=True)
        stop_flag.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="", help="the model name the server serves (its path)")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--serve", default="", help="bash command that execs the server (becomes the API server); "
                    "@NAME reads it from the environment variable NAME, keeping it out of the recorder's own command "
                    "line (where live discovery would take the recorder for an engine)")
    ap.add_argument("--phases", default="")
    ap.add_argument("--workload", default="", help="instead of --serve/--phases: a bash command that execs a "
                    "program labelling its own phases into $LABELS (hf_workload.py); recorded until it exits")
    ap.add_argument("--pyspy", default="py-spy")
    ap.add_argument("--rate", type=int, default=50)
    ap.add_argument("--after", default="", help="bash command run after the recording, while the engine still serves")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
