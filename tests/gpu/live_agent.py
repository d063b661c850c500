"""Helpers of the live tests in tests/gpu/ that run the real agent (``infersight run`` through
tests/conftest.py's ``agent_process``) next to real GPU processes: the agent's config file,
its JSON API, polling, and subprocesses that report on stdout in JSON lines.

Plain blocking code (urllib, threads): the tests are synchronous, so they need no pytest
event loop plugin on the GPU host.
"""
from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

# classes of a GPU busy with work (daemon/analysis/classify.py BUSY_CLASSES)
BUSY_CLASSES = ("compute_bound", "memory_bound", "latency_bound")


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """Write ``{"collectors.stacks": {"recording_s": 2}, ...}`` as TOML tables; values are
    str, bool, int or float."""
    lines = []
    for table, keys in sections.items():
        lines.append(f"[{table}]")
        for key, value in keys.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def get_json(base_url: str, path: str, timeout: float = 15.0, **params: Any) -> dict:
    """GET ``base_url + path`` with query ``params``; the decoded JSON body."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    url = f"{base_url}{path}" + (f"?{query}" if query else "")
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0,
             explain: Callable[[], str] | None = None) -> Any:
    """Call ``check`` every ``interval`` seconds until it returns something true; return it.
    Fails the test after ``timeout`` seconds, with ``explain()`` appended."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s" + (f"\n{explain()}" if explain else ""), pytrace=False)
        time.sleep(interval)


def analysed_until(base_url: str) -> float:
    """The Unix second up to which the agent's analysis has run (0 before its first tick)."""
    return float(get_json(base_url, "/api/health").get("analysis", {}).get("analysed_until") or 0)


def gpu_status(base_url: str, gpu: int) -> dict | None:
    """The GPU collector's status of ``gpu`` (``gpm``, ``name``, ...) with the stored facts
    (``mig_mode``), or None before the collector has opened it."""
    body = get_json(base_url, "/api/gpus")
    status = next((g for g in (body.get("collector") or {}).get("gpus", []) if g["gpu"] == gpu), None)
    if status is None:
        return None
    facts = next((g for g in body["gpus"] if g["gpu"] == gpu), {})
    return {**facts, **status}


def class_counts(windows: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in windows:
        out[w["class"]] = out.get(w["class"], 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def median(values: list[float]) -> float | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def feature_medians(windows: list[dict], names: tuple[str, ...]) -> dict[str, float | None]:
    return {n: median([w["features"].get(n) for w in windows]) for n in names}


def fmt(values: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {'-' if v is None else format(v, '.1f')}" for k, v in values.items())


class JsonLinesProcess:
    """A subprocess whose stdout is JSON lines (tests/gpu's programs), read on a thread;
    stderr goes to a file so a failure can show it."""

    def __init__(self, args: list[str], stderr_path: Path, env: dict[str, str] | None = None) -> None:
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err,
                                     env=env)
        self.events: list[dict] = []
        self._queue: queue.Queue[dict | None] = queue.Queue()
        self._ended = False          # stdout closed: the process has exited
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._queue.put(json.loads(line))
            except ValueError:
                continue          # a library's stray print: not one of ours
        self._queue.put(None)

    def wait_event(self, name: str, timeout: float) -> dict:
        """The first ``{"event": name}`` line (read before or within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((e for e in self.take() if e.get("event") == name), None)
            if found is not None:
                return found
            if self._ended:
                pytest.fail(f"{self.proc.args[1]} exited with {self.proc.wait()} before {name!r}; stderr:\n"
                            f"{self.stderr_tail()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"{self.proc.args[1]} gave no {name!r} within {timeout:.0f} s; stderr:\n"
                            f"{self.stderr_tail()}", pytrace=False)
            try:
                e = self._queue.get(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                continue
            if e is None:
                self._ended = True
            else:
                self.events.append(e)

    @property
    def ended(self) -> bool:
        """Whether its stdout has closed (it exited), as of the last ``take``."""
        return self._ended

    def take(self) -> list[dict]:
        """Every line read so far (without waiting), oldest first."""
        while True:
            try:
                e = self._queue.get_nowait()
            except queue.Empty:
                return self.events
            if e is None:
                self._ended = True
            else:
                self.events.append(e)

    def stderr_tail(self, chars: int = 3000) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.stderr_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; closes the pipes."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()
