"""The alert outbox, grouping and sender: persistence across reopen, order per target, backoff
with jitter, Retry-After, giving up by age; grouping of flapping, long-running, escalating and
repeated findings (and its state across a restart); one HTTP attempt against a local receiver
(signature, classification, redaction)."""
from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import json
import urllib.parse

import pytest
from aiohttp import web

from infersight.daemon.alerts import formats
from infersight.daemon.alerts.grouping import Grouper, GroupKey
from infersight.daemon.alerts.outbox import Outbox, backoff_delay
from infersight.daemon.alerts.sender import Redactor, Sender, parse_retry_after, redact_url, sign
from infersight.daemon.config.load import Config, ConfigError, WebhookConfig, load_config, with_overrides
from infersight.storage import outbox as q
from infersight.storage.model import Event
from infersight.storage.store import Store

T0 = 1_800_000_000.0


def hook(name="ops", fmt="generic", **kw) -> WebhookConfig:
    return WebhookConfig(name=name, format=fmt, url=kw.pop("url", f"https://hooks.example.com/{name}/tok"), **kw)


def finding(start=T0, end=T0 + 30, *, open_=True, kind="cpu_gpu_gap", gpu=0, severity="warning", id_=None) -> Event:
    return Event(id=id_ or f"{kind}:h:{gpu}:{int(start)}", kind=kind, start=start, end=end, host="h", gpu=gpu,
                 severity=severity, klass="host_bound", summary="GPU idle", open=open_)


def grouper(*targets, cooldown=60.0, send_resolved=True, max_age=3600.0) -> Grouper:
    return Grouper(targets or (hook(),), cooldown_s=cooldown, send_resolved=send_resolved, max_age_s=max_age)


def run(g: Grouper, events, now, progressed=True) -> list[str]:
    """Fold one tick and expire, applying both; returns the message states decided."""
    out = []
    for decision in (g.fold(events, now, progressed),):
        g.apply(decision)
        out += [n.state for n in decision.notices]
    decision = g.expire(now)
    g.apply(decision)
    return out + [n.state for n in decision.notices]


# -- grouping --------------------------------------------------------------------------------------

def test_ongoing_finding_reemitted_every_tick_is_one_message_then_one_resolution():
    g = grouper(cooldown=60)
    sent = []
    for i in range(50):  # the analyzer re-emits the open finding every tick
        sent += run(g, [finding(end=T0 + 30 + 5 * i)], T0 + 40 + 5 * i)
    assert sent == ["firing"]
    sent += run(g, [finding(end=T0 + 300, open_=False)], T0 + 300)
    assert sent == ["firing"]  # ended, settling for the cooldown
    sent += run(g, [], T0 + 330)
    sent += run(g, [], T0 + 361)
    assert sent == ["firing", "resolved"]
    st = g.states[GroupKey("ops", "cpu_gpu_gap", "h", 0)]
    assert st.status == "quiet" and st.first_start == T0 and st.last_end == T0 + 300


def test_flapping_condition_is_one_alert_and_one_resolution():
    g = grouper(cooldown=60)
    sent = []
    t = T0
    for i in range(20):  # 10 s findings every 30 s, each opening and closing
        sent += run(g, [finding(start=t, end=t + 5, id_=f"gap{i}")], t + 6)
        sent += run(g, [finding(start=t, end=t + 10, open_=False, id_=f"gap{i}")], t + 12)
        sent += run(g, [], t + 25)
        t += 30
    assert sent == ["firing"]
    sent += run(g, [], t + 100)
    assert sent == ["firing", "resolved"]
    st = g.states[GroupKey("ops", "cpu_gpu_gap", "h", 0)]
    assert st.occurrences == 20


def test_a_new_episode_after_the_cooldown_alerts_again():
    g = grouper(cooldown=60)
    assert run(g, [finding(end=T0 + 10, open_=False)], T0 + 12) == ["occurred"]
    assert run(g, [], T0 + 80) == []  # told it was over and nothing followed: no resolution
    assert run(g, [finding(start=T0 + 500, end=T0 + 505)], T0 + 506) == ["firing"]


def test_closed_only_findings_that_recur_get_a_summary_resolution():
    g = grouper(cooldown=60)
    assert run(g, [finding(end=T0 + 10, open_=False, id_="a")], T0 + 12) == ["occurred"]
    assert run(g, [finding(start=T0 + 30, end=T0 + 40, open_=False, id_="b")], T0 + 42) == []
    assert run(g, [], T0 + 103) == ["resolved"]


def test_escalation_is_told_once_per_step():
    g = grouper(cooldown=60)
    assert run(g, [finding(severity="warning")], T0 + 31) == ["firing"]
    assert run(g, [finding(end=T0 + 90, severity="critical")], T0 + 91) == ["escalated"]
    assert run(g, [finding(end=T0 + 95, severity="critical")], T0 + 96) == []
    assert run(g, [finding(end=T0 + 99, severity="warning")], T0 + 100) == []


def test_min_severity_opens_only_at_that_level_and_then_follows_the_episode():
    g = grouper(hook("pager", min_severity="critical"), cooldown=60)
    assert run(g, [finding(severity="warning")], T0 + 31) == []
    assert run(g, [finding(end=T0 + 90, severity="critical")], T0 + 91) == ["firing"]
    assert run(g, [finding(end=T0 + 95, severity="warning")], T0 + 96) == []  # still the same episode
    assert run(g, [finding(end=T0 + 99, severity="warning", open_=False)], T0 + 100) == []
    assert run(g, [], T0 + 161) == ["resolved"]


def test_kind_and_gpu_filters():
    g = grouper(hook("a", kinds=("saturation",)), hook("b", gpus=(1,)), hook("c"), cooldown=60)
    decision = g.fold([finding(gpu=0), finding(kind="saturation", gpu=1), finding(kind="regression", gpu=None)],
                      T0 + 31, True)
    told = {(n.key.target, n.key.kind, n.key.gpu) for n in decision.notices}
    assert told == {("a", "saturation", 1), ("b", "saturation", 1), ("c", "cpu_gpu_gap", 0),
                    ("c", "regression", None), ("c", "saturation", 1)}


def test_a_finding_no_longer_reported_by_a_tick_that_progressed_settles():
    g = grouper(cooldown=60)
    assert run(g, [finding()], T0 + 31) == ["firing"]
    assert run(g, [], T0 + 40, progressed=False) == []  # no new analysis: still ongoing
    assert g.states[GroupKey("ops", "cpu_gpu_gap", "h", 0)].status == "firing"
    assert run(g, [], T0 + 45, progressed=True) == []  # analysed, not reported: it is over
    assert g.states[GroupKey("ops", "cpu_gpu_gap", "h", 0)].status == "settling"
    assert run(g, [], T0 + 106) == ["resolved"]


def test_repeated_and_too_old_findings_are_ignored():
    g = grouper(cooldown=10, max_age=600)
    assert run(g, [finding(end=T0 + 10, open_=False)], T0 + 12) == ["occurred"]
    assert run(g, [], T0 + 30) == []
    assert run(g, [finding(end=T0 + 10, open_=False)], T0 + 40) == []       # re-analysed: a repeat
    assert run(g, [finding(start=T0 - 2000, end=T0 - 1000, open_=False)], T0 + 50) == []  # older than max_age


def test_send_resolved_off():
    g = grouper(cooldown=0, send_resolved=False)
    assert run(g, [finding()], T0 + 31) == ["firing"]
    assert run(g, [finding(end=T0 + 40, open_=False)], T0 + 41) == []
    assert g.states[GroupKey("ops", "cpu_gpu_gap", "h", 0)].status == "quiet"


# -- the outbox in the store -------------------------------------------------------------------------

def _message(state: str, event: Event, now: float) -> formats.Message:
    return formats.Message(state=state, event=formats.event_dict(event), span_start=event.start,
                           span_end=event.end, occurrences=1, link="http://x/#", created=now, delivery=f"d-{state}")


async def test_grouping_state_and_messages_survive_a_reopen(tmp_path):
    path = str(tmp_path / "a.duckdb")
    store = Store.open(path, flush_interval_s=0.05)
    g = grouper(hook("ops"), hook("chat", fmt="slack"), cooldown=60)
    try:
        decision = g.fold([finding()], T0 + 31, True)
        msgs = [(n.key.target, "generic" if n.key.target == "ops" else "slack", _message(n.state, finding(), T0))
                for n in decision.notices]
        ids = await Outbox(store).commit(decision, msgs, T0 + 31)
        g.apply(decision)
        assert ids == [1, 2]
    finally:
        store.close()
    store = Store.open(path, flush_interval_s=0.05)
    try:
        ob = Outbox(store)
        restored = dict(Grouper.from_row(r) for r in await ob.load_groups())
        assert restored == g.states
        heads = await ob.heads()
        assert [(h.id, h.target, h.format, h.state, h.attempts) for h in heads] == \
            [(1, "ops", "generic", "firing", 0), (2, "chat", "slack", "firing", 0)]
        body = json.loads(heads[0].body)
        assert body["schema"] == "infersight.alert.v1" and body["event"]["id"] == finding().id
        # the restarted grouper goes on from the stored state: the same open finding is no news
        g2 = Grouper((hook("ops"), hook("chat", fmt="slack")), cooldown_s=60, send_resolved=True, max_age_s=3600,
                     states=restored)
        assert g2.fold([finding(end=T0 + 60)], T0 + 61, True).notices == []
    finally:
        store.close()


async def test_delivery_is_in_order_per_target_and_attempts_are_recorded(store):
    ob = Outbox(store)
    g = grouper(cooldown=0)
    e1, e2 = finding(gpu=0), finding(gpu=1)
    d = g.fold([e1, e2], T0, True)
    await ob.commit(d, [("ops", "generic", _message("firing", e1, T0)), ("ops", "generic", _message("firing", e2, T0))],
                    T0)
    (head,) = await ob.heads()
    assert json.loads(head.body)["event"]["gpu"] == 0  # the older one first, the other waits behind it
    await ob.retry_later(head.id, T0 + 100, "HTTP 500 from https://hooks.example.com")
    (again,) = await ob.heads()
    assert again.id == head.id and again.attempts == 1 and again.next_attempt == T0 + 100
    await ob.delivered(head.id, T0 + 100)
    (second,) = await ob.heads()
    assert json.loads(second.body)["event"]["gpu"] == 1
    await ob.give_up(second.id, T0 + 101, "HTTP 400 from https://hooks.example.com: bad", attempted=True)
    assert await ob.heads() == []
    rows = await store.read(q.messages)
    assert [(r["status"], r["attempts"]) for r in rows] == [("delivered", 2), ("given_up", 1)]
    summary = (await ob.summary())["ops"]
    assert summary["delivered"] == 1 and summary["given_up"] == 1 and summary["pending"] == 0
    assert summary["last_error"].startswith("HTTP 400")


async def test_old_messages_are_given_up_and_recorded(store):
    ob = Outbox(store)
    e = finding()
    d = grouper().fold([e], T0, True)
    await ob.commit(d, [("ops", "generic", _message("firing", e, T0))], T0)
    (head,) = await ob.heads()
    await ob.retry_later(head.id, T0 + 5, "cannot connect to https://hooks.example.com: Connection refused")
    assert await ob.give_up_older(T0 - 1, T0 + 10) == []  # not old enough
    gone = await ob.give_up_older(T0 + 1, T0 + 10)
    reason = "gave up after 1 attempts: cannot connect to https://hooks.example.com: Connection refused"
    assert gone == [{"id": head.id, "target": "ops", "attempts": 1, "last_error": reason}]
    (row,) = await store.read(q.messages)
    assert row["status"] == "given_up" and row["done_at"] == T0 + 10 and row["last_error"] == reason


async def test_removed_targets_are_forgotten(store):
    ob = Outbox(store)
    g = grouper(hook("old"), hook("kept"))
    e = finding()
    d = g.fold([e], T0, True)
    await ob.commit(d, [("old", "generic", _message("firing", e, T0)), ("kept", "generic", _message("firing", e, T0))],
                    T0)
    assert await ob.forget_targets(["kept"], T0 + 1) == (1, 1)
    assert [h.target for h in await ob.heads()] == ["kept"]
    assert [r["target"] for r in await ob.load_groups()] == ["kept"]


def test_backoff_doubles_with_jitter_and_a_cap():
    lows = [backoff_delay(n, 2.0, 60.0, rng=lambda: 0.0) for n in range(1, 9)]
    highs = [backoff_delay(n, 2.0, 60.0, rng=lambda: 1.0) for n in range(1, 9)]
    assert highs == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert lows == [h / 2 for h in highs]
    assert backoff_delay(3, 5.0, 1.0, rng=lambda: 1.0) == 5.0  # a max below the initial delay means the initial


def test_retry_after_in_seconds_and_as_a_date():
    assert parse_retry_after("1", T0) == 1.0
    assert parse_retry_after(" 2.5 ", T0) == 2.5
    assert parse_retry_after(email.utils.formatdate(T0 + 30, usegmt=True), T0) == 30.0
    assert parse_retry_after(email.utils.formatdate(T0 - 30, usegmt=True), T0) == 0.0
    assert parse_retry_after("soon", T0) is None and parse_retry_after(None, T0) is None


# -- config ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("table, message", [
    ({"name": "a", "url": "ftp://x/y"}, "alerts.webhooks[0].url: required, an http:// or https:// URL"),
    ({"name": "a", "url": "https:///nohost"}, "alerts.webhooks[0].url: required"),
    ({"name": "", "url": "https://x"}, "alerts.webhooks[0].name: required"),
    ({"name": "a", "url": "https://x", "format": "telegram"}, "alerts.webhooks[0].format: expected one of"),
])
def test_webhook_config_errors_name_the_key_and_hide_the_url(tmp_path, table, message):
    path = tmp_path / "c.toml"
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
    path.write_text(f"[[alerts.webhooks]]\n{lines}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(message), str(info.value)
    assert "nohost" not in str(info.value) and "ftp://x/y" not in str(info.value)


def test_duplicate_webhook_names_are_refused():
    with pytest.raises(ConfigError, match=r"^alerts\.webhooks\[1\]\.name: duplicate"):
        with_overrides(Config(), **{"alerts.webhooks": [{"name": "a", "url": "https://x/1"},
                                                        {"name": "a", "url": "https://x/2"}]})


def test_secrets_are_not_in_the_config_repr():
    cfg = with_overrides(Config(), **{"alerts.webhooks": [{"name": "a", "url": "https://x/T0KEN-in-path",
                                                           "secret": "hmac-KEY-42"}]})
    text = repr(cfg)
    assert "T0KEN-in-path" not in text and "hmac-KEY-42" not in text and "name='a'" in text


# -- one attempt against a local receiver -------------------------------------------------------------

SECRET_PATH = "/hook/T0KEN-s3cr3t-path"
HMAC_KEY = "hmac-K3Y-never-logged"


@pytest.fixture
async def receiver(aiohttp_server):
    """POST /hook/{token}?reply=STATUS[&retry_after=X][&sleep=S]: records the request; a refusal
    echoes the request URL back (as careless receivers do), to prove errors are scrubbed."""
    seen: list[dict] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append({"headers": dict(request.headers), "body": body, "path": request.path})
        if "sleep" in request.query:
            await asyncio.sleep(float(request.query["sleep"]))
        status = int(request.query.get("reply", "200"))
        if status in (301, 302):
            raise web.HTTPFound(location="https://elsewhere.example.com" + SECRET_PATH)
        headers = {"Retry-After": request.query["retry_after"]} if "retry_after" in request.query else {}
        return web.Response(status=status, text=f"error for {request.url}" if status >= 400 else "ok",
                            headers=headers)

    app = web.Application()
    app.router.add_post("/hook/{token}", handle)
    server = await aiohttp_server(app)
    return server, seen


async def _send(server, query: str, *, timeout_s=5.0, secret=HMAC_KEY):
    target = hook("r", url=str(server.make_url(SECRET_PATH)) + query, secret=secret)
    sender = Sender(timeout_s)
    try:
        return target, await sender.send(target, b'{"x": 1}', "delivery-1")
    finally:
        await sender.close()


async def test_signature_and_headers(receiver):
    server, seen = receiver
    _, result = await _send(server, "")
    assert result.outcome == "delivered" and result.status == 200
    (req,) = seen
    assert req["body"] == b'{"x": 1}'
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["X-Infersight-Delivery"] == "delivery-1"
    assert req["headers"]["X-Infersight-Timestamp"].isdigit()
    expected = "sha256=" + hmac.new(HMAC_KEY.encode(), req["body"], hashlib.sha256).hexdigest()
    assert req["headers"]["X-Infersight-Signature"] == expected == sign(HMAC_KEY, req["body"])


async def test_no_signature_without_a_secret(receiver):
    server, seen = receiver
    await _send(server, "", secret="")
    assert "X-Infersight-Signature" not in seen[0]["headers"]


@pytest.mark.parametrize("query, outcome, status", [
    ("?reply=500", "retry", 500), ("?reply=503", "retry", 503), ("?reply=429", "retry", 429),
    ("?reply=408", "retry", 408), ("?reply=400", "give_up", 400), ("?reply=404", "give_up", 404),
    ("?reply=302", "give_up", 302),
])
async def test_outcomes_and_scrubbed_errors(receiver, query, outcome, status):
    server, seen = receiver
    target, result = await _send(server, query)
    assert (result.outcome, result.status) == (outcome, status)
    assert result.error.startswith(f"HTTP {status}")
    assert f"http://127.0.0.1:{server.port}" in result.error
    assert "T0KEN" not in result.error and HMAC_KEY not in result.error and "reply=" not in result.error


async def test_retry_after_is_passed_on(receiver):
    server, _ = receiver
    _, result = await _send(server, "?reply=429&retry_after=7")
    assert result.outcome == "retry" and result.retry_after == 7.0


async def test_timeout_and_refused_connection_are_retried_without_secrets(receiver, unused_tcp_port):
    server, _ = receiver
    _, result = await _send(server, "?sleep=5", timeout_s=0.3)
    assert result.outcome == "retry" and result.error.startswith("no answer from http://127.0.0.1:")
    target = hook("r", url=f"http://127.0.0.1:{unused_tcp_port}{SECRET_PATH}", secret=HMAC_KEY)
    sender = Sender(5.0)
    try:
        result = await sender.send(target, b"{}", "d")
    finally:
        await sender.close()
    assert result.outcome == "retry" and result.status is None
    assert result.error.startswith(f"cannot connect to http://127.0.0.1:{unused_tcp_port}")
    assert "T0KEN" not in result.error


def test_redaction():
    url = "https://user:pa55word@hooks.slack.com/services/T000/B000/XXXXSECRET?token=abc123"
    scrub = Redactor(url, "hmac-secret")
    text = scrub(f"failed {url} path /services/T000/B000/XXXXSECRET q token=abc123 key hmac-secret "
                 f"quoted {urllib.parse.quote(url, safe='')}")
    for secret in ("XXXXSECRET", "abc123", "hmac-secret", "pa55word"):
        assert secret not in text
    assert redact_url(url) == "https://hooks.slack.com"
    assert redact_url("http://[::1]:8080/x/y") == "http://[::1]:8080"
