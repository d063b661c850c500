"""Time-bucket coverage of continuous sampling: how much of a profiled target's wall time has stacks.

Profiles tests/programs/threads.py (4 threads: busy, sleeping, queue-waiting, main) for
``--seconds`` (default 120) with the default stacks settings and prints:

- bucket coverage: whole seconds from the target's discovery to the end of the run that
  have at least one sample, over the number of those seconds;
- time coverage: the wall time covered by recordings (hand-over gaps and the first attach
  count as uncovered), over the same span.

    python bench/coverage.py [--seconds 120] [--rate HZ]
"""
from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import time
from pathlib import Path


async def run(seconds: float, rate: int | None) -> None:
    from infersight.daemon.collectors.stacks import StacksCollector
    from infersight.daemon.config.load import StacksCollectorConfig, TargetsConfig

    config = StacksCollectorConfig() if rate is None else StacksCollectorConfig(rate_hz=rate)
    program = Path(__file__).resolve().parent.parent / "tests" / "programs" / "threads.py"
    target = subprocess.Popen([sys.executable, str(program), str(seconds + 30)], stdout=subprocess.PIPE)
    assert target.stdout is not None
    target.stdout.readline()
    collector = StacksCollector(config, TargetsConfig(cmdline_patterns=(), use_nvml_processes=False),
                                "bench", nvml_pids=lambda: {}, extra_pids=[target.pid])
    start = time.time()
    await collector.start()
    buckets: dict[int, int] = {}
    errors: list[str] = []
    while time.time() - start < seconds:
        await asyncio.sleep(1.0)
        batch = await collector.collect(time.time())
        errors += batch.errors
        for stat in batch.sampling_stats:
            buckets[stat.bucket] = buckets.get(stat.bucket, 0) + stat.samples
    status = collector.status()
    end = max(buckets) + 1 if buckets else math.ceil(time.time())
    span = range(math.floor(start), end)
    covered = sum(1 for b in span if buckets.get(b, 0) > 0)
    await collector.close()
    target.kill()
    target.wait()
    print(f"rate {config.rate_hz} Hz, recording {config.recording_s} s, hand-over {config.handover_s} s, "
          f"{len(span)} s profiled")
    print(f"bucket coverage: {covered}/{len(span)} = {100.0 * covered / max(1, len(span)):.2f}% "
          f"(missing: {[b - span.start for b in span if buckets.get(b, 0) == 0]})")
    for s in status:
        cov = s["coverage"]
        print(f"time coverage (PID {s['pid']}): {'n/a' if cov is None else f'{100.0 * cov:.2f}%'}; "
              f"recordings {s['recordings']}, failed {s['failed_recordings']}, samples {s['samples']}, "
              f"sampling errors {s['sampling_errors']}")
    for e in errors:
        print("error:", e)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--rate", type=int, default=None)
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.rate))


if __name__ == "__main__":
    main()
