"""A running ``infersight run`` subprocess for tests (the agent_process fixture of conftest.py
and modules that start one themselves import it from here)."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time


class AgentProcess:
    """A running ``infersight run`` subprocess; stderr lines are collected on a thread."""

    STARTED = re.compile(r"event=started listen=(\S+)")

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "infersight.daemon.cli", "run", *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url: str | None = None

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, pattern: str | re.Pattern, timeout: float = 60.0) -> re.Match:
        """First stderr line matching ``pattern`` (seen before or arriving within ``timeout``)."""
        rx = re.compile(pattern)
        for line in self.lines:
            m = rx.search(line)
            if m:
                return m
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {rx.pattern!r} within {timeout} s; stderr so far:\n"
                                     + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"agent exited with {self.proc.wait()} before {rx.pattern!r}; stderr:\n"
                                     + "\n".join(self.lines))
            self.lines.append(line)
            m = rx.search(line)
            if m:
                return m

    def wait_started(self, timeout: float = 60.0) -> str:
        self.url = self.wait_for_line(self.STARTED, timeout).group(1)
        return self.url

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Send ``sig`` and wait at most ``timeout`` seconds for the exit code."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def drain(self) -> str:
        """All stderr after exit (the reader thread ends at EOF)."""
        self._reader.join(10)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._reader.join(10)
        if self.proc.stderr:
            self.proc.stderr.close()
