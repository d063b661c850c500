"""``infersight install-service``: put the systemd unit, its sysusers/tmpfiles entries and a
config file in place (what ``make install`` runs).

Files written under ``--root`` (``/`` by default; a folder for staging or tests):

- ``etc/systemd/system/infersight.service``: systemd/infersight.service with the program of
  ``ExecStart=`` replaced by this installation's ``infersight`` (its arguments kept);
- ``etc/sysusers.d/infersight.conf`` and ``etc/tmpfiles.d/infersight.conf``: copies of
  systemd/infersight.sysusers.conf and systemd/infersight.tmpfiles.conf;
- ``etc/infersight/infersight.toml``: the example config with every default (the text of
  config.example.toml), only when no file is there: an existing config is never touched.
  Mode 0640, group ``infersight`` when installing into ``/`` as root, since it may hold
  secrets (tokens) and the service user must read it.

Installing into ``/`` also creates the user (``systemd-sysusers``) and the state folder
(``systemd-tmpfiles --create``) and reloads systemd; it does not enable or start the
service, it prints how. ``--dry-run`` prints the plan and changes nothing.
"""
from __future__ import annotations

import argparse
import grp
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from infersight.daemon.config.example import render

UNIT = "infersight.service"
CONFIG_PATH = "etc/infersight/infersight.toml"


class InstallError(RuntimeError):
    """The installation cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Step:
    """One file to write: its path under the root, its text, mode, and whether an existing
    file is kept (configs) or replaced (unit files)."""

    path: str
    text: str
    mode: int
    keep_existing: bool = False
    group: str | None = None


def source_dir() -> Path:
    """The ``systemd/`` folder of the source tree this package runs from."""
    return Path(__file__).resolve().parent.parent / "systemd"


def default_exe() -> str:
    """The ``infersight`` script of this installation (beside its Python, then on PATH)."""
    beside = shutil.which("infersight", path=str(Path(sys.executable).parent))
    found = beside or shutil.which("infersight")
    if not found:
        raise InstallError("cannot find the infersight program (not beside this Python, not on PATH); pass --exe")
    return os.path.abspath(found)


def render_unit(unit_text: str, exe: str) -> str:
    """The unit with ExecStart's program replaced by ``exe`` (arguments kept)."""
    if any(c.isspace() for c in exe) or not os.path.isabs(exe):
        raise InstallError(f"--exe must be an absolute path without spaces, got {exe!r}")
    lines, done = [], False
    for line in unit_text.splitlines(keepends=True):
        if line.startswith("ExecStart="):
            parts = line[len("ExecStart="):].rstrip("\n").split(None, 1)
            args = f" {parts[1]}" if len(parts) > 1 else ""
            line = f"ExecStart={exe}{args}\n"
            done = True
        lines.append(line)
    if not done:
        raise InstallError("the unit file has no ExecStart= line")
    return "".join(lines)


def plan(exe: str, source: Path, *, as_root: bool) -> list[Step]:
    """What to write, relative to the root."""
    try:
        unit = (source / UNIT).read_text()
        sysusers = (source / "infersight.sysusers.conf").read_text()
        tmpfiles = (source / "infersight.tmpfiles.conf").read_text()
    except FileNotFoundError as exc:
        raise InstallError(f"{exc.filename} is missing: run from a source checkout (pip install -e .), or pass "
                           "--source DIR with the systemd/ folder of one") from None
    return [
        Step(f"etc/systemd/system/{UNIT}", render_unit(unit, exe), 0o644),
        Step("etc/sysusers.d/infersight.conf", sysusers, 0o644),
        Step("etc/tmpfiles.d/infersight.conf", tmpfiles, 0o644),
        Step(CONFIG_PATH, render(), 0o640, keep_existing=True, group="infersight" if as_root else None),
    ]


def write(root: Path, step: Step) -> str:
    """Write one step atomically; returns what happened, for the report."""
    target = root / step.path
    if step.keep_existing and target.exists():
        return f"kept     {target} (exists)"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(step.text)
    os.chmod(tmp, step.mode)
    if step.group is not None:
        try:
            os.chown(tmp, 0, grp.getgrnam(step.group).gr_gid)
        except KeyError:
            print(f"infersight install-service: group {step.group} does not exist yet; {target} stays root-only "
                  f"until you run: chgrp {step.group} {target}", file=sys.stderr)
    os.replace(tmp, target)
    return f"wrote    {target}"


def _run(cmd: list[str]) -> None:
    if shutil.which(cmd[0]) is None:
        print(f"infersight install-service: {cmd[0]} not found; run later: {' '.join(cmd)}", file=sys.stderr)
        return
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InstallError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()[:300]}")


def install(root: Path, exe: str, source: Path, *, dry_run: bool = False) -> list[str]:
    """Write every step under ``root`` (system commands only when ``root`` is ``/``)."""
    system = root.resolve() == Path("/")
    as_root = system and os.geteuid() == 0
    if system and not as_root and not dry_run:
        raise InstallError("installing into / needs root: run it with sudo (sudo make install), or pass --root DIR")
    steps = plan(exe, source, as_root=as_root)
    if dry_run:
        return [f"would write {root / s.path}" + (" (unless it exists)" if s.keep_existing else "") for s in steps]
    report = []
    # the user first: the config's group must exist when the config is written
    for step in steps[1:3]:
        report.append(write(root, step))
    if system:
        _run(["systemd-sysusers", str(root / steps[1].path)])
        _run(["systemd-tmpfiles", "--create", str(root / steps[2].path)])
    report.append(write(root, steps[0]))
    report.append(write(root, steps[3]))
    if system:
        _run(["systemctl", "daemon-reload"])
    return report


def main(args: argparse.Namespace) -> int:
    """Exit 0 when installed (or planned), 1 when something stopped it."""
    try:
        exe = args.exe or default_exe()
        source = Path(args.source) if args.source else source_dir()
        lines = install(Path(args.root), exe, source, dry_run=args.dry_run)
    except (InstallError, OSError) as exc:
        print(f"infersight install-service: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    if not args.dry_run:
        config = Path(args.root) / CONFIG_PATH
        print(f"next: edit {config}, check it with `{exe} check --config /{CONFIG_PATH}`, then "
              f"`systemctl enable --now {UNIT}`")
    return 0
