"""Alert messages as each chat service's webhook expects them (pure functions, no I/O).

A :class:`Message` is what one target is told about one group of findings: its state
(``firing``: ongoing, ``occurred``: already over when first seen, ``escalated``: severity
rose, ``resolved``: over and quiet for the cooldown), the latest finding as an event dict,
the span of the whole episode and a link to the UI. :func:`render` turns it into the JSON
body of one format:

- ``slack``: Block Kit blocks plus a complete ``text``; Slack shows the text in
  notifications, Mattermost and Rocket.Chat (which take the same payload but ignore
  ``blocks``) show it as the message, so it carries the link and the numbers on its own
  (in a code block, so that their Markdown formats none of the names in it).
  Limits from Slack's reference: header text 150, section text 3000, 10 fields of 2000.
- ``discord``: one embed (title 256, description 4096, 25 fields of name 256 / value 1024,
  footer 2048, 6000 in all), ``allowed_mentions`` empty so no text can ping anyone.
- ``msteams``: an Adaptive Card 1.4 (the highest Teams Workflows webhooks render) in the
  Workflows ``{"type": "message", "attachments": [...]}`` envelope; every text is a
  ``TextRun``, which Teams renders without Markdown.
- ``generic``: every field of the message and its event, for scripts and other tools.
"""
from __future__ import annotations

import dataclasses
import math
import time
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any, Callable

import orjson

from infersight.daemon.alerts import markup
from infersight.daemon.alerts.markup import cut, fit
from infersight.storage.model import Event

STATES = ("firing", "occurred", "escalated", "resolved")
LINK_MARGIN_S = 300          # the UI range shows this much before and after the finding
GENERIC_SCHEMA = "infersight.alert.v1"
MAX_TOP_FRAMES = 3
MAX_EVIDENCE = 10
MAX_LINK = 1500              # a longer link (an absurd event id) is left out of the chat formats

_COLORS = {"critical": 0xD0312D, "warning": 0xE8A317, "info": 0x3B82F6, "resolved": 0x2EA043}
_CARD_COLORS = {"critical": "Attention", "warning": "Warning", "info": "Accent", "resolved": "Good"}


@dataclass(frozen=True)
class Message:
    """What one target is told. ``event`` has the keys of :func:`event_dict`; times are Unix s."""

    state: str
    event: dict[str, Any]
    span_start: float
    span_end: float
    occurrences: int
    link: str
    created: float
    delivery: str


def event_dict(e: Event) -> dict[str, Any]:
    """An Event as the JSON-ready dict messages carry (``klass`` is spelled ``class``; NumPy
    numbers become plain ones, NaN becomes null)."""
    d = asdict(e)
    d["class"] = d.pop("klass")
    return orjson.loads(orjson.dumps(d, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))


def base_url(external_url: str, listen: str) -> str:
    """Where people reach the UI: ``web.external_url``, else ``http://`` + ``web.listen``."""
    return (external_url or f"http://{listen}").rstrip("/")


def ui_link(base: str, start: float, end: float, gpu: int | None, event_id: str) -> str:
    """The UI showing a finding: its range widened by LINK_MARGIN_S, its GPU and the event.

    The one place that knows the UI's state format: the query string web/static/state.js
    parses (``?from=&to=&gpu=&event=``; the UI then opens the event, its range and flame graph).
    """
    params = [("from", str(int(math.floor(start)) - LINK_MARGIN_S)), ("to", str(int(math.ceil(end)) + LINK_MARGIN_S))]
    if gpu is not None:
        params.append(("gpu", str(gpu)))
    params.append(("event", event_id))
    return f"{base}/?" + "&".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in params)


# -- the words ----------------------------------------------------------------------------------

def duration(seconds: float) -> str:
    """``45s``, ``4m12s``, ``2h05m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def where(m: Message) -> str:
    gpu = m.event.get("gpu")
    return f"{m.event.get('host', '?')}" + (f" GPU {gpu}" if gpu is not None else "")


def what(m: Message) -> str:
    klass = m.event.get("class")
    return f"{m.event.get('kind', '?')}" + (f" ({klass})" if klass else "")


def headline(m: Message) -> str:
    """One line naming the state, severity, kind, class, host and GPU."""
    sev = m.event.get("severity", "warning")
    if m.state == "escalated":
        return f"ESCALATED to {sev}: {what(m)} on {where(m)}"
    if m.state == "resolved":
        return f"RESOLVED {what(m)} on {where(m)}"
    return f"{m.state.upper()} [{sev}] {what(m)} on {where(m)}"


def timing(m: Message) -> str:
    """When it started and how long it lasted (or has lasted)."""
    e = m.event
    if m.state == "resolved":
        text = f"from {clock(m.span_start)} to {clock(m.span_end)} ({duration(m.span_end - m.span_start)})"
        return text + (f", {m.occurrences} findings" if m.occurrences > 1 else "")
    lasted = duration(e["end"] - e["start"])
    verb = "ongoing for" if e.get("open") else "lasted"
    text = f"started {clock(e['start'])}, {verb} {lasted}"
    if m.occurrences > 1:
        text += f"; {m.occurrences} findings since {clock(m.span_start)}"
    return text


def evidence_items(evidence: dict[str, Any], limit: int = MAX_EVIDENCE) -> list[tuple[str, str]]:
    """Numbers of the evidence as (name, value): scalars and one level of nested dicts."""
    out: list[tuple[str, str]] = []
    for key, value in evidence.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if _scalar(v):
                    out.append((f"{key}.{sub}", _num(v)))
        elif _scalar(value):
            out.append((key, _num(value)))
        if len(out) >= limit:
            break
    return out[:limit]


def frame_lines(frames: list[dict[str, Any]], limit: int = MAX_TOP_FRAMES) -> list[str]:
    """``name 83% (api_server pid 1234, server.py:42)`` for the top frames."""
    out = []
    for f in frames[:limit]:
        share = f.get("share")
        text = f"{f.get('frame', '?')}" + (f" {share * 100:.0f}%" if isinstance(share, (int, float)) else "")
        who = " ".join(str(x) for x in (f.get("role"), f"pid {f['pid']}" if f.get("pid") is not None else None) if x)
        loc = f"{f['file'].rsplit('/', 1)[-1]}:{f['line']}" if f.get("file") and f.get("line") else f.get("file")
        extra = ", ".join(x for x in (who, loc) if x)
        out.append(text + (f" ({extra})" if extra else ""))
    return out


def plain_text(m: Message) -> str:
    """The whole message as plain lines: headline, summary, timing, evidence, frames, link."""
    return plain_text_without_link(m) + "\n" + m.link


def plain_text_without_link(m: Message) -> str:
    lines = [headline(m), m.event.get("summary") or "", timing(m)]
    ev = evidence_items(m.event.get("evidence") or {})
    if ev:
        lines.append("evidence: " + ", ".join(f"{k}={v}" for k, v in ev))
    frames = frame_lines(m.event.get("top_frames") or [])
    if frames:
        lines.append("top frames: " + "; ".join(frames))
    return "\n".join(line for line in lines if line)


def _facts(m: Message) -> list[tuple[str, str]]:
    e = m.event
    facts = [("Host", str(e.get("host"))), ("GPU", "host-wide" if e.get("gpu") is None else str(e["gpu"])),
             ("Kind", str(e.get("kind"))), ("Class", str(e.get("class") or "-")),
             ("Severity", str(e.get("severity"))), ("State", m.state)]
    if m.state == "resolved":
        facts += [("From", clock(m.span_start)), ("Lasted", duration(m.span_end - m.span_start))]
    else:
        facts += [("Started", clock(e["start"])), ("Duration", duration(e["end"] - e["start"]))]
    if m.occurrences > 1:
        facts.append(("Findings", str(m.occurrences)))
    return facts


# -- the formats --------------------------------------------------------------------------------
# Names from the profiled processes are untrusted: every chat format neutralises their markup
# (daemon/alerts/markup.py says how, per tool); generic carries them as JSON strings.

def slack(m: Message) -> dict[str, Any]:
    esc, code = markup.slack_escape, markup.slack_code
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": cut(headline(m), 150), "emoji": False}},
        {"type": "section", "text": {"type": "plain_text", "emoji": False, "text": fit(
            m.event.get("summary") or headline(m), 2480, esc) + "\n" + fit(timing(m), 500, esc)}},
    ]
    if len(m.link) <= MAX_LINK:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{esc(m.link)}|Open in infersight>"}})
    blocks.append({"type": "section", "fields": [{"type": "plain_text", "emoji": False, "text": f"{k}\n" + fit(
        v, 1900, esc)} for k, v in _facts(m)[:10]]})
    ev = evidence_items(m.event.get("evidence") or {})
    if ev:
        body = "\n".join(f"`{fit(k, 200, code)}` `{fit(v, 200, code)}`" for k, v in ev)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Evidence*\n{body}"}})
    frames = frame_lines(m.event.get("top_frames") or [])
    if frames:
        body = "\n".join(f"• `{fit(f, 500, code)}`" for f in frames)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Top frames*\n{body}"}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"infersight event `{fit(m.event.get('id', ''), 2900, code)}`"}]})
    # The fallback text is all Mattermost and Rocket.Chat show, as Markdown: the message goes in
    # a code block, where Slack, Mattermost and Rocket.Chat format nothing; the link follows it.
    if len(m.link) <= MAX_LINK:
        text = "```\n" + fit(plain_text_without_link(m), 3880 - len(esc(m.link)), code) + "\n```\n" + esc(m.link)
    else:
        text = "```\n" + fit(plain_text_without_link(m), 3880, code) + "\n```"
    return {"text": text, "blocks": blocks}


def discord(m: Message) -> dict[str, Any]:
    esc = markup.discord_escape
    fields = [{"name": k, "value": fit(v, 200, esc), "inline": True} for k, v in _facts(m)]
    ev = evidence_items(m.event.get("evidence") or {})
    if ev:
        fields.append({"name": "Evidence", "value": fit("\n".join(f"{k}: {v}" for k, v in ev), 1024, esc),
                       "inline": False})
    frames = frame_lines(m.event.get("top_frames") or [])
    if frames:
        fields.append({"name": "Top frames", "value": fit("\n".join(frames), 1024, esc), "inline": False})
    title = fit(headline(m), 256, esc)
    footer = cut(f"infersight event {m.event.get('id', '')}", 300)     # footers render no Markdown
    used = len(title) + len(footer) + sum(len(f["name"]) + len(f["value"]) for f in fields)
    tail = "\n" + fit(timing(m), 300, esc) + (f"\n[Open in infersight]({m.link})" if len(m.link) <= MAX_LINK else "")
    description = fit(m.event.get("summary") or "", min(4096, 6000 - used) - len(tail), esc) + tail
    embed = {"title": title, "description": description, "color": _color(m), "fields": fields[:25],
             "footer": {"text": footer}, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(m.created)) + "Z"}
    if len(m.link) <= MAX_LINK:
        embed["url"] = m.link
    return {"content": fit(headline(m), 2000, esc), "embeds": [embed], "allowed_mentions": {"parse": []}}


def _runs(text: str, **style: Any) -> dict[str, Any]:
    """A RichTextBlock of one TextRun: Adaptive Cards render no Markdown in a TextRun."""
    return {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": text, **style}]}


def msteams(m: Message) -> dict[str, Any]:
    color = _CARD_COLORS["resolved"] if m.state == "resolved" else _CARD_COLORS.get(m.event.get("severity"), "Warning")
    # Teams refuses messages over about 28 KB: every text is bounded
    body: list[dict[str, Any]] = [
        _runs(cut(headline(m), 500), weight="Bolder", size="Medium", color=color),
        _runs(cut(m.event.get("summary") or headline(m), 3000)),
        {**_runs(cut(timing(m), 500), isSubtle=True), "spacing": "None"},
        # the agent's own words (host name, kind, class, severity, times): no profiled name
        {"type": "FactSet", "facts": [{"title": k, "value": cut(v, 300)} for k, v in _facts(m)]},
    ]
    ev = evidence_items(m.event.get("evidence") or {})
    if ev:
        body.append(_runs("Evidence", weight="Bolder"))
        body.append({**_runs("\n".join(f"{cut(k, 200)}: {cut(v, 200)}" for k, v in ev)), "spacing": "None"})
    frames = frame_lines(m.event.get("top_frames") or [])
    if frames:
        body.append(_runs("Top frames", weight="Bolder"))
        body += [{**_runs(cut(f, 500), fontType="Monospace"), "spacing": "None"} for f in frames]
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "msteams": {"width": "Full"}, "body": body,
            "actions": [{"type": "Action.OpenUrl", "title": "Open in infersight", "url": m.link}]
            if len(m.link) <= MAX_LINK else []}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def generic(m: Message) -> dict[str, Any]:
    return {"schema": GENERIC_SCHEMA, "delivery": m.delivery, "state": m.state, "created": m.created,
            "text": plain_text(m), "headline": headline(m), "link": m.link,
            "group": {"kind": m.event.get("kind"), "host": m.event.get("host"), "gpu": m.event.get("gpu"),
                      "span_start": m.span_start, "span_end": m.span_end, "occurrences": m.occurrences},
            "event": m.event}


RENDERERS: dict[str, Callable[[Message], dict[str, Any]]] = {
    "slack": slack, "discord": discord, "msteams": msteams, "generic": generic}


def render(fmt: str, m: Message) -> dict[str, Any]:
    """The JSON body of ``m`` in format ``fmt`` (one of RENDERERS; KeyError otherwise). Chat
    formats get the event's strings through :func:`markup.clean` first (one line each, no
    bidi controls); generic gets them as stored."""
    renderer = RENDERERS[fmt]
    if fmt != "generic":
        m = dataclasses.replace(m, event=markup.clean_tree(m.event))
    return renderer(m)


# -- helpers ------------------------------------------------------------------------------------

def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str)) and not isinstance(v, bool) and v != ""


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
    return str(v)


def _color(m: Message) -> int:
    return _COLORS["resolved"] if m.state == "resolved" else _COLORS.get(m.event.get("severity"), _COLORS["warning"])
