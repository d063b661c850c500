"""Why a py-spy run failed, in words that say what to do about it.

py-spy 0.4 reports failures on stderr (``Error: ...`` plus ``Caused by`` lines, or its own
``Permission Denied`` line) and exits with status 1; :func:`classify_failure` maps that text,
and whether the target still runs, to a kind and a message.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PyspyFailure:
    """Why a recording failed. ``kind``: permission, not_python, unsupported, exited, stuck, failed."""

    kind: str
    message: str


def ptrace_scope(path: str = "/proc/sys/kernel/yama/ptrace_scope") -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def classify_failure(pid: int, returncode: int | None, stderr: str, target_alive: bool,
                     scope: int | None = None) -> PyspyFailure:
    """Turn a failed py-spy run into a kind and a message that says what to do."""
    text = stderr.lower()
    if "permission denied" in text or "operation not permitted" in text:
        if scope is None:
            where = "kernel.yama.ptrace_scope is not in use on this host"
        elif scope >= 2:
            where = f"kernel.yama.ptrace_scope is {scope}: set it to 1 or 0 (sysctl -w kernel.yama.ptrace_scope=1)"
        else:
            where = f"kernel.yama.ptrace_scope is {scope}, which allows a tracer with CAP_SYS_PTRACE"
        return PyspyFailure("permission", (
            f"permission denied reading PID {pid}: run the agent as root with CAP_SYS_PTRACE kept (systemd: "
            f"AmbientCapabilities=CAP_SYS_PTRACE and CAP_SYS_PTRACE in CapabilityBoundingSet); {where}; "
            "for a target in a container the agent needs the host PID namespace"))
    if not target_alive or "no such process" in text or "no such file or directory" in text:
        return PyspyFailure("exited", f"PID {pid} exited")
    if "unsupported version of python" in text or "unsupported python version" in text:
        return PyspyFailure("unsupported", f"PID {pid} runs a Python this py-spy cannot read: {first_error(stderr)}")
    if "python version" in text or "python interpreter" in text or "failed to find python" in text:
        return PyspyFailure("not_python", f"PID {pid} is not a Python process (py-spy found no interpreter in it)")
    reason = first_error(stderr) or f"exit status {returncode}"
    return PyspyFailure("failed", f"py-spy failed on PID {pid}: {reason}")


def first_error(stderr: str) -> str:
    """The ``Error:`` line of py-spy's stderr, else its first line."""
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("Error:"):
            return line[len("Error:"):].strip()
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[0] if lines else ""
