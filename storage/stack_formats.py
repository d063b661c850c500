"""Exports of a Profile: Brendan Gregg's folded text and speedscope JSON, and the choice of
stacks a bounded export keeps (:func:`heaviest_stacks`). Pure functions; no SQL.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infersight.storage.stacks import FrameKey, Profile


def number(v: float) -> int | float:
    """``v`` as an int when it is one (sample counts), else rounded to 3 decimals."""
    r = round(v)
    return int(r) if abs(v - r) < 1e-9 else round(v, 3)


@dataclass(frozen=True)
class Selection:
    """The stacks an export keeps: heaviest first, within a node and a frame budget.

    ``nodes`` (None when unbounded) counts the distinct call paths of the kept stacks (their
    prefixes, frames told apart by line as the exports write them): the analogue of the JSON
    tree's node budget. The frame budget of :func:`heaviest_stacks` bounds the size, which
    grows with frames written, not with nodes.
    """

    stacks: list[tuple[tuple[FrameKey, ...], float]]
    total_stacks: int
    omitted_value: float
    nodes: int | None

    @property
    def truncated(self) -> bool:
        return len(self.stacks) < self.total_stacks

    def headers(self) -> dict[str, str]:
        """HTTP headers saying what the export holds (text formats have no place for it)."""
        return {"X-Infersight-Truncated": "true" if self.truncated else "false",
                "X-Infersight-Stacks": f"{len(self.stacks)}/{self.total_stacks}",
                "X-Infersight-Omitted-Value": str(number(self.omitted_value))}


def heaviest_stacks(profile: Profile, max_nodes: int | None = None, max_frames: int | None = None) -> Selection:
    """The profile's stacks (non-empty, positive value), heaviest first, as many as fit.

    Stops at the first stack that would take the kept set past ``max_nodes`` distinct call
    paths or ``max_frames`` frame references (None: no bound), so what is kept is always
    the heaviest part of the profile.
    """
    ordered = sorted(((p, v) for p, v in profile.stacks.items() if p and v > 0), key=lambda kv: -kv[1])
    if max_nodes is None and max_frames is None:
        return Selection(ordered, len(ordered), 0.0, None)
    trie: dict = {}
    nodes = frames = 0
    kept: list[tuple[tuple[FrameKey, ...], float]] = []
    for path, value in ordered:
        if max_frames is not None and frames + len(path) > max_frames:
            break
        new, level, walked = 0, trie, []
        for f in path:
            nxt = level.get(f)
            if nxt is None:
                new += 1
                nxt = {}
                walked.append((level, f, nxt))
            level = nxt
        if max_nodes is not None and nodes + new > max_nodes:
            break
        for parent, f, child in walked:
            parent[f] = child
        nodes += new
        frames += len(path)
        kept.append((path, value))
    omitted = sum(v for _, v in ordered[len(kept):])
    return Selection(kept, len(ordered), omitted, nodes)


def folded(profile: Profile, selection: Selection | None = None) -> str:
    """Brendan Gregg's collapsed format: ``frame;frame;frame value`` per line, root first,
    heaviest stack first (all stacks, or those of ``selection``).

    Frames are written as ``function (file:line)``; semicolons and newlines inside names are
    replaced so a line always parses back into the same frames.
    """
    chosen = selection.stacks if selection is not None else heaviest_stacks(profile).stacks
    lines = [f"{';'.join(_folded_name(f) for f in path)} {number(value)}" for path, value in chosen]
    return "\n".join(lines) + ("\n" if lines else "")


def _folded_name(f: FrameKey) -> str:
    fn, file, line = f
    text = f"{fn} ({file}:{line})" if file else fn
    return text.replace(";", ":").replace("\n", " ").replace("\r", " ")


def speedscope(profile: Profile, name: str = "infersight", selection: Selection | None = None) -> dict[str, Any]:
    """A speedscope file (https://www.speedscope.app/file-format-schema.json), one sampled
    profile of all stacks or those of ``selection``."""
    chosen = selection.stacks if selection is not None else [(p, v) for p, v in profile.stacks.items() if p and v > 0]
    frame_index: dict[FrameKey, int] = {}
    frames: list[dict[str, Any]] = []
    samples, weights = [], []
    for path, value in chosen:
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
