"""Hostile names in alerts (issue 30, item 4): one test per format.

A process anyone can start names its frames, files and threads; a finding quotes them in its
summary, evidence and top frames. Every chat format must show them as text: no link, no
bold, no mention, no code span closed early, no heading from a line break, no bidi override.
The generic format carries them as JSON strings, as stored, for the receiver to escape.
"""
from __future__ import annotations

import json
import re

from alert_schemas import check
from test_alert_formats import gap_event, message

from infersight.daemon.alerts.formats import render
from infersight.daemon.alerts.markup import SLACK_BACKTICK, clean

LINK = "[pwn](https://evil.example/x) **bold**"
TICK = "a` *bold* `<!channel> ~strike~ _it_"
MENTION = "@everyone <@123456> <t:1:R>"
HEADING = "ok\n# Heading\n- item\r\n> quote"
BIDI = "gpu_\u202eredaolnwod\u202c.py"
HOSTILE = [LINK, TICK, MENTION, HEADING, BIDI]


def hostile_event():
    frames = [{"frame": name, "share": 0.2, "pid": 7, "role": "api_server", "file": f"/x/{name}.py", "line": 3}
              for name in HOSTILE]
    return gap_event(summary="top frame " + " | ".join(HOSTILE), top_frames=frames,
                     evidence={"culprit_thread": LINK, "thread_" + TICK: MENTION, "n": 3})


def strings(value, path=""):
    """(path, string) for every string in a JSON value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings(v, f"{path}[{i}]")


def test_slack_names_stay_text():
    m = message(hostile_event())
    body = render("slack", m)
    check("slack", body)
    ours = f"<{m.link.replace('&', '&amp;')}|Open in infersight>"
    for path, text in strings(body):
        assert "\n#" not in text and "\u202e" not in text, path
    mrkdwn = [o["text"] for b in body["blocks"] for o in [b.get("text")] + b.get("fields", []) + b.get("elements", [])
              if isinstance(o, dict) and o.get("type") == "mrkdwn"]
    assert any(SLACK_BACKTICK in t for t in mrkdwn), "the backtick in a frame name is neutralised, not dropped"
    for text in mrkdwn:
        for line in text.replace(ours, "").split("\n"):
            assert line.count("`") % 2 == 0, line                    # no code span left open
            outside = re.sub(r"`[^`]*`", "", line)                   # what Slack formats
            assert not re.search(r"evil\.example|\*bold\*|~strike~|_it_|<|@everyone", outside), outside
    fallback = body["text"]
    assert fallback.startswith("```\n") and fallback.count("```") == 2
    inside, after = fallback[4:].split("\n```", 1)
    assert "`" not in inside and after.strip() == m.link.replace("&", "&amp;")
    plain = [b["text"]["text"] for b in body["blocks"] if b.get("text", {}).get("type") == "plain_text"]
    assert any("[pwn](https://evil.example/x) **bold**" in t for t in plain), "shown as written, as plain text"


def test_discord_names_stay_text():
    m = message(hostile_event())
    body = render("discord", m)
    check("discord", body)
    assert body["allowed_mentions"] == {"parse": []}
    ours = f"[Open in infersight]({m.link})"
    embed = body["embeds"][0]
    rendered = [body["content"], embed["title"], embed["description"]] + [f["value"] for f in embed["fields"]]
    for text in rendered:
        bare = text.replace(ours, "")
        # every markup character is escaped: drop escaped pairs, and none may remain
        unescaped = re.sub(r"\\[^0-9A-Za-z\s]", "", bare)
        assert not re.search(r"[*_~`|>\[\]<#@]", unescaped), unescaped
        assert "\u202e" not in text, text
        assert not any(line.lstrip().startswith(("#", ">", "-", "*")) for line in bare.split("\n")), text
    shown = re.sub(r"\\([^0-9A-Za-z\s])", r"\1", embed["description"])
    assert clean(LINK) in shown and "@everyone <@123456>" in shown


def test_teams_names_stay_text():
    m = message(hostile_event())
    body = render("msteams", m)
    check("msteams", body)
    card = body["attachments"][0]["content"]
    for el in card["body"]:
        # TextBlock and FactSet render Markdown in Teams: no profiled name may be in one
        if el["type"] in ("TextBlock", "FactSet"):
            text = json.dumps(el)
            assert "evil.example" not in text and "everyone" not in text and "bold" not in text, el
    runs = [r["text"] for el in card["body"] if el["type"] == "RichTextBlock" for r in el["inlines"]]
    joined = "\n".join(runs)
    assert "[pwn](https://evil.example/x) **bold**" in joined, "shown as written, in TextRuns (no Markdown)"
    assert "\u202e" not in joined and "\n# Heading" not in joined and "\r" not in joined
    assert card["actions"][0]["url"] == m.link


def test_generic_carries_names_as_stored():
    e = hostile_event()
    body = json.loads(json.dumps(render("generic", message(e))))
    assert body["event"]["top_frames"] == e.top_frames and body["event"]["summary"] == e.summary
    assert body["event"]["evidence"]["culprit_thread"] == LINK
