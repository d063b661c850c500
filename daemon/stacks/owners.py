"""Whose processes the agent may profile: the operator's allow-list of users, units and cgroups.

The agent reads the memory of the processes it samples and shows their thread, function and
command-line names to everyone who reads its UI, API and webhooks. A process matching a
serving pattern is no proof of being the operator's engine: any local user can start
``python -c ... vllm serve``. So a process is profiled only when the operator allows it
(``targets.allowed_users``, ``allowed_units``, ``allowed_cgroups``), whatever its command line:

- its real and effective uid are both allowed users (``/proc/PID/status``); the agent's own
  uid always is, and ``*`` allows everyone (the behaviour before this check existed);
- or it runs in an allowed systemd system unit (the first component of its cgroup path that
  is not a slice, e.g. ``vllm.service`` in ``/system.slice/vllm.service``). Units under
  ``user.slice`` never count: any user can start a user unit of any name;
- or its cgroup path, or an ancestor of it, matches an allowed cgroup pattern
  (``/kubepods.slice``): only root (or whom it delegated to) can move a process there.

Patterns are shell globs (``fnmatch``, case-sensitive). The cgroup is the v2 path (the ``0::``
line of ``/proc/PID/cgroup``), or systemd's v1 hierarchy (``name=systemd``) on hybrid hosts.
Explicit PIDs (``targets.pids``, ``--pid``) are the operator's own choice and bypass this.
"""
from __future__ import annotations

import fnmatch
import os
import pwd
from dataclasses import dataclass

from infersight.daemon.config.load import ANY_USER, TargetsConfig

@dataclass(frozen=True)
class Owner:
    """Who a process is: (real, effective) uid, and its cgroup path ('' when unknown)."""

    uids: tuple[int, int] | None
    cgroup: str


def resolve_user(entry: str) -> int:
    """A user name or numeric uid -> uid; KeyError when no such user exists (the config's
    validation, daemon/config/load.py, checked that one did at load)."""
    if entry.isdigit():
        return int(entry)
    return pwd.getpwnam(entry).pw_uid


def unit_of(cgroup: str) -> str | None:
    """The systemd system unit of a cgroup path, or None (no unit, or one under user.slice)."""
    for part in cgroup.strip("/").split("/"):
        if part == "user.slice" or part.startswith("user-") or part.startswith("user@"):
            return None
        if not part.endswith(".slice"):
            return part or None
    return None


def _ancestors(cgroup: str) -> list[str]:
    """``/a/b/c`` -> ``["/a/b/c", "/a/b", "/a"]``."""
    parts = [p for p in cgroup.split("/") if p]
    return ["/" + "/".join(parts[:n]) for n in range(len(parts), 0, -1)]


class OwnerPolicy:
    """The resolved allow-lists; :meth:`allows` decides for one process (module docstring)."""

    def __init__(self, config: TargetsConfig, own_uid: int | None = None) -> None:
        self.any_user = ANY_USER in config.allowed_users
        self.uids = {resolve_user(e) for e in config.allowed_users if e != ANY_USER}
        self.uids.add(os.geteuid() if own_uid is None else own_uid)
        self.units = tuple(config.allowed_units)
        self.cgroups = tuple(config.allowed_cgroups)

    def allows(self, owner: Owner) -> bool:
        if self.any_user:
            return True
        if owner.uids is not None and all(u in self.uids for u in owner.uids):
            return True
        if owner.cgroup and self.units:
            unit = unit_of(owner.cgroup)
            if unit is not None and any(fnmatch.fnmatchcase(unit, p) for p in self.units):
                return True
        if owner.cgroup and self.cgroups:
            return any(fnmatch.fnmatchcase(path, p) for path in _ancestors(owner.cgroup) for p in self.cgroups)
        return False


def read_owner(proc: str, pid: int) -> Owner:
    """The owner of ``pid`` from procfs under ``proc``; unreadable parts are unknown (and
    an unknown owner is allowed by no user entry)."""
    uids = None
    try:
        with open(f"{proc}/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Uid:"):
                    fields = line.split()
                    uids = (int(fields[1]), int(fields[2]))
                    break
    except (OSError, ValueError, IndexError):
        uids = None
    cgroup = ""
    try:
        with open(f"{proc}/{pid}/cgroup", "rb") as fh:
            lines = fh.read().decode("utf-8", "replace").splitlines()
        v2 = [ln[3:] for ln in lines if ln.startswith("0::")]
        v1 = [ln.split(":", 2)[2] for ln in lines if ":name=systemd:" in ln]
        # a hybrid host's v2 tree may be empty ("/") while systemd's v1 tree holds the unit
        cgroup = next((c for c in v2 + v1 if c not in ("", "/")), (v2 + v1 + [""])[0])
    except (OSError, IndexError):
        cgroup = ""
    return Owner(uids, cgroup)
