"""Overhead of continuous stack sampling on the profiled process, and the agent's own CPU.

Two targets, each a real Python process doing pure-Python work in frames 20 deep (serving
frameworks' stacks are 15-40 deep, and py-spy's cost grows with depth and thread count):

- ``cpu``: one thread, CPU-bound;
- ``threads``: 20 threads doing the same work (they contend for the GIL, so most of them
  wait at any moment, as in a server's thread pool).

Wall-clock time of one run varies by tens of percent on shared or virtual machines, far
more than the effect measured, so each target runs as two identical twins time-sharing one
core, each counting the work it completes. A round has two periods, one without the agent and
one with the agent sampling one twin (which one alternates by round, and so does the order
of the two periods). The slowdown of a round is the sampled twin's work rate relative to
its twin in the unsampled period divided by the same ratio in the sampled period, so load
changes that hit both twins cancel. At least 5 rounds per target (``--rounds``).

The agent is the real StacksCollector in its own process with default settings (or
``--rate``, the highest rate; the CPU budget still applies); it is given time to settle
(two recordings, so its rate has adapted to the target) before a sampled period starts.
Its CPU, daemon plus py-spy children, is counted over the sampled period, including the
py-spy runs live at either end. Printed per target: the slowdown ratio (median, min, max;
1.0 is no slowdown; also per CPU second of the target, which removes time the VM took the
CPU away) and the agent's CPU in % of one core.

With 2 or more CPUs both twins share the last core (so both see the same core speed) and
the agent runs on the others.

    python bench/overhead.py [--rounds 5] [--period 10] [--rate HZ]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import os
import resource
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

DEPTH = 20
CHUNK = 2000                      # loop iterations per unit of work, about 0.1 ms of Python
THREADS = 20
SLOTS = THREADS                   # one 8-byte work counter per thread in the shared file


def _leaf(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def _deep(depth: int, n: int) -> int:
    return _leaf(n) if depth == 0 else _deep(depth - 1, n)


def run_target(kind: str, counter_path: str) -> None:
    """Work forever, adding each finished unit to this thread's counter in ``counter_path``."""
    with open(counter_path, "r+b") as fh:
        counters = mmap.mmap(fh.fileno(), 8 * SLOTS)

    def work(slot: int) -> None:
        done = 0
        while True:
            _deep(DEPTH, CHUNK)
            done += 1
            struct.pack_into("Q", counters, 8 * slot, done)

    print("ready", flush=True)
    if kind == "cpu":
        work(0)
    threads = [threading.Thread(target=work, args=(i,), name=f"worker-{i}", daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Twin:
    """One target process and its work counter."""

    def __init__(self, kind: str, cpu: int | None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="infersight-bench-")
        os.write(fd, bytes(8 * SLOTS))
        os.close(fd)
        with open(self.path, "r+b") as fh:
            self.counters = mmap.mmap(fh.fileno(), 8 * SLOTS)
        pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--as-target", kind, self.path],
                                     stdout=subprocess.PIPE, text=True, preexec_fn=pin)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def work(self) -> int:
        return sum(struct.unpack_from(f"{SLOTS}Q", self.counters))

    def cpu(self) -> float:
        from infersight.daemon.stacks.budget import process_cpu_seconds

        return process_cpu_seconds(self.proc.pid) or 0.0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.unlink(self.path)


def _cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _agent_cpu_now() -> tuple[float, float]:
    """(daemon CPU seconds, py-spy CPU seconds: finished children plus the live ones so far)."""
    import psutil

    live = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            live += t.user + t.system
        except psutil.Error:
            continue
    return (_cpu_seconds(resource.getrusage(resource.RUSAGE_SELF)),
            _cpu_seconds(resource.getrusage(resource.RUSAGE_CHILDREN)) + live)


async def run_agent(pid: int, rate: int | None) -> None:
    """The agent for one target: prints "attached", then measures between "go" and "stop" lines."""
    from infersight.daemon.collectors.stacks import StacksCollector
    from infersight.daemon.config.load import StacksCollectorConfig, TargetsConfig

    config = StacksCollectorConfig() if rate is None else StacksCollectorConfig(rate_hz=rate)
    collector = StacksCollector(config, TargetsConfig(cmdline_patterns=(), use_nvml_processes=False),
                                "bench", nvml_pids=lambda: {}, extra_pids=[pid])
    await collector.start()
    # Steady state: the short first recording and one full one are over, so the rate has
    # been adapted to this target (see daemon/pyspy_budget.py).
    while not any(s["recordings"] >= 2 for s in collector.status()):
        await asyncio.sleep(0.1)
        await collector.collect(time.time())
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()
    loop.add_reader(sys.stdin.fileno(), lambda: lines.put_nowait(sys.stdin.readline().strip()))

    async def collect_every_second() -> None:
        while True:
            await asyncio.sleep(1.0)
            await collector.collect(time.time())

    collecting = asyncio.create_task(collect_every_second())
    print("attached", flush=True)
    assert await lines.get() == "go"
    (own0, spy0), t0 = _agent_cpu_now(), time.time()
    assert await lines.get() == "stop"
    t1 = time.time()
    collecting.cancel()
    status = collector.status()
    await collector.close()
    # Everything is reaped now, so RUSAGE_CHILDREN holds all py-spy CPU; stopping the live
    # recording is charged too, which errs on the high side.
    own1, spy1 = _agent_cpu_now()
    print(json.dumps({"daemon_s": own1 - own0, "pyspy_s": spy1 - spy0, "wall_s": t1 - t0,
                      "rate_hz": status[0]["rate_hz"] if status else None,
                      "errors": [s["last_error"] for s in status if s.get("last_error")]}), flush=True)


def _period(twins: list[Twin], seconds: float) -> tuple[list[float], list[float]]:
    """Each twin's work per wall second and per CPU second over ``seconds``."""
    before, cpu0, t0 = [t.work() for t in twins], [t.cpu() for t in twins], time.perf_counter()
    time.sleep(seconds)
    after, cpu1, t1 = [t.work() for t in twins], [t.cpu() for t in twins], time.perf_counter()
    done = [a - b for a, b in zip(after, before)]
    return [d / (t1 - t0) for d in done], [d / max(1e-9, c1 - c0) for d, c0, c1 in zip(done, cpu0, cpu1)]


def _sampled_period(twins: list[Twin], which: int, seconds: float, rate: int | None,
                    agent_cpus: set[int] | None) -> tuple[tuple[list[float], list[float]], dict]:
    args = [sys.executable, os.path.abspath(__file__), "--as-agent", str(twins[which].proc.pid)]
    if rate is not None:
        args += ["--rate", str(rate)]
    agent = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             preexec_fn=(lambda: os.sched_setaffinity(0, agent_cpus)) if agent_cpus else None)
    assert agent.stdin is not None and agent.stdout is not None
    assert agent.stdout.readline().strip() == "attached"
    agent.stdin.write("go\n")
    agent.stdin.flush()
    rates = _period(twins, seconds)
    agent.stdin.write("stop\n")
    agent.stdin.flush()
    report = json.loads(agent.stdout.readline())
    agent.wait()
    return rates, report


def bench(kind: str, rounds: int, seconds: float, rate: int | None) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2
    # Both twins share one core: on virtual machines a core's speed drifts by tens of
    # percent from one period to the next, and twins on two cores would see different
    # drifts; time-slicing one core gives both the same.
    twins = [Twin(kind, cpus[-1] if pin else None), Twin(kind, cpus[-1] if pin else None)]
    agent_cpus = (set(cpus) - {cpus[-1]}) if pin else None
    ratios, per_cpu, agent, rates = [], [], [], []
    try:
        time.sleep(1.0)         # let both twins settle
        for i in range(rounds):
            which = i % 2
            if i % 2 == 0:
                base = _period(twins, seconds)
                sampled, report = _sampled_period(twins, which, seconds, rate, agent_cpus)
            else:
                sampled, report = _sampled_period(twins, which, seconds, rate, agent_cpus)
                base = _period(twins, seconds)
            other = 1 - which
            slowdown = (base[0][which] / base[0][other]) / (sampled[0][which] / sampled[0][other])
            cpu_slowdown = (base[1][which] / base[1][other]) / (sampled[1][which] / sampled[1][other])
            cpu = 100.0 * (report["daemon_s"] + report["pyspy_s"]) / report["wall_s"]
            ratios.append(slowdown)
            per_cpu.append(cpu_slowdown)
            agent.append(cpu)
            rates.append(report["rate_hz"])
            print(f"  {kind} round {i + 1}: twin {which} sampled at {report['rate_hz']} Hz; slowdown {slowdown:.4f} "
                  f"(per CPU second {cpu_slowdown:.4f}); agent {cpu:.2f}% of a core (daemon "
                  f"{100.0 * report['daemon_s'] / report['wall_s']:.2f}%, py-spy "
                  f"{100.0 * report['pyspy_s'] / report['wall_s']:.2f}%)"
                  + (f"; errors: {report['errors']}" if report["errors"] else ""), flush=True)
    finally:
        for t in twins:
            t.stop()
    print(f"{kind}: slowdown ratio median {statistics.median(ratios):.4f} min {min(ratios):.4f} "
          f"max {max(ratios):.4f} (work per CPU second: median {statistics.median(per_cpu):.4f}); agent CPU "
          f"median {statistics.median(agent):.2f}% of one core (min {min(agent):.2f}, max {max(agent):.2f}) "
          f"at {sorted(set(rates))} Hz", flush=True)


def main() -> None:
    from infersight.daemon.config.load import StacksCollectorConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per target (5 or more)")
    parser.add_argument("--period", type=float, default=10.0, help="seconds of each measured period")
    parser.add_argument("--rate", type=int, default=None, help="sampling rate (default: the config default)")
    parser.add_argument("--targets", default="cpu,threads")
    parser.add_argument("--as-target", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--as-agent", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_target:
        run_target(*args.as_target)
        return
    if args.as_agent:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        asyncio.run(run_agent(args.as_agent, args.rate))
        return
    defaults = StacksCollectorConfig()
    rate = args.rate or defaults.rate_hz
    print(f"rate {rate} Hz ({'default' if args.rate is None else 'set'}), recording {defaults.recording_s} s, "
          f"{args.rounds} rounds of 2 x {args.period:.0f} s, stacks {DEPTH} frames deep, "
          f"{len(os.sched_getaffinity(0))} CPUs", flush=True)
    for kind in args.targets.split(","):
        bench(kind, args.rounds, args.period, args.rate)


if __name__ == "__main__":
    main()
