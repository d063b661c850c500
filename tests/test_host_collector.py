"""The psutil host collector on real child processes: CPU %, RSS, threads; vanished and reused
pids become Batch errors, never exceptions."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import psutil
import pytest

from infersight.daemon.collectors.host import HostCollector
from infersight.daemon.config.load import HostCollectorConfig
from infersight.daemon.runner import Runner
from infersight.daemon.stacks.targets import explicit_targets
from infersight.storage.model import Batch, Target

# Two threads burn CPU, 64 MiB stay resident, and the process says when it is ready.
BUSY = """
import sys, threading
blob = bytearray(64 << 20)
for i in range(0, len(blob), 4096):
    blob[i] = 1
def spin():
    x = 0
    while True:
        x += 1
for _ in range(2):
    threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def busy_child():
    proc = subprocess.Popen([sys.executable, "-c", BUSY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait(10)
    proc.stdin.close()
    proc.stdout.close()


def target_of(pid: int) -> Target:
    p = psutil.Process(pid)
    return Target("testhost", pid, p.create_time(), " ".join(p.cmdline()))


def collector(targets) -> HostCollector:
    return HostCollector(HostCollectorConfig(), "testhost", lambda: list(targets))


async def test_samples_a_real_process(busy_child):
    target = target_of(busy_child.pid)
    c = collector([target])
    first = await c.collect(1000.0)
    assert isinstance(first, Batch) and first.errors == []
    (host,) = first.host_samples
    assert host.cpu_count == psutil.cpu_count() and 0 < host.mem_used_bytes < host.mem_total_bytes
    assert 0.0 <= host.cpu_percent <= 100.0
    (s,) = first.process_samples
    assert (s.pid, s.start_time) == (target.pid, target.start_time)
    assert s.rss_bytes >= 64 << 20
    assert s.threads >= 3  # main + two spinners
    assert first.targets == [target]
    # second look: CPU % from the CPU-time delta since the first; two busy threads use far
    # more than a tenth of one core whenever the machine lets them run at all
    percents = []
    for i in range(40):
        batch = await c.collect(1001.0 + i)
        percents.append(batch.process_samples[0].cpu_percent)
        if percents[-1] > 10:
            break
        await asyncio.sleep(0.25)
    assert max(percents) > 10, percents
    later = batch.process_samples[0]
    assert later.ctx_voluntary >= s.ctx_voluntary and later.ctx_involuntary >= s.ctx_involuntary


async def test_a_vanished_pid_is_a_batch_error(busy_child):
    target = target_of(busy_child.pid)
    c = collector([target])
    await c.collect(1.0)
    busy_child.kill()
    busy_child.wait(10)
    batch = await c.collect(2.0)
    assert batch.errors == [f"pid {target.pid}: process exited"]
    assert batch.process_samples == [] and batch.targets == []
    assert len(batch.host_samples) == 1  # the host is still sampled


async def test_a_reused_pid_is_not_mistaken_for_the_target(busy_child):
    real = target_of(busy_child.pid)
    impostor = Target("testhost", real.pid, real.start_time - 3600, real.cmdline)  # same pid, older process
    batch = await collector([impostor]).collect(1.0)
    assert batch.errors == [f"pid {real.pid}: process exited"] and batch.process_samples == []


async def test_through_the_runner_an_exited_target_is_an_item_error_not_a_failure():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    runner = Runner([collector([Target("testhost", gone.pid, 0.0, "python -c pass")])], lambda b: True)
    batch = await runner.run_once("host")
    st = runner.status["host"]
    assert batch is not None and st.ok is True and st.failures == 0
    assert st.errors_reported == 1 and st.last_item_errors == [f"pid {gone.pid}: process exited"]


def test_explicit_targets_resolve_live_pids_and_skip_missing(busy_child):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    targets = explicit_targets((busy_child.pid, gone.pid), "testhost")
    assert [t.pid for t in targets] == [busy_child.pid]
    (t,) = targets
    assert t.role == "explicit" and t.start_time == psutil.Process(busy_child.pid).create_time()
    assert "threading" in t.cmdline
