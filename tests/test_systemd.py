"""The shipped systemd files: verified by systemd's own tools (which must be installed: a
missing tool fails these tests, `make test` installs it as root) and checked against the CLI."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from infersight.daemon import cli

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "infersight.service"


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; keys may repeat (DeviceAllow=), so no configparser."""
    out, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def service(key: str) -> list[str]:
    return [v for s, k, v in unit_entries(UNIT.read_text(encoding="utf-8")) if s == "Service" and k == key]


def exec_start_args() -> list[str]:
    (line,) = service("ExecStart")
    return shlex.split(line)


def test_unit_verifies_with_the_installed_agent(tmp_path, require_tool):
    analyze = require_tool("systemd-analyze")
    exe = Path(sys.executable).parent / "infersight"
    assert exe.exists(), "the infersight console script is not installed beside this Python (pip install -e .)"
    original = exec_start_args()[0]
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={original} " in text
    copy = tmp_path / "infersight.service"
    copy.write_text(text.replace(f"ExecStart={original} ", f"ExecStart={exe} "), encoding="utf-8")
    proc = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=120)
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, output
    # verify exits 0 on unknown keys and bad values, it only prints them: any line about the unit fails
    assert [line for line in output.splitlines() if "infersight.service" in line] == [], output


def test_verify_catches_what_it_should(tmp_path, require_tool):
    """Guard for the test above: a typo in a key and a missing binary are reported."""
    analyze = require_tool("systemd-analyze")
    copy = tmp_path / "infersight.service"
    copy.write_text(UNIT.read_text(encoding="utf-8").replace("ProtectClock=", "ProtectClok="), encoding="utf-8")
    proc = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    assert "ProtectClok" in text
    assert "not executable" in text or "No such file" in text  # /opt/... does not exist here


def test_exec_start_is_a_valid_agent_command_line():
    args = exec_start_args()
    assert Path(args[0]).name == "infersight"
    parsed = cli._parser().parse_args(args[1:])
    assert parsed.command == "run"
    db_folder = str(Path(parsed.db).parent)
    assert db_folder in service("ReadWritePaths")[0].split(), "ProtectSystem=strict would make the DB read-only"
    assert service("StateDirectory") == [Path(db_folder).name] and db_folder.startswith("/var/lib/")
    assert service("ConfigurationDirectory") == [Path(parsed.config).parent.name]


def test_unit_matches_how_the_agent_behaves():
    assert service("Type") == ["notify"]                    # the agent sends READY=1
    assert service("NotifyAccess") == ["main"]
    watchdog = service("WatchdogSec")[0]
    assert watchdog.endswith("s") and float(watchdog[:-1]) >= 10  # pings every half of it
    assert service("KillSignal") == ["SIGTERM"]              # graceful shutdown path
    stop = service("TimeoutStopSec")[0]
    assert float(stop.rstrip("s")) > 5                        # the agent stops within 5 s
    assert service("User") == ["infersight"] and service("NoNewPrivileges") == ["yes"]
    assert service("CapabilityBoundingSet") == ["CAP_SYS_PTRACE"]  # py-spy needs ptrace and nothing else
    assert service("AmbientCapabilities") == ["CAP_SYS_PTRACE"]
    assert service("ProtectSystem") == ["strict"]


def test_sysusers_and_tmpfiles_apply_to_an_empty_root(tmp_path, require_tool):
    sysusers = require_tool("systemd-sysusers")
    tmpfiles = require_tool("systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    conf = str(SYSTEMD / "infersight.sysusers.conf")
    dry = subprocess.run([sysusers, "--dry-run", f"--root={root}", conf], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "Creating user 'infersight'" in dry.stdout + dry.stderr
    if os.geteuid() != 0:
        pytest.skip("creating the user and chowning its folders in a scratch root needs root (CI runs as root)")
    made = subprocess.run([sysusers, f"--root={root}", conf], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    applied = subprocess.run([tmpfiles, f"--root={root}", "--create", str(SYSTEMD / "infersight.tmpfiles.conf")],
                             capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    state = root / "var/lib/infersight"
    uid = next(int(line.split(":")[2]) for line in (root / "etc/passwd").read_text().splitlines()
               if line.startswith("infersight:"))
    assert state.is_dir() and state.stat().st_uid == uid
    assert oct(state.stat().st_mode & 0o777) == "0o750"
    assert (root / "etc/infersight").is_dir()


def test_a_missing_tool_fails_instead_of_skipping(require_tool, monkeypatch):
    with pytest.raises(pytest.fail.Exception, match="no-such-tool-for-infersight is not installed"):
        require_tool("no-such-tool-for-infersight")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match="apt-get install systemd"):
        require_tool("systemd-analyze")
