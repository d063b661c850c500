"""Pure parsers of py-spy 0.4 output: ``raw`` (folded counts), ``chrometrace`` and the summary line.

Nothing here does I/O or knows about time buckets (that is :mod:`.buckets`). Every
parser is tolerant: a malformed line or event is reported (``errors`` / ``bad``) and
skipped, the rest is kept.

Frame text, as py-spy's raw format writes it (``name`` is ``co_qualname`` on Python 3.11+):

- ``name (file:line)`` a Python frame; ``name (file)`` when the line is unknown (``--nolineno``
  or line 0); ``name`` alone when there is no file name (native frames without symbols);
- ``thread (TID): NAME`` (``--threads``): TID is the OS thread id in decimal when py-spy knows
  it (Python >= 3.11 carries it) and the Python thread ident in hex (``0x7f..``) otherwise;
- ``process PID:"CMDLINE"`` (``--subprocesses``), outermost first.

Chrometrace (``--format chrometrace``) is a JSON list of ``B``/``E`` events per thread:
``{"name", "ph", "pid", "tid", "ts", "args": {"filename", "line"}}`` with ``ts`` in µs since
the recorder started and ``tid`` the Python thread ident. py-spy emits events only when a
thread's stack changes and closes every open slice at the time it writes the file; the thread
and process pseudo-frames above appear as the outermost slices (empty filename).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from infersight.storage.model import Frame

_THREAD = re.compile(r"thread \((0x[0-9a-fA-F]+|\d+)\)(?:: (.*))?", re.S)
_PROCESS = re.compile(r'process (\d+):"(.*)"', re.S)
_FRAME = re.compile(r"(.*?) \((.*?)(?::(\d+))?\)", re.S)
_SUMMARY = re.compile(r"Samples: (\d+) Errors: (\d+)")
_PY_SUFFIX = re.compile(r"\.py[cw]?$")
_STDLIB = re.compile(r"/lib/python\d+(?:\.\d+)*t?/")
_FROZEN = re.compile(r"<frozen ([\w.]+)>")
# frame text -> Frame and stack text -> frame tuple, across calls: every window repeats its
# frames and stacks (a 5,000-frame stack, once a second); cleared when it outgrows the bound
_FRAME_CACHE: dict[str, Frame] = {}
_STACK_CACHE: dict[str, tuple[Frame, ...]] = {}
_FRAME_CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class ThreadLabel:
    """The ``thread (ID): NAME`` pseudo-frame. ``os_tid`` is None when py-spy printed a hex ident."""

    os_tid: int | None
    ident: int | None
    name: str


@dataclass(slots=True)
class RawStack:
    """One line of raw output: ``count`` samples of ``frames`` (root first, leaf last).

    ``tid`` is the OS thread id when py-spy printed one, else the Python thread ident, else 0
    (no ``--threads``). ``active`` is what the caller said the recording held: raw output
    has no per-sample flag, and without ``--idle`` it holds active samples only.
    """

    frames: tuple[Frame, ...]
    count: int
    tid: int = 0
    thread_name: str = ""
    os_tid_known: bool = False
    active: bool = True
    processes: tuple[tuple[int, str], ...] = ()     # (pid, cmdline), outermost first


@dataclass(slots=True)
class RawParse:
    stacks: list[RawStack] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one per line that could not be parsed


@dataclass(slots=True)
class ThreadTrack:
    """One thread's stack over a chrometrace recording.

    ``changes`` holds ``(ts_us, stack)`` in time order, ``stack`` an index into
    ``Timeline.stacks``: from ``ts_us`` on, the thread had that stack (0 is the empty stack:
    py-spy closed everything) until the next change.
    """

    pid: int
    key: int                                         # chrometrace tid: the Python thread ident
    label: ThreadLabel | None
    processes: tuple[tuple[int, str], ...]
    changes: list[tuple[int, int]] = field(default_factory=list)

    @property
    def tid(self) -> int:
        """The OS thread id when known, the Python thread ident otherwise."""
        if self.label is not None and self.label.os_tid is not None:
            return self.label.os_tid
        return self.key

    @property
    def name(self) -> str:
        return self.label.name if self.label is not None else ""


@dataclass(slots=True)
class Timeline:
    """Parsed chrometrace. Stacks are interned: ``stacks[i]`` is a frame tuple, root first."""

    tracks: list[ThreadTrack] = field(default_factory=list)
    stacks: list[tuple[Frame, ...]] = field(default_factory=lambda: [()])
    first_us: int | None = None                      # earliest event (≈ first sample)
    last_us: int | None = None                       # latest event (py-spy's write time)
    bad: int = 0                                     # events that were malformed or out of place


def module_from_path(path: str) -> str | None:
    """Dotted module name for a py-spy file name where it can be told, else None.

    Handles site-/dist-packages paths, the standard library, ``<frozen x>`` and py-spy's
    shortened (package-relative) names. Absolute paths outside those roots give None.
    """
    if not path:
        return None
    frozen = _FROZEN.fullmatch(path)
    if frozen:
        return frozen.group(1)
    if not _PY_SUFFIX.search(path):
        return None
    rel: str | None = None
    for marker in ("/site-packages/", "/dist-packages/"):
        idx = path.rfind(marker)
        if idx >= 0:
            rel = path[idx + len(marker):]
            break
    if rel is None:
        std = _STDLIB.search(path)
        if std:
            rel = path[std.end():]
        elif not path.startswith("/") and not path.startswith("<"):
            rel = path
    if not rel:
        return None
    parts = _PY_SUFFIX.sub("", rel).split("/")
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


def parse_thread_label(text: str) -> ThreadLabel | None:
    m = _THREAD.fullmatch(text)
    if not m:
        return None
    ident = m.group(1)
    name = m.group(2) or ""
    if ident.startswith("0x"):
        return ThreadLabel(os_tid=None, ident=int(ident, 16), name=name)
    return ThreadLabel(os_tid=int(ident), ident=None, name=name)


def parse_process_label(text: str) -> tuple[int, str] | None:
    m = _PROCESS.fullmatch(text)
    return (int(m.group(1)), m.group(2)) if m else None


def parse_frame_text(text: str) -> Frame:
    """One raw-format frame; never fails (an unparsable text becomes a frame named so)."""
    m = _FRAME.fullmatch(text)
    if m is None:
        return Frame(function=text, file="", line=0, module=None)
    name, path, line = m.group(1), m.group(2), m.group(3)
    return Frame(function=name, file=path, line=int(line) if line else 0, module=module_from_path(path))


def parse_raw(text: str, *, active: bool = True) -> RawParse:
    """py-spy ``--format raw`` output: one ``frame;frame;... COUNT`` per line.

    ``active`` marks every stack (True for a recording made without ``--idle``).
    """
    out = RawParse()
    if len(_FRAME_CACHE) + len(_STACK_CACHE) > _FRAME_CACHE_MAX:
        _FRAME_CACHE.clear()
        _STACK_CACHE.clear()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            stack_text, count_text = line.rsplit(" ", 1)
            count = int(count_text)
        except ValueError:
            out.errors.append(f"raw line {number}: no sample count at the end: {line[:80]!r}")
            continue
        out.stacks.append(_raw_stack(stack_text, count, active))
    return out


def _raw_stack(stack_text: str, count: int, active: bool) -> RawStack:
    tokens = stack_text.split(";")
    processes: list[tuple[int, str]] = []
    thread: ThreadLabel | None = None
    i = 0
    # Process frames come first; a command line may itself contain ';' (python -c "a; b"),
    # so tokens are re-joined until the quoted form closes.
    while i < len(tokens) and tokens[i].startswith("process "):
        j, found = i, None
        while j < len(tokens):
            found = parse_process_label(";".join(tokens[i:j + 1]))
            if found:
                break
            j += 1
        if not found:
            break
        processes.append(found)
        i = j + 1
    if i < len(tokens) and tokens[i].startswith("thread ("):
        thread = parse_thread_label(tokens[i])
        if thread is not None:
            i += 1
    # the same stack text gives the same tuple: parsed once, and interned once downstream
    offset = sum(len(t) + 1 for t in tokens[:i])
    frames = _STACK_CACHE.get(stack_text[offset:]) if i < len(tokens) else ()
    if frames is None:
        cache = _FRAME_CACHE
        frames = _STACK_CACHE[stack_text[offset:]] = tuple(
            cache.get(t) or cache.setdefault(t, parse_frame_text(t)) for t in tokens[i:] if t)
    tid = 0
    if thread is not None:
        tid = thread.os_tid if thread.os_tid is not None else (thread.ident or 0)
    return RawStack(frames=frames, count=count, tid=tid, thread_name=thread.name if thread else "",
                    os_tid_known=thread is not None and thread.os_tid is not None, active=active,
                    processes=tuple(processes))


def parse_summary(stdout: str) -> tuple[int, int] | None:
    """``(samples, errors)`` from py-spy's closing ``Samples: N Errors: M`` line, if printed.

    With ``--idle`` py-spy counts one sample per thread per successful tick; ``errors`` counts
    ticks that failed (common with ``--nonblocking`` while the target mutates its frames).
    """
    found = _SUMMARY.findall(stdout)
    if not found:
        return None
    samples, errors = found[-1]
    return int(samples), int(errors)


class _Interner:
    """Frames and stacks by small integers, so a stack is hashed as a tuple of ints only."""

    def __init__(self, stacks: list[tuple[Frame, ...]]) -> None:
        self._frame_ids: dict[tuple[str, str, int], int] = {}
        self._frames: list[Frame] = []
        self._stack_ids: dict[tuple[int, ...], int] = {(): 0}
        self.stacks = stacks

    def frame(self, name: str, path: str, line: int) -> int:
        key = (name, path, line)
        fid = self._frame_ids.get(key)
        if fid is None:
            fid = self._frame_ids[key] = len(self._frames)
            self._frames.append(Frame(function=name, file=path, line=line, module=module_from_path(path)))
        return fid

    def stack(self, frame_ids: tuple[int, ...]) -> int:
        sid = self._stack_ids.get(frame_ids)
        if sid is None:
            sid = self._stack_ids[frame_ids] = len(self.stacks)
            self.stacks.append(tuple(self._frames[f] for f in frame_ids))
        return sid


class _TrackBuilder:
    def __init__(self, pid: int, key: int) -> None:
        self.track = ThreadTrack(pid=pid, key=key, label=None, processes=())
        self.stack: list[tuple[str, str, int]] = []
        self.pending_ts: int | None = None

    def snapshot(self, interner: _Interner) -> None:
        if self.pending_ts is None:
            return
        processes: list[tuple[int, str]] = []
        frames: list[int] = []
        for name, path, line in self.stack:
            if not path and line == 0 and not frames:
                proc = parse_process_label(name)
                if proc is not None:
                    processes.append(proc)
                    continue
                label = parse_thread_label(name)
                if label is not None:
                    self.track.label = label
                    continue
            frames.append(interner.frame(name, path, line))
        if processes:
            self.track.processes = tuple(processes)
        stack = interner.stack(tuple(frames))
        changes = self.track.changes
        if not changes or changes[-1][1] != stack:
            changes.append((self.pending_ts, stack))
        self.pending_ts = None


def parse_chrometrace(events: Iterable[Any]) -> Timeline:
    """Rebuild each thread's stack over time from py-spy's chrometrace events.

    ``events`` is the decoded JSON list. Consecutive events of one thread with one timestamp
    are one py-spy sample (its ``E`` events, then its ``B`` events); the stack after each such
    group is recorded when it differs from the previous one. An ``E`` that does not match the
    top of the stack closes everything above its match (or is counted bad when nothing
    matches). Events of other phases (``M`` thread names in other versions) are used for
    names where they carry one and ignored otherwise.
    """
    timeline = Timeline()
    interner = _Interner(timeline.stacks)
    builders: dict[tuple[int, int], _TrackBuilder] = {}
    current: _TrackBuilder | None = None
    for ev in events:
        try:
            ph = ev["ph"]
            pid = int(ev["pid"])
            key = int(ev["tid"])
            if ph == "M":
                _apply_metadata(timeline, builders, pid, key, ev)
                continue
            ts = int(ev["ts"])
            name = str(ev["name"])
            args = ev.get("args") or {}
            path = str(args.get("filename") or "")
            line = int(args.get("line") or 0)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            timeline.bad += 1
            continue
        if ph not in ("B", "E"):
            continue
        builder = builders.get((pid, key))
        if builder is None:
            builder = builders[(pid, key)] = _TrackBuilder(pid, key)
            timeline.tracks.append(builder.track)
        if current is not None and (current is not builder or current.pending_ts != ts):
            current.snapshot(interner)
        current = builder
        builder.pending_ts = ts
        timeline.first_us = ts if timeline.first_us is None else min(timeline.first_us, ts)
        timeline.last_us = ts if timeline.last_us is None else max(timeline.last_us, ts)
        frame = (name, path, line)
        if ph == "B":
            builder.stack.append(frame)
        elif builder.stack and builder.stack[-1] == frame:
            builder.stack.pop()
        else:
            timeline.bad += 1
            for idx in range(len(builder.stack) - 1, -1, -1):
                if builder.stack[idx] == frame:
                    del builder.stack[idx:]
                    break
    if current is not None:
        current.snapshot(interner)
    timeline.tracks = [t for t in timeline.tracks if t.changes]
    return timeline


def _apply_metadata(timeline: Timeline, builders: dict[tuple[int, int], _TrackBuilder], pid: int, key: int,
                    ev: Any) -> None:
    if ev.get("name") != "thread_name":
        return
    text = str((ev.get("args") or {}).get("name") or "")
    # Older py-spy: "IDENT: NAME" where IDENT is the thread id it remapped.
    _, _, name = text.partition(": ")
    builder = builders.get((pid, key))
    if builder is None:
        builder = builders[(pid, key)] = _TrackBuilder(pid, key)
        timeline.tracks.append(builder.track)
    if builder.track.label is None:
        builder.track.label = ThreadLabel(os_tid=None, ident=key, name=name)
