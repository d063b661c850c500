"""The agent's cost to a real engine: vLLM's generated tokens/s with the agent on and off.

usage (on the GPU host, vLLM serving at BASE_URL, the agent running as AGENT_PID):

    python3 bench/vllm_overhead.py --base-url http://127.0.0.1:8011 --model /tmp/m \\
        --agent-pid PID [--pairs 8] [--window-s 8] [--json OUT.json]

A steady closed-loop load (bench/real_engine/load.py, pattern ``steady``: 64 streams of 256
tokens) runs the whole time. The agent is switched off and on by stopping and continuing
its whole process tree (SIGSTOP/SIGCONT: the daemon and its py-spy children), which takes
effect at once, where a restart would cost seconds of start-up in every window. Each pair is
two adjacent windows in random order; throughput is read from vLLM's own
``vllm:generation_tokens_total`` counter at each window's ends (after a 1 s settle). Prints
per pair the on/off ratio, then the median ratio and its spread, and the agent's CPU in %
of one core during the "on" windows (psutil over the tree). Target (issue 17): ratio >= 0.99.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import signal
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent / "real_engine"))
from load import run_pattern  # noqa: E402

COUNTER = re.compile(r"^vllm:generation_tokens_total(?:\{[^}]*\})?\s+([0-9.eE+]+)", re.M)


def generated_tokens(base_url: str) -> float:
    text = urllib.request.urlopen(f"{base_url}/metrics", timeout=30).read().decode()
    return sum(float(v) for v in COUNTER.findall(text))


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def switch(pid: int, on: bool) -> None:
    sig = signal.SIGCONT if on else signal.SIGSTOP
    for p in tree(pid):
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def tree_cpu_s(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


async def measure(args: argparse.Namespace) -> dict:
    total_s = args.pairs * 2 * (args.window_s + 1.5) + 15
    load = asyncio.create_task(run_pattern(args.base_url, args.model, "steady", total_s, seed=7))
    await asyncio.sleep(8)   # the load reaches its steady state
    rng = random.Random(1)
    pairs = []
    agent_cpu = []
    try:
        for i in range(args.pairs):
            order = [True, False] if rng.random() < 0.5 else [False, True]
            rates = {}
            for on in order:
                switch(args.agent_pid, on)
                await asyncio.sleep(1.0)
                c0, w0, g0 = tree_cpu_s(args.agent_pid), time.time(), await asyncio.to_thread(generated_tokens, args.base_url)
                await asyncio.sleep(args.window_s)
                g1, w1, c1 = await asyncio.to_thread(generated_tokens, args.base_url), time.time(), tree_cpu_s(args.agent_pid)
                rates[on] = (g1 - g0) / (w1 - w0)
                if on:
                    agent_cpu.append(100 * (c1 - c0) / (w1 - w0))
            ratio = rates[True] / rates[False] if rates[False] else float("nan")
            pairs.append({"on_tok_s": round(rates[True], 1), "off_tok_s": round(rates[False], 1), "ratio": round(ratio, 4),
                          "order": "on-off" if order[0] else "off-on"})
            print(f"pair {i + 1}: on {rates[True]:8.1f} tok/s  off {rates[False]:8.1f} tok/s  ratio {ratio:.4f}", flush=True)
    finally:
        switch(args.agent_pid, True)
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)
    ratios = sorted(p["ratio"] for p in pairs)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else ratios * 3
    result = {"pairs": pairs, "median_ratio": statistics.median(ratios), "ratio_q1": q[0], "ratio_q3": q[-1],
              "agent_cpu_pct_of_core_median": statistics.median(agent_cpu) if agent_cpu else None,
              "window_s": args.window_s, "target_ratio": 0.99}
    print(f"median on/off ratio {result['median_ratio']:.4f} (IQR {q[0]:.4f}..{q[-1]:.4f}, {len(pairs)} pairs); "
          f"agent CPU {result['agent_cpu_pct_of_core_median']:.1f}% of one core (median of 'on' windows)", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--agent-pid", type=int, required=True)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--window-s", type=float, default=8.0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    result = asyncio.run(measure(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
