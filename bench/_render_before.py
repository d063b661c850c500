"""The flame graph and diff renderers as they were before trees were walked iteratively
(storage/render.py at commit 975574a, recursive, encoded by one ``orjson.dumps``): the
reference bench/flame_render.py times the current code against. Not used by the agent.
"""
from __future__ import annotations

from typing import Any

import orjson

from infersight.storage.render import ROOT, _build, number
from infersight.storage.stacks import Profile


def flame_tree(profile: Profile, max_nodes: int | None = None) -> dict[str, Any]:
    root = _build(profile.stacks)
    budget = [max_nodes if max_nodes is not None else float("inf")]

    def emit(node) -> dict[str, Any]:
        budget[0] -= 1
        line = max(node.lines, key=node.lines.get) if node.lines else 0
        out: dict[str, Any] = {"name": node.name, "value": number(node.value), "file": node.file, "line": line,
                               "children": []}
        for child in sorted(node.children.values(), key=lambda c: -c.value):
            if child.value <= 0 or budget[0] <= 0:
                continue
            out["children"].append(emit(child))
        return out

    return emit(root)


def diff_tree(a: Profile, b: Profile) -> dict[str, Any]:
    ta, tb = _build(a.stacks), _build(b.stacks)
    total_a, total_b = ta.value or 1.0, tb.value or 1.0

    def emit(na, nb, name: str, file: str) -> dict[str, Any]:
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
    rows = [{"name": k[0], "file": k[1], "delta_share": round(self_b.get(k, 0.0) - self_a.get(k, 0.0), 6)}
            for k in set(self_a) | set(self_b)]
    rows.sort(key=lambda r: -abs(r["delta_share"]))
    return rows[:limit]


def flame_body(profile: Profile, max_nodes: int, extra: dict[str, Any]) -> bytes:
    """What /api/flamegraph answered: the tree plus ``extra``, one orjson.dumps."""
    tree = flame_tree(profile, max_nodes=max_nodes)
    tree.update(extra)
    return orjson.dumps(tree, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def diff_body(a: Profile, b: Profile, extra: dict[str, Any]) -> bytes:
    """What /api/diff answered (unbounded tree, top changes from the tree)."""
    tree = diff_tree(a, b)
    tree.update(extra, top_changes=top_changes(tree))
    return orjson.dumps(tree, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
