"""Alerts end to end: a daemon with webhook targets and a local aiohttp receiver.

- a finding produces exactly one firing and one resolved message per target, in each format,
  each body valid for its service (tests/alert_schemas.py) and the generic one signed;
- a receiver answering 500, then 429 with Retry-After: 1, then 200 gets the message once;
- a daemon SIGKILLed with a message in the outbox delivers it after the restart;
- the webhook URLs and the HMAC key never appear in logs, /api/* or error texts.

Findings come from a fake analyzer component (the same on_events/done_until contract as
daemon/analysis/analyzer.py) that writes them through storage.events.upsert_events.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import signal
import subprocess
import sys
import textwrap
import time
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from alert_schemas import check

from infersight.daemon.alerts.formats import event_dict
from infersight.daemon.runtime import Daemon
from infersight.daemon.sdnotify import Notifier
from infersight.storage import events as q_events
from infersight.storage import outbox as q_outbox
from infersight.storage.model import Event
from infersight.storage.store import Store

HMAC_KEY = "hmac-K3Y-e2e-never-shown"
FORMATS = ("slack", "discord", "msteams", "generic")
QUIET = {"collectors.host.enabled": False, "analysis.enabled": False}


def token(name: str) -> str:
    return f"T0KEN-{name}-s3cr3t"


class Receiver:
    """POST /hook/{name}/{token}: records every request; ``replies[name]`` is a list of
    (status, headers) answered in turn (the last one repeats), 200 when absent. Refusals echo the
    request URL back, as careless receivers do, so the test sees that errors are scrubbed."""

    def __init__(self) -> None:
        self.requests: dict[str, list[dict]] = {}
        self.replies: dict[str, list[tuple[int, dict]]] = {}
        self.app = web.Application()
        self.app.router.add_post("/hook/{name}/{token}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        seen = self.requests.setdefault(name, [])
        plan = self.replies.get(name) or [(200, {})]
        status, headers = plan[min(len(seen), len(plan) - 1)]
        seen.append({"t": time.monotonic(), "headers": dict(request.headers), "body": await request.read(),
                     "status": status})
        return web.Response(status=status, headers=headers,
                            text="ok" if status < 300 else f"cannot take {request.url}")

    def delivered(self, name: str) -> list[dict]:
        return [r for r in self.requests.get(name, []) if r["status"] < 300]


@pytest.fixture
async def receiver(aiohttp_server):
    rec = Receiver()
    server = await aiohttp_server(rec.app)
    rec.base = str(server.make_url("/hook"))
    return rec


def webhooks(rec: Receiver, names_formats: list[tuple[str, str]], **extra) -> list[dict]:
    return [{"name": name, "format": fmt, "url": f"{rec.base}/{name}/{token(name)}",
             "secret": HMAC_KEY if fmt == "generic" else "", **extra} for name, fmt in names_formats]


def gap(now: float, *, open_: bool, end: float | None = None) -> Event:
    start = now - 60
    return Event(id=f"cpu_gpu_gap:e2e-host:3:{int(start)}", kind="cpu_gpu_gap", start=start,
                 end=end if end is not None else now, host="e2e-host", gpu=3, severity="warning", klass="host_bound",
                 summary="GPU 3 host-bound: 71% idle for 1m00s while 48 requests were in flight; top frame "
                         "tokenize_slow_python 83% (api_server pid 4242)",
                 evidence={"gpu_idle_pct": 71.0, "requests_waiting_mean": 48.0},
                 top_frames=[{"frame": "tokenize_slow_python", "share": 0.83, "pid": 4242, "role": "api_server",
                              "file": "tok.py", "line": 9}], open=open_)


class FakeAnalyzer:
    """Plays ``script`` (one list of events per tick, then empty ticks) like the analyzer: writes
    the events, advances done_until, and hands them to its on_events callbacks."""

    name = "fake_analysis"
    interval_s = 0.2

    def __init__(self, daemon: Daemon, script: list[list[Event]]) -> None:
        self.store = daemon.agent.store
        self.script = list(script)
        self.on_events: list = []
        self.done_until = 0
        daemon.agent.extras["alerts"].follow(self)

    async def tick(self) -> None:
        events = self.script.pop(0) if self.script else []
        self.done_until += 1
        if events:
            await self.store.write(q_events.upsert_events, events)
        for callback in self.on_events:
            await callback(events)


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def captured_logs():
    logger = logging.getLogger("infersight")
    handler, level = LogCapture(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def run_daemon(config, script):
    daemon = Daemon(config, notifier=Notifier({}), components=[lambda d: FakeAnalyzer(d, script)])
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 60)
    return daemon, task


async def api_texts(daemon: Daemon) -> dict[str, str]:
    """The bodies of the API routes that could show config or alert state, by path."""
    async with aiohttp.ClientSession() as session:
        texts = {}
        now = int(time.time())
        for path in ("/api/health", "/api/config", f"/api/events?from={now - 3600}&to={now + 3600}"):
            async with session.get(daemon.site_url + path) as resp:
                assert resp.status == 200, path
                texts[path] = await resp.text()
        return texts


def assert_no_secrets(text: str, names) -> None:
    for name in names:
        assert token(name) not in text, f"the URL of {name} leaked"
    assert HMAC_KEY not in text, "the HMAC key leaked"


def state_of(fmt: str, body: dict) -> str:
    if fmt == "slack":
        title = body["blocks"][0]["text"]["text"]
    elif fmt == "discord":
        title = body["embeds"][0]["title"]
    elif fmt == "msteams":
        title = body["attachments"][0]["content"]["body"][0]["inlines"][0]["text"]
    else:
        return body["state"]
    return title.split(" ", 1)[0].lower()


async def test_one_message_per_target_in_each_format(make_config, receiver, captured_logs):
    targets = [(fmt, fmt) for fmt in FORMATS]
    config = make_config(**QUIET, **{"alerts.webhooks": webhooks(receiver, targets), "alerts.cooldown_s": 0.5,
                                     "web.external_url": "https://infersight.example.com/ui/"})
    now = time.time()
    script = [[gap(now, open_=True, end=now + i)] for i in range(6)] + [[gap(now, open_=False, end=now + 6)]]
    daemon, task = await run_daemon(config, script)
    try:
        await wait_for(lambda: all(len(receiver.delivered(f)) >= 2 for f in FORMATS), "firing and resolved")
        await asyncio.sleep(1.5)  # room for a wrong extra message to show up
        api = await api_texts(daemon)
        health = json.loads(api["/api/health"])
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    first = gap(now, open_=True, end=now)
    for fmt in FORMATS:
        requests = receiver.requests[fmt]
        assert [r["status"] for r in requests] == [200, 200], fmt
        bodies = [json.loads(r["body"]) for r in requests]
        assert [state_of(fmt, b) for b in bodies] == ["firing", "resolved"], fmt
        deliveries = [r["headers"]["X-Infersight-Delivery"] for r in requests]
        assert len(set(deliveries)) == 2
        if fmt != "generic":
            for body in bodies:
                check(fmt, body)
            assert "X-Infersight-Signature" not in requests[0]["headers"]
            continue
        for r, body in zip(requests, bodies):
            expected = "sha256=" + hmac.new(HMAC_KEY.encode(), r["body"], hashlib.sha256).hexdigest()
            assert r["headers"]["X-Infersight-Signature"] == expected
            assert body["delivery"] == r["headers"]["X-Infersight-Delivery"]
        assert bodies[0]["event"] == event_dict(first)
        assert bodies[0]["link"] == (f"https://infersight.example.com/ui/?from={math.floor(first.start) - 300}"
                                     f"&to={math.ceil(first.end) + 300}&gpu=3&event={quote(first.id, safe='')}")
        assert bodies[1]["event"]["open"] is False and bodies[1]["group"]["span_end"] == now + 6
    alerts = health["alerts"]
    assert alerts["ok"] is True
    for fmt in FORMATS:
        t = alerts["targets"][fmt]
        assert (t["delivered"], t["pending"], t["given_up"]) == (2, 0, 0)
        assert t["dest"] == receiver.base.rsplit("/hook", 1)[0]
    assert_no_secrets("\n".join([*api.values(), *captured_logs.lines]), FORMATS)
    assert any("event=alert_delivered" in line for line in captured_logs.lines)


async def test_500_then_429_then_200_delivers_once(make_config, receiver, captured_logs):
    receiver.replies["flaky"] = [(500, {}), (429, {"Retry-After": "1"}), (200, {})]
    config = make_config(**QUIET, **{"alerts.webhooks": webhooks(receiver, [("flaky", "generic")]),
                                     "alerts.send_resolved": False, "alerts.backoff_initial_s": 0.05})
    now = time.time()
    daemon, task = await run_daemon(config, [[gap(now, open_=True)]])
    try:
        await wait_for(lambda: receiver.delivered("flaky"), "the delivery after 500 and 429")
        await wait_for(lambda: daemon.agent.extras["alerts"].health()["targets"]["flaky"]["delivered"] == 1,
                       "the delivery to be recorded")
        await asyncio.sleep(1.5)  # room for a wrong second delivery
        api = await api_texts(daemon)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    requests = receiver.requests["flaky"]
    assert [r["status"] for r in requests] == [500, 429, 200]
    assert len({r["body"] for r in requests}) == 1
    assert len({r["headers"]["X-Infersight-Delivery"] for r in requests}) == 1
    assert requests[2]["t"] - requests[1]["t"] >= 1.0  # Retry-After: 1 was honoured
    # no web.external_url and web.listen on port 0: the link names the address really bound
    assert json.loads(requests[2]["body"])["link"].startswith(daemon.site_url + "/?from=")
    assert not daemon.site_url.endswith(":0")
    store = Store.open(config.storage.path, read_only=True)
    try:
        (row,) = store.read_sync(q_outbox.messages)
    finally:
        store.close()
    assert (row["status"], row["attempts"], row["state"]) == ("delivered", 3, "firing")
    assert row["last_error"].startswith("HTTP 429 from http://127.0.0.1:")
    assert "[redacted]" in row["last_error"]  # the receiver echoed the URL; the token was scrubbed
    assert_no_secrets("\n".join([*api.values(), *captured_logs.lines, row["last_error"]]), ["flaky"])
    assert sum("event=alert_retry" in line for line in captured_logs.lines) == 2


INJECTING_DAEMON = textwrap.dedent('''\
    """A daemon that hands the alerts component one finding, then runs until killed."""
    import asyncio, sys, time
    from infersight.daemon.config.load import load_config
    from infersight.daemon.logfmt import setup_logging
    from infersight.storage.model import Event
    from infersight.daemon.runtime import Daemon
    from infersight.storage import events as q_events

    class Inject:
        name, interval_s = "inject", 0.2

        def __init__(self, daemon):
            self.daemon, self.done = daemon, False

        async def tick(self):
            if self.done:
                return
            self.done = True
            now = time.time()
            event = Event(id=f"saturation:kill-host:0:{int(now)}", kind="saturation", start=now - 30, end=now,
                          host="kill-host", gpu=0, severity="critical", summary="GPU 0 saturated", open=True)
            await self.daemon.agent.store.write(q_events.upsert_events, [event])
            await self.daemon.agent.extras["alerts"].submit([event])

    setup_logging("info")
    sys.exit(asyncio.run(Daemon(load_config(sys.argv[1]), components=[Inject]).run()))
''')


async def test_sigkill_with_a_pending_message_then_restart_delivers_it(tmp_path, receiver, agent_process):
    receiver.replies["oncall"] = [(503, {})]
    hook = webhooks(receiver, [("oncall", "generic")])[0]
    config = tmp_path / "agent.toml"
    config.write_text(textwrap.dedent(f"""\
        [storage]
        path = {json.dumps(str(tmp_path / "agent.duckdb"))}
        flush_interval_s = 0.1
        [web]
        listen = "127.0.0.1:0"
        [collectors.host]
        enabled = false
        [collectors.stacks]
        enabled = false
        [collectors.gpu]
        enabled = false
        [collectors.engines]
        enabled = false
        [analysis]
        enabled = false
        [alerts]
        backoff_initial_s = 0.1
        backoff_max_s = 0.5
        [[alerts.webhooks]]
        name = "oncall"
        format = "generic"
        url = {json.dumps(hook["url"])}
        secret = {json.dumps(HMAC_KEY)}
        """), encoding="utf-8")
    script = tmp_path / "inject.py"
    script.write_text(INJECTING_DAEMON, encoding="utf-8")
    log1 = tmp_path / "first.log"
    with open(log1, "wb") as err:
        first = subprocess.Popen([sys.executable, str(script), str(config)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err)
        try:
            await wait_for(lambda: receiver.requests.get("oncall") or first.poll() is not None,
                           "the first delivery attempt", timeout=90)
            assert first.poll() is None, log1.read_text()
            first.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(first.wait, 30) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(10)
    refused = list(receiver.requests["oncall"])
    assert refused and all(r["status"] == 503 for r in refused)
    receiver.replies["oncall"] = [(200, {})]

    agent = agent_process(["--config", str(config)])
    await asyncio.to_thread(agent.wait_started, 90)
    await wait_for(lambda: receiver.delivered("oncall"), "the delivery after the restart", timeout=90)
    async with aiohttp.ClientSession() as session:
        for _ in range(1200):  # until the restarted daemon has recorded the delivery
            async with session.get(agent.url + "/api/health") as resp:
                health = await resp.json()
            if health["alerts"]["targets"]["oncall"]["delivered"] == 1:
                break
            await asyncio.sleep(0.05)
    assert health["alerts"]["targets"]["oncall"]["pending"] == 0
    assert await asyncio.to_thread(agent.stop, signal.SIGTERM, 10) == 0
    logs = agent.drain() + "\n" + log1.read_text()

    (ok,) = receiver.delivered("oncall")
    assert ok["body"] == refused[0]["body"]
    assert ok["headers"]["X-Infersight-Delivery"] == refused[0]["headers"]["X-Infersight-Delivery"]
    assert ok["headers"]["X-Infersight-Signature"] == \
        "sha256=" + hmac.new(HMAC_KEY.encode(), ok["body"], hashlib.sha256).hexdigest()
    assert json.loads(ok["body"])["event"]["kind"] == "saturation"
    store = Store.open(str(tmp_path / "agent.duckdb"), read_only=True)
    try:
        rows = store.read_sync(q_outbox.messages)
    finally:
        store.close()
    assert [(r["status"], r["delivery"]) for r in rows] == \
        [("delivered", refused[0]["headers"]["X-Infersight-Delivery"])]
    assert rows[0]["attempts"] >= 1
    assert_no_secrets(logs, ["oncall"])

