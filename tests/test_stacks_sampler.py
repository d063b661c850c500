"""The stacks collector with real py-spy on real Python programs (tests/programs/)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

from infersight.daemon.collectors.stacks import StacksCollector
from infersight.daemon.config.load import StacksCollectorConfig, TargetsConfig
from infersight.daemon.stacks.pyspy import find_pyspy
from infersight.storage.model import Batch, StackSample

PROGRAMS = Path(__file__).parent / "programs"
PYSPY = find_pyspy()


@pytest.fixture(autouse=True)
def _pyspy_installed(pyspy: str) -> None:
    """Every test here drives the real py-spy: missing, they fail (conftest's ``pyspy``)."""


def make_collector(pids=(), patterns=(), pyspy_path: str = "", **stacks) -> StacksCollector:
    config = StacksCollectorConfig(**{"rate_hz": 20, "recording_s": 2, "cpu_budget_percent": 0.0,
                                      "pyspy_path": pyspy_path, **stacks})
    targets = TargetsConfig(cmdline_patterns=tuple(patterns), use_nvml_processes=False, discovery_interval_s=0.5)
    return StacksCollector(config, targets, "test-host", nvml_pids=lambda: {}, extra_pids=pids)


async def run_until(collector: StacksCollector, done: Callable[[list[Batch]], bool], limit_s: float = 40.0,
                    ) -> tuple[list[Batch], dict[int, dict]]:
    """Collect every half second until ``done(batches)`` (or the limit: the test then fails on
    its asserts); returns the batches and the status per PID just before the collector closed."""
    batches: list[Batch] = []
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline and not done(batches):
            await asyncio.sleep(0.5)
            batches.append(await collector.collect(time.time()))
        status = {s["pid"]: s for s in collector.status()}
    finally:
        await collector.close()
    return batches, status


def samples_of(batches: list[Batch], pid: int | None = None) -> list[StackSample]:
    return [s for b in batches for s in b.stack_samples if pid is None or s.pid == pid]


def buckets_with_samples(batches: list[Batch], pid: int) -> set[int]:
    return {st.bucket for b in batches for st in b.sampling_stats if st.pid == pid and st.samples > 0}


async def test_multithreaded_program_threads_states_and_gapless_seconds(spawn) -> None:
    proc = spawn([str(PROGRAMS / "threads.py"), "40"])
    ids = json.loads(proc.first_line)["threads"]
    collector = make_collector(pids=[proc.pid])
    batches, status = await run_until(collector, lambda bs: len(buckets_with_samples(bs, proc.pid)) >= 9)
    samples = samples_of(batches, proc.pid)
    assert {s.thread_name for s in samples} >= {"busy-1", "schläfer", "queue-waiter", "MainThread"}
    for s in samples:                       # thread ids are the OS ids the program itself sees
        assert ids[s.thread_name] == s.tid
    by_thread: dict[str, Counter] = {}
    for s in samples:
        by_thread.setdefault(s.thread_name, Counter())[s.active] += s.count
    share = {name: c[True] / (c[True] + c[False]) for name, c in by_thread.items()}
    # The busy thread runs whenever it gets a CPU (less on a loaded machine); the others wait.
    # On a loaded 2-core machine py-spy has found waiting threads active together in about one
    # sample in nine (a CI run: MainThread and the sleeper both 0.109 in a 40 s sleep).
    assert share["busy-1"] > 0.3, share
    assert share["queue-waiter"] < 0.2 and share["schläfer"] < 0.2 and share["MainThread"] < 0.2, share
    waits = Counter(s.frames[-1].function for s in samples if s.thread_name == "queue-waiter" and not s.active)
    assert waits.most_common(1)[0][0] == "Condition.wait"
    assert any(f.function == "rechnen_über" for s in samples if s.thread_name == "busy-1" for f in s.frames)
    # Hand-overs every 2 s leave no hole and count no second twice: every second between the
    # first and last complete ones has about 4 threads x 20 samples (a second counted twice
    # would have about 160).
    per_bucket = {st.bucket: st.samples for b in batches for st in b.sampling_stats if st.pid == proc.pid}
    inner = sorted(per_bucket)[1:-1]
    assert inner == list(range(inner[0], inner[-1] + 1))
    assert all(20 <= per_bucket[b] <= 130 for b in inner), per_bucket
    reported = [t for b in batches for t in b.targets if t.pid == proc.pid]
    assert reported and reported[0].role == "other" and reported[0].exited_at is None
    assert reported[0] in collector.targets()
    mine = status[proc.pid]
    assert mine["recordings"] >= 3 and mine["failed_recordings"] == 0 and mine["coverage"] > 0.75


async def test_deep_recursion_and_special_function_names(spawn) -> None:
    deep = spawn([str(PROGRAMS / "recursion.py"), "30", "300"])
    names = spawn([str(PROGRAMS / "names.py"), "30"])
    collector = make_collector(pids=[deep.pid, names.pid])
    batches, status = await run_until(collector, lambda bs: all(len(buckets_with_samples(bs, p)) >= 3
                                                        for p in (deep.pid, names.pid)))
    # recursion.py never imports threading, so py-spy knows no name for its one thread.
    deep_stacks = [s.frames for s in samples_of(batches, deep.pid) if s.tid == deep.pid]
    assert max(sum(f.function == "descend" for f in frames) for frames in deep_stacks) == 301
    assert all(frames[0].function == "<module>" for frames in deep_stacks)
    # Python 3.11+ reports qualified names: the generator is "<lambda>.<locals>.<genexpr>".
    name_stacks = [[f.function.rsplit(".", 1)[-1] for f in s.frames] for s in samples_of(batches, names.pid)]
    chain = ["<module>", "計算", "<lambda>", "<genexpr>"]
    assert any(fs[:4] == chain for fs in name_stacks), name_stacks[:3]
    frame = next(f for s in samples_of(batches, names.pid) for f in s.frames if f.function == "計算")
    assert frame.file.endswith("names.py") and frame.line > 0


async def test_wall_clock_alignment(spawn) -> None:
    proc = spawn([str(PROGRAMS / "phases.py"), "40"])
    collector = make_collector(pids=[proc.pid])
    batches, status = await run_until(collector, lambda bs: len(buckets_with_samples(bs, proc.pid)) >= 8)
    right = wrong = 0
    for s in samples_of(batches, proc.pid):
        phase = next((f.function for f in s.frames if f.function in ("even_second", "odd_second")), None)
        if phase is None:
            continue
        if (phase == "even_second") == (s.bucket % 2 == 0):
            right += s.count
        else:
            wrong += s.count
    # Only the moments around each second's turn may fall on the wrong side (py-spy sees a
    # change at its next sample, 1/20 s later on average; the agent corrects for the mean).
    assert right > 100 and wrong / (right + wrong) < 0.12


async def test_program_that_exits_mid_recording_is_closed_out(spawn) -> None:
    proc = spawn([str(PROGRAMS / "threads.py"), "3"])
    collector = make_collector(pids=[proc.pid], recording_s=10)

    def closed(bs: list[Batch]) -> bool:
        return any(t.pid == proc.pid and t.exited_at for b in bs for t in b.targets) and \
            not any(s["pid"] == proc.pid for s in collector.status())

    # The program stays a zombie (nobody waits for it here): a zombie counts as exited.
    batches, status = await run_until(collector, closed)
    assert closed(batches) and proc.pid not in status              # closed out: no state left
    # The recording that was running when it exited was written by py-spy and harvested.
    assert len(buckets_with_samples(batches, proc.pid)) >= 2
    assert not [e for b in batches for e in b.errors if str(proc.pid) in e]


async def test_restarted_engine_is_picked_up_with_a_new_identity(spawn) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    first = spawn([str(PROGRAMS / "threads.py"), "60", tag])
    collector = make_collector(patterns=[tag])
    seen: dict[str, object] = {}

    def progress(bs: list[Batch]) -> bool:
        if "second" not in seen and buckets_with_samples(bs, first.pid):
            first.kill()
            first.wait()
            seen["second"] = spawn([str(PROGRAMS / "threads.py"), "60", tag])
        second = seen.get("second")
        return second is not None and bool(buckets_with_samples(bs, second.pid)) and any(
            t.pid == first.pid and t.exited_at for b in bs for t in b.targets)

    batches, status = await run_until(collector, progress)
    second = seen["second"]
    assert buckets_with_samples(batches, second.pid)   # type: ignore[union-attr]
    starts = {t.pid: t.start_time for b in batches for t in b.targets}
    assert first.pid in starts and second.pid in starts   # type: ignore[union-attr]
    assert any(t.pid == first.pid and t.exited_at for b in batches for t in b.targets)


async def test_non_python_process_is_a_clear_error(spawn) -> None:
    proc = spawn(["sleep", "60"], python=False)
    collector = make_collector(pids=[proc.pid])
    batches, status = await run_until(collector, lambda bs: any(str(proc.pid) in e for b in bs for e in b.errors), 30)
    errors = [e for b in batches for e in b.errors if str(proc.pid) in e]
    assert errors and "not a Python process" in errors[0]
    assert status[proc.pid]["last_error_kind"] == "not_python" and status[proc.pid]["state"] == "backoff"
    assert not samples_of(batches, proc.pid)


async def test_permission_denied_names_the_capability(spawn, tmp_path: Path, require_in_ci) -> None:
    require_in_ci(os.geteuid() == 0 and shutil.which("setpriv") is not None,
                  "needs root and setpriv to run py-spy without CAP_SYS_PTRACE")
    # A root process without CAP_SYS_PTRACE cannot read a process that holds more
    # capabilities than it does: the same refusal an agent under a hardened unit gets.
    wrapper = tmp_path / "py-spy-without-ptrace"
    wrapper.write_text(f'#!/bin/sh\nexec setpriv --inh-caps=-all --bounding-set=-sys_ptrace {PYSPY} "$@"\n')
    wrapper.chmod(0o755)
    proc = spawn([str(PROGRAMS / "idle.py"), "60"])
    collector = make_collector(pids=[proc.pid], pyspy_path=str(wrapper))
    batches, status = await run_until(collector, lambda bs: any(str(proc.pid) in e for b in bs for e in b.errors), 30)
    errors = [e for b in batches for e in b.errors if str(proc.pid) in e]
    assert errors and "permission denied" in errors[0] and "CAP_SYS_PTRACE" in errors[0]
    assert "ptrace_scope" in errors[0]
    assert status[proc.pid]["last_error_kind"] == "permission"
    assert not samples_of(batches, proc.pid)


async def test_missing_pyspy_is_reported_and_targets_still_listed(spawn) -> None:
    proc = spawn([str(PROGRAMS / "idle.py"), "60"])
    collector = make_collector(pids=[proc.pid], pyspy_path="/nonexistent/py-spy")
    batches, status = await run_until(collector, lambda bs: any(t.pid == proc.pid for b in bs for t in b.targets), 10)
    assert any("py-spy not found" in e for b in batches for e in b.errors)
    assert any(t.pid == proc.pid for b in batches for t in b.targets)
