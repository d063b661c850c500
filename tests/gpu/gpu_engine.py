"""A serving-like GPU process for tests/gpu/test_live_neighbour.py (run as a subprocess):
steady DRAM-bound work on one GPU and vLLM-style /metrics with a steady token flow.

usage: gpu_engine.py [--device 0] [--duty 0.7] [--period-ms 40] [--buffer-mib 512]
                     [--tokens-per-s 2000] [--running 8] [--seconds 900]

GPU work: device-to-device copies of a ``--buffer-mib`` buffer (DRAM-bound, no tensor-core
work: DESIGN.md measured a device copy at tensor 0.0), launched in bursts sized at start so
that, alone on the GPU, a burst keeps it busy ``--duty`` of each ``--period-ms`` period; the
process sleeps for the rest. With another process on the GPU each burst takes longer (the GPU
time-slices between contexts) and the sleep shrinks, while the token flow stays what it was:
``vllm:generation_tokens_total`` reads ``--tokens-per-s`` x the seconds since ready at each
scrape (so every scrape interval reads the same rate), ``vllm:num_requests_running`` reads
``--running``, ``vllm:num_requests_waiting`` 0.

Prints one JSON line ``{"event": "ready", "pid", "port", "device", "burst_copies",
"burst_ms", "allocated_bytes"}`` (port on 127.0.0.1, chosen free) once the GPU loop runs and
the metrics answer. Exits after ``--seconds``, on SIGTERM/SIGINT, or when its parent dies.
CUDA device numbers follow the PCI bus order, like NVML's indices.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import threading
import time

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Metrics:
    """The engine's counters as a scrape reads them, in the Prometheus text format vLLM's
    prometheus_client writes (written here so the program needs no prometheus_client of a
    particular version on the GPU host)."""

    def __init__(self, tokens_per_s: float, running: float) -> None:
        self.tokens_per_s = tokens_per_s
        self.running = running
        self.t0: float | None = None       # token flow starts when the GPU loop does

    def text(self) -> str:
        flowing = 0.0 if self.t0 is None else time.time() - self.t0
        label = '{model_name="gpu-engine"}'
        return (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{label} {self.running if self.t0 is not None else 0.0}\n"
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{label} 0.0\n"
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            f"vllm:generation_tokens_total{label} {self.tokens_per_s * flowing:.3f}\n")


def serve_metrics(metrics: Metrics) -> ThreadingHTTPServer:
    """/metrics on 127.0.0.1 at a free port, answered from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics.text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:   # the test reads stdout as JSON lines
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--duty", type=float, default=0.7)
    p.add_argument("--period-ms", type=float, default=40.0)
    p.add_argument("--buffer-mib", type=int, default=512)
    p.add_argument("--tokens-per-s", type=float, default=2000.0)
    p.add_argument("--running", type=float, default=8.0)
    p.add_argument("--seconds", type=float, default=900.0)
    args = p.parse_args()
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG: never outlive the test
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    import torch

    dev = torch.device("cuda", args.device)
    src = torch.ones(args.buffer_mib * 2 ** 20, device=dev, dtype=torch.uint8)
    dst = torch.empty_like(src)
    for _ in range(5):          # load the kernel before timing it
        dst.copy_(src)
    torch.cuda.synchronize(dev)
    trial = 50
    started = time.perf_counter()
    for _ in range(trial):
        dst.copy_(src)
    torch.cuda.synchronize(dev)
    per_copy_s = (time.perf_counter() - started) / trial
    period_s = args.period_ms / 1000.0
    burst = max(1, round(args.duty * period_s / per_copy_s))

    metrics = Metrics(args.tokens_per_s, args.running)
    server = serve_metrics(metrics)
    metrics.t0 = time.time()
    print(json.dumps({"event": "ready", "pid": os.getpid(), "port": server.server_port, "device": args.device,
                      "burst_copies": burst, "burst_ms": round(1000 * burst * per_copy_s, 2),
                      "allocated_bytes": torch.cuda.memory_allocated(dev)}), flush=True)
    end = time.monotonic() + args.seconds
    while not stop.is_set() and time.monotonic() < end:
        t0 = time.monotonic()
        for _ in range(burst):
            dst.copy_(src)
        torch.cuda.synchronize(dev)
        # sleep out the period: alone on the GPU that is (1 - duty) of it; shared, the burst
        # itself runs longer and the sleep shrinks, down to none
        stop.wait(max(0.0, period_s - (time.monotonic() - t0)))
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
