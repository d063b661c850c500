"""Renders config.example.toml from the config tree, so the two cannot drift apart.

``python -m infersight.daemon.config.example > config.example.toml`` rewrites the file;
tests/test_config.py fails when the committed file differs from this rendering.
"""
from __future__ import annotations

import dataclasses
import json
import typing

from infersight.daemon.config.load import Config

HEADER = """\
# infersight configuration. Every key is shown with its default value; delete what you do
# not change. Units are in the comments and in the key names (_s seconds, _mb MiB, _hz per
# second). `infersight run --config FILE` reads it; `infersight check --config FILE` tests it.
"""


def render() -> str:
    """The example file: one table per section, every key at its default with its doc."""
    out = [HEADER]
    _render_table(Config(), "", out)
    return "\n".join(out).rstrip("\n") + "\n"


def _render_table(obj: typing.Any, prefix: str, out: list[str]) -> None:
    hints = typing.get_type_hints(type(obj))
    scalars = [f for f in dataclasses.fields(obj) if not dataclasses.is_dataclass(hints[f.name])]
    tables = [f for f in dataclasses.fields(obj) if dataclasses.is_dataclass(hints[f.name])]
    if scalars:
        if prefix:
            out.append(f"[{prefix}]")
        for f in scalars:
            for line in _wrap(f.metadata.get("doc", "")):
                out.append(f"# {line}")
            out.append(f"{f.name} = {_toml(getattr(obj, f.name))}")
            item = _table_array_item(hints[f.name])
            if item is not None:
                out += _commented_table(item, f"{prefix}.{f.name}" if prefix else f.name)
        out.append("")
    for f in tables:
        _render_table(getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name, out)


def _table_array_item(hint: typing.Any) -> type | None:
    """The item dataclass of a ``tuple[SomeConfig, ...]`` field (an array of tables), else None."""
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if dataclasses.is_dataclass(item):
            return item
    return None


def _commented_table(item: type, key: str) -> list[str]:
    """One commented-out ``[[key]]`` table: the item class's ``example()`` with every key's doc.

    Arrays of tables cannot sit beside ``key = []`` in one file, so the example stays commented
    and its doc (on the ``key = []`` line above) says to delete that line when adding one.
    """
    example = item.example()
    out = [f"# [[{key}]]"]
    for f in dataclasses.fields(example):
        for line in _wrap(f.metadata.get("doc", ""), width=86):
            out.append(f"# # {line}")
        out.append(f"# {f.name} = {_toml(getattr(example, f.name))}")
    return out


def _toml(value: typing.Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        if not value:
            return "[]"
        if all(dataclasses.is_dataclass(v) for v in value):
            raise TypeError("arrays of tables are documented by hand")
        inner = ",\n".join(f"  {_toml(v)}" for v in value)
        return f"[\n{inner},\n]"
    raise TypeError(f"cannot render {value!r}")


def _wrap(text: str, width: int = 88) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


if __name__ == "__main__":
    print(render(), end="")
