"""Heavy queries on a hostile store, and the replay of deep stacks (issue 30, item 5).

usage: python bench/heavy_queries.py [--db PATH] [--pythonpath DIR] [--json OUT] [--no-replay]

1. Builds bench/_heavy_store.py's store: 64 call chains 5,000 frames deep and 332,800
   distinct leaves under them, one hour of samples (about a minute to build on 2 cores).
2. Starts ``infersight serve`` on it (a real subprocess, the agent's own query path) and
   measures, from outside: one flame graph of the whole hour (three times), one diff of its
   two halves, the folded export, then six flame graphs of slightly different ranges sent at
   once, with the HTTP status and time of each; the serving process's resident memory is
   sampled every 50 ms throughout and its peak printed against the unit's ``MemoryMax=1G``.
3. Replays tests/fixtures/h100-scenario as is and with 4,990 extra frames under every stack
   (bench/_deep.py), twice each, and prints the ratio of the best runs, in wall time and in
   CPU time (user + system of the replay process).

``--pythonpath DIR`` puts DIR first on the subprocesses' path, to run an older checkout's
``infersight`` package (a directory holding ``infersight/{daemon,storage,web}``) for the
"before" figures; ``--as-limit-mb`` caps the server's address space (RLIMIT_AS), since the
code before issue 30 grew past 20 GB on this store and must not take a shared host with it.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _deep import deepen  # noqa: E402
from _heavy_store import build  # noqa: E402

FIXTURE = HERE.parent / "tests" / "fixtures" / "h100-scenario"
T_TO = 1_800_000_000
REQUEST_TIMEOUT_S = 300


def _env(pythonpath: str | None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _head(body: bytes) -> dict:
    """The root's fields of a JSON answer without decoding it all: a tree of 5,000-frame stacks
    nests past any JSON parser's recursion limit. The extra fields lead, the counts close it."""
    if body[:1] != b"{":
        return {}
    text = (body[:4096] + body[-512:]).decode("utf-8", "replace")
    out: dict = {}
    for key in ("error", "truncated", "truncated_by", "nodes", "leaves", "leaves_shown", "total", "reason"):
        m = re.findall(rf'"{key}":("(?:[^"\\]|\\.)*"|true|false|null|-?[0-9.e+]+)', text)
        if m:
            out[key] = json.loads(m[-1] if key in ("truncated", "nodes") else m[0])
    return out


class Serve:
    """``infersight serve --db DB`` with its peak RSS sampled on a thread."""

    def __init__(self, db: str, pythonpath: str | None, as_limit_mb: int | None = None) -> None:
        def limit() -> None:
            if as_limit_mb:
                resource.setrlimit(resource.RLIMIT_AS, (as_limit_mb << 20, as_limit_mb << 20))

        self.proc = subprocess.Popen([sys.executable, "-m", "infersight.daemon.cli", "serve", "--db", db,
                                      "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, env=_env(pythonpath), cwd=tempfile.gettempdir(), preexec_fn=limit)
        self.url = ""
        for line in self.proc.stderr:
            m = re.search(r"read-only at (http://\S+?)/?$", line)
            if m:
                self.url = m.group(1).rstrip("/")
                break
        if not self.url:
            raise RuntimeError("infersight serve did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._ps = psutil.Process(self.proc.pid)
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_mb = max(self.peak_mb, self._ps.memory_info().rss / 2**20)
            except psutil.Error:
                return
            time.sleep(0.05)

    def rss_mb(self) -> float:
        return self._ps.memory_info().rss / 2**20

    def get(self, path: str) -> tuple[int, float, int, dict]:
        """(status, seconds, body bytes, the JSON head or error) of one GET."""
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(self.url + path, timeout=REQUEST_TIMEOUT_S) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        except (urllib.error.URLError, OSError) as exc:
            return 0, time.perf_counter() - started, 0, {"error": str(exc)}
        took = time.perf_counter() - started
        return status, took, len(body), _head(body)

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def queries(db: str, pythonpath: str | None, t_from: int, t_to: int, as_limit_mb: int | None = None) -> dict:
    server = Serve(db, pythonpath, as_limit_mb)
    out: dict = {"rss_idle_mb": round(server.rss_mb(), 1)}
    try:
        flame = f"/api/flamegraph?from={t_from}&to={t_to}"
        out["flame"] = [server.get(flame) for _ in range(3)]
        mid = (t_from + t_to) // 2
        out["diff"] = [server.get(f"/api/diff?a_from={t_from}&a_to={mid}&b_from={mid}&b_to={t_to}")]
        out["folded"] = [server.get(flame + "&format=folded")]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            started = time.perf_counter()
            futures = [pool.submit(server.get, f"/api/flamegraph?from={t_from + k}&to={t_to - k}") for k in range(6)]
            out["concurrent"] = [f.result() for f in futures]
            out["concurrent_wall_s"] = round(time.perf_counter() - started, 2)
        out["rss_after_mb"] = round(server.rss_mb(), 1)
        out["rss_peak_mb"] = round(server.peak_mb, 1)
    finally:
        server.stop()
    return out


def replay_times(work: Path, pythonpath: str | None, runs: int = 2) -> dict:
    """Seconds of ``infersight replay`` of the fixture and of its deep copy, ``runs`` each."""
    deep = deepen(FIXTURE, work / "deep-recording", 4_990)
    times: dict[str, list[float]] = {"normal": [], "deep": [], "normal_cpu": [], "deep_cpu": []}
    for _ in range(runs):
        for name, rec in (("normal", FIXTURE), ("deep", deep)):
            db = work / f"replay-{name}.duckdb"
            for suffix in ("", ".wal"):
                if os.path.exists(str(db) + suffix):
                    os.remove(str(db) + suffix)
            started = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "replay", str(rec), "--db", str(db),
                            "--json"], check=True, stdout=subprocess.DEVNULL, env=_env(pythonpath),
                           timeout=3600, cwd=tempfile.gettempdir())
            times[name].append(round(time.perf_counter() - started, 2))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            # CPU seconds too: on a shared machine the wall time carries the neighbours' load
            times[name + "_cpu"].append(round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2))
    return times


def _line(name: str, results: list) -> str:
    parts = []
    for status, took, size, head in results:
        extra = ""
        if "truncated" in head:
            extra = (f" truncated={head['truncated']} ({head.get('truncated_by')}) nodes={head.get('nodes')} "
                     f"leaves {head.get('leaves_shown')}/{head.get('leaves')}")
        if head.get("error"):
            extra = f" error={head['error'][:90]!r}"
        parts.append(f"{status} in {took:.2f} s, {size / 1024:.0f} KiB{extra}")
    return f"  {name:<11} " + "\n  {:<11} ".format("").join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="where to build the store (default: a temporary folder)")
    ap.add_argument("--pythonpath", help="run the subprocesses with this directory first on sys.path")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--no-replay", action="store_true", help="skip the replay timing")
    ap.add_argument("--replay-runs", type=int, default=2, help="replays of each recording (default 2)")
    ap.add_argument("--as-limit-mb", type=int, help="address-space limit of the server (MiB)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="infersight-heavy-") as tmp:
        work = Path(tmp)
        db = args.db or str(work / "heavy.duckdb")
        started = time.perf_counter()
        store = build(db, T_TO)
        print(f"store: {store['leaves']:,} distinct leaves under {store['stack_nodes']:,} stack nodes, stacks "
              f"{store['depth']:,} frames deep, {store['stack_samples']:,} sample rows, {store['file_mb']} MB "
              f"(built in {time.perf_counter() - started:.0f} s)", flush=True)
        figures = {"store": store, "queries": queries(db, args.pythonpath, store["t_from"], store["t_to"],
                                                      args.as_limit_mb)}
        q = figures["queries"]
        print("queries (status, time, size), one hour of the store:")
        for name in ("flame", "diff", "folded", "concurrent"):
            print(_line(name, q[name]))
        print(f"  six at once: {q['concurrent_wall_s']} s for all; serving process RSS idle {q['rss_idle_mb']} MB, "
              f"peak {q['rss_peak_mb']} MB (unit MemoryMax=1G: 1024 MB), after {q['rss_after_mb']} MB", flush=True)
        if not args.no_replay:
            times = replay_times(work, args.pythonpath, args.replay_runs)
            figures["replay"] = times
            ratio = min(times["deep"]) / min(times["normal"])
            cpu_ratio = min(times["deep_cpu"]) / min(times["normal_cpu"])
            print(f"replay of tests/fixtures/h100-scenario: {times['normal']} s (CPU {times['normal_cpu']} s); with "
                  f"4,990 more frames per stack: {times['deep']} s (CPU {times['deep_cpu']} s); ratio of the best "
                  f"runs {ratio:.2f} wall, {cpu_ratio:.2f} CPU (target <= 3)")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
