"""The demo engine's vLLM-style Prometheus metrics and its small HTTP server.

:class:`EngineMetrics` holds the metric families vLLM exposes (names, help texts, labels
and histogram buckets as vLLM 0.10 writes them) in a registry of its own.
:func:`serve` answers, on loopback:

- ``GET /metrics``: the Prometheus text exposition of that registry;
- ``GET /sim-gpu?since=T``: in CPU mode, the simulated GPU's finished 100 ms ticks that
  start at or after Unix time T (see :meth:`SimTimeline.ticks`) as
  ``{"simulated": true, "device": NAME, "pid": PID, "tick_s": 0.1, "started": T0,
  "ticks": [...]}``; 404 when the engine runs on a real GPU.

The server runs on one daemon thread, so the engine loop never waits for a scraper and it
needs the GIL only for a moment per request, even while a slow tokenizer holds it. One
thread and no thread per request: short-lived handler threads waiting for the GIL would
show up in the agent's stack samples as busy code of the engine.
"""
from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from infersight.daemon.demo.timeline import SimTimeline

MODEL_NAME = "demo-sim-llama-8b"
LABELS = {"model_name": MODEL_NAME, "engine": "0"}

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
               80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0)


class EngineMetrics:
    """The engine's metric children (already bound to LABELS), in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        names = list(LABELS)
        r = self.registry

        def bound(metric):
            return metric.labels(**LABELS)

        self.running = bound(Gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                                   names, registry=r))
        self.waiting = bound(Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                                   names, registry=r))
        self.kv_usage = bound(Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                                    names, registry=r))
        self.prompt_tokens = bound(Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", names,
                                           registry=r))
        self.generation_tokens = bound(Counter("vllm:generation_tokens", "Number of generation tokens processed.",
                                               names, registry=r))
        self.ttft = bound(Histogram("vllm:time_to_first_token_seconds",
                                    "Histogram of time to first token in seconds.", names, buckets=TTFT_BUCKETS,
                                    registry=r))
        self.itl = bound(Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                                   names, buckets=ITL_BUCKETS, registry=r))
        self.e2e = bound(Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                                   names, buckets=E2E_BUCKETS, registry=r))


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    timeout = 5.0   # a client that stops mid-request must not hold the only server thread

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif url.path == "/sim-gpu":
            timeline = self.server.timeline
            if timeline is None:
                self._send(404, "text/plain; charset=utf-8", b"this engine runs on a real GPU: no simulated timeline\n")
                return
            since = None
            raw = parse_qs(url.query).get("since")
            if raw:
                try:
                    since = float(raw[0])
                except ValueError:
                    self._send(400, "text/plain; charset=utf-8", b"since: expected Unix seconds\n")
                    return
            body = {"simulated": True, "device": self.server.device_name, "pid": os.getpid(),
                    "tick_s": timeline.tick_s, "started": timeline.started, "ticks": timeline.ticks(since)}
            self._send(200, "application/json", json.dumps(body).encode())
        elif url.path == "/":
            self._send(200, "text/plain; charset=utf-8", b"infersight demo engine: /metrics, /sim-gpu\n")
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        pass  # a scrape per second would flood the demo's terminal


class _Server(HTTPServer):
    def __init__(self, addr, registry: CollectorRegistry, timeline: SimTimeline | None, device_name: str) -> None:
        super().__init__(addr, _Handler)
        self.registry = registry
        self.timeline = timeline
        self.device_name = device_name


def serve(registry: CollectorRegistry, timeline: SimTimeline | None, device_name: str,
          host: str = "127.0.0.1", port: int = 0) -> HTTPServer:
    """Start the HTTP server on a daemon thread; ``server.server_address[1]`` is the bound
    port (pass 0 for a free one). Stop it with ``server.shutdown(); server.server_close()``."""
    server = _Server((host, port), registry, timeline, device_name)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics-http",
                     daemon=True).start()
    return server
