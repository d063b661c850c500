"""pyproject.toml installs the UI's files without setuptools' notices: every folder of web/static
is listed as a package (setuptools warns, in 40 lines, about a data folder that is importable but
not listed), and every file there matches its folder's package-data patterns (else a wheel would
leave it out and the UI would miss it)."""
from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "web" / "static"


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def _folders() -> list[Path]:
    return [STATIC, *sorted(p for p in STATIC.rglob("*") if p.is_dir() and p.name != "__pycache__")]


def _package(folder: Path) -> str:
    return "infersight.web." + ".".join(folder.relative_to(ROOT / "web").parts)


def test_every_static_folder_is_a_listed_package():
    packages = set(_setuptools()["packages"])
    missing = [_package(f) for f in _folders() if _package(f) not in packages]
    assert not missing, f"add to [tool.setuptools] packages: {missing}"


def test_every_static_file_is_package_data():
    data = _setuptools()["package-data"]
    left_out = []
    for folder in _folders():
        patterns = data.get(_package(folder), [])
        for f in folder.iterdir():
            if f.is_file() and not any(fnmatch.fnmatch(f.name, p) for p in patterns):
                left_out.append(str(f.relative_to(ROOT)))
    assert not left_out, f"not installed by [tool.setuptools.package-data]: {left_out}"
