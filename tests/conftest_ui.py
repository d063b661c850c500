"""Helpers for the browser tests of the UI (tests/test_ui_browser.py).

- :func:`chromium_path`: Debian's chromium; a missing one FAILS the test with the install hint.
- :class:`ServeProcess`: ``infersight serve --db FILE`` as a real subprocess on a free port.
- :func:`build_synthetic_store`: a store with a 20,000+ frame profile, frames, threads, a
  process and a finding named like markup (``<img src=x onerror=alert(1)>``, quotes,
  unicode), and no GPU or engine data at all.
- :func:`build_young_store`: the first two minutes of an agent, ending now: GPU samples, a
  300-frame start-up stack, and analysis windows whose features carry the engine's ``mfu``
  and ``mbu``.
- Page helpers that turn times into timeline pixels through the data the timeline publishes
  (``data-view-from``/``-to``, ``data-plot-left``/``-right``, ``data-layout``), read the
  state back from the URL, and collect dialogs and script errors (:class:`PageProblems`).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

HOSTILE_FRAME = "<img src=x onerror=alert(1)>"
HOSTILE_FILE = "<script>alert(2)</script>.py"
HOSTILE_UNICODE = "\"quoted\" 'name' & ünïcødé 🚀 </td><b>"
HOSTILE_THREAD = "<svg onload=alert(3)>"
HOSTILE_EVENT_ID = 'hostile:"<img src=x onerror=alert(6)>"'
SYNTHETIC_START = 1_700_000_000
SYNTHETIC_SECONDS = 60
SYNTHETIC_NODES = 20_500


def chromium_path() -> str:
    """The system chromium (never a downloaded browser); pytest.fail when absent."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: apt-get install chromium (make test does it when run as root); "
                    "the UI tests drive Debian's chromium, never a downloaded browser", pytrace=False)
    return found


def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright as factory
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]' (never `playwright install`: "
                    "the tests use the system chromium)", pytrace=False)
    return factory()


class ServeProcess:
    """``python -m infersight.daemon.cli serve --db DB --listen 127.0.0.1:0``; ``url`` once it listens."""

    LISTENING = re.compile(r"read-only at (http://\S+?)/?$")

    def __init__(self, db: Path, timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "infersight.daemon.cli", "serve", "--db", str(db), "--listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._found = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._found.wait(timeout):
            self.stop()
            raise RuntimeError("infersight serve did not start:\n" + "\n".join(self.lines[-20:]))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            self.lines.append(line)
            m = self.LISTENING.search(line)
            if m and not self._found.is_set():
                self.url = m.group(1).rstrip("/")
                self._found.set()
        self._found.set()

    def get_json(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def replay_into(fixture: Path, db: Path) -> None:
    """``infersight replay FIXTURE --db DB`` as a subprocess, as a user would fill a store."""
    done = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "replay", str(fixture), "--db", str(db)],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"replay failed ({done.returncode}):\n{done.stderr[-3000:]}")


def _synthetic_paths(rng: random.Random) -> list[list[tuple[str, str, int]]]:
    """Root-first frame paths of a random call tree with at least SYNTHETIC_NODES nodes."""
    files = ["serve.py", "torch/nn/modules/module.py", "vllm/engine/llm_engine.py", "threading.py", "model/layers.py"]
    count = 0
    paths: list[list[tuple[str, str, int]]] = []
    frontier: list[list[tuple[str, str, int]]] = [[]]
    while frontier and count < SYNTHETIC_NODES:
        path = frontier.pop(0)
        fanout = rng.randint(2, 5) if len(path) < 3 else rng.randint(1, 4)
        if len(path) >= 16:
            fanout = 0
        if fanout == 0:
            paths.append(path)
            continue
        for k in range(fanout):
            frame = (f"fn_{len(path)}_{count}_{k}", rng.choice(files), rng.randint(1, 900))
            frontier.append(path + [frame])
            count += 1
    return paths + [p for p in frontier if p]


def build_synthetic_store(db: Path) -> dict:
    """Fill ``db`` (see module doc); returns facts the tests check against."""
    from infersight.storage.events import upsert_events
    from infersight.storage.model import Batch, Event, Frame, StackSample, Target
    from infersight.storage.store import Store

    rng = random.Random(7)
    store = Store.open(str(db), host="synthetic", flush_interval_s=0.05)
    try:
        target = Target("synthetic", 4242, float(SYNTHETIC_START - 5), "<script>alert(4)</script> serve", "engine")
        store.submit(Batch("discovery", 0.0, targets=[target]))
        store.flush()
        paths = _synthetic_paths(rng)
        hostile = [("<module>", "serve.py", 1), (HOSTILE_FRAME, HOSTILE_FILE, 7), (HOSTILE_UNICODE, "dir with spaces/<b>x</b>.py", 3)]
        batch = Batch("stacks", float(SYNTHETIC_START))
        for i, path in enumerate([hostile] + paths):
            bucket = SYNTHETIC_START + (i % SYNTHETIC_SECONDS)
            count = 400_000 if i == 0 else rng.randint(1, 30)
            tid, name = (99, HOSTILE_THREAD) if i == 0 else (4242 + i % 3, "MainThread")
            frames = tuple(Frame(fn, file, line) for fn, file, line in path)
            batch.stack_samples.append(StackSample(bucket, target.pid, target.start_time, tid, name, frames, True, count))
        while not store.submit(batch):
            store.flush()
        store.flush()
        event = Event(HOSTILE_EVENT_ID, "cpu_gpu_gap", SYNTHETIC_START + 10.0, SYNTHETIC_START + 20.0, "synthetic", 0,
                      klass="host_bound", summary=f"GPU 0 starved by {HOSTILE_FRAME} in {HOSTILE_FILE}",
                      evidence={"<b>key</b>": "<script>alert(5)</script>", "gpu_idle_pct": 91.5},
                      top_frames=[{"frame": HOSTILE_FRAME, "file": HOSTILE_FILE, "line": 7, "share": 0.62,
                                   "pid": 4242, "role": "<i>role</i>"}])
        store.write_sync(upsert_events, [event])
    finally:
        store.close()
    return {"start": SYNTHETIC_START, "end": SYNTHETIC_START + SYNTHETIC_SECONDS, "event_id": HOSTILE_EVENT_ID}


YOUNG_SECONDS = 120
DEEP_FRAMES = 300


def young_mfu(second: int) -> float:
    """The MFU the young store's windows carry in their ``second``-th second (0-1)."""
    return 0.2 + 0.3 * (second // 40) / 2


def build_young_store(db: Path) -> dict:
    """Fill ``db`` (see module doc) over [now - YOUNG_SECONDS, now); returns its facts."""
    import time

    from infersight.storage.events import replace_windows
    from infersight.storage.model import Batch, Frame, GpuSample, StackSample, Target, Window
    from infersight.storage.store import Store

    start = int(time.time()) - YOUNG_SECONDS
    deep = [Frame("<module>", "/srv/vllm/entrypoints/cli/main.py", 1)]
    deep += [Frame("_call_with_frames_removed" if i % 2 else "exec_module", "<frozen importlib._bootstrap>", 240 + i)
             for i in range(DEEP_FRAMES - 2)]
    deep.append(Frame("deep_import_leaf", "/srv/vllm/model_executor/layers.py", 12))
    shallow = (Frame("main", "/srv/app.py", 3), Frame("serve", "/srv/app.py", 9))
    store = Store.open(str(db), host="young", flush_interval_s=0.05)
    try:
        target = Target("young", 777, float(start - 5), "python -m vllm.entrypoints.cli.main serve", "api_server")
        for s in range(YOUNG_SECONDS):
            b = Batch("stacks", float(start + s), targets=[target])
            b.stack_samples.append(StackSample(start + s, 777, target.start_time, 777, "MainThread", tuple(deep), True, 9))
            b.stack_samples.append(StackSample(start + s, 777, target.start_time, 778, "worker", shallow, True, 1))
            b.gpu_samples = [GpuSample(start + s + 0.5 * k, 0, {"sm_util": 40.0, "util_gpu": 90.0,
                                                                 "dram_bw_util": 30.0, "tensor_util": 20.0})
                             for k in range(2)]
            while not store.submit(b):
                store.flush()
        store.flush()
        windows = [Window(float(start + s), float(start + s + 1), 0, "latency_bound",
                          {"sm_util": 40.0, "mfu": young_mfu(s), "mbu": 0.6}) for s in range(YOUNG_SECONDS)]
        store.write_sync(replace_windows, 0, float(start), float(start + YOUNG_SECONDS), windows)
    finally:
        store.close()
    return {"start": start, "end": start + YOUNG_SECONDS, "deep_leaf": "deep_import_leaf"}


SHIFT_NOW = 1_750_000_000          # "today" of the shift store: comparisons start here
SHIFT_RESTART = SHIFT_NOW - 60     # the engine restarted a minute before
SHIFT_DAY = 86400


def build_shift_store(db: Path) -> dict:
    """A store for time-shift baselines and waits: an engine (pid 500) yesterday and today
    until it is restarted at SHIFT_RESTART as pid 600. Each runs a main thread whose leaf
    names the period (``decode_yesterday``, ``decode_old``, ``decode_new``) and an HTTP
    thread that only waits in ``selectors.py`` (idle and active samples, as py-spy sees
    ``serve_forever``). GPU samples (SM 10 %) cover today."""
    from infersight.storage.model import Batch, Frame, GpuSample, StackSample, Target
    from infersight.storage.store import Store

    old = Target("shift", 500, float(SHIFT_NOW - SHIFT_DAY - 1000), "python -m vllm.entrypoints.cli.main serve m", "api_server")
    new = Target("shift", 600, float(SHIFT_RESTART), "python -m vllm.entrypoints.cli.main serve m", "api_server")
    main = (Frame("main", "/srv/serve.py", 1), Frame("step", "/srv/engine.py", 10))
    http = (Frame("main", "/srv/serve.py", 1), Frame("serve_forever", "/usr/lib/python3.11/socketserver.py", 232),
            Frame("_PollLikeSelector.select", "/usr/lib/python3.11/selectors.py", 415))
    periods = [(old, SHIFT_NOW - SHIFT_DAY - 120, SHIFT_NOW - SHIFT_DAY + 180, "decode_yesterday"),
               (old, SHIFT_NOW - 400, SHIFT_RESTART, "decode_old"),
               (new, SHIFT_RESTART + 2, SHIFT_NOW + 180, "decode_new")]
    store = Store.open(str(db), host="shift", flush_interval_s=0.05)
    try:
        for target, t0, t1, leaf in periods:
            for sec in range(t0, t1):
                b = Batch("stacks", float(sec), targets=[target])
                b.stack_samples += [
                    StackSample(sec, target.pid, target.start_time, target.pid, "MainThread",
                                main + (Frame(leaf, "/srv/engine.py", 20),), True, 6),
                    StackSample(sec, target.pid, target.start_time, target.pid + 1, "http", http, False, 5),
                    StackSample(sec, target.pid, target.start_time, target.pid + 1, "http", http, True, 2)]
                if sec >= SHIFT_NOW - 400:
                    b.gpu_samples = [GpuSample(sec + 0.5, 0, {"sm_util": 10.0})]
                while not store.submit(b):
                    store.flush()
        store.flush()
    finally:
        store.close()
    return {"now": SHIFT_NOW, "restart": SHIFT_RESTART}


# -- fixtures (imported by the browser test modules) -----------------------------------------

SCENARIO = ROOT / "tests" / "fixtures" / "h100-scenario"


@pytest.fixture(scope="session")
def labels() -> list[dict]:
    return [json.loads(line) for line in (SCENARIO / "labels.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def scenario(tmp_path_factory):
    db = tmp_path_factory.mktemp("ui-scenario") / "scenario.duckdb"
    replay_into(SCENARIO, db)
    server = ServeProcess(db)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    db = tmp_path_factory.mktemp("ui-synthetic") / "synthetic.duckdb"
    facts = build_synthetic_store(db)
    server = ServeProcess(db)
    server.facts = facts
    yield server
    server.stop()


@pytest.fixture(scope="session")
def young(tmp_path_factory):
    db = tmp_path_factory.mktemp("ui-young") / "young.duckdb"
    facts = build_young_store(db)
    server = ServeProcess(db)
    server.facts = facts
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shifted(tmp_path_factory):
    db = tmp_path_factory.mktemp("ui-shift") / "shift.duckdb"
    facts = build_shift_store(db)
    server = ServeProcess(db)
    server.facts = facts
    yield server
    server.stop()


# Module scope, not session: Playwright's sync API keeps its event loop marked as running
# while it is started, which would break every asyncio test collected after this module.
@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.problems = PageProblems(pg)
    yield pg
    context.close()



# -- page helpers ----------------------------------------------------------------------------

def timeline_geometry(page) -> dict:
    """The timeline's range, plot bounds and track boxes, in page coordinates."""
    info = page.eval_on_selector("#timeline", """(el) => {
        const box = el.querySelector('canvas.overlay').getBoundingClientRect();
        return {from: +el.dataset.viewFrom, to: +el.dataset.viewTo, left: +el.dataset.plotLeft,
                right: +el.dataset.plotRight, layout: JSON.parse(el.dataset.layout), x: box.x, y: box.y};
    }""")
    return info


def time_to_x(geo: dict, t: float) -> float:
    return geo["x"] + geo["left"] + (t - geo["from"]) / (geo["to"] - geo["from"]) * (geo["right"] - geo["left"])


def track_y(geo: dict, kind: str, gpu: int | None = None) -> float:
    for track in geo["layout"]:
        if track["kind"] == kind and (gpu is None or track.get("gpu") == gpu):
            return geo["y"] + track["y"] + track["h"] / 2
    raise AssertionError(f"no {kind} track in the timeline layout: {geo['layout']}")


def drag_select(page, t0: float, t1: float, kind: str = "activity") -> None:
    geo = timeline_geometry(page)
    y = track_y(geo, kind, 0) if kind in ("activity", "classes") else track_y(geo, kind)
    page.mouse.move(time_to_x(geo, t0), y)
    page.mouse.down()
    steps = 8
    for k in range(1, steps + 1):
        page.mouse.move(time_to_x(geo, t0 + (t1 - t0) * k / steps), y)
    page.mouse.up()


def wait_view(page, view: str, timeout: float = 20_000) -> None:
    """Wait until ``#{view}-view`` has loaded (data-state ready or empty)."""
    page.wait_for_function(f"""() => ['ready', 'empty'].includes(document.getElementById('{view}-view').dataset.state)""",
                           timeout=timeout)


def wait_timeline(page) -> None:
    page.wait_for_function("() => document.getElementById('timeline').dataset.state === 'ready'", timeout=20_000)


def tooltip_text(page) -> str:
    page.wait_for_timeout(50)
    return page.eval_on_selector("#tooltip", "(el) => el.hidden ? '' : el.textContent")


def save_screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


class PageProblems:
    """Dialogs, uncaught errors and console errors seen by a page."""

    def __init__(self, page) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def assert_clean(self, allow: tuple[str, ...] = ()) -> None:
        """No dialogs and no errors, except errors containing one of ``allow`` (requests a
        test made fail on purpose)."""
        assert not self.dialogs, f"the page opened dialogs: {self.dialogs}"
        errors = [e for e in self.errors if not any(a in e for a in allow)]
        assert not errors, f"the page reported errors: {errors}"


def phase(labels: list[dict], name: str) -> tuple[float, float]:
    """The first labelled phase ``name`` without its transition seconds."""
    row = next(r for r in labels if r["phase"] == name)
    return row["t0"] + 1.0, row["t1"] - 1.0


def open_recording(page, server, labels, extra: str = "") -> None:
    start, end = labels[0]["t0"] - 2, labels[-1]["t1"] + 2
    page.goto(f"{server.url}/?from={start:.3f}&to={end:.3f}{extra}")
    wait_timeline(page)


def finding_row(page, event_id: str):
    """The findings list's row of ``event_id``."""
    return page.locator(f".finding[data-id={json.dumps(event_id)}]")


def hottest_functions(page) -> list[str]:
    return page.eval_on_selector_all("#flame-hot .hot-row .fn-name", "(els) => els.map((e) => e.textContent)")


def query_of(page) -> dict[str, list[str]]:
    """The page's state as its address bar holds it now (read in the page: page.url can lag
    behind history.replaceState)."""
    return parse_qs(page.evaluate("() => location.search").lstrip("?"))


def selection(page) -> list[float]:
    return [float(x) for x in query_of(page)["sel"][0].split("-")]


def matched_share(tree: dict, text: str) -> float:
    """Share of the total under frames whose name or file contains ``text`` (outermost match)."""
    def walk(node: dict) -> float:
        if text in node["name"].lower() or text in (node.get("file") or "").lower():
            return node["value"]
        return sum(walk(c) for c in node["children"])

    return sum(walk(c) for c in tree["children"]) / tree["value"]


def event_bar_y(page, geo, event) -> float:
    """The y of ``event``'s bar: scan the findings lane with the pointer until its tooltip shows."""
    lane = next(t for t in geo["layout"] if t["kind"] == "events")
    x = time_to_x(geo, (event["start"] + event["end"]) / 2)
    for dy in range(2, lane["h"], 3):
        y = geo["y"] + lane["y"] + dy
        page.mouse.move(x, y)
        if event["summary"][:40] in tooltip_text(page):
            return y
    raise AssertionError(f"no bar for {event['id']} on the findings lane")


def view_of(page) -> tuple[float, float]:
    q = query_of(page)
    return float(q["from"][0]), float(q["to"][0])
