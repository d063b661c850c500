"""The demo's simulated inference engine: a real process with continuous batching, vLLM-style
metrics and injected pathologies, cycling through labelled phases.

Run as ``python -m infersight.daemon.demo.engine --port P --phases healthy:20,host_bound:25
--status-file F``. Every phase is a known behaviour (see PHASES):

- healthy: steady decode; the (real or simulated) GPU stays busy, bound by weight reads.
- host_bound: every arriving request goes through :func:`tokenize_slow_python`, a pure-Python
  tokenizer that holds the GIL; the GPU starves while a backlog builds.
- launch_bound: each step launches LAUNCH_BOUND_OPS tiny kernels from a Python loop
  (:meth:`Engine.sample_unfused`); kernels run, but fill few SMs.
- stall: each step synchronizes and then sleeps in :meth:`Engine.poll_io_blocking`; neither
  the GPU nor the CPU is busy while requests are in flight.
- idle: no requests.

The device is a CUDA GPU when torch sees one, else the CPU with a simulated GPU timeline
(daemon/demo_backend.py); the HTTP server (daemon/demo_metrics.py) serves ``/metrics`` and,
in CPU mode, ``/sim-gpu``. The status file (JSON, replaced atomically) says the pid, port,
URLs, backend, whether the GPU is simulated, and the current phase; it appears once the
engine serves. SIGINT or SIGTERM (or the death of ``--parent-pid``) stops it with exit 0.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# numpy's BLAS threads spin between the CPU backend's small matmuls and would make a healthy
# engine look CPU-bound; one thread is plenty (set before numpy is first imported)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from infersight.daemon.demo.backend import pick_backend  # noqa: E402 (after the BLAS setting)
from infersight.daemon.demo.metrics import EngineMetrics, serve  # noqa: E402


@dataclass(frozen=True)
class Phase:
    rate: float           # request arrivals per second (Poisson)
    prompt_words: int
    max_new: int          # tokens generated per request
    slow_tokenizer: bool
    core_mode: str        # normal, unfused, io_wait
    what: str             # one line for people watching the demo


PHASES = {
    "healthy": Phase(60, 200, 64, False, "normal", "steady decode, the GPU busy"),
    "host_bound": Phase(60, 200, 64, True, "normal", "slow pure-Python tokenizer (tokenize_slow_python) starves "
                                                   "the GPU"),
    "launch_bound": Phase(20, 20, 64, False, "unfused", "many tiny kernels launched from a Python loop "
                                                       "(Engine.sample_unfused)"),
    "stall": Phase(30, 100, 32, False, "io_wait", "the loop syncs and sleeps each step (Engine.poll_io_blocking)"),
    "idle": Phase(0, 0, 0, False, "normal", "no requests"),
}
DEFAULT_PHASES = "healthy:20,host_bound:25,launch_bound:20,stall:15,idle:10"
WORDS = "the quick brown fox jumps over the lazy dog and keeps running far away".split()
TOKENIZER_PASSES = 400       # ~40 ms per 200-word prompt on a 2020s core: 60 req/s need > 1 core
TOKENIZE_BUDGET_S = 0.2      # longest the loop tokenizes before it lets the engine step
LAUNCH_BOUND_OPS = 2000      # tiny kernels per step in launch_bound
STALL_SLEEP_S = 0.02
MAX_BATCH = 256


def tokenize_slow_python(text: str) -> list[int]:
    """A deliberately slow character-level tokenizer (holds the GIL): the host_bound culprit."""
    ids = []
    for _ in range(TOKENIZER_PASSES):
        acc = 0
        for ch in text:
            acc = (acc * 131 + ord(ch)) & 0xFFFFFFFF
        ids.append(acc)
    return ids


def tokenize_fast(text: str) -> list[str]:
    return text.split()


class Req:
    __slots__ = ("arrive", "prompt_tokens", "max_new", "done", "first", "last")

    def __init__(self, prompt_tokens: int, max_new: int, arrive: float) -> None:
        self.arrive, self.prompt_tokens, self.max_new = arrive, prompt_tokens, max_new
        self.done, self.first, self.last = 0, None, None


class Arrivals:
    """Poisson request arrivals of the current phase, tokenized as they arrive."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_at: float | None = None

    def due(self, phase: Phase, stop: "StopFlag") -> list[Req]:
        """Requests that have arrived by now (a late tokenizer works through the backlog, at
        most TOKENIZE_BUDGET_S per call so the engine still steps in between)."""
        now, out = time.time(), []
        if not phase.rate:
            self.next_at = None
            return out
        if self.next_at is None:
            self.next_at = now
        while self.next_at <= now and len(out) < 64 and not stop.set:
            text = " ".join(self.rng.choice(WORDS) for _ in range(phase.prompt_words))
            if phase.slow_tokenizer:
                tokenize_slow_python(text)
            out.append(Req(len(tokenize_fast(text)), phase.max_new, self.next_at))
            self.next_at += self.rng.expovariate(phase.rate)
            if time.time() - now > TOKENIZE_BUDGET_S:
                break
        return out


class StopFlag:
    set = False


class Engine:
    """Scheduler (continuous batching), device work and metrics of the engine."""

    def __init__(self, backend, metrics: EngineMetrics) -> None:
        self.backend = backend
        self.m = metrics
        self.waiting: collections.deque[Req] = collections.deque()
        self.running: list[Req] = []
        self.mode = "normal"

    def sample_unfused(self) -> None:
        """An unfused sampler: one tiny kernel per Python iteration (the launch_bound culprit)."""
        for _ in range(LAUNCH_BOUND_OPS):
            self.backend.tiny_op()

    def poll_io_blocking(self) -> None:
        """Waits on the device, then on I/O, every step (the stall)."""
        self.backend.synchronize()
        time.sleep(STALL_SLEEP_S)

    def step(self) -> bool:
        """One engine iteration; returns False when there was nothing to do."""
        new = []
        while self.waiting and len(self.running) + len(new) < MAX_BATCH:
            new.append(self.waiting.popleft())
        if new:
            tokens = sum(r.prompt_tokens for r in new)
            self.backend.prefill(tokens)
            self.m.prompt_tokens.inc(tokens)
            self.running.extend(new)
        if not self.running:
            self.m.running.set(0)
            self.m.waiting.set(len(self.waiting))
            return False
        self.backend.decode_step(len(self.running))
        if self.mode == "unfused":
            self.sample_unfused()
        if self.mode == "io_wait":
            self.poll_io_blocking()
        self.backend.synchronize()
        self._account(time.time())
        return True

    def _account(self, t: float) -> None:
        finished = []
        for r in self.running:
            r.done += 1
            if r.first is None:
                r.first = t
                self.m.ttft.observe(t - r.arrive)
            else:
                self.m.itl.observe(t - r.last)
            r.last = t
            if r.done >= r.max_new:
                finished.append(r)
        self.m.generation_tokens.inc(len(self.running))
        for r in finished:
            self.m.e2e.observe(t - r.arrive)
        if finished:
            done = set(map(id, finished))
            self.running = [r for r in self.running if id(r) not in done]
        self.m.running.set(len(self.running))
        self.m.waiting.set(len(self.waiting))
        self.m.kv_usage.set(min(1.0, sum(r.prompt_tokens + r.done for r in self.running) / 400000))


def parse_phases(text: str) -> list[tuple[str, float]]:
    """``"healthy:20,idle:5"`` -> [("healthy", 20.0), ("idle", 5.0)]; ValueError naming the problem."""
    out = []
    for item in text.split(","):
        name, sep, secs = item.strip().partition(":")
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r} (known: {', '.join(PHASES)})")
        try:
            seconds = float(secs) if sep else float("nan")
        except ValueError:
            seconds = float("nan")
        if not seconds > 0:
            raise ValueError(f"phase {name}: expected NAME:SECONDS with SECONDS > 0, got {item.strip()!r}")
        out.append((name, seconds))
    if not out:
        raise ValueError("no phases")
    return out


def write_status(path: Path, status: dict) -> None:
    """Replace the status file atomically (readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, path)


def allow_any_tracer() -> None:
    """Let a profiler that is not our ancestor attach (Yama ptrace_scope=1): the agent's
    py-spy is our sibling. Linux only; elsewhere, or when refused, nothing changes."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(0x59616D61, ctypes.c_ulong(-1 & 0xFFFFFFFFFFFFFFFF), 0, 0, 0)  # PR_SET_PTRACER, _ANY
    except (OSError, AttributeError):
        pass


def run(args: argparse.Namespace) -> int:
    plan = parse_phases(args.phases)
    stop = StopFlag()

    def on_signal(signum, frame):
        stop.set = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    allow_any_tracer()
    rng = random.Random(args.seed)
    backend = pick_backend(args.device, args.seed)
    metrics = EngineMetrics()
    engine = Engine(backend, metrics)
    backend.prefill(64)  # warm-up (CUDA kernels, allocator) before anyone looks
    backend.decode_step(8)
    backend.synchronize()
    server = serve(metrics.registry, backend.timeline if backend.simulated else None, backend.device_name,
                   port=args.port)
    port = server.server_address[1]
    base = f"http://127.0.0.1:{port}"
    status = {"pid": os.getpid(), "port": port, "metrics_url": f"{base}/metrics",
              "sim_gpu_url": f"{base}/sim-gpu" if backend.simulated else None, "backend": backend.kind,
              "simulated": backend.simulated, "device_name": backend.device_name,
              "phases": [{"name": n, "seconds": s, "what": PHASES[n].what} for n, s in plan], "repeat": args.repeat}
    status_path = Path(args.status_file) if args.status_file else None
    arrivals = Arrivals(rng)
    cycle = 0
    try:
        while not stop.set:
            for name, seconds in plan:
                phase, t0 = PHASES[name], time.time()
                engine.mode = phase.core_mode
                if status_path:
                    write_status(status_path, {**status, "phase": name, "phase_started": t0,
                                               "phase_ends": t0 + seconds, "cycle": cycle})
                while time.time() - t0 < seconds and not stop.set:
                    if args.parent_pid and os.getppid() != args.parent_pid:
                        stop.set = True  # whoever started us is gone: do not linger
                        break
                    engine.waiting.extend(arrivals.due(phase, stop))
                    if not engine.step():
                        time.sleep(0.005)
                if stop.set:
                    break
            cycle += 1
            if not args.repeat:
                break
    finally:
        server.shutdown()
        server.server_close()
        if status_path:
            status_path.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infersight.daemon.demo.engine", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="loopback port of /metrics and /sim-gpu (0: a free one)")
    ap.add_argument("--phases", default=DEFAULT_PHASES, help="comma list NAME:SECONDS (default %(default)s)")
    ap.add_argument("--repeat", action="store_true", help="cycle through the phases until stopped")
    ap.add_argument("--status-file", help="JSON status file, written once serving and at every phase change")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--parent-pid", type=int, default=0, help="exit when this process is no longer our parent")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        parse_phases(args.phases)
    except ValueError as exc:
        ap.error(f"--phases: {exc}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
