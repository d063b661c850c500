"""Config loading and validation: every bad value names its key path; CLI exits 2 with one line."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infersight.daemon import cli
from infersight.daemon.config import example as config_example
from infersight.daemon.config.load import Config, ConfigError, iter_keys, load_config, with_overrides

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.toml"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _one_key_toml(key_path: str, value) -> str:
    """A TOML document setting only ``key_path`` (dotted) to ``value``."""
    *tables, leaf = key_path.split(".")
    head = f"[{'.'.join(tables)}]\n" if tables else ""
    return f"{head}{leaf} = {_toml_value(value)}\n"


def _leaf_hint(key_path: str):
    cls = Config
    *tables, leaf = key_path.split(".")
    for name in tables:
        cls = typing.get_type_hints(cls)[name]
    return typing.get_type_hints(cls)[leaf]


def _bad_values(key_path: str, field: dataclasses.Field) -> list[tuple[str, object]]:
    """(why, value) pairs that must be rejected for this key, derived from its declaration."""
    hint, meta = _leaf_hint(key_path), field.metadata
    out: list[tuple[str, object]] = []
    if hint is bool:
        out += [("string", "yes"), ("integer", 1)]
    elif hint in (int, float):
        out += [("string", "x"), ("bool", True), ("list", [1])]
        if hint is int:
            out.append(("fraction", 1.5))
        if meta.get("min") is not None:
            out.append(("below min", meta["min"] - (1 if hint is int else abs(meta["min"]) * 0.5 + 0.01)))
        if meta.get("max") is not None:
            out.append(("above max", meta["max"] + 1))
    elif hint is str:
        out += [("integer", 5), ("list", ["a"])]
        if meta.get("choices"):
            out.append(("not a choice", "bogus-choice"))
    elif typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        out.append(("scalar instead of list", "not-a-list"))
        out.append(("wrong item type", ["x"] if item is int else [5]))
    else:
        pytest.fail(f"{key_path}: test does not know type {hint!r}; extend _bad_values")
    return out


ALL_KEYS = list(iter_keys())
BAD_CASES = [pytest.param(key, value, id=f"{key}-{why}") for key, f in ALL_KEYS for why, value in _bad_values(key, f)]


def test_defaults_without_a_file():
    assert load_config(None) == Config()


def test_example_file_is_the_rendering_of_the_tree():
    assert EXAMPLE.read_text(encoding="utf-8") == config_example.render(), (
        "config.example.toml is stale: python -m infersight.daemon.config.example > config.example.toml")


def test_example_module_prints_the_committed_file():
    out = subprocess.run([sys.executable, "-m", "infersight.daemon.config.example"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out == EXAMPLE.read_text(encoding="utf-8")


def test_loading_the_example_gives_the_defaults():
    assert load_config(EXAMPLE) == Config()


def test_example_documents_every_key():
    text = EXAMPLE.read_text(encoding="utf-8")
    for key, field in ALL_KEYS:
        leaf = key.rsplit(".", 1)[-1]
        assert f"\n{leaf} = " in text, key
        assert field.metadata.get("doc"), f"{key} has no doc"


@pytest.mark.parametrize("key, value", BAD_CASES)
def test_every_bad_value_names_its_key(tmp_path, key, value):
    path = tmp_path / "bad.toml"
    path.write_text(_one_key_toml(key, value), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{key}:") or message.startswith(f"{key}["), message
    assert "\n" not in message


@pytest.mark.parametrize("key, value", BAD_CASES[:40])
def test_overrides_validate_like_the_file(key, value):
    with pytest.raises(ConfigError) as info:
        with_overrides(Config(), **{key: value})
    assert str(info.value).startswith(key), str(info.value)


def test_good_values_load(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text('[storage]\nflush_interval_s = 2\nretention_hours = 1\n'
                    '[targets]\npids = [1, 2]\n[collectors.gpu]\ngpm = "off"\n', encoding="utf-8")
    cfg = load_config(path)
    assert cfg.storage.flush_interval_s == 2.0 and isinstance(cfg.storage.flush_interval_s, float)
    assert cfg.targets.pids == (1, 2)
    assert cfg.collectors.gpu.gpm == "off"
    assert cfg.web == Config().web


@pytest.mark.parametrize("text, start", [
    ("[storage]\nbogus = 1\n", "storage.bogus: unknown key"),
    ("[bogus]\nx = 1\n", "bogus: unknown key"),
    ("[collectors.gpu]\nfast = 1\n", "collectors.gpu.fast: unknown key"),
    ("storage = 5\n", "storage: expected a table"),
    ("[storage]\nflush_interval_s = nan\n", "storage.flush_interval_s: expected a finite number"),
    ("[storage]\nretention_hours = inf\n", "storage.retention_hours: expected a finite number"),
    ("[targets]\npids = [1, \"2\"]\n", "targets.pids[1]:"),
])
def test_structural_errors_name_the_key(tmp_path, text, start):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(start), str(info.value)


def test_unreadable_files_say_which_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[storage\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(broken)
    assert str(info.value).startswith(str(broken))


def test_override_of_unknown_key():
    with pytest.raises(ConfigError, match=r"^storage\.nope: unknown key"):
        with_overrides(Config(), **{"storage.nope": 1})


NUMERIC_RANGES = [(key, f.metadata) for key, f in ALL_KEYS
                  if _leaf_hint(key) is float and (f.metadata.get("min") is not None)]


@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from(NUMERIC_RANGES), value=st.floats(allow_nan=False, allow_infinity=False,
                                                             min_value=-1e6, max_value=1e6))
def test_numeric_range_is_enforced_exactly(case, value):
    key, meta = case
    inside = value >= meta["min"] and (meta["max"] is None or value <= meta["max"])
    if inside:
        cfg = with_overrides(Config(), **{key: value})
        section = cfg
        for part in key.split("."):
            section = getattr(section, part)
        assert section == value
    else:
        with pytest.raises(ConfigError) as info:
            with_overrides(Config(), **{key: value})
        assert str(info.value).startswith(f"{key}: must be")


# -- the CLI: one clear line and exit code 2 --------------------------------------------------

def test_cli_bad_value_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[storage]\nretention_hours = \"x\"\n", encoding="utf-8")
    code = cli.main(["run", "--config", str(path), "--db", str(tmp_path / "db.duckdb")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("infersight: config error: storage.retention_hours:")
    assert not (tmp_path / "db.duckdb").exists()  # nothing started


@pytest.mark.parametrize("args, key", [
    (["--listen", "nonsense"], "web.listen"),
    (["--listen", "127.0.0.1:99999"], "web.listen"),
    (["--listen", "0.0.0.0:0"], "web.listen"),
])
def test_cli_bad_flags_name_the_key(tmp_path, capsys, args, key):
    code = cli.main(["run", "--db", str(tmp_path / "db.duckdb"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"infersight: config error: {key}:"), err
    assert err.count("\n") == 1


def test_cli_check_with_bad_config_exits_2(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[collectors.stacks]\nrate_hz = 0\n", encoding="utf-8")
    assert cli.main(["check", "--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith("infersight: config error: collectors.stacks.rate_hz: must be >= 1")


def test_installed_entry_point_reports_bad_config(tmp_path):
    """The console script (what systemd runs) behaves like main(): one line, exit 2."""
    path = tmp_path / "c.toml"
    path.write_text("[web]\nallow_unauthenticated = \"yes\"\n", encoding="utf-8")
    exe = Path(sys.executable).parent / "infersight"
    assert exe.exists(), "the infersight console script is not installed beside this Python (pip install -e .)"
    proc = subprocess.run([str(exe), "run", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        'infersight: config error: web.allow_unauthenticated: expected true or false, got "yes"']
