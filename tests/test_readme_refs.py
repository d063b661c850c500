"""What README.md and ARCHITECTURE.md name must exist: every repository path they quote
(in `code` or as a link), every `infersight COMMAND` and each of its `--flags`, every
`python -m MODULE`, every `make TARGET` (and its VAR=), every config key
(`section.key`), and every #anchor of a link. Text only: nothing is run.

What is quoted but lives outside the repository (other programs' flags, system paths) is
told apart by form (absolute paths, URLs, placeholders in capitals) or listed below with
the reason.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

from infersight.daemon.cli import _parser
from infersight.daemon.config.load import Config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "ARCHITECTURE.md")

# flags the docs quote that belong to other programs (docker, vLLM, SGLang, py-spy)
OTHER_FLAGS = {
    "--pid=host", "--pid=container:ENGINE", "--cap-add", "--security-opt", "--gpus", "--tensor-parallel-size",
    "--api-server-count", "--enforce-eager", "--enable-mfu-metrics", "--stream-interval", "--nonblocking",
    "--idle", "--subprocesses", "--load-format", "--profiler-config", "--duration", "--api-key",
    # flags of engines' command lines the masking examples quote (README: secrets in command lines)
    "--hfToken", "--api-keys", "--webhook-url", "--access-key-id", "--jwt", "--bearer",
}
# relative paths the docs quote that are not in the repository by design
NOT_IN_REPO = {
    ".venv/bin/": "made by `make` in a checkout",
    "nvidia.com/gpu": "a Kubernetes resource name",
}
# a quoted folder may be relative to a package folder (ARCHITECTURE.md's map names daemon/'s)
BASES = (ROOT, ROOT / "daemon", ROOT / "storage", ROOT / "web")
PATH_SUFFIXES = (".py", ".md", ".toml", ".service", ".conf", ".json", ".jsonl", ".sh", ".png", ".txt")
CONFIG_SECTIONS = {f.name for f in dataclasses.fields(Config)}


def _text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def code_spans(text: str) -> list[str]:
    """Inline `code` and every line of fenced blocks."""
    out = []
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    for block in fenced:
        out += block.splitlines()
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    out += re.findall(r"`([^`\n]+)`", prose)
    return out


def links(text: str) -> list[str]:
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return re.findall(r"\]\(([^)\s]+)\)", prose)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(name: str) -> set[str]:
    text = re.sub(r"^```[^\n]*\n.*?^```", "", _text(name), flags=re.S | re.M)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def repo_paths(span: str) -> list[str]:
    """Tokens of a code span that are relative repository paths (module doc)."""
    out = []
    for token in re.split(r"[\s,;()]+", span):
        token = token.strip("'\"`").rstrip(".:")
        if not token or token.startswith(("/", "-", "~", "$")) or "://" in token or "=" in token or "*" in token:
            continue
        if not re.fullmatch(r"(\./)?[\w.@+-]+(/[\w.@+-]*)*", token):
            continue
        if "/" not in token and not token.endswith(PATH_SUFFIXES):
            continue
        if any(seg.isupper() and len(seg) > 1 for seg in re.split(r"[/.]", token)):
            continue          # a placeholder: DIR/table=TABLE, PATH
        if token.endswith(".py") and "/" not in token and not (ROOT / token).exists():
            continue          # a module named by its file alone (`straggler.py` in a sentence)
        out.append(token)
    return out


def subcommands() -> dict[str, set[str]]:
    ap = _parser()
    action = next(a for a in ap._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: set(sp._option_string_actions) for name, sp in action.choices.items()}


def config_key_exists(key: str) -> bool:
    node: object = Config
    for part in key.split("."):
        if part == "*":
            return True
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            return False
        node = fields[part].type
        if isinstance(node, str):
            node = _resolve(node)
    return True


def _resolve(type_name: str):
    import infersight.daemon.config.load as load

    return getattr(load, type_name.split("[")[0].strip(), None)


def make_targets() -> tuple[set[str], set[str]]:
    text = _text("Makefile")
    targets = set(re.findall(r"^([\w.-]+):(?!=)", text, flags=re.M))
    variables = set(re.findall(r"^([A-Z_]+)\s*[?:]?=", text, flags=re.M))
    return targets, variables


@pytest.mark.parametrize("doc", DOCS)
def test_quoted_paths_exist(doc):
    missing = []
    for span in code_spans(_text(doc)):
        for token in repo_paths(span):
            if token in NOT_IN_REPO:
                continue
            if not any((base / token).exists() for base in BASES):
                missing.append(token)
    assert not missing, f"{doc} names paths that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("doc", DOCS)
def test_documents_named_in_prose_exist(doc):
    """``DESIGN.md`` in a sentence is a reference too (the README once pointed at one that is
    not in the repository)."""
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", _text(doc), flags=re.S | re.M)
    named = set(re.findall(r"\b([A-Z][A-Z_-]+\.md)\b", prose))
    assert named or doc != "README.md", "the check reads the prose"
    assert not [n for n in named if not (ROOT / n).exists()], named


@pytest.mark.parametrize("doc", DOCS)
def test_links_and_anchors_resolve(doc):
    bad = []
    for target in links(_text(doc)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = path or doc
        if path and not (ROOT / path).exists():
            bad.append(target)
        elif anchor and file.endswith(".md") and anchor not in anchors(file):
            bad.append(target)
    assert not bad, f"{doc} links to what does not exist: {bad}"


@pytest.mark.parametrize("doc", DOCS)
def test_commands_and_their_flags_exist(doc):
    known = subcommands()
    every_flag = set().union(*known.values())
    bad = []
    for span in code_spans(_text(doc)):
        span = span.split(" #")[0]
        for m in re.finditer(r"\binfersight ([a-z][\w-]*)(.*)", span):
            cmd, rest = m.group(1), m.group(2)
            if cmd not in known:
                bad.append(f"infersight {cmd}")
                continue
            rest = re.split(r"\binfersight |[|;&]", rest)[0]
            bad += [f"infersight {cmd} {f}" for f in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest) if f not in known[cmd]]
        if re.fullmatch(r"--[a-z][\w-]*(=\S+)?( \S+)?", span.strip()):
            flag = span.strip().split(" ")[0]
            if flag not in every_flag and flag not in OTHER_FLAGS and flag.split("=")[0] not in every_flag:
                bad.append(flag)
    assert not bad, f"{doc} names commands or flags that do not exist: {sorted(set(bad))}"


@pytest.mark.parametrize("doc", DOCS)
def test_modules_run_with_python_m_exist(doc):
    missing = [m for span in code_spans(_text(doc)) for m in re.findall(r"python3? -m (infersight[\w.]*)", span)
               if importlib.util.find_spec(m) is None]
    assert not missing, missing


@pytest.mark.parametrize("doc", DOCS)
def test_make_targets_and_variables_exist(doc):
    targets, variables = make_targets()
    bad = []
    for span in code_spans(_text(doc)):
        span = span.split(" #")[0]
        for m in re.finditer(r"\bmake ((?:[A-Z_]+=\S*|[\w-]+)(?: (?:[A-Z_]+=\S*|[\w-]+))*)", span):
            for word in m.group(1).split():
                if "=" in word:
                    if word.split("=")[0] not in variables:
                        bad.append(word)
                elif word not in targets:
                    bad.append(f"make {word}")
    assert not bad, f"{doc} names make targets or variables that do not exist: {bad}"


def test_config_keys_exist():
    """README's `section.key`s (ARCHITECTURE.md's dotted names are modules, checked by
    tests/test_architecture.py)."""
    bad = []
    for span in code_spans(_text("README.md")):
        for key in re.findall(r"^([a-z_]+(?:\.(?:[a-z_]+|\*))+)(?: =.*)?$", span.strip()):
            if key.split(".")[0] in CONFIG_SECTIONS and not config_key_exists(key):
                bad.append(key)
    assert not bad, f"README.md names config keys that do not exist: {bad}"


def test_the_checks_catch_what_the_issue_found():
    """The stale references issue 27 listed would fail these checks."""
    assert repo_paths("shared/tools/scenario/engine.py") == ["shared/tools/scenario/engine.py"]
    old = "the pausing mode cost about 35% on the H100 measurements in DESIGN.md"
    assert re.findall(r"\b([A-Z][A-Z_-]+\.md)\b", old) == ["DESIGN.md"] and not (ROOT / "DESIGN.md").exists()
    assert not (ROOT / "shared/tools/scenario/engine.py").exists()
    assert "serve" in subcommands() and "--listen" in subcommands()["demo"]
    assert "PORT" in make_targets()[1]
    assert not config_key_exists("web.no_such_key") and config_key_exists("web.auth_token")
