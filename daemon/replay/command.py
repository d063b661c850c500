"""``infersight replay DIR``: analyse a recording with the live agent's parsers, store and analysis.

The layout is that of tests/fixtures/h100-scenario/ (its README): ``processes.json``,
``gpu.jsonl``, ``engine_metrics.jsonl.gz``, ``stacks/PID.raw.jsonl.gz`` (1 s py-spy windows
of active samples). Every record keeps the recording's own timestamps, and the analyzer is
stepped through the recording with a clock that reads the recording's time, exactly as the
live daemon ticks. ``labels.jsonl`` (ground truth) is never read.

With ``--json`` it prints one JSON line per analysis window and per event (DESIGN.md).
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import IO, Iterator

import orjson

from infersight.daemon.analysis.analyzer import Analyzer
from infersight.daemon.config.load import Config, store_options, with_overrides
from infersight.daemon.replay.engine import replay_engine_lines
from infersight.daemon.replay.gpu import parse_gpu_jsonl
from infersight.daemon.stacks.parse import parse_raw
from infersight.daemon.stacks.redact import redact_cmdline
from infersight.storage import events as q_events
from infersight.storage.model import Batch, ProcessSample, SamplingStat, StackSample, Target
from infersight.storage.store import Store, StoreError

WINDOW_CENTER_S = 0.52   # a 1 s py-spy window launched at L covers about [L + 0.02, L + 1.02]


class RecordingError(ValueError):
    """The directory is not a readable recording; the message says what is missing."""


def _open_text(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        yield from fh


def load_processes(root: Path, host: str) -> tuple[list[Target], list[dict]]:
    path = root / "processes.json"
    try:
        doc = json.loads(path.read_text())
        procs = doc["processes"]
    except FileNotFoundError:
        raise RecordingError(f"{root}: no processes.json (not a recording directory)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordingError(f"{path}: not a processes file ({exc})") from None
    targets = []
    for p in procs:
        start = float(p.get("pyspy_launch_wall") or 0.0)
        gpus = (0,) if p.get("role") == "other_gpu_process" else ()
        # a recording's command lines get the same redaction as live discovery's
        cmdline = redact_cmdline(str(p.get("cmdline", "")))
        targets.append(Target(host, int(p["pid"]), start, cmdline, str(p.get("role", "unknown")), gpus=gpus))
    return targets, procs


def stack_batches(root: Path, target: Target, rel: str) -> Iterator[Batch]:
    """One batch per recorded 1 s py-spy window of ``target`` (active samples only)."""
    path = root / rel
    if not path.exists():
        raise RecordingError(f"{path}: missing stack windows")
    for number, line in enumerate(_open_text(path), 1):
        if not line.strip():
            continue
        try:
            w = json.loads(line)
            launch = float(w["launch_wall"])
        except (ValueError, KeyError, TypeError):
            yield Batch("stacks", 0.0, errors=[f"{rel} line {number}: not a window record"])
            continue
        bucket = int(launch + WINDOW_CENTER_S)
        batch = Batch("stacks", launch + 1.0)
        parsed = parse_raw(w.get("raw") or "")
        batch.errors += [f"{rel} line {number}: {e}" for e in parsed.errors]
        for s in parsed.stacks:
            batch.stack_samples.append(StackSample(bucket=bucket, pid=target.pid, start_time=target.start_time,
                                                   tid=s.tid, thread_name=s.thread_name, frames=s.frames,
                                                   active=s.active, count=s.count))
        batch.sampling_stats.append(SamplingStat(bucket, target.pid, target.start_time,
                                                 int(w.get("samples") or 0), int(w.get("errors") or 0)))
        yield batch


def gpu_batches(root: Path, targets: dict[int, Target]) -> tuple[list[Batch], float, float]:
    path = root / "gpu.jsonl"
    if not path.exists():
        path = root / "gpu.jsonl.gz"
    if not path.exists():
        raise RecordingError(f"{root}: no gpu.jsonl or gpu.jsonl.gz")
    lines = list(_open_text(path))
    rec = parse_gpu_jsonl(lines)
    if not rec.samples:
        raise RecordingError(f"{path}: no GPU samples ({'; '.join(rec.errors[:3]) or 'empty'})")
    batch = Batch("gpu", rec.samples[-1].t, errors=rec.errors, gpu_samples=rec.samples, gpu_processes=rec.processes,
                  gpu_info=[rec.info] if rec.info else [])
    host_batch = Batch("host", rec.samples[-1].t)
    for line in lines:  # the recorder's psutil CPU of the serving processes, per sample
        if '"proc_cpu_pct"' not in line:
            continue
        d = json.loads(line)
        for pid, cpu in (d.get("proc_cpu_pct") or {}).items():
            target = targets.get(int(pid))
            if target is not None and cpu is not None:
                host_batch.process_samples.append(ProcessSample(float(d["t"]), target.pid, target.start_time,
                                                                float(cpu), 0, 0, 0, 0))
    return [batch, host_batch], rec.samples[0].t, rec.samples[-1].t


def ingest(store: Store, root: Path, host: str) -> tuple[float, float, list[str]]:
    """Write the whole recording into ``store``; returns (first, last) sample time and errors."""
    targets, procs = load_processes(root, host)
    by_pid = {t.pid: t for t in targets}
    errors: list[str] = []
    store.submit(Batch("discovery", 0.0, targets=targets))
    batches, t0, t1 = gpu_batches(root, by_pid)
    for b in batches:
        _submit(store, b, errors)
    for p in procs:
        if p.get("stacks_windows"):
            for b in stack_batches(root, by_pid[int(p["pid"])], p["stacks_windows"]):
                _submit(store, b, errors)
    engine_path = root / "engine_metrics.jsonl.gz"
    if not engine_path.exists():
        engine_path = root / "engine_metrics.jsonl"
    if engine_path.exists():
        for b in replay_engine_lines(_open_text(engine_path), endpoint=f"replay:{root.name}"):
            _submit(store, b, errors)
    store.flush()
    return t0, t1, errors


def _submit(store: Store, batch: Batch, errors: list[str]) -> None:
    errors.extend(batch.errors)
    while not store.submit(batch):  # replay must not drop: wait for the writer instead
        store.flush()


def run_replay(root: Path, store: Store, config: Config) -> tuple[list[dict], list[dict], list[str]]:
    """Ingest and analyse; returns (windows, events, errors) as the JSON lines would show them."""
    t0, t1, errors = ingest(store, root, config.host)
    clock = [t0]
    analyzer = Analyzer(config, store, rate_hz=_recorded_rate(root), clock=lambda: clock[0])
    now = t0
    while now < t1 + config.analysis.lag_s + config.analysis.interval_s:
        now += config.analysis.interval_s
        clock[0] = now
        analyzer.step(now)
    windows = store.read_sync(q_events.windows, t0 - 1, t1 + 1)
    events = store.read_sync(lambda cur: q_events.events(cur, t0 - 1, t1 + 1, limit=100_000))
    return windows, sorted(events, key=lambda e: (e["start"], e["kind"])), errors


def _recorded_rate(root: Path) -> float | None:
    try:
        procs = json.loads((root / "processes.json").read_text())["processes"]
        rel = next(p["stacks_windows"] for p in procs if p.get("stacks_windows"))
        first = next(line for line in _open_text(root / rel) if line.strip())
        return float(json.loads(first).get("rate_hz") or 0) or None
    except (StopIteration, ValueError, KeyError, OSError):
        return None


def window_line(w: dict) -> dict:
    out = {"type": "window", "start": w["start"], "end": w["end"], "gpu": w["gpu"], "class": w["class"]}
    out.update({k: v for k, v in w["features"].items() if k not in out})
    return out


def event_line(e: dict) -> dict:
    return {"type": "event", "kind": e["kind"], "start": e["start"], "end": e["end"], "gpu": e["gpu"],
            "class": e["class"], "severity": e["severity"], "summary": e["summary"], "top_frames": e["top_frames"],
            "evidence": e["evidence"], "id": e["id"]}


def main(directory: str, *, db: str, as_json: bool, config: Config, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    root = Path(directory)
    if not root.is_dir():
        print(f"infersight: replay: {directory} is not a directory", file=sys.stderr)
        return 2
    config = with_overrides(config, **{"storage.path": db})
    try:
        store = Store.open(db, host=config.host, **store_options(config.storage))
    except StoreError as exc:
        print(f"infersight: replay: {exc}", file=sys.stderr)
        return 1
    try:
        windows, events, errors = run_replay(root, store, config)
    except RecordingError as exc:
        print(f"infersight: replay: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if as_json:
        for w in windows:
            out.write(orjson.dumps(window_line(w)).decode() + "\n")
        for e in events:
            out.write(orjson.dumps(event_line(e)).decode() + "\n")
    else:
        _print_summary(windows, events, errors, out)
    return 0


def _print_summary(windows: list[dict], events: list[dict], errors: list[str], out: IO[str]) -> None:
    counts: dict[str, int] = {}
    for w in windows:
        counts[w["class"]] = counts.get(w["class"], 0) + 1
    print(f"{len(windows)} windows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])),
          file=out)
    for e in events:
        print(f"{e['kind']:26} {e['start']:.0f}-{e['end']:.0f} {e['summary']}", file=out)
    if errors:
        print(f"{len(errors)} input problems (first: {errors[0]})", file=out)
