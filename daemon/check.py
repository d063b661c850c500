"""``infersight check``: one line per capability, with the fix when it fails.

Statuses: ``ok``, ``warn`` (the agent runs with less: no GPU, no ptrace) and ``fail`` (the
agent cannot run: storage or port). Exit 0 when nothing failed.

The whole command has a deadline (``DEADLINE_S``): every check runs on a thread of its own,
at once, and a check that has not answered by then is reported as such (``fail`` for storage
and the port, which the agent needs; ``warn`` for the rest). An engine endpoint gets
``collectors.engines.timeout_s`` for its whole answer, not per read: one that trickles a
byte a second no longer holds the command.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from infersight.daemon.config.load import Config

DEADLINE_S = 30.0                # the whole command, every check included
_MAX_BODY = 1 << 20              # bytes of an endpoint's answer read at most


@dataclass
class CheckResult:
    name: str
    status: str      # ok, warn, fail
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status.upper():4}  {self.name:<22} {self.detail}"
        return text + (f"\n      fix: {self.fix}" if self.fix and self.status != "ok" else "")


def check_storage(path: str) -> CheckResult:
    folder = Path(path).resolve().parent
    probe_dir = folder
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".infersight-check-"):
            pass
    except OSError as exc:
        return CheckResult("storage", "fail", f"{folder} is not writable ({exc.strerror})",
                           f"make {folder} writable for this user, or set storage.path / --db")
    free = shutil.disk_usage(probe_dir).free
    status = "ok" if free > 512 * 2**20 else "warn"
    return CheckResult("storage", status, f"{path} (folder writable, {free / 2**30:.1f} GiB free)",
                       "free disk space or lower storage.max_size_mb")


def check_port(listen: str) -> CheckResult:
    from infersight.daemon.config.listen import split_listen

    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            return CheckResult("web port", "fail", f"{listen} cannot be bound ({exc.strerror})",
                               "stop what listens there, or set web.listen / --listen to another port")
    return CheckResult("web port", "ok", f"{listen} is free")


def check_ptrace() -> CheckResult:
    scope_path = Path("/proc/sys/kernel/yama/ptrace_scope")
    scope = scope_path.read_text().strip() if scope_path.exists() else None
    cap = _has_cap_sys_ptrace()
    if os.geteuid() == 0 and cap:
        return CheckResult("ptrace", "ok", f"root with CAP_SYS_PTRACE (ptrace_scope={scope or 'n/a'})")
    if cap and scope != "3":
        return CheckResult("ptrace", "ok", f"CAP_SYS_PTRACE held (ptrace_scope={scope or 'n/a'})")
    if scope in (None, "0"):
        return CheckResult("ptrace", "warn", "no CAP_SYS_PTRACE: only processes of this user can be sampled",
                           "run as the service user with AmbientCapabilities=CAP_SYS_PTRACE (systemd unit), "
                           "or as the engine's user")
    return CheckResult("ptrace", "warn", f"kernel.yama.ptrace_scope={scope} and no CAP_SYS_PTRACE: py-spy cannot "
                       "attach to other processes",
                       "grant CAP_SYS_PTRACE (the shipped unit does), or `sysctl kernel.yama.ptrace_scope=0`")


def _has_cap_sys_ptrace() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 19))
    except OSError:
        pass
    return False


def find_pyspy(configured: str = "") -> str | None:
    """The py-spy binary: configured path, next to this Python (the wheel's), then PATH."""
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def check_pyspy(configured: str) -> CheckResult:
    path = find_pyspy(configured)
    if path is None:
        return CheckResult("py-spy", "warn", "not found: stacks will not be sampled",
                           "pip install py-spy in the agent's environment, or set collectors.stacks.pyspy_path")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        version = out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CheckResult("py-spy", "warn", f"{path} does not run ({exc})", "reinstall py-spy")
    return CheckResult("py-spy", "ok", f"{version} at {path}")


def check_nvml() -> list[CheckResult]:
    try:
        import pynvml
    except ImportError:
        return [CheckResult("NVML", "warn", "nvidia-ml-py is not installed", "pip install nvidia-ml-py")]
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [CheckResult("NVML", "warn", f"not loadable ({exc}): no GPU data on this host",
                            "install the NVIDIA driver; in containers use the NVIDIA container toolkit"),
                CheckResult("GPM", "warn", "not checked (no NVML)")]
    try:
        count = pynvml.nvmlDeviceGetCount()
        driver = pynvml.nvmlSystemGetDriverVersion()
        results = [CheckResult("NVML", "ok", f"driver {driver}, {count} GPU(s)")]
        supported = []
        for i in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            try:
                ok = bool(pynvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice)
            except (pynvml.NVMLError, AttributeError):
                ok = False
            supported.append(ok)
        if count and all(supported):
            results.append(CheckResult("GPM", "ok", f"supported on all {count} GPU(s)"))
        else:
            results.append(CheckResult("GPM", "warn", f"supported on {sum(supported)} of {count} GPU(s): "
                                       "bottleneck classes come from NVML only there",
                                       "run dcgm-exporter with profiling fields and set collectors.gpu.dcgm_url"))
        return results
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def check_targets(config: Config) -> CheckResult:
    """The processes the patterns find now, and those refused for their owner."""
    from infersight.daemon.stacks.discovery import Discovery

    discovery = Discovery(config.targets, config.host, nvml=None)
    found = [f for f in discovery.scan_detailed() if "pattern" in f.reasons]
    if discovery.refused:
        shown = "; ".join(f"pid {pid} ({owner})" for pid, owner in sorted(discovery.refused.items())[:5])
        return CheckResult("targets", "warn", f"{len(found)} matching process(es) allowed, {len(discovery.refused)} "
                           f"refused for their owner: {shown}",
                           "if they are your engines, add their user to targets.allowed_users (or their unit or "
                           "cgroup to targets.allowed_units / allowed_cgroups)")
    return CheckResult("targets", "ok", f"{len(found)} process(es) match targets.cmdline_patterns"
                       + ("" if found else " now (engines are found when they start)"))


def check_endpoint(url: str, timeout: float) -> CheckResult:
    """GET ``url`` and judge the answer; ``timeout`` bounds the whole exchange (seconds)."""
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            ctype = resp.headers.get("Content-Type", "")
            chunks, size = [], 0
            while size < _MAX_BODY:
                if time.monotonic() > deadline:
                    return CheckResult(f"engine {url}", "warn", f"no complete answer within {timeout:g} s "
                                       f"({size} bytes came)", "check the engine; a /metrics this slow also "
                                       "delays every scrape (collectors.engines.timeout_s)")
                chunk = resp.read1(65536)        # returns what one read brings: the deadline is checked
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            body = b"".join(chunks).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return CheckResult(f"engine {url}", "warn", f"HTTP {exc.code}", "check the engine's metrics port and path")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return CheckResult(f"engine {url}", "warn", f"unreachable ({reason})",
                           "start the engine, or fix collectors.engines.endpoints")
    if "text/html" in ctype or "# TYPE" not in body and "# HELP" not in body:
        return CheckResult(f"engine {url}", "warn", f"answers but not with Prometheus text ({ctype or 'no type'})",
                           "point at the engine's /metrics path")
    return CheckResult(f"engine {url}", "ok", f"Prometheus text, {body.count(chr(10))} lines")


def _checks(config: Config) -> list[tuple[str, str, Callable[[], list[CheckResult]]]]:
    """(name, status when it does not answer in time, the check) in the order printed."""
    engines = config.collectors.engines
    jobs = [("storage", "fail", lambda: [check_storage(config.storage.path)]),
            ("web port", "fail", lambda: [check_port(config.web.listen)]),
            ("ptrace", "warn", lambda: [check_ptrace()]),
            ("py-spy", "warn", lambda: [check_pyspy(config.collectors.stacks.pyspy_path)]),
            ("targets", "warn", lambda: [check_targets(config)])]
    if config.collectors.gpu.enabled:
        jobs.append(("NVML", "warn", check_nvml))
    for url in engines.endpoints:
        jobs.append((f"engine {url}", "warn", lambda url=url: [check_endpoint(url, engines.timeout_s)]))
    return jobs


def run_checks(config: Config, out=None, deadline_s: float = DEADLINE_S) -> int:
    """Print one line per capability; return 0 when the daemon can run, 1 otherwise. Returns
    within ``deadline_s`` seconds whatever the checks do (module docstring)."""
    out = out or sys.stdout
    jobs = _checks(config)
    answers: list[list[CheckResult] | None] = [None] * len(jobs)

    def run(i: int, fn: Callable[[], list[CheckResult]]) -> None:
        try:
            answers[i] = fn()
        except Exception as exc:   # a check's own bug must not hide the other lines
            answers[i] = [CheckResult(jobs[i][0], "warn", f"the check itself failed: {type(exc).__name__}: {exc}")]

    # daemon threads: one still stuck at the deadline must not keep the process from exiting
    threads = [threading.Thread(target=run, args=(i, job[2]), daemon=True, name=f"check-{i}")
               for i, job in enumerate(jobs)]
    end = time.monotonic() + deadline_s
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    results: list[CheckResult] = []
    for (name, late_status, _), answer in zip(jobs, answers):
        results += answer if answer is not None else [CheckResult(
            name, late_status, f"no answer within the check's {deadline_s:g} s deadline",
            "whatever this check waits on hangs (a file system, the driver, a port): look there")]
    for r in results:
        print(r.line(), file=out)
    print(summary_line(results), file=out)
    return 1 if any(r.status == "fail" for r in results) else 0


def summary_line(results: list[CheckResult]) -> str:
    """``can run: 4 passed, 2 warned, 0 failed`` (a WARN is not a pass: the agent runs with
    less, e.g. without stacks or GPU counters)."""
    counts = {k: sum(r.status == k for r in results) for k in ("ok", "warn", "fail")}
    verdict = "cannot run" if counts["fail"] else "can run with less (see WARN)" if counts["warn"] else "can run"
    return f"{verdict}: {counts['ok']} passed, {counts['warn']} warned, {counts['fail']} failed"
