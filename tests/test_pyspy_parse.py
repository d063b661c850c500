"""Parsers of py-spy output: literal strings for each form, then the real H100 recordings."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from infersight.daemon.stacks.parse import (
    module_from_path,
    parse_chrometrace,
    parse_frame_text,
    parse_raw,
    parse_summary,
    parse_thread_label,
)
from infersight.storage.model import Frame

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("text, function, file, line", [
    ("Core.step (engine.py:155)", "Core.step", "engine.py", 155),
    ("<lambda> (pkg/mod.py:3)", "<lambda>", "pkg/mod.py", 3),
    ("<module> (serve.py:1)", "<module>", "serve.py", 1),
    ("<genexpr> (torch/nn/modules/module.py:2290)", "<genexpr>", "torch/nn/modules/module.py", 2290),
    ("rechnen_über (prog.py:9)", "rechnen_über", "prog.py", 9),
    ("計算 (名前.py:12)", "計算", "名前.py", 12),
    ("f (a.py)", "f", "a.py", 0),                                # --nolineno or line 0
    ("PyEval_EvalFrameDefault", "PyEval_EvalFrameDefault", "", 0),  # native frame without a file
    ("memcpy (libc.so.6)", "memcpy", "libc.so.6", 0),
    ("g (dir (copy)/x.py:7)", "g", "dir (copy)/x.py", 7),
    ("h (C:drive.py)", "h", "C:drive.py", 0),                  # a colon not followed by digits is part of the path
])
def test_frame_text_forms(text: str, function: str, file: str, line: int) -> None:
    frame = parse_frame_text(text)
    assert (frame.function, frame.file, frame.line) == (function, file, line)


def test_thread_labels() -> None:
    label = parse_thread_label("thread (4001): schläfer")
    assert label is not None and (label.os_tid, label.ident, label.name) == (4001, None, "schläfer")
    hexed = parse_thread_label("thread (0x7f3a2c1b8640): Thread-1 (worker): pool")
    assert hexed is not None and (hexed.os_tid, hexed.ident, hexed.name) == (None, 0x7f3a2c1b8640,
                                                                             "Thread-1 (worker): pool")
    bare = parse_thread_label("thread (17)")
    assert bare is not None and (bare.os_tid, bare.name) == (17, "")
    assert parse_thread_label("threading_loop (x.py:1)") is None


@pytest.mark.parametrize("path, module", [
    ("/usr/lib/python3.12/threading.py", "threading"),
    ("/usr/lib/python3/dist-packages/torch/cuda/__init__.py", "torch.cuda"),
    ("/opt/venv/lib/python3.11/site-packages/vllm/v1/engine/core.py", "vllm.v1.engine.core"),
    ("/root/.pyenv/versions/3.11.7/lib/python3.11/concurrent/futures/thread.py", "concurrent.futures.thread"),
    ("torch/cuda/__init__.py", "torch.cuda"),                      # py-spy's shortened form
    ("engine.py", "engine"),
    ("<frozen importlib._bootstrap>", "importlib._bootstrap"),
    ("/work/app/engine.py", None),                                 # outside any package root
    ("libc.so.6", None),
    ("<string>", None),
    ("", None),
])
def test_module_from_path(path: str, module: str | None) -> None:
    assert module_from_path(path) == module


def test_raw_lines_threads_processes_and_a_bad_line() -> None:
    text = (
        'process 9968:"python -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5)";'
        "thread (10010): MainThread;<module> (<string>:1);spawn_main (multiprocessing/spawn.py:122);"
        "worker (mp.py:5) 9\n"
        "this line has no count\n"
        "thread (0x7f00aa): Thread-2;Thread.run (threading.py:982);<lambda> (x.py:3) 4\n"
        "\n"
        "<module> (x.py:1) 2\n"
    )
    parsed = parse_raw(text, active=False)
    assert len(parsed.errors) == 1 and "line 2" in parsed.errors[0]
    first, second, third = parsed.stacks
    assert first.processes == ((9968, "python -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5)"),)
    assert (first.tid, first.thread_name, first.os_tid_known, first.count) == (10010, "MainThread", True, 9)
    assert [f.function for f in first.frames] == ["<module>", "spawn_main", "worker"]
    assert first.frames[1] == Frame("spawn_main", "multiprocessing/spawn.py", 122, "multiprocessing.spawn")
    assert (second.tid, second.os_tid_known, second.frames[-1].function) == (0x7f00AA, False, "<lambda>")
    assert (third.tid, third.thread_name, third.count) == (0, "", 2)
    assert not any(s.active for s in parsed.stacks)


def test_summary_line() -> None:
    stdout = ("py-spy> Sampling process 20 times a second. Press Control-C to exit.\n\n"
              "py-spy> Stopped sampling because Control-C pressed\n"
              "py-spy> Wrote chrome trace to '/tmp/x.json'. Samples: 232 Errors: 3\n")
    assert parse_summary(stdout) == (232, 3)
    assert parse_summary("Error: Failed to find python version from target process\n") is None


def _ev(ph: str, name: str, ts: int, tid: int = 7, filename: str = "app.py", line: int = 1) -> dict:
    return {"args": {"filename": filename, "line": line}, "cat": "py-spy", "name": name, "ph": ph,
            "pid": 100, "tid": tid, "ts": ts}


def test_chrometrace_rebuilds_stacks_per_thread() -> None:
    events = [
        _ev("B", "thread (101): worker", 10, filename="", line=0),
        _ev("B", "main", 10, line=5),
        _ev("B", "<lambda>", 10, line=6),
        _ev("B", "thread (100): MainThread", 12, tid=8, filename="", line=0),
        _ev("B", "<module>", 12, tid=8, line=1),
        _ev("E", "<lambda>", 50, line=6),
        _ev("B", "<genexpr>", 50, line=9),
        {"ph": "B", "pid": 100, "tid": 7},                          # malformed: no ts/name
        _ev("E", "<genexpr>", 90, line=9),
        _ev("E", "main", 90, line=5),
        _ev("E", "thread (101): worker", 90, filename="", line=0),
        _ev("E", "<module>", 90, tid=8, line=1),
        _ev("E", "thread (100): MainThread", 90, tid=8, filename="", line=0),
    ]
    timeline = parse_chrometrace(events)
    assert timeline.bad == 1 and (timeline.first_us, timeline.last_us) == (10, 90)
    worker, main = timeline.tracks
    assert (worker.tid, worker.name, main.tid, main.name) == (101, "worker", 100, "MainThread")
    stacks = [[f.function for f in timeline.stacks[s]] for _, s in worker.changes]
    assert [ts for ts, _ in worker.changes] == [10, 50, 90]
    assert stacks == [["main", "<lambda>"], ["main", "<genexpr>"], []]
    assert [[f.function for f in timeline.stacks[s]] for _, s in main.changes] == [["<module>"], []]


def test_chrometrace_end_without_match_is_counted_and_recovered() -> None:
    events = [
        _ev("B", "a", 1), _ev("B", "b", 1), _ev("B", "c", 1),
        _ev("E", "b", 5),                                            # closes b and c (c's E was lost)
        _ev("B", "d", 5),
        _ev("E", "zzz", 6),                                          # matches nothing: ignored
    ]
    timeline = parse_chrometrace(events)
    assert timeline.bad == 2
    (track,) = timeline.tracks
    assert [[f.function for f in timeline.stacks[s]] for _, s in track.changes] == [["a", "b", "c"], ["a", "d"]]


def test_chrometrace_thread_names_from_metadata_events() -> None:
    events = [{"args": {"filename": "", "line": None, "name": "3: pool-1"}, "cat": "py-spy", "name": "thread_name",
               "ph": "M", "pid": 100, "tid": 3, "ts": 0}, _ev("B", "f", 4, tid=3)]
    (track,) = parse_chrometrace(events).tracks
    assert (track.name, track.tid) == ("pool-1", 3)


def _windows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.mark.parametrize("rel", ["h100-scenario/stacks/644.raw.jsonl.gz", "h100-scenario-split/stacks/1333.raw.jsonl.gz"])
def test_real_raw_windows_count_what_pyspy_reported(rel: str) -> None:
    windows = [w for w in _windows(FIXTURES / rel) if w["raw"]]
    assert windows
    for w in windows:
        parsed = parse_raw(w["raw"])
        assert parsed.errors == []
        # Without --idle, py-spy's "Samples" is the number of stack samples it wrote.
        assert sum(s.count for s in parsed.stacks) == w["samples"]
        # --threads: every line carries its OS thread id (py-spy has no name for some
        # short-lived request threads, and a thread caught outside Python code has no frames).
        assert all(s.os_tid_known for s in parsed.stacks)


def test_real_chrometrace_timeline() -> None:
    with gzip.open(FIXTURES / "h100-scenario/stacks/644.chrometrace.json.gz", "rb") as fh:
        events = json.load(fh)
    timeline = parse_chrometrace(events)
    assert timeline.bad == 0 and timeline.tracks
    # Recorded without --threads: no labels, so threads are known by their Python ident.
    assert all(t.label is None and t.tid == t.key for t in timeline.tracks)
    for track in timeline.tracks:
        times = [ts for ts, _ in track.changes]
        assert times == sorted(times)
        assert track.changes[-1] == (timeline.last_us, 0)           # py-spy closes every slice at the end
    functions = {f.function for stack in timeline.stacks for f in stack}
    assert {"<module>", "main", "synchronize"} <= functions
    # The engine's pure-Python culprit shows up somewhere in the main thread's timeline.
    assert any("python" in f.function for stack in timeline.stacks for f in stack)
