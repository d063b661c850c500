"""The real daemon fed a synthetic load, run as a subprocess by the fault tests.

usage: python tests/fault_agent.py --db PATH [--rows N] [--interval S] [--set KEY=JSON]...

Runs ``daemon.runtime.Daemon`` with the hardware collectors off and one extra collector,
``load``, that returns every ``--interval`` seconds a batch of ``--rows`` stack samples (40
threads over a few hundred stacks, bucket = the current second) plus samples of 2 GPUs with
random values (so the data does not compress to nothing). ``--set`` overrides config keys
(``--set storage.maintenance_interval_s=1``). Logs go to stderr; ``event=started listen=URL``
says it is ready; SIGTERM stops it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys

from infersight.daemon.config.load import Config, with_overrides
from infersight.daemon.logfmt import setup_logging
from infersight.daemon.runtime import Daemon
from infersight.storage.model import Batch, Frame, GpuSample, StackSample, Target

HOST = "fault-host"
PID, START = 4242, 1_000.0


def make_stacks(n: int, depth: int = 12) -> list[tuple[Frame, ...]]:
    """``n`` distinct stacks sharing prefixes, as a serving process's stacks do."""
    rng = random.Random(7)
    stacks = []
    for i in range(n):
        base = [Frame(f"serve_{k}", f"app/layer_{k}.py", 10 + k) for k in range(depth - 3)]
        leaf = [Frame(f"work_{i % 37}", f"app/work_{i % 11}.py", rng.randint(1, 500)),
                Frame(f"step_{i % 13}", "app/step.py", 100 + i % 29),
                Frame(f"leaf_{i}", f"lib/mod_{i % 17}.py", i % 400)]
        stacks.append(tuple(base + leaf))
    return stacks


class LoadCollector:
    """Synthetic stacks and GPU samples at a chosen rate (see the module docstring)."""

    name = "load"

    def __init__(self, rows: int, interval_s: float, seed: int = 1) -> None:
        self.rows = rows
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        self.stacks = make_stacks(300)
        self.first = True

    async def collect(self, now: float) -> Batch:
        rng = self.rng
        batch = Batch(self.name, now)
        if self.first:
            batch.targets.append(Target(HOST, PID, START, "python -m fake.engine", "engine", (0, 1)))
            self.first = False
        bucket = int(now)
        for i in range(self.rows):
            batch.stack_samples.append(StackSample(bucket, PID, START, 100 + i % 40, f"t{i % 40}",
                                                   self.stacks[rng.randrange(len(self.stacks))], rng.random() < 0.5,
                                                   rng.randint(1, 20)))
        for gpu in (0, 1):
            batch.gpu_samples.append(GpuSample(now, gpu, {"util_gpu": rng.uniform(0, 100),
                                                          "sm_util": rng.uniform(0, 100),
                                                          "power_w": rng.uniform(100, 700)}, "gpm"))
        return batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    args = ap.parse_args()
    overrides = {"storage.path": args.db, "web.listen": args.listen, "agent.host": HOST,
                 "collectors.gpu.enabled": False, "collectors.stacks.enabled": False,
                 "collectors.engines.enabled": False}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    config = with_overrides(Config(), **overrides)
    setup_logging("info")
    daemon = Daemon(config, extra_collectors=[LoadCollector(args.rows, args.interval)])
    return asyncio.run(daemon.run())


if __name__ == "__main__":
    sys.exit(main())
