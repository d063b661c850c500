"""The Pyroscope push, received by a local server: every request checked against the
documented /ingest API (parameters, folded body, labels), backoff while the server answers
503, bounded buffering, and no retry of a push the server rejects."""
from __future__ import annotations

import re
from collections import Counter

import pytest
from aiohttp import web

from infersight.daemon.config.load import Config, with_overrides
from infersight.daemon.exporters.pyroscope import PyroscopePusher
from infersight.daemon.runtime import default_components
from infersight.storage.model import Batch, Frame, StackSample, Target

T0 = 1_714_568_400          # 2024-05-01 13:00:00 UTC
INTERVAL, LAG, RATE = 10, 5, 50
DOCUMENTED_PARAMS = {"name", "from", "until", "format", "sampleRate", "spyName", "units", "aggregationType"}

# (pid, role, gpus): two workers share role and GPU, so they make one labelled profile
TARGETS = [(100, "engine_core", (0,)), (101, "worker", (1,)), (103, "worker", (1,)), (102, "api_server", ())]
STACKS = {
    100: [(Frame("run_engine", "/srv/vllm/engine.py", 10), Frame("step", "/srv/vllm/core.py", 42)),
          (Frame("run_engine", "/srv/vllm/engine.py", 10), Frame("synchronize", "/torch/cuda/__init__.py", 7))],
    101: [(Frame("worker_main", "/srv/vllm/worker.py", 5), Frame("execute_model", "/srv/vllm/runner.py", 88))],
    103: [(Frame("worker_main", "/srv/vllm/worker.py", 5), Frame("prepare;inputs", "/srv/vllm/runner.py", 12))],
    102: [(Frame("serve", "/srv/api.py", 3), Frame("tokenize", "/srv/tok.py", 9))],
}


def folded_frame(f: Frame) -> str:
    return f"{f.function} ({f.file}:{f.line})".replace(";", ":")


def samples() -> list[StackSample]:
    """30 s of stacks from T0; every 3rd second a thread is idle (never pushed)."""
    out = []
    for sec in range(30):
        for pid, stacks in STACKS.items():
            for k, frames in enumerate(stacks):
                out.append(StackSample(T0 + sec, pid, 1.0, pid * 10 + k, "MainThread", frames, True, 1 + (sec + k) % 4))
            out.append(StackSample(T0 + sec, pid, 1.0, pid * 10 + 9, "idle", stacks[0], False, 5))
    return out


def expected_bodies(t_from: int, t_until: int) -> dict[tuple[str, str], Counter]:
    """(role, gpu label) -> folded line -> count, straight from the records above."""
    roles = {pid: (role, "-".join(map(str, gpus)) or "none") for pid, role, gpus in TARGETS}
    out: dict[tuple[str, str], Counter] = {}
    for s in samples():
        if s.active and t_from <= s.bucket < t_until:
            out.setdefault(roles[s.pid], Counter())[";".join(folded_frame(f) for f in s.frames)] += s.count
    return out


@pytest.fixture
def filled(store):
    b = Batch("stacks", T0 + 30, targets=[Target("testhost", pid, 1.0, f"python {role}", role, gpus)
                                          for pid, role, gpus in TARGETS],
              stack_samples=samples())
    store.submit(b)
    store.flush()
    return store


class Ingest:
    """A stand-in Pyroscope: records each request, answers with the next scripted status."""

    def __init__(self, statuses: list[int] | None = None, headers: dict[str, str] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.headers = headers or {}
        self.requests: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append({"method": request.method, "path": request.path, "query": dict(request.query),
                              "headers": dict(request.headers), "body": await request.text()})
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status == 200 else "unavailable", headers=self.headers)


@pytest.fixture
def ingest_server(aiohttp_server):
    async def start(ingest: Ingest):
        app = web.Application()
        app.router.add_post("/ingest", ingest.handle)
        return await aiohttp_server(app)
    return start


def parse_name(name: str) -> tuple[str, dict[str, str]]:
    """Pyroscope's own reading of ``name`` (segment.ParseKey): app name, then k=v split at ',' and '}'."""
    m = re.fullmatch(r"([^{]*)\{(.*)\}", name)
    assert m, name
    app, inner = m.group(1), m.group(2)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", app), app
    labels = {}
    for part in inner.split(","):
        key, _, val = part.partition("=")
        assert re.fullmatch(r"[A-Za-z0-9_]+", key) and val and not set(val) & set(",}= "), part
        labels[key] = val
    return app, labels


def parse_folded(body: str) -> Counter:
    out: Counter = Counter()
    for line in body.splitlines():
        stack, _, count = line.rpartition(" ")
        assert stack and count.isdigit(), line
        out[stack] += int(count)
    return out


def check_request(req: dict, t_from: int, t_until: int) -> tuple[str, str]:
    """Every documented rule of one request; returns its (role, gpu) labels."""
    assert req["method"] == "POST" and req["path"] == "/ingest"
    q = req["query"]
    assert set(q) == DOCUMENTED_PARAMS
    assert (q["from"], q["until"]) == (str(t_from), str(t_until))
    assert (q["format"], q["spyName"], q["sampleRate"], q["units"], q["aggregationType"]) == (
        "folded", "pyspy", str(RATE), "samples", "sum")
    app, labels = parse_name(q["name"])
    assert app == "vllm-prod.cpu"
    assert set(labels) == {"host", "role", "gpu", "service"}
    assert labels["host"] == "gpu-node-1" and labels["service"] == "vllm-prod"
    assert req["headers"]["Content-Type"].startswith("text/plain")
    assert req["headers"]["Authorization"] == "Bearer s3cret"
    assert req["headers"]["X-Scope-OrgID"] == "team-a"
    key = (labels["role"], labels["gpu"])
    assert parse_folded(req["body"]) == expected_bodies(t_from, t_until)[key], key
    return key


def make_pusher(store, url: str, clock: list[float], **overrides) -> PyroscopePusher:
    config = with_overrides(Config(), **{
        "agent.host": "gpu-node-1", "collectors.stacks.rate_hz": RATE, "pyroscope.enabled": True,
        "pyroscope.url": url, "pyroscope.interval_s": float(INTERVAL), "pyroscope.lag_s": float(LAG),
        "pyroscope.service": "vllm-prod", "pyroscope.auth_token": "s3cret", "pyroscope.tenant_id": "team-a",
        "pyroscope.max_backoff_s": 60.0, **overrides})
    return PyroscopePusher(config, store, clock=lambda: clock[0])


async def test_each_interval_is_one_push_per_target_group(filled, ingest_server):
    ingest = Ingest()
    server = await ingest_server(ingest)
    clock = [T0 + INTERVAL + LAG + 0.4]
    pusher = make_pusher(filled, str(server.make_url("/")), clock)
    await pusher.start()
    try:
        await pusher.tick()
        clock[0] += INTERVAL
        await pusher.tick()
    finally:
        await pusher.close()
    assert len(ingest.requests) == 6
    first = {check_request(r, T0, T0 + INTERVAL) for r in ingest.requests[:3]}
    second = {check_request(r, T0 + INTERVAL, T0 + 2 * INTERVAL) for r in ingest.requests[3:]}
    assert first == second == {("engine_core", "0"), ("worker", "1"), ("api_server", "none")}
    assert pusher.health()["pushed"] == 6 and pusher.health()["ok"]


async def test_backoff_while_the_server_answers_503(filled, ingest_server):
    ingest = Ingest([503, 503, 503])
    server = await ingest_server(ingest)
    clock = [float(T0 + INTERVAL + LAG)]
    pusher = make_pusher(filled, str(server.make_url("/")), clock)
    await pusher.start()
    seen = []
    try:
        # (time after the first tick, requests the server has seen by then)
        for offset, total in ((0, 1), (5, 1), (9.9, 1), (10, 2), (29.9, 2), (30, 3), (69.9, 3), (70, 3 + 9)):
            clock[0] = T0 + INTERVAL + LAG + offset
            await pusher.tick()
            seen.append((offset, len(ingest.requests)))
            assert len(ingest.requests) == total, seen
    finally:
        await pusher.close()
    failed = ingest.requests[:3]
    # the push that failed is retried first, unchanged; the waits double: 10 s, 20 s, then 40 s
    assert all((r["query"], r["body"]) == (failed[0]["query"], failed[0]["body"]) for r in failed)
    delivered = ingest.requests[3:]
    windows = [(int(r["query"]["from"]), int(r["query"]["until"])) for r in delivered]
    assert windows == sorted(windows), "pushes leave in order"
    assert Counter(windows) == {(T0, T0 + 10): 3, (T0 + 10, T0 + 20): 3, (T0 + 20, T0 + 30): 3}
    for r, (t_from, t_until) in zip(delivered, windows):
        check_request(r, t_from, t_until)
    assert (delivered[0]["query"], delivered[0]["body"]) == (failed[0]["query"], failed[0]["body"])
    h = pusher.health()
    assert (h["failed"], h["pushed"], h["buffered"], h["dropped"], h["ok"]) == (3, 9, 0, 0, True)


async def test_retry_after_is_honoured_within_the_bound(filled, ingest_server):
    ingest = Ingest([503], headers={"Retry-After": "45"})
    server = await ingest_server(ingest)
    clock = [float(T0 + INTERVAL + LAG)]
    pusher = make_pusher(filled, str(server.make_url("/")), clock)
    await pusher.start()
    try:
        await pusher.tick()
        assert pusher.next_attempt == pytest.approx(clock[0] + 45)
        clock[0] += 44
        await pusher.tick()
        assert len(ingest.requests) == 1
        clock[0] += 1
        await pusher.tick()
        assert len(ingest.requests) > 1 and not ingest.statuses
    finally:
        await pusher.close()


async def test_buffer_is_bounded_and_keeps_the_newest(filled, ingest_server):
    ingest = Ingest([503] * 100)
    server = await ingest_server(ingest)
    clock = [float(T0 + INTERVAL + LAG)]
    pusher = make_pusher(filled, str(server.make_url("/")), clock, **{"pyroscope.max_buffered": 4})
    await pusher.start()
    try:
        for _ in range(3):               # three windows of three groups: 9 pushes, room for 4
            await pusher.tick()
            clock[0] += INTERVAL
        assert len(pusher.buffer) == 4 and pusher.dropped == 5
        assert [(p.t_from, p.labels["role"]) for p in pusher.buffer][0] == (T0 + 10, "worker")
        assert all(p.t_from == T0 + 20 for p in list(pusher.buffer)[1:])
        ingest.statuses.clear()
        clock[0] += 120
        await pusher.tick()
    finally:
        await pusher.close()
    delivered = [r for r in ingest.requests if int(r["query"]["from"]) >= T0 + 10][-4:]
    assert [(int(r["query"]["from"]), parse_name(r["query"]["name"])[1]["role"]) for r in delivered] == [
        (p_from, role) for p_from, role in [(T0 + 10, "worker"), (T0 + 20, "api_server"), (T0 + 20, "engine_core"),
                                            (T0 + 20, "worker")]]
    assert pusher.health()["dropped"] == 5 and pusher.health()["buffered"] == 0


async def test_a_rejected_push_is_dropped_not_retried(filled, ingest_server):
    ingest = Ingest([400])
    server = await ingest_server(ingest)
    clock = [float(T0 + INTERVAL + LAG)]
    pusher = make_pusher(filled, str(server.make_url("/")), clock)
    await pusher.start()
    try:
        await pusher.tick()
    finally:
        await pusher.close()
    assert len(ingest.requests) == 3  # the other two went out in the same tick
    assert pusher.rejected == 1 and pusher.pushed == 2 and not pusher.buffer
    assert pusher.health()["last_rejection"].startswith("HTTP 400")


async def test_an_unreachable_server_backs_off_without_raising(filled, unused_tcp_port):
    clock = [float(T0 + INTERVAL + LAG)]
    pusher = make_pusher(filled, f"http://127.0.0.1:{unused_tcp_port}", clock)
    await pusher.start()
    try:
        await pusher.tick()
    finally:
        await pusher.close()
    assert len(pusher.buffer) == 3 and pusher.failed == 1
    assert pusher.next_attempt == pytest.approx(clock[0] + INTERVAL)
    assert not pusher.health()["ok"]


def test_the_daemon_runs_the_pusher_only_when_enabled():
    assert "pyroscope" not in [f.__name__ for f in default_components(Config())]
    enabled = with_overrides(Config(), **{"pyroscope.enabled": True})
    assert "pyroscope" in [f.__name__ for f in default_components(enabled)]
