"""Decode throughput of a torch model on a GPU with and without the agent sampling it.

A target process runs a transformers Llama with random weights (no download) in bf16 and
generates without pause, printing its token count twice a second. One agent
(`infersight run --pid TARGET`, default settings: py-spy --nonblocking stacks, NVML/GPM,
psutil, engine scrape) runs in its own process group, which is switched on (SIGCONT) and
off (SIGSTOP: the daemon and its py-spy children use nothing) in adjacent periods, so slow
drift of the GPU's throughput cancels within each pair. Prints the per-pair throughput
ratio (median, min, max), the slowdown, and the agent's CPU (daemon plus py-spy children)
in % of one core while on. Needs a CUDA GPU with torch and transformers; prints why and
exits 2 otherwise.

usage: python bench/gpu_decode_overhead.py [--pairs 20] [--period 5]
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TARGET = r"""
import sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
                  num_key_value_heads=16, vocab_size=32000, max_position_embeddings=4096)
model = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
prompt = torch.randint(0, 32000, (4, 32), device="cuda")
done, last = 0, time.time()
print("ready", flush=True)
with torch.no_grad():
    while True:
        out = model.generate(prompt, max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0)
        done += (out.shape[1] - prompt.shape[1]) * out.shape[0]
        now = time.time()
        if now - last >= 0.5:
            print(f"{now} {done}", flush=True)
"""


class Target:
    """The decode loop as a subprocess; ``tokens_between(a, b)`` from its progress lines."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
        self.points: list[tuple[float, int]] = []
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("target failed to start")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            t, n = line.split()
            self.points.append((float(t), int(n)))

    def rate(self, t0: float, t1: float) -> float:
        pts = [p for p in self.points if t0 <= p[0] <= t1]
        if len(pts) < 2:
            raise RuntimeError("too few progress points; lengthen --period")
        return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])


def agent_cpu_seconds(pid: int) -> float:
    import psutil

    total = 0.0
    try:
        p = psutil.Process(pid)
        for proc in [p] + p.children(recursive=True):
            try:
                c = proc.cpu_times()
                total += c.user + c.system + c.children_user + c.children_system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=20, help="on/off periods measured")
    ap.add_argument("--period", type=float, default=5.0, help="seconds measured per period")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds after a switch before measuring")
    args = ap.parse_args()
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError("no CUDA device")
        import transformers  # noqa: F401
    except ImportError as exc:
        print(f"gpu_decode_overhead: needs torch with CUDA and transformers ({exc}); nothing measured")
        return 2
    target = Target()
    tmp = tempfile.mkdtemp(prefix="infersight-bench-")
    agent = subprocess.Popen([sys.executable, "-m", "infersight.daemon.cli", "run", "--pid", str(target.proc.pid),
                              "--db", os.path.join(tmp, "bench.duckdb"), "--listen", f"127.0.0.1:{free_port()}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(15)  # the target's first generate calls and the agent's first recordings
    ratios, cpu = [], []
    try:
        for i in range(args.pairs):
            os.killpg(agent.pid, signal.SIGCONT)
            time.sleep(args.settle)
            c0, t1 = agent_cpu_seconds(agent.pid), time.time()
            time.sleep(args.period)
            c1, t2 = agent_cpu_seconds(agent.pid), time.time()
            on = target.rate(t1, t2)
            os.killpg(agent.pid, signal.SIGSTOP)
            time.sleep(args.settle)
            t3 = time.time()
            time.sleep(args.period)
            off = target.rate(t3, time.time())
            ratios.append(on / off)
            cpu.append(100 * (c1 - c0) / (t2 - t1))
            print(f"pair {i + 1:2}: agent on {on:8.1f} tok/s, off {off:8.1f} tok/s, ratio {on / off:.4f}, "
                  f"agent CPU {cpu[-1]:.2f}% of one core", flush=True)
    finally:
        os.killpg(agent.pid, signal.SIGCONT)
        agent.send_signal(signal.SIGTERM)
        agent.wait(20)
        target.proc.kill()
    slow = sorted(100 * (1 - x) for x in ratios)
    print(f"decode throughput with the agent / without: median {statistics.median(ratios):.4f} "
          f"(min {min(ratios):.4f}, max {max(ratios):.4f}) over {len(ratios)} adjacent on/off pairs")
    print(f"slowdown: median {statistics.median(slow):.2f}% (target <= 1%), interquartile "
          f"{slow[len(slow) // 4]:.2f}..{slow[(3 * len(slow)) // 4]:.2f}%; agent CPU (daemon + py-spy) while on: "
          f"median {statistics.median(cpu):.2f}% of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
