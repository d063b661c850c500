"""Renderers of a Profile: the flame tree and the diff tree, as dicts or as JSON text (the
folded and speedscope exports are in storage/stack_formats.py, re-exported here).

Pure functions over storage.stacks.Profile; no SQL. Frames merge by (function, file): the
tree shows one node per call path of functions, and each node carries the line that
contributed most of its samples.

Nothing here recurses: real start-up stacks are hundreds of frames deep (vLLM's imports
reach 243), beyond Python's recursion limit for some and beyond any fixed nesting budget,
so trees are built and walked with explicit stacks. Every output is bounded by a node
budget (``max_nodes``) that keeps the heaviest part and says what it left out.
"""
from __future__ import annotations

from typing import Any

import orjson

# The exports (folded text, speedscope) live in stack_formats; they are named here too, where
# their callers (the API, the Pyroscope exporter) look for every renderer of a profile.
from infersight.storage.stack_formats import Selection, folded, heaviest_stacks, number, speedscope  # noqa: F401
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


def _top_line(lines: dict[int, float]) -> int:
    return max(lines, key=lines.get) if lines else 0


def flame_tree(profile: Profile, max_nodes: int | None = None, min_share: float = 0.0) -> dict[str, Any]:
    """``{"name","value","file","line","children"}``; value = the subtree's total.

    Children are sorted by value, largest first. ``min_share`` drops subtrees below that
    share of the total (their value stays in the parent); ``max_nodes`` caps the size: nodes
    are taken depth-first, heaviest child first, until the budget is spent. The root also
    carries ``"nodes"`` (how many were returned) and ``"truncated"`` (whether the budget left
    some out; a dropped subtree's value stays in its parent).
    """
    sink = _DictSink()
    nodes, truncated = _flame_walk(_build(profile.stacks), sink, max_nodes, min_share)
    sink.root.update(nodes=nodes, truncated=truncated)
    return sink.root


def flame_json(profile: Profile, max_nodes: int | None = None, min_share: float = 0.0,
               extra: dict[str, Any] | None = None) -> bytes:
    """:func:`flame_tree` as JSON text, written as the tree is walked (no nesting limit, no
    dicts built), with ``extra`` fields added to the root."""
    sink = _TextSink(extra)
    nodes, truncated = _flame_walk(_build(profile.stacks), sink, max_nodes, min_share)
    return sink.finish({"nodes": nodes, "truncated": truncated})


def flame_json_root(root: _Node, max_nodes: int | None = None, extra: dict[str, Any] | None = None,
                    truncated: bool = False) -> bytes:
    """:func:`flame_json` of a tree already built (storage/flame_query.py); ``truncated``
    says the tree itself holds only part of the range (the root says so either way)."""
    sink = _TextSink(extra)
    nodes, cut = _flame_walk(root, sink, max_nodes, 0.0)
    return sink.finish({"nodes": nodes, "truncated": cut or truncated})


def _flame_fields(node: _Node) -> dict[str, Any]:
    return {"name": node.name, "value": number(node.value), "file": node.file, "line": _top_line(node.lines)}


def _flame_walk(root: _Node, sink, max_nodes: int | None, min_share: float) -> tuple[int, bool]:
    """Hand ``sink`` the tree depth-first, heaviest child first (enter/leave per node, the
    root left open); returns (nodes handed, whether the budget left some out)."""
    floor = root.value * min_share
    limit = max_nodes if max_nodes is not None else float("inf")
    sink.enter(_flame_fields(root))
    emitted = 1
    # each entry: the remaining children of a node that is open in the sink
    stack = [iter(sorted(root.children.values(), key=lambda c: -c.value))]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            if stack:
                sink.leave()
            continue
        if child.value < floor or child.value <= 0:
            continue
        if emitted >= limit:
            while len(stack) > 1:  # close every node still open, except the root
                stack.pop()
                sink.leave()
            return emitted, True
        sink.enter(_flame_fields(child))
        emitted += 1
        stack.append(iter(sorted(child.children.values(), key=lambda c: -c.value)))
    return emitted, False


class _DictSink:
    """Builds the tree as nested dicts (``root`` once the walk is done)."""

    def __init__(self) -> None:
        self.root: dict[str, Any] = {}
        self.open: list[dict[str, Any]] = []

    def enter(self, fields: dict[str, Any]) -> None:
        fields["children"] = []
        if self.open:
            self.open[-1]["children"].append(fields)
        else:
            self.root = fields
        self.open.append(fields)

    def leave(self) -> None:
        self.open.pop()


class _TextSink:
    """Writes the tree as JSON text while it is walked: a node's fields when it is entered,
    its children's text, then ``]}`` when it is left, so depth costs no nesting anywhere.
    ``extra`` fields go on the root (before its children), :meth:`finish`'s after them."""

    def __init__(self, extra: dict[str, Any] | None) -> None:
        self.extra = extra or {}
        self.parts: list[bytes] = []
        self.comma = False  # whether the next node entered follows a sibling

    def enter(self, fields: dict[str, Any]) -> None:
        if not self.parts:
            fields = {**fields, **self.extra}
        text = orjson.dumps(fields, option=orjson.OPT_SERIALIZE_NUMPY)
        self.parts.append((b"," if self.comma else b"") + text[:-1] + b',"children":[')
        self.comma = False

    def leave(self) -> None:
        self.parts.append(b"]}")
        self.comma = True

    def finish(self, trailer: dict[str, Any]) -> bytes:
        """Close the root with ``trailer``'s fields; the document's bytes."""
        self.parts.append(b"]," + orjson.dumps(trailer, option=orjson.OPT_SERIALIZE_NUMPY)[1:])
        return b"".join(self.parts)


def diff_tree(a: Profile, b: Profile, max_nodes: int | None = None) -> dict[str, Any]:
    """One tree over both profiles: each node has ``a`` and ``b`` (values), ``value`` = b,
    and ``a_share``/``b_share``/``delta_share`` (share of each profile's total, so ranges of
    different length compare fairly; delta = b_share - a_share).

    Children are sorted by a + b, largest first; ``max_nodes`` caps the size as in
    :func:`flame_tree` (the root carries ``"nodes"`` and ``"truncated"`` too).
    """
    sink = _DictSink()
    nodes, truncated = _diff_walk(a, b, sink, max_nodes)
    sink.root.update(nodes=nodes, truncated=truncated)
    return sink.root


def diff_json(a: Profile, b: Profile, max_nodes: int | None = None, extra: dict[str, Any] | None = None) -> bytes:
    """:func:`diff_tree` as JSON text written while walking (see :func:`flame_json`)."""
    sink = _TextSink(extra)
    nodes, truncated = _diff_walk(a, b, sink, max_nodes)
    return sink.finish({"nodes": nodes, "truncated": truncated})


def diff_json_roots(ta: _Node, tb: _Node, max_nodes: int | None = None, extra: dict[str, Any] | None = None,
                    truncated: bool = False) -> bytes:
    """:func:`diff_json` of two trees already built (storage/flame_query.py)."""
    sink = _TextSink(extra)
    nodes, cut = _diff_walk_roots(ta, tb, sink, max_nodes)
    return sink.finish({"nodes": nodes, "truncated": cut or truncated})


def _diff_walk(a: Profile, b: Profile, sink, max_nodes: int | None) -> tuple[int, bool]:
    return _diff_walk_roots(_build(a.stacks), _build(b.stacks), sink, max_nodes)


def _diff_walk_roots(ta: _Node, tb: _Node, sink, max_nodes: int | None) -> tuple[int, bool]:
    total_a, total_b = ta.value or 1.0, tb.value or 1.0

    def fields(na: _Node | None, nb: _Node | None) -> dict[str, Any]:
        va = na.value if na else 0.0
        vb = nb.value if nb else 0.0
        lines = dict(nb.lines if nb else {})
        for k, v in (na.lines if na else {}).items():
            lines[k] = lines.get(k, 0.0) + v
        first = nb or na
        return {"name": first.name, "file": first.file, "line": _top_line(lines),
                "value": number(vb), "a": number(va), "b": number(vb),
                "a_share": round(va / total_a, 6), "b_share": round(vb / total_b, 6),
                "delta_share": round(vb / total_b - va / total_a, 6)}

    def pairs(na: _Node | None, nb: _Node | None):
        ka = na.children if na else {}
        kb = nb.children if nb else {}
        both = [(ka.get(k), kb.get(k)) for k in ka.keys() | kb.keys()]
        both.sort(key=lambda p: -((p[0].value if p[0] else 0.0) + (p[1].value if p[1] else 0.0)))
        return iter(both)

    limit = max_nodes if max_nodes is not None else float("inf")
    sink.enter(fields(ta, tb))
    emitted = 1
    stack = [pairs(ta, tb)]
    while stack:
        pair = next(stack[-1], None)
        if pair is None:
            stack.pop()
            if stack:
                sink.leave()
            continue
        if emitted >= limit:
            while len(stack) > 1:
                stack.pop()
                sink.leave()
            return emitted, True
        sink.enter(fields(*pair))
        emitted += 1
        stack.append(pairs(*pair))
    return emitted, False


def _walk(tree: dict[str, Any]):
    """Every node of a tree of dicts, depth-first, without recursion."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node["children"])


def top_changes(diff: dict[str, Any], limit: int = 20) -> list[dict[str, Any]]:
    """Functions whose self share changed most between a and b (by absolute change)."""
    self_a: dict[tuple[str, str], float] = {}
    self_b: dict[tuple[str, str], float] = {}
    for node in _walk(diff):
        if node is diff:
            continue
        kids_a = sum(c["a_share"] for c in node["children"])
        kids_b = sum(c["b_share"] for c in node["children"])
        key = (node["name"], node["file"])
        self_a[key] = self_a.get(key, 0.0) + max(0.0, node["a_share"] - kids_a)
        self_b[key] = self_b.get(key, 0.0) + max(0.0, node["b_share"] - kids_b)
    return _ranked_changes(self_a, self_b, limit)


def profile_changes(a: Profile, b: Profile, limit: int = 20) -> list[dict[str, Any]]:
    """:func:`top_changes` computed from the profiles themselves: a function's self share is
    the share of stacks whose leaf it is, so a truncated diff tree does not distort it."""
    return ranked_changes(_leaf_shares(a), _leaf_shares(b), limit)


def ranked_changes(self_a: dict[tuple[str, str], float], self_b: dict[tuple[str, str], float],
                   limit: int = 20) -> list[dict[str, Any]]:
    """Functions by the absolute change of their self share, from two ``{(function, file):
    share}`` maps (:func:`profile_changes`, or storage/flame_query.py's ``leaf_shares``)."""
    return _ranked_changes(self_a, self_b, limit)


def _leaf_shares(profile: Profile) -> dict[tuple[str, str], float]:
    total = profile.total or 1.0
    out: dict[tuple[str, str], float] = {}
    for path, value in profile.stacks.items():
        if path and value > 0:
            key = (path[-1][0], path[-1][1])
            out[key] = out.get(key, 0.0) + value / total
    return out


def _ranked_changes(self_a: dict, self_b: dict, limit: int) -> list[dict[str, Any]]:
    rows = [{"name": k[0], "file": k[1], "a_share": round(self_a.get(k, 0.0), 6),
             "b_share": round(self_b.get(k, 0.0), 6),
             "delta_share": round(self_b.get(k, 0.0) - self_a.get(k, 0.0), 6)}
            for k in self_a.keys() | self_b.keys()]
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
