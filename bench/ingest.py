"""Ingest rate of the store on one core: stack samples per second through the batched writer.

usage: python bench/ingest.py [--seconds 600] [--runs 3] [--json PATH]

The process pins itself to one CPU before DuckDB starts its threads, so the writer thread,
DuckDB's own threads and the producer share one core. The batches are made first (not
timed): ``--seconds`` simulated seconds of the stacks collector at the default settings
(bench/_workload.py: 8 processes x 20 threads at ``collectors.stacks.rate_hz``, stacks from the
real recording). Timed: ``Store.submit`` of every batch, one ``flush`` per 60 simulated
seconds (so the queue never overflows), and the final flush: interning (frames, stack
prefix tree, threads) and the bulk appends, on a fresh store each run; the median run is
shown.

Two units: stack rows (one StackSample record: a thread, a stack, a second and a count; what
the writer handles one by one) and py-spy samples (the counts those rows carry: every thread
sampled ``rate_hz`` times a second). The target applies to rows, the stricter of the two.
The recording's stacks are shallow (4-6 frames); a second set adds 30 frames under the root,
as deep as a real serving stack (vLLM workers show 30-60), because interning costs per frame.
"""
from __future__ import annotations

import os

# one core for everything, DuckDB's threads included: set before duckdb is imported
_CPU = min(os.sched_getaffinity(0))
os.sched_setaffinity(0, {_CPU})

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from _report import Figure, machine, print_table, save_json  # noqa: E402
from _workload import Workload  # noqa: E402

from infersight.daemon.config.load import Config  # noqa: E402
from infersight.storage.store import Store  # noqa: E402

TARGET_ROWS_S = 100_000.0
CHUNK_S = 60


def one_run(workload: Workload, batches, folder: str, index: int) -> tuple[float, int, int]:
    """(seconds, rows, samples) of writing ``batches`` into a fresh store."""
    path = os.path.join(folder, f"ingest-{index}.duckdb")
    store = Store.open(path, host="bench-host")
    try:
        for b in workload.first_batches(batches[0].t):
            store.submit(b)
        store.flush()
        rows = sum(len(b.stack_samples) for b in batches)
        samples = sum(s.count for b in batches for s in b.stack_samples)
        started = time.perf_counter()
        for i in range(0, len(batches), CHUNK_S):
            for b in batches[i:i + CHUNK_S]:
                if not store.submit(b):
                    raise RuntimeError("the writer queue overflowed: the measurement would hide dropped rows")
            store.flush()
        elapsed = time.perf_counter() - started
        dropped = store.stats().batches_dropped
        if dropped:
            raise RuntimeError(f"{dropped} batches dropped")
    finally:
        store.close()
    for suffix in ("", ".wal"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return elapsed, rows, samples


def measure(label: str, workload: Workload, seconds: int, runs: int, folder: str) -> tuple[float, float, float]:
    """Median (rows/s, samples/s) over ``runs`` and the mean frames per stack."""
    base = 1_700_000_000
    batches = [workload.stack_batch(base + s) for s in range(seconds)]
    depth = statistics.fmean(len(s.frames) for b in batches for s in b.stack_samples)
    results = []
    for i in range(runs):
        elapsed, rows, samples = one_run(workload, batches, folder, i)
        results.append((rows / elapsed, samples / elapsed))
        print(f"  {label}: run {i + 1}: {rows:,} rows ({samples:,} samples) in {elapsed:.2f} s = "
              f"{rows / elapsed:,.0f} rows/s, {samples / elapsed:,.0f} samples/s")
    rows_s = statistics.median(r for r, _ in results)
    samples_s = statistics.median(s for _, s in results)
    return rows_s, samples_s, depth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=600, help="simulated seconds of stacks per run (default 600)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    config = Config()
    print(f"machine: {machine()}; pinned to CPU {_CPU} (affinity {sorted(os.sched_getaffinity(0))})")
    figures: list[Figure] = []
    extra: dict = {"machine": machine(), "cpu": _CPU}
    with tempfile.TemporaryDirectory(prefix="infersight-ingest-") as folder:
        for label, depth in (("recording's stacks", 0), ("stacks +30 frames", 30)):
            workload = Workload(config, extra_depth=depth)
            rows_s, samples_s, mean_depth = measure(label, workload, args.seconds, args.runs, folder)
            need = len(workload.stack_batch(1_700_000_000).stack_samples)
            extra[label] = {"rows_s": rows_s, "samples_s": samples_s, "mean_frames": mean_depth,
                            "default_load_rows_s": need}
            figures.append(Figure(f"ingest, stack rows/s, one core ({label}, {mean_depth:.1f} frames)", rows_s,
                                  "rows/s", TARGET_ROWS_S, "at_least",
                                  note=f"the default load ({workload.processes} x {workload.threads} threads at "
                                       f"{workload.rate_hz} Hz) makes {need} rows/s: {rows_s / need:,.0f}x headroom"))
            figures.append(Figure(f"ingest, py-spy samples/s, one core ({label})", samples_s, "samples/s",
                                  TARGET_ROWS_S, "at_least"))
    print()
    print_table(figures, f"ingest on {machine()}")
    save_json(args.json, "ingest", figures, extra)


if __name__ == "__main__":
    main()
