"""Which processes to profile: GPU holders, command-line matches, explicit PIDs, their children.

A scan reads the process table from procfs (Linux) and returns one :class:`Found` per target:

- (a) Python processes whose command line matches one of ``targets.cmdline_patterns`` and
  (b) the configured and ``--pid`` PIDs (always tried, so a wrong one gets a clear error):
  the serving seeds;
- (c) processes holding a CUDA context, from NVML (a callable or a fixed mapping ``{pid:
  gpu indices}`` is passed in, so this runs and is tested without a GPU);
- (d) with ``targets.include_descendants``, the Python descendants of the serving ones.

Serving or not (roles: daemon/stacks/roles.py). A CUDA process is serving when its command
line names a serving role, when it descends from a serving process or is an ancestor of a
seed; otherwise it is ``other_gpu_process`` (a neighbour) when a serving process holds a
context on one of its GPUs, and a presumed engine (``engine``) when none does, since a
custom PyTorch server matches no pattern. A process once judged a neighbour stays one for
its life, so an engine restart does not turn the neighbour into the engine. A neighbour's
descendants are not targets. Helpers and neighbours are never sampled with py-spy
(``Found.sample``); neither is a descendant with no role of its own until it has lived
``HELPER_GRACE_S`` (short-lived probes come and go unsampled).

GPUs (``Target.gpus``): those a process holds a context on; a serving process holding none
(an API server, an engine core at TP > 1) gets those its deployment holds, the deployment
being every serving target under the same topmost serving ancestor. So an API server is
bound to its engine's GPUs, and on a host with one engine per GPU no process counts for
every GPU. A deployment that holds no context yet (start-up) leaves the list empty.

Only processes the operator allows (daemon/stacks/owners.py: ``targets.allowed_users``,
``allowed_units``, ``allowed_cgroups``) are seeds, descendants or presumed engines: any other
process is never sampled whatever its command line, and one holding a GPU is a neighbour
(``other_gpu_process``). Explicit PIDs are the operator's choice and always tried. Each
process refused although its command line matched is logged once.

Command lines are redacted (daemon/stacks/redact.py) as they are read, before anything else
sees them. The agent's own process and py-spy runs are never targets. Identity is ``(host,
pid, start_time)`` with the start time from ``/proc/PID/stat`` computed exactly as psutil's
``create_time()`` (Unix seconds, 10 ms resolution), so a reused PID is a new target and keys
match the other collectors'. Scans block on procfs and NVML: run them through
``asyncio.to_thread``.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Union

from infersight.daemon.config.load import TargetsConfig
from infersight.daemon.stacks.owners import OwnerPolicy, read_owner, unit_of
from infersight.daemon.stacks.redact import redact_args
from infersight.daemon.stacks.roles import FOREIGN, NAMED_SERVING, NOT_SERVING, infer_role
from infersight.storage.model import Target

NvmlSource = Union[Callable[[], Mapping[int, Iterable[int]]], Mapping[int, Iterable[int]], None]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PYTHON_NAME = re.compile(r"^python[\d.]*[dmu]*$")
_EMBEDDED = re.compile(r"triton_python_backend_stub")
_CMDLINE_REFRESH_S = 30.0      # older processes rarely rename themselves (setproctitle)
_YOUNG_S = 60.0                # a process this young has its command line re-read every scan
HELPER_GRACE_S = 5.0           # a roleless descendant is sampled once it has lived this long (seconds)

log = logging.getLogger("infersight.discovery")

__all__ = ["Discovery", "Found", "NvmlProcesses", "diff", "infer_role"]


@dataclass(frozen=True, slots=True)
class Found:
    """A target, why it was chosen (``nvml``, ``pattern``, ``pid``, ``descendant``), and
    whether to sample its stacks now (``sample``: a Python serving process; see the module
    docstring for who is not)."""

    target: Target
    python: bool
    reasons: tuple[str, ...]
    sample: bool = True


@dataclass(slots=True)
class _Proc:
    pid: int
    ppid: int
    start_time: float
    cmdline: str
    argv0: str
    read_at: float
    python: bool | None = None
    matched: bool | None = None        # command line matches a configured pattern
    allowed: bool | None = None        # its owner is on the operator's allow-lists (owners.py)
    owner: str = ""                    # "uid U, unit X", once read


def diff(before: Mapping[tuple, Target], after: Mapping[tuple, Target]) -> tuple[list[Target], list[Target]]:
    """(started, exited) between two scans keyed by Target.key."""
    started = [t for k, t in after.items() if k not in before]
    exited = [t for k, t in before.items() if k not in after]
    return started, exited


class NvmlProcesses:
    """Callable giving ``{pid: (gpu indices)}`` of every GPU's compute processes via NVML.

    Returns ``{}`` when NVML is not there; ``error`` then says why. Blocking.
    """

    def __init__(self) -> None:
        self.error: str | None = None
        self._ready = False

    def __call__(self) -> dict[int, tuple[int, ...]]:
        try:
            import pynvml

            if not self._ready:
                pynvml.nvmlInit()
                self._ready = True
            out: dict[int, list[int]] = {}
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    out.setdefault(int(proc.pid), []).append(index)
            self.error = None
            return {pid: tuple(sorted(set(g))) for pid, g in out.items()}
        except Exception as exc:  # NVML raises its own error types, and ImportError without it
            self.error = f"NVML process list unavailable: {exc}"
            return {}


class Discovery:
    """Scans the process table; keeps a small cache so a scan reads little for known processes."""

    def __init__(self, config: TargetsConfig, host: str, *, nvml: NvmlSource = None,
                 extra_pids: Iterable[int] = (), proc: str = "/proc", own_pid: int | None = None) -> None:
        self.config = config
        self.host = host
        self.nvml = nvml
        self.nvml_error: str | None = None
        self.pids = tuple(dict.fromkeys([*config.pids, *extra_pids]))
        self.proc = proc
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self._patterns = [re.compile(p) for p in config.cmdline_patterns]
        self.owners = OwnerPolicy(config)
        self._refused_logged: set[tuple[int, float]] = set()
        self.refused: dict[int, str] = {}     # pid -> owner of the matching processes the last scan refused
        self._cache: dict[int, _Proc] = {}
        self._watch: set[int] = set()
        self._foreign: set[tuple[int, float]] = set()    # (pid, start time) judged neighbours, for life
        self._btime = self._boot_time()

    def scan(self) -> list[Target]:
        return [f.target for f in self.scan_detailed()]

    def scan_detailed(self) -> list[Found]:
        now = time.time()
        procs = self._read_table(now)
        gpus = {pid: g for pid, g in self._gpu_map().items() if pid in procs}
        children: dict[int, list[int]] = {}
        for p in procs.values():
            children.setdefault(p.ppid, []).append(p.pid)
        # The agent itself and py-spy runs are never targets; the agent's other children are
        # (the demo engine, tests' programs).
        excluded = {self.own_pid} | {p.pid for p in procs.values() if os.path.basename(p.argv0) == "py-spy"}
        reasons: dict[int, list[str]] = {}
        refused: dict[int, str] = {}
        for p in procs.values():
            if p.matched is None:
                p.matched = any(rx.search(p.cmdline) for rx in self._patterns)
            if p.matched and p.pid not in excluded and self._is_python(p):
                if self._allowed(p, log_refusal=True):
                    reasons.setdefault(p.pid, []).append("pattern")
                else:
                    refused[p.pid] = p.owner
        self.refused = refused
        for pid in self.pids:
            if pid in procs:
                reasons.setdefault(pid, []).append("pid")
        foreign = self._split_gpu_holders(procs, gpus, set(reasons), excluded)
        for pid in gpus:
            reasons.setdefault(pid, []).append("nvml")
        if self.config.include_descendants:
            for seed in [pid for pid in reasons if pid not in foreign]:
                for pid in self._tree(seed, children):
                    if pid != seed and pid not in reasons and pid not in foreign and self._is_python(procs[pid]) \
                            and self._allowed(procs[pid]):
                        reasons.setdefault(pid, []).append("descendant")
        roles: dict[int, str] = {}
        for pid, why in reasons.items():
            p = procs[pid]
            roles[pid] = FOREIGN if pid in foreign else infer_role(
                p.cmdline, gpu=pid in gpus, matched="pattern" in why or "nvml" in why)
        shared = self._deployment_gpus(procs, gpus, roles)
        found: list[Found] = []
        for pid, why in sorted(reasons.items()):
            if pid in excluded:
                continue
            p, role = procs[pid], roles[pid]
            gpu = gpus.get(pid) or (shared.get(pid, ()) if role not in NOT_SERVING else ())
            target = Target(host=self.host, pid=pid, start_time=p.start_time, cmdline=p.cmdline, role=role, gpus=gpu)
            python = self._is_python(p) or "pid" in why
            young_roleless = role == "other" and why == ["descendant"] and now - p.start_time < HELPER_GRACE_S
            found.append(Found(target=target, python=python, reasons=tuple(why),
                               sample=python and role not in NOT_SERVING and not young_roleless))
        self._watch = {f.target.pid for f in found}
        return found

    def _split_gpu_holders(self, procs: Mapping[int, _Proc], gpus: Mapping[int, tuple[int, ...]],
                           seeds: set[int], excluded: set[int]) -> set[int]:
        """The CUDA processes that are neighbours, not serving (module docstring)."""
        serving = set(seeds)
        seed_ancestors = {a for pid in seeds for a in self._ancestors(pid, procs)}
        undecided = []
        foreign: set[int] = set()
        for pid in gpus:
            if pid in serving or pid in excluded:
                continue
            if not self._allowed(procs[pid]):     # another user's GPU process: at most a neighbour
                foreign.add(pid)
                continue
            if infer_role(procs[pid].cmdline, gpu=True, matched=False) in NAMED_SERVING or pid in seed_ancestors:
                serving.add(pid)
            else:
                undecided.append(pid)
        # parents before children, so a child of a presumed engine is part of that engine
        undecided.sort(key=lambda pid: (procs[pid].start_time, pid))
        serving_gpus = {g for pid in serving if pid in gpus for g in gpus[pid]}
        for pid in undecided:
            key = (pid, procs[pid].start_time)
            if any(a in serving for a in self._ancestors(pid, procs)):
                serving.add(pid)
            elif key in self._foreign or serving_gpus & set(gpus[pid]):
                foreign.add(pid)
                self._foreign.add(key)
            else:
                serving.add(pid)    # nothing recognised on its GPUs: presumed the engine
                serving_gpus |= set(gpus[pid])
        self._foreign = {(pid, start) for pid, start in self._foreign
                         if pid in procs and procs[pid].start_time == start}
        return foreign

    def _deployment_gpus(self, procs: Mapping[int, _Proc], gpus: Mapping[int, tuple[int, ...]],
                         roles: Mapping[int, str]) -> dict[int, tuple[int, ...]]:
        """pid -> GPUs held by the serving targets under its topmost serving ancestor."""
        serving = {pid for pid, role in roles.items() if role not in NOT_SERVING}
        root_of: dict[int, int] = {}
        for pid in serving:
            root = pid
            for a in self._ancestors(pid, procs):
                if a in serving:
                    root = a
            root_of[pid] = root
        held: dict[int, set[int]] = {}
        for pid, root in root_of.items():
            held.setdefault(root, set()).update(gpus.get(pid, ()))
        return {pid: tuple(sorted(held[root])) for pid, root in root_of.items()}

    def alive(self, target: Target) -> bool:
        """Whether ``target`` (same pid and start time) still runs. One procfs read."""
        stat = self._stat(target.pid)
        return stat is not None and stat[1] == target.start_time

    # -- procfs -----------------------------------------------------------------------------

    def _boot_time(self) -> float:
        try:
            with open(f"{self.proc}/stat") as fh:
                for line in fh:
                    if line.startswith("btime "):
                        return float(line.split()[1])
        except OSError:
            pass
        return 0.0

    def _stat(self, pid: int) -> tuple[int, float] | None:
        """(ppid, start time) or None when the process is gone (a zombie counts as gone)."""
        try:
            with open(f"{self.proc}/{pid}/stat", "rb") as fh:
                text = fh.read().decode("utf-8", "replace")
            rest = text[text.rindex(")") + 2:].split()
            if rest[0] in ("Z", "X"):
                return None
            # Same arithmetic as psutil's create_time(), so other collectors' keys match ours.
            return int(rest[1]), float(rest[19]) / _CLK_TCK + self._btime
        except (OSError, ValueError, IndexError):
            return None

    def _cmdline(self, pid: int) -> tuple[str, str]:
        try:
            with open(f"{self.proc}/{pid}/cmdline", "rb") as fh:
                raw = fh.read()
        except OSError:
            return "", ""
        args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        # redacted here, before the command line is matched, cached or handed to anyone
        return " ".join(redact_args(args)), (args[0] if args else "")

    def _read_table(self, now: float) -> dict[int, _Proc]:
        try:
            pids = [int(n) for n in os.listdir(self.proc) if n.isdigit()]
        except OSError:
            return {}
        live = set(pids)
        for pid in list(self._cache):
            if pid not in live:
                del self._cache[pid]
        out: dict[int, _Proc] = {}
        for pid in pids:
            # A known process is taken from the cache until its entry is _CMDLINE_REFRESH_S
            # old; young processes (they may still rename themselves) and current targets (a
            # reused PID must show as a new start time at once) are read every scan. A PID
            # reused by an unrelated process within the refresh time would need the PID space
            # to wrap around in between.
            cached = self._cache.get(pid)
            if (cached is not None and pid not in self._watch and now - cached.read_at <= _CMDLINE_REFRESH_S
                    and now - cached.start_time >= _YOUNG_S):
                if cached.cmdline:
                    out[pid] = cached
                continue
            stat = self._stat(pid)
            if stat is None:
                continue
            ppid, start = stat
            if cached is not None and cached.start_time == start and now - cached.read_at <= _CMDLINE_REFRESH_S \
                    and now - start >= _YOUNG_S:
                cached.ppid = ppid
                if cached.cmdline:
                    out[pid] = cached
                continue
            cmdline, argv0 = self._cmdline(pid)
            keep_python = cached.python if cached is not None and cached.start_time == start else None
            p = _Proc(pid=pid, ppid=ppid, start_time=start, cmdline=cmdline, argv0=argv0, read_at=now,
                      python=keep_python if cmdline else False, matched=None if cmdline else False)
            # Kernel threads and zombies (no command line) stay cached so they cost nothing
            # next time, but are never targets.
            self._cache[pid] = p
            if cmdline:
                out[pid] = p
        return out

    def _allowed(self, p: _Proc, log_refusal: bool = False) -> bool:
        """Whether the owner of ``p`` is on the allow-lists (read once per cached entry)."""
        if p.allowed is None:
            owner = read_owner(self.proc, p.pid)
            p.allowed = self.owners.allows(owner)
            p.owner = f"uid {owner.uids[0] if owner.uids else 'unknown'}, unit {unit_of(owner.cgroup) or '-'}"
            if not p.allowed and log_refusal and (p.pid, p.start_time) not in self._refused_logged:
                if len(self._refused_logged) > 10_000:      # bounded: forget the old ones
                    self._refused_logged.clear()
                self._refused_logged.add((p.pid, p.start_time))
                uid = owner.uids[0] if owner.uids else "unknown"
                log.info("event=target_refused pid=%d uid=%s unit=%s note=\"its command line matches, but its user, "
                         "unit and cgroup are in none of targets.allowed_users, allowed_units, allowed_cgroups\"",
                         p.pid, uid, unit_of(owner.cgroup) or "-")
        return p.allowed

    def _is_python(self, p: _Proc) -> bool:
        if p.python is None:
            p.python = self._looks_python(p)
        return p.python

    def _looks_python(self, p: _Proc) -> bool:
        names = [os.path.basename(p.argv0.split(" ")[0])]
        try:
            names.append(os.path.basename(os.readlink(f"{self.proc}/{p.pid}/exe")))
        except OSError:
            pass
        if any(_PYTHON_NAME.match(n) for n in names) or _EMBEDDED.search(p.cmdline):
            return True
        try:
            with open(f"{self.proc}/{p.pid}/maps", "rb") as fh:
                return any(b"libpython" in line for line in fh)
        except OSError:
            return False

    def _gpu_map(self) -> dict[int, tuple[int, ...]]:
        if not self.config.use_nvml_processes or self.nvml is None:
            return {}
        source = self.nvml
        try:
            mapping = source() if callable(source) else source
            self.nvml_error = getattr(source, "error", None)
        except Exception as exc:  # an injected lister may raise anything; discovery goes on without it
            self.nvml_error = f"NVML process list failed: {exc}"
            return {}
        return {int(pid): tuple(sorted(set(int(g) for g in gpus))) for pid, gpus in mapping.items()}

    @staticmethod
    def _ancestors(pid: int, procs: Mapping[int, _Proc]) -> list[int]:
        """Parent, grandparent, ... of ``pid`` that are in the process table (nearest first)."""
        out: list[int] = []
        seen = {pid}
        p = procs.get(pid)
        while p is not None and p.ppid in procs and p.ppid not in seen:
            seen.add(p.ppid)
            out.append(p.ppid)
            p = procs[p.ppid]
        return out

    @staticmethod
    def _tree(root: int, children: Mapping[int, list[int]]) -> list[int]:
        out, stack = [], [root]
        seen = set()
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            out.append(pid)
            stack.extend(children.get(pid, ()))
        return out
