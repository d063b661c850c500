"""Alert payloads: each format against its service's documented schema and limits, the words a
person on call needs, escaping, and the UI link."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from alert_schemas import check, check_discord, check_slack, check_teams
from hypothesis import given, settings
from hypothesis import strategies as st

from infersight.daemon.alerts import formats
from infersight.daemon.alerts.formats import Message, event_dict, render, ui_link
from infersight.storage.model import Event

HOST = "gpu-node-7"
START = 1_714_564_801.0          # 2024-05-01 12:00:01 UTC


def gap_event(**changes) -> Event:
    """A cpu_gpu_gap finding shaped like the analyzer's (daemon/analysis/analyzer.py)."""
    values = dict(
        id=f"cpu_gpu_gap:{HOST}:3:{int(START)}", kind="cpu_gpu_gap", start=START, end=START + 252, host=HOST, gpu=3,
        severity="warning", klass="host_bound",
        summary="GPU 3 host-bound: 71% idle for 4m12s while 48 requests were in flight; top frame "
                "tokenize_slow_python 83% (api_server pid 4242)",
        evidence={"duration_s": 252, "lost_gpu_s": 178.9, "gpu_idle_pct": 71.0, "sm_util_mean": 12.5,
                  "requests_waiting_mean": 48.0, "own_cpu_pct_by_pid": {"4242": 99.5},
                  "class_seconds": {"host_bound": 252}, "foreign_processes": [{"pid": 1}]},
        top_frames=[{"frame": "tokenize_slow_python", "share": 0.83, "pid": 4242, "role": "api_server",
                     "file": "/srv/app/tokenize.py", "line": 88},
                    {"frame": "__init__", "share": 0.07, "pid": 4242, "role": "api_server", "file": "x.py",
                     "line": 3},
                    {"frame": "<module>", "share": 0.02, "pid": 4242, "role": "api_server", "file": "", "line": 0}],
        open=True)
    values.update(changes)
    return Event(**values)


def message(event: Event | None = None, state: str = "firing", **changes) -> Message:
    e = event or gap_event()
    values = dict(state=state, event=event_dict(e), span_start=e.start, span_end=e.end, occurrences=1,
                  link=ui_link("https://infersight.example.com", e.start, e.end, e.gpu, e.id), created=START + 260,
                  delivery="d" * 32)
    values.update(changes)
    return Message(**values)


@pytest.mark.parametrize("fmt", ["slack", "discord", "msteams"])
@pytest.mark.parametrize("state", formats.STATES)
def test_chat_formats_follow_their_schemas(fmt, state):
    body = render(fmt, message(state=state))
    check(fmt, body)
    json.dumps(body)  # plain JSON types only


def all_text(body, fmt: str = "") -> str:
    """The body as one string (Discord's markdown escapes undone, so names read as written)."""
    text = json.dumps(body, ensure_ascii=False)
    return re.sub(r"\\\\([^0-9A-Za-z\s])", r"\1", text) if fmt == "discord" else text


@pytest.mark.parametrize("fmt", ["slack", "discord", "msteams", "generic"])
def test_every_format_says_what_a_person_needs(fmt):
    m = message()
    text = all_text(render(fmt, m), fmt)
    for needed in (HOST, "GPU 3", "cpu_gpu_gap", "host_bound", "2024-05-01 12:00:01 UTC", "4m12s", "71%",
                   "48 requests", "tokenize_slow_python", "83%", "warning"):
        assert needed in text, f"{fmt}: {needed!r} missing"
    assert m.link in text or m.link.replace("&", "&amp;") in text


def test_slack_text_alone_is_the_whole_message():
    """Mattermost and Rocket.Chat ignore blocks: the text must carry the numbers and the link."""
    m = message()
    text = render("slack", m)["text"]
    assert text.startswith("```\nFIRING [warning] cpu_gpu_gap (host_bound) on gpu-node-7 GPU 3")
    assert "gpu_idle_pct=71" in text and "requests_waiting_mean=48" in text
    assert m.link.replace("&", "&amp;") in text
    assert "&lt;module&gt;" in text and "<module>" not in text


def test_slack_escapes_markup_so_nothing_pings():
    e = gap_event(summary="<!channel> a & b > c")
    body = render("slack", message(e))
    check_slack(body)
    assert "<!channel>" not in all_text(body)
    assert "&lt;!channel&gt; a &amp; b &gt; c" in body["blocks"][1]["text"]["text"]


def test_discord_escapes_markdown_and_mentions_nobody():
    e = gap_event(summary="@everyone look at __init__ and *this*")
    body = render("discord", message(e))
    check_discord(body)
    assert body["allowed_mentions"] == {"parse": []}
    desc = body["embeds"][0]["description"]
    assert r"\_\_init\_\_" in desc and r"\*this\*" in desc
    assert body["embeds"][0]["url"] == message(e).link
    assert body["embeds"][0]["color"] == 0xE8A317


def test_colors_follow_severity_and_resolution():
    assert render("discord", message(gap_event(severity="critical")))["embeds"][0]["color"] == 0xD0312D
    assert render("discord", message(state="resolved"))["embeds"][0]["color"] == 0x2EA043
    card = render("msteams", message(gap_event(severity="critical")))["attachments"][0]["content"]
    assert card["body"][0]["inlines"][0]["color"] == "Attention"
    card = render("msteams", message(state="resolved"))["attachments"][0]["content"]
    assert card["body"][0]["inlines"][0]["color"] == "Good"


def test_teams_card_is_in_the_workflows_envelope():
    m = message()
    body = render("msteams", m)
    check_teams(body)
    card = body["attachments"][0]["content"]
    assert card["version"] == "1.4"
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open in infersight", "url": m.link}]
    facts = {f["title"]: f["value"] for el in card["body"] if el["type"] == "FactSet" for f in el["facts"]}
    assert facts["Host"] == HOST and facts["GPU"] == "3" and facts["Class"] == "host_bound"
    runs = [r["text"] for el in card["body"] if el["type"] == "RichTextBlock" for r in el["inlines"]]
    assert any("gpu_idle_pct: 71" in r for r in runs)


def test_generic_carries_every_field():
    e = gap_event()
    m = message(e, occurrences=3, span_start=e.start - 100)
    body = json.loads(json.dumps(render("generic", m)))
    assert body["schema"] == "infersight.alert.v1"
    assert body["delivery"] == m.delivery and body["state"] == "firing" and body["link"] == m.link
    assert body["created"] == m.created
    expected = {"id": e.id, "kind": e.kind, "start": e.start, "end": e.end, "host": e.host, "gpu": e.gpu,
                "severity": e.severity, "class": e.klass, "summary": e.summary, "evidence": e.evidence,
                "top_frames": e.top_frames, "open": e.open}
    assert body["event"] == expected
    assert body["group"] == {"kind": e.kind, "host": HOST, "gpu": 3, "span_start": e.start - 100,
                             "span_end": e.end, "occurrences": 3}


def test_event_dict_makes_numpy_and_nan_json_plain():
    e = gap_event(evidence={"a": np.float32(1.5), "b": float("nan"), "c": np.int64(7), 5: "int key"})
    d = event_dict(e)
    assert d["evidence"] == {"a": 1.5, "b": None, "c": 7, "5": "int key"}
    json.dumps(d, allow_nan=False)


def test_resolved_message_states_the_span_and_findings():
    e = gap_event(open=False)
    m = message(e, state="resolved", span_start=START - 600, span_end=e.end, occurrences=4)
    text = formats.plain_text(m)
    assert text.startswith("RESOLVED cpu_gpu_gap (host_bound) on gpu-node-7 GPU 3")
    assert "from 2024-05-01 11:50:01 UTC to 2024-05-01 12:04:13 UTC (14m12s), 4 findings" in text


def test_headlines_per_state():
    assert formats.headline(message(state="occurred")).startswith("OCCURRED [warning] ")
    assert formats.headline(message(gap_event(severity="critical"), state="escalated")) == \
        "ESCALATED to critical: cpu_gpu_gap (host_bound) on gpu-node-7 GPU 3"
    regression = gap_event(kind="regression", gpu=None, klass=None, open=False)
    assert formats.headline(message(regression, state="occurred")) == "OCCURRED [warning] regression on gpu-node-7"
    assert "GPU host-wide" not in all_text(render("slack", message(regression)))


def test_ongoing_and_finished_timing_words():
    assert "ongoing for 4m12s" in formats.timing(message())
    assert "lasted 4m12s" in formats.timing(message(gap_event(open=False), state="occurred"))


# -- the UI link -------------------------------------------------------------------------------

def test_ui_link_format():
    base = formats.base_url("", "127.0.0.1:8321")
    assert base == "http://127.0.0.1:8321"
    assert ui_link(base, 1000.4, 1900.2, 3, "cpu_gpu_gap:h:3:1000") == \
        "http://127.0.0.1:8321/?from=700&to=2201&gpu=3&event=cpu_gpu_gap%3Ah%3A3%3A1000"
    assert formats.base_url("https://ui.example.com/infersight/", "0.0.0.0:1") == "https://ui.example.com/infersight"
    assert ui_link("https://x", 10, 20, None, "regression:h:0") == \
        "https://x/?from=-290&to=320&event=regression%3Ah%3A0"


# -- limits hold whatever the finding says ---------------------------------------------------------

# long runs of the characters each format escapes are the hard case for cutting to a limit
text_st = st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300),
                    st.builds(lambda piece, n: piece * n, st.sampled_from(["&", "<>", "_*", "é", "ab", "`|~"]),
                              st.integers(0, 9000)))
scalar_st = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False), st.text(
    max_size=3000))
evidence_st = st.dictionaries(st.text(min_size=1, max_size=300), st.one_of(
    scalar_st, st.dictionaries(st.text(min_size=1, max_size=300), scalar_st, max_size=5)), max_size=30)
frames_st = st.lists(st.fixed_dictionaries({"frame": st.text(max_size=2000), "share": st.floats(0, 1),
                                            "pid": st.integers(1, 10**6), "role": st.text(max_size=50),
                                            "file": st.text(max_size=500), "line": st.integers(0, 10**6)}),
                     max_size=10)


@settings(max_examples=60, deadline=None)
@given(summary=text_st, host=st.text(min_size=1, max_size=400), kind=text_st.filter(bool),
       evidence=evidence_st, frames=frames_st, state=st.sampled_from(formats.STATES),
       severity=st.sampled_from(["info", "warning", "critical"]), duration=st.floats(0, 10**7),
       gpu=st.one_of(st.none(), st.integers(0, 1023)))
def test_limits_hold_for_any_finding(summary, host, kind, evidence, frames, state, severity, duration, gpu):
    e = gap_event(summary=summary, host=host, kind=kind, evidence=evidence, top_frames=frames, severity=severity,
                  end=START + duration, gpu=gpu, id=f"{kind}:{host}:{gpu}")
    m = message(e, state=state)
    check_slack(render("slack", m))
    check_discord(render("discord", m))
    check_teams(render("msteams", m))
    generic = render("generic", m)
    assert generic["event"]["summary"] == summary  # generic is never cut


def test_duration_words():
    assert [formats.duration(s) for s in (0, 59.4, 60, 252, 3599, 3600, 7500)] == \
        ["0s", "59s", "1m00s", "4m12s", "59m59s", "1h00m", "2h05m"]
