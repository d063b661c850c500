"""ARCHITECTURE.md is the map of the code; these tests keep it honest.

Every import of every module under daemon/, storage/ and web/ (at the top and inside
functions) is read with ``ast`` and checked against the map's "may import" column; the
module graph must have no cycle; only storage/ imports duckdb; daemon/'s top level holds no
family of modules that share a name prefix.
"""
from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"daemon": "infersight.daemon", "storage": "infersight.storage", "web": "infersight.web"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three folders."""
    found = {}
    for folder, dotted in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([dotted, *parts])] = path
    return found


MODULES = _modules()
PACKAGES = sorted({m for m, p in MODULES.items() if p.name == "__init__.py"})


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, nested ones included; for
    ``from P import name`` the module ``P.name`` when that is a module, else ``P``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; the map checks absolute names"
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.append((node.lineno, full if full in MODULES else node.module))
    return out


def _package_of(module: str) -> str:
    """The innermost package that holds ``module`` (a package holds itself)."""
    if module in PACKAGES:
        return module
    return module.rsplit(".", 1)[0]


def _map() -> dict[str, list[str]]:
    """ARCHITECTURE.md's package table: package -> the names it may import (full dotted)."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    table = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`([\w.]+)`\s*\|[^|]*\|([^|]*)\|\s*$", line)
        if m:
            table["infersight." + m.group(1)] = ["infersight." + n for n in re.findall(r"`([\w.]+)`", m.group(2))]
    assert table, "ARCHITECTURE.md has no package table"
    return table


def _within(name: str, allowed: str) -> bool:
    return name == allowed or name.startswith(allowed + ".")


def test_every_package_is_on_the_map():
    table = _map()
    assert sorted(table) == PACKAGES, "ARCHITECTURE.md's table and the packages in the tree differ"


def test_every_import_follows_the_map():
    table = _map()
    wrong = []
    for module, path in MODULES.items():
        package = _package_of(module)
        for line, name in _imports(path):
            if not name.startswith("infersight"):
                continue
            # a package's own subpackages are its own rooms only when the map does not list them
            own = _within(name, package) and not any(_within(name, p) for p in table if p != package and _within(p, package))
            if not own and not any(_within(name, a) for a in table[package]):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({package} may import: "
                             f"{', '.join(table[package]) or 'nothing of infersight'})")
    assert not wrong, "imports across a line ARCHITECTURE.md forbids:\n" + "\n".join(wrong)


def test_only_storage_imports_duckdb():
    wrong = [f"{p.relative_to(ROOT)}:{line}" for m, p in MODULES.items() if not m.startswith("infersight.storage")
             for line, name in _imports(p) if name.split(".")[0] == "duckdb"]
    assert not wrong, f"duckdb imported outside storage/: {wrong}"


def test_no_import_cycles():
    graph = {m: {n for _, n in _imports(p) if n in MODULES and n != m} for m, p in MODULES.items()}
    # a module importing P.x also runs P/__init__: count that edge too
    for m in list(graph):
        for n in list(graph[m]):
            parent = n.rsplit(".", 1)[0]
            if parent in MODULES and parent != m and not _within(m, parent):
                graph[m].add(parent)
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_daemon_top_level_has_no_module_family():
    top = [p.stem for p in (ROOT / "daemon").glob("*.py") if p.stem != "__init__"]
    top += [p.name for p in (ROOT / "daemon").iterdir() if (p / "__init__.py").exists()]
    prefixes = Counter(name.split("_")[0] for name in top)
    families = sorted(f"{prefix}_*" for prefix, n in prefixes.items() if n > 1)
    assert not families, f"daemon/ holds module families that should be packages: {families}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_installed(package):
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"{package}"' in pyproject, f"{package} is missing from [tool.setuptools] packages"
