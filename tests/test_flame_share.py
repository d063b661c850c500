"""A flame graph of a known program, sampled by the real collector and read back from the store,
shows its hot function with the expected share (70% +- 10%)."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infersight.daemon.collectors.stacks import StacksCollector
from infersight.daemon.config.load import StacksCollectorConfig, TargetsConfig
from infersight.storage import render, stacks

PROGRAM = Path(__file__).parent / "programs" / "hotcold.py"


def _find(node: dict, name: str) -> list[dict]:
    found = [node] if node["name"] == name else []
    for child in node["children"]:
        found += _find(child, name)
    return found


def test_hot_function_share_in_the_stored_flame_graph(store, pyspy):
    proc = subprocess.Popen([sys.executable, str(PROGRAM)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        config = StacksCollectorConfig(rate_hz=50, recording_s=2, cpu_budget_percent=0.0)
        targets = TargetsConfig(cmdline_patterns=(), use_nvml_processes=False, discovery_interval_s=0.5)
        collector = StacksCollector(config, targets, "test-host", nvml_pids=lambda: {}, extra_pids=(proc.pid,))
        samples = asyncio.run(_collect(collector, store, seconds=12))
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert samples >= 200
    prof = store.read_sync(stacks.profile, 0, time.time() + 60, stacks.ProfileFilter(pids=(proc.pid,), active=True))
    tree = render.flame_tree(prof)
    hot = sum(n["value"] for n in _find(tree, "hot_function"))
    cold = sum(n["value"] for n in _find(tree, "cold_function"))
    print(f"hot {hot / tree['value']:.3f} cold {cold / tree['value']:.3f} of {tree['value']} samples")
    assert hot + cold >= 0.8 * tree["value"], tree
    assert hot / tree["value"] == pytest.approx(0.7, abs=0.1)
    assert cold / tree["value"] == pytest.approx(0.3, abs=0.1)


async def _collect(collector: StacksCollector, store, seconds: float) -> int:
    total = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            batch = await collector.collect(time.time())
            total += sum(s.count for s in batch.stack_samples if s.active)
            store.submit(batch)
    finally:
        await collector.close()
        batch = await collector.collect(time.time())
        total += sum(s.count for s in batch.stack_samples if s.active)
        store.submit(batch)
    store.flush()
    return total
