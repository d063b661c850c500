"""Explicit target processes (``--pid`` and ``targets.pids``) resolved to Target records.

Automatic discovery (command-line patterns, CUDA contexts, descendants) lives in
daemon/stacks/discovery.py; this is the part that needs nothing but the pid list. Command
lines are redacted (daemon/stacks/redact.py) before they leave this module.
"""
from __future__ import annotations

import psutil

from infersight.daemon.stacks.redact import redact_args
from infersight.storage.model import Target


def explicit_targets(pids: tuple[int, ...], host: str) -> list[Target]:
    """Targets for the pids that exist now; missing ones are left out (they may start later)."""
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                cmdline = " ".join(redact_args(proc.cmdline())) or proc.name()
                out.append(Target(host, pid, proc.create_time(), cmdline, role="explicit"))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:
            out.append(Target(host, pid, 0.0, "", role="explicit"))
    return out
