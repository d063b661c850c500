"""Renderers of a Profile: flame tree, folded text, speedscope JSON, and a diff tree.

Pure functions over storage.stacks.Profile; no SQL. Frames merge by (function, file): the
tree shows one node per call path of functions, and each node carries the line that
contributed most of its samples.
"""
from __future__ import annotations

from typing import Any

from infersight.storage.stacks import FrameKey, Profile

ROOT = "all"


class _Node:
    __slots__ = ("name", "file", "value", "children", "lines")

    def __init__(self, name: str, file: str) -> None:
        self.name, self.file, self.value = name, file, 0.0
        self.children: dict[tuple[str, str], _Node] = {}
        self.lines: dict[int, float] = {}


def _build(stacks: dict[tuple[FrameKey, ...], float]) -> _Node:
    root = _Node(ROOT, "")
    for path, value in stacks.items():
        node = root
        node.value += value
        for fn, file, line in path:
            child = node.children.get((fn, file))
            if child is None:
                child = node.children[(fn, file)] = _Node(fn, file)
            child.value += value
            child.lines[line] = child.lines.get(line, 0.0) + value
            node = child
    return root


def number(v: float) -> int | float:
    r = round(v)
    return int(r) if abs(v - r) < 1e-9 else round(v, 3)


def flame_tree(profile: Profile, max_nodes: int | None = None, min_share: float = 0.0) -> dict[str, Any]:
    """``{"name","value","file","line","children"}``; value = the subtree's total.

    Children are sorted by value, largest first. ``min_share`` drops subtrees below that
    share of the total (their value stays in the parent); ``max_nodes`` caps the size.
    """
    root = _build(profile.stacks)
    floor = root.value * min_share
    budget = [max_nodes if max_nodes is not None else float("inf")]

    def emit(node: _Node) -> dict[str, Any]:
        budget[0] -= 1
        line = max(node.lines, key=node.lines.get) if node.lines else 0
        out: dict[str, Any] = {"name": node.name, "value": number(node.value), "file": node.file, "line": line,
                               "children": []}
        for child in sorted(node.children.values(), key=lambda c: -c.value):
            if child.value < floor or child.value <= 0 or budget[0] <= 0:
                continue
            out["children"].append(emit(child))
        return out

    return emit(root)


def folded(profile: Profile) -> str:
    """Brendan Gregg's collapsed format: ``frame;frame;frame value`` per line, root first.

    Frames are written as ``function (file:line)``; semicolons and newlines inside names are
    replaced so a line always parses back into the same frames.
    """
    lines = []
    for path, value in sorted(profile.stacks.items(), key=lambda kv: -kv[1]):
        if not path or value <= 0:
            continue
        names = ";".join(_folded_name(f) for f in path)
        lines.append(f"{names} {number(value)}")
    return "\n".join(lines) + ("\n" if lines else "")


def _folded_name(f: FrameKey) -> str:
    fn, file, line = f
    text = f"{fn} ({file}:{line})" if file else fn
    return text.replace(";", ":").replace("\n", " ").replace("\r", " ")


def speedscope(profile: Profile, name: str = "infersight") -> dict[str, Any]:
    """A speedscope file (https://www.speedscope.app/file-format-schema.json), one sampled profile."""
    frame_index: dict[FrameKey, int] = {}
    frames: list[dict[str, Any]] = []
    samples, weights = [], []
    for path, value in profile.stacks.items():
        if not path or value <= 0:
            continue
        ids = []
        for f in path:
            idx = frame_index.get(f)
            if idx is None:
                idx = frame_index[f] = len(frames)
                entry: dict[str, Any] = {"name": f[0]}
                if f[1]:
                    entry["file"] = f[1]
                if f[2]:
                    entry["line"] = f[2]
                frames.append(entry)
            ids.append(idx)
        samples.append(ids)
        weights.append(number(value))
    unit = "none"
    total = number(sum(weights)) if weights else 0
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [{
            "type": "sampled", "name": name, "unit": unit,
            "startValue": 0, "endValue": total, "samples": samples, "weights": weights,
        }],
        "name": name, "activeProfileIndex": 0, "exporter": "infersight",
    }


def diff_tree(a: Profile, b: Profile) -> dict[str, Any]:
    """One tree over both profiles: each node has ``a`` and ``b`` (values), ``value`` = b,
    and ``a_share``/``b_share``/``delta_share`` (share of each profile's total, so ranges of
    different length compare fairly; delta = b_share - a_share)."""
    ta, tb = _build(a.stacks), _build(b.stacks)
    total_a, total_b = ta.value or 1.0, tb.value or 1.0

    def emit(na: _Node | None, nb: _Node | None, name: str, file: str) -> dict[str, Any]:
        va = na.value if na else 0.0
        vb = nb.value if nb else 0.0
        lines = dict(nb.lines if nb else {})
        for k, v in (na.lines if na else {}).items():
            lines[k] = lines.get(k, 0.0) + v
        out: dict[str, Any] = {
            "name": name, "file": file, "line": max(lines, key=lines.get) if lines else 0,
            "value": number(vb), "a": number(va), "b": number(vb),
            "a_share": round(va / total_a, 6), "b_share": round(vb / total_b, 6),
            "delta_share": round(vb / total_b - va / total_a, 6), "children": [],
        }
        keys = set(na.children if na else ()) | set(nb.children if nb else ())
        kids = [emit(na.children.get(k) if na else None, nb.children.get(k) if nb else None, k[0], k[1])
                for k in keys]
        out["children"] = sorted(kids, key=lambda c: -(c["b"] + c["a"]))
        return out

    return emit(ta, tb, ROOT, "")


def top_changes(diff: dict[str, Any], limit: int = 20) -> list[dict[str, Any]]:
    """Functions whose self share changed most between a and b (by absolute change)."""
    self_a: dict[tuple[str, str], float] = {}
    self_b: dict[tuple[str, str], float] = {}

    def walk(node: dict[str, Any]) -> None:
        kids_a = sum(c["a_share"] for c in node["children"])
        kids_b = sum(c["b_share"] for c in node["children"])
        if node["name"] != ROOT:
            key = (node["name"], node["file"])
            self_a[key] = self_a.get(key, 0.0) + max(0.0, node["a_share"] - kids_a)
            self_b[key] = self_b.get(key, 0.0) + max(0.0, node["b_share"] - kids_b)
        for c in node["children"]:
            walk(c)

    walk(diff)
    rows = [{"name": k[0], "file": k[1], "a_share": round(self_a.get(k, 0.0), 6),
             "b_share": round(self_b.get(k, 0.0), 6),
             "delta_share": round(self_b.get(k, 0.0) - self_a.get(k, 0.0), 6)}
            for k in set(self_a) | set(self_b)]
    rows.sort(key=lambda r: -abs(r["delta_share"]))
    return rows[:limit]


def top_frames(profile: Profile, limit: int = 5) -> list[dict[str, Any]]:
    """Functions ranked by self value (leaf samples) with their share of the total."""
    total = profile.total or 1.0
    by_fn: dict[tuple[str, str], float] = {}
    for path, value in profile.stacks.items():
        if path:
            key = (path[-1][0], path[-1][1])
            by_fn[key] = by_fn.get(key, 0.0) + value
    ranked = sorted(by_fn.items(), key=lambda kv: -kv[1])[:limit]
    return [{"frame": fn, "file": file, "share": round(v / total, 4)} for (fn, file), v in ranked]
