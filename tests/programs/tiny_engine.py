"""A stand-in for an engine's API server: vLLM-style metrics on a port, optionally an
"engine core" child process, and any extra arguments as its command line (flags to redact,
tags to match).

usage: tiny_engine.py PORT TOKENS_PER_SCRAPE RUNNING CORE [ARGS...]

PORT 0 picks a free port. Every scrape of /metrics adds TOKENS_PER_SCRAPE to
``vllm:generation_tokens_total`` (so a scraper whose clock advances 1 s per scrape reads
exactly that many tokens/s, whatever the wall time between scrapes);
``vllm:num_requests_running`` reads RUNNING. With CORE = 1 it starts a child whose command
line reads like vLLM's engine core (``idle.py 600 VLLM::EngineCore``). Prints one JSON line
``{"port": P, "core": PID or null}`` once it serves.
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

port, per_scrape, running, core = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"


class Engine:
    def __init__(self) -> None:
        self.tokens = 0.0
        self.lock = threading.Lock()

    def collect(self):
        with self.lock:
            self.tokens += per_scrape
            tokens = self.tokens
        gen = CounterMetricFamily("vllm:generation_tokens", "generated tokens", labels=["model_name"])
        gen.add_metric(["tiny"], tokens)
        run = GaugeMetricFamily("vllm:num_requests_running", "running requests", labels=["model_name"])
        run.add_metric(["tiny"], running)
        wait = GaugeMetricFamily("vllm:num_requests_waiting", "waiting requests", labels=["model_name"])
        wait.add_metric(["tiny"], 0.0)
        return [gen, run, wait]


registry = CollectorRegistry()
registry.register(Engine())
server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
child = None
if core:
    idle = os.path.join(os.path.dirname(os.path.abspath(__file__)), "idle.py")
    # the child dies with this process, however it ends (PR_SET_PDEATHSIG)
    child = subprocess.Popen([sys.executable, idle, "600", "VLLM::EngineCore"], stdout=subprocess.PIPE,
                             preexec_fn=lambda: ctypes.CDLL(None).prctl(1, signal.SIGKILL))
    child.stdout.readline()
print(json.dumps({"port": server.server_port, "core": child.pid if child else None}), flush=True)
try:
    threading.Event().wait()
finally:
    if child is not None:
        child.kill()
