"""Shared fixtures and helpers for the test suite.

- ``store``: a real DuckDB-backed :class:`Store` in ``tmp_path`` (short flush interval).
- ``make_config(**overrides)``: a validated Config for tests, through
  ``daemon.config.with_overrides``; dotted keys are passed as ``**{"storage.path": ...}``
  or with ``__`` for the dot (``storage__path=...``).
- ``require_tool(name)``: the path of a binary the test drives for real; a missing one
  FAILS the test with the install hint (it is never a skip: CI installs these as root).
- ``agent_process``: starts ``python -m infersight.daemon.cli run`` as a real subprocess
  on 127.0.0.1:0 and finds its URL from the ``event=started listen=URL`` log line.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from infersight.daemon.config.load import Config, with_overrides
from infersight.storage.store import Store
from agent_proc import AgentProcess

FIXTURES = Path(__file__).parent / "fixtures"

# Debian packages (make system-deps installs them as root) and pip packages per binary.
INSTALL_HINTS = {
    "systemd-analyze": "apt-get install systemd (make test does it when run as root)",
    "systemd-sysusers": "apt-get install systemd (make test does it when run as root)",
    "systemd-tmpfiles": "apt-get install systemd (make test does it when run as root)",
    "chromium": "apt-get install chromium (make test does it when run as root)",
    "prometheus": "apt-get install prometheus (make test does it when run as root)",
    "py-spy": "pip install py-spy (a dependency of infersight: pip install -e .)",
}

# Collectors that need hardware or other processes stay off unless a test turns them on,
# so the runtime tests exercise the runtime, not the host they run on.
QUIET_COLLECTORS = {
    "collectors.gpu.enabled": False,
    "collectors.stacks.enabled": False,
    "collectors.engines.enabled": False,
}


def require_tool(name: str) -> str:
    """Absolute path of ``name`` (PATH, then beside this Python); pytest.fail when missing."""
    beside = Path(sys.executable).parent / name
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINTS.get(name, 'install ' + name)}", pytrace=False)
    return found


@pytest.fixture
def pyspy() -> str:
    """Path of py-spy as the stacks collector finds it; the test fails when it is missing (it is
    a dependency of infersight, never a reason to skip)."""
    from infersight.daemon.stacks.pyspy import find_pyspy
    found = find_pyspy()
    if found is None:
        pytest.fail(f"py-spy is not installed: {INSTALL_HINTS['py-spy']}", pytrace=False)
    return found


def require_in_ci(ok: bool, reason: str) -> None:
    """A precondition CI provides (make test runs as root there): fails under CI=true when
    ``ok`` is false, skips elsewhere (a developer's unprivileged checkout)."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI provides it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(name="require_in_ci")
def require_in_ci_fixture() -> Callable[[bool, str], None]:
    return require_in_ci


@pytest.fixture(name="require_tool")
def require_tool_fixture() -> Callable[[str], str]:
    return require_tool


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """Config with the DB in tmp_path, listen on a free port, hardware collectors off."""

    def make(**overrides: Any) -> Config:
        base = {"storage.path": str(tmp_path / "agent.duckdb"), "web.listen": "127.0.0.1:0", **QUIET_COLLECTORS}
        base.update({key.replace("__", "."): value for key, value in overrides.items()})
        return with_overrides(Config(), **base)

    return make


@pytest.fixture
def store(tmp_path: Path):
    """A fresh store on disk; closed (flushed, checkpointed) after the test."""
    s = Store.open(str(tmp_path / "store.duckdb"), host="testhost", flush_interval_s=0.05)
    yield s
    s.close()


@pytest.fixture
def agent_process():
    """Factory of AgentProcess; every process it started is killed at teardown."""
    started: list[AgentProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> AgentProcess:
        agent = AgentProcess(args, env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


@pytest.fixture
def spawn():
    """Factory of child processes, killed at teardown. ``start(args)`` runs ``python args...``
    and reads its first stdout line into ``proc.first_line``; ``python=False`` runs ``args`` as is."""
    procs: list[subprocess.Popen] = []

    def start(args: list[str], python: bool = True) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, *args] if python else args, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        procs.append(proc)
        if python:
            assert proc.stdout is not None
            proc.first_line = proc.stdout.readline()  # type: ignore[attr-defined]
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
