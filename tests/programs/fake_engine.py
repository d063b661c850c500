"""A CPU-only stand-in for an inference engine, for the live end-to-end analysis test.

It alternates two known behaviours and writes the current one to STATUS_FILE:
- "gpu": the engine waits for its (simulated) GPU: it sleeps, the GPU is busy;
- "host": a slow pure-Python tokenizer (``slow_tokenizer_for_test``) holds the CPU and the
  simulated GPU idles.
It serves vLLM-style gauges and counters on PORT so the daemon sees requests in flight.

usage: fake_engine.py PORT STATUS_FILE GPU_SECONDS HOST_SECONDS
"""
import sys
import time

from prometheus_client import Counter, Gauge, start_http_server

port, status_file = int(sys.argv[1]), sys.argv[2]
gpu_s, host_s = float(sys.argv[3]), float(sys.argv[4])
labels = {"model_name": "fake-model"}
RUNNING = Gauge("vllm:num_requests_running", "running", list(labels))
WAITING = Gauge("vllm:num_requests_waiting", "waiting", list(labels))
TOKENS = Counter("vllm:generation_tokens", "generated", list(labels))
start_http_server(port, addr="127.0.0.1")
RUNNING.labels(**labels).set(8)
WAITING.labels(**labels).set(4)


def write_status(phase):
    with open(status_file + ".tmp", "w") as fh:
        fh.write(phase)
    import os
    os.replace(status_file + ".tmp", status_file)


def wait_for_gpu(seconds):
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.01)
        TOKENS.labels(**labels).inc(40)


def slow_tokenizer_for_test(seconds):
    end, acc = time.time() + seconds, 0
    while time.time() < end:
        for ch in "the quick brown fox jumps over the lazy dog" * 20:
            acc = (acc * 131 + ord(ch)) & 0xFFFFFFFF
    return acc


while True:
    write_status("gpu")
    wait_for_gpu(gpu_s)
    write_status("host")
    slow_tokenizer_for_test(host_s)
