"""``infersight install-service`` into a temporary root: the rendered unit passes
``systemd-analyze verify``, the config is written once and never overwritten."""
from __future__ import annotations

import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from infersight.daemon import cli, install
from infersight.daemon.config.example import render
from infersight.daemon.config.load import load_config

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
EXE = str(Path(sys.executable).parent / "infersight")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "install-service", *args],
                          capture_output=True, text=True, timeout=120)


def exec_start(unit: str) -> list[str]:
    (line,) = [x for x in unit.splitlines() if x.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_install_into_a_root_and_verify_the_unit(tmp_path, require_tool):
    analyze = require_tool("systemd-analyze")
    proc = run_cli("--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    unit_path = tmp_path / "etc/systemd/system/infersight.service"
    unit = unit_path.read_text()
    shipped = (SYSTEMD / "infersight.service").read_text()
    assert exec_start(unit) == [EXE] + exec_start(shipped)[1:]  # only the program changed
    assert [x for x in unit.splitlines() if not x.startswith("ExecStart=")] == [
        x for x in shipped.splitlines() if not x.startswith("ExecStart=")]
    verify = subprocess.run([analyze, "verify", "--man=no", str(unit_path)], capture_output=True, text=True,
                            timeout=120)
    output = (verify.stdout + verify.stderr).strip()
    assert verify.returncode == 0, output
    assert [x for x in output.splitlines() if "infersight.service" in x] == [], output
    assert (tmp_path / "etc/sysusers.d/infersight.conf").read_text() == (
        SYSTEMD / "infersight.sysusers.conf").read_text()
    assert (tmp_path / "etc/tmpfiles.d/infersight.conf").read_text() == (
        SYSTEMD / "infersight.tmpfiles.conf").read_text()
    config = tmp_path / "etc/infersight/infersight.toml"
    assert config.read_text() == render() == (SYSTEMD.parent / "config.example.toml").read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640  # it may hold tokens
    load_config(config)  # the agent accepts it as written
    # the unit's own arguments parse as the agent's command line, with the installed config
    args = cli._parser().parse_args(exec_start(unit)[1:])
    assert args.command == "run" and args.config == "/etc/infersight/infersight.toml"


def test_a_second_install_keeps_the_config_and_replaces_the_unit(tmp_path):
    assert run_cli("--root", str(tmp_path)).returncode == 0
    config = tmp_path / "etc/infersight/infersight.toml"
    config.write_text('[web]\nlisten = "127.0.0.1:9000"\n')
    unit = tmp_path / "etc/systemd/system/infersight.service"
    unit.write_text("stale")
    proc = run_cli("--root", str(tmp_path), "--exe", "/usr/local/bin/infersight")
    assert proc.returncode == 0, proc.stderr
    assert config.read_text() == '[web]\nlisten = "127.0.0.1:9000"\n'
    assert f"kept     {config} (exists)" in proc.stdout
    assert exec_start(unit.read_text())[0] == "/usr/local/bin/infersight"


def test_dry_run_writes_nothing(tmp_path):
    proc = run_cli("--root", str(tmp_path / "r"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "r").exists()
    assert f"would write {tmp_path / 'r' / 'etc/systemd/system/infersight.service'}" in proc.stdout
    assert "infersight.toml (unless it exists)" in proc.stdout


def test_installing_into_slash_needs_root(monkeypatch, capsys):
    monkeypatch.setattr(install.os, "geteuid", lambda: 1000)
    wrote = []
    monkeypatch.setattr(install, "write", lambda root, step: wrote.append(step.path))
    assert cli.main(["install-service"]) == 1
    assert "needs root" in capsys.readouterr().err
    assert wrote == []


def test_bad_exe_and_missing_source_are_reported(tmp_path):
    proc = run_cli("--root", str(tmp_path), "--exe", "relative/infersight")
    assert proc.returncode == 1 and "absolute path" in proc.stderr
    proc = run_cli("--root", str(tmp_path), "--source", str(tmp_path / "nowhere"))
    assert proc.returncode == 1 and "is missing" in proc.stderr and "Traceback" not in proc.stderr


def test_render_unit_keeps_arguments_and_needs_exec_start():
    assert install.render_unit("[Service]\nExecStart=/opt/x run --db /d\n", "/usr/bin/infersight") == \
        "[Service]\nExecStart=/usr/bin/infersight run --db /d\n"
    with pytest.raises(install.InstallError, match="no ExecStart"):
        install.render_unit("[Service]\n", "/usr/bin/infersight")
