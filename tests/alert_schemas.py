"""Checks of webhook bodies against each service's documented schema and limits (helpers for
test_alert_formats.py and test_alerts_e2e.py; they raise AssertionError naming the path).

Sources:
- Slack Block Kit reference (docs.slack.dev/reference/block-kit): header text plain_text
  <= 150; section text <= 3000, or fields (<= 10, each <= 2000); context elements <= 10;
  text objects ``plain_text``/``mrkdwn``; <= 50 blocks per message; ``&``, ``<`` and ``>``
  are control characters outside ``<url|label>`` links and must be escaped.
- Discord "Execute Webhook" and embed limits (discord.com/developers/docs/resources/message):
  content <= 2000; <= 10 embeds; title 256, description 4096, <= 25 fields (name 256 and
  value 1024, both required), footer.text 2048, total 6000; color an integer; timestamp
  ISO8601; ``allowed_mentions.parse`` a subset of roles/users/everyone.
- Teams Workflows webhooks and Adaptive Cards (learn.microsoft.com: "Create Incoming
  Webhooks" / "Send Adaptive Cards"; adaptivecards.io/explorer): {"type": "message",
  "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content":
  card}]}; the card has type AdaptiveCard and a version (Workflows render up to 1.4);
  TextBlock needs ``text``; RichTextBlock needs ``inlines`` of TextRuns (each with
  ``text``; 1.2+); FactSet needs ``facts`` of {title, value} strings;
  Action.OpenUrl needs ``url``; enum values as in the explorer.
"""
from __future__ import annotations

import datetime
import re
from typing import Any

SLACK_BLOCKS = {"header", "section", "context", "divider", "actions"}
_SLACK_LINK = re.compile(r"<(https?://[^|>\s]+)\|([^>]*)>")

_CARD_COLORS = {"Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"}
_CARD_SIZES = {"Default", "Small", "Medium", "Large", "ExtraLarge"}
_CARD_WEIGHTS = {"Default", "Lighter", "Bolder"}
_CARD_SPACING = {"None", "Small", "Default", "Medium", "Large", "ExtraLarge", "Padding"}


def _text_object(obj: Any, path: str, limit: int, kinds=("plain_text", "mrkdwn")) -> str:
    assert isinstance(obj, dict), path
    assert obj.get("type") in kinds, f"{path}.type: {obj.get('type')!r}"
    text = obj.get("text")
    assert isinstance(text, str) and text, f"{path}.text: empty"
    assert len(text) <= limit, f"{path}.text: {len(text)} > {limit}"
    if obj["type"] == "mrkdwn":
        _slack_escaped(text, f"{path}.text")
    return text


def _slack_escaped(text: str, path: str) -> None:
    bare = _SLACK_LINK.sub("", text)
    assert "<" not in bare and ">" not in bare, f"{path}: unescaped < or > in {text!r}"
    assert not re.search(r"&(?!amp;|lt;|gt;)", bare), f"{path}: unescaped & in {text!r}"


def check_slack(body: dict) -> None:
    """An incoming-webhook body with blocks and a fallback text."""
    assert isinstance(body.get("text"), str) and body["text"], "text: required as the fallback"
    _slack_escaped(body["text"], "text")
    blocks = body.get("blocks")
    assert isinstance(blocks, list) and 0 < len(blocks) <= 50, "blocks"
    for i, b in enumerate(blocks):
        path = f"blocks[{i}]"
        assert b.get("type") in SLACK_BLOCKS, f"{path}.type: {b.get('type')!r}"
        if b["type"] == "header":
            _text_object(b["text"], f"{path}.text", 150, kinds=("plain_text",))
        elif b["type"] == "section":
            assert "text" in b or "fields" in b, f"{path}: needs text or fields"
            if "text" in b:
                _text_object(b["text"], f"{path}.text", 3000)
            if "fields" in b:
                assert 0 < len(b["fields"]) <= 10, f"{path}.fields: {len(b['fields'])}"
                for j, f in enumerate(b["fields"]):
                    _text_object(f, f"{path}.fields[{j}]", 2000)
        elif b["type"] == "context":
            assert 0 < len(b["elements"]) <= 10, f"{path}.elements"
            for j, e in enumerate(b["elements"]):
                _text_object(e, f"{path}.elements[{j}]", 3000)


def check_discord(body: dict) -> None:
    """An Execute Webhook body with embeds."""
    assert "content" in body or "embeds" in body, "content or embeds required"
    if "content" in body:
        assert isinstance(body["content"], str) and len(body["content"]) <= 2000, "content"
    assert set(body.get("allowed_mentions", {}).get("parse", [])) <= {"roles", "users", "everyone"}
    embeds = body.get("embeds", [])
    assert len(embeds) <= 10, "embeds: more than 10"
    total = 0
    for i, e in enumerate(embeds):
        path = f"embeds[{i}]"
        limits = {"title": 256, "description": 4096}
        for key, limit in limits.items():
            if key in e:
                assert isinstance(e[key], str) and len(e[key]) <= limit, f"{path}.{key}: {len(e[key])}"
                total += len(e[key])
        if "url" in e:
            assert re.match(r"https?://", e["url"]), f"{path}.url"
        if "color" in e:
            assert isinstance(e["color"], int) and 0 <= e["color"] <= 0xFFFFFF, f"{path}.color"
        if "timestamp" in e:
            datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
        fields = e.get("fields", [])
        assert len(fields) <= 25, f"{path}.fields: {len(fields)}"
        for j, f in enumerate(fields):
            assert isinstance(f.get("name"), str) and 0 < len(f["name"]) <= 256, f"{path}.fields[{j}].name"
            assert isinstance(f.get("value"), str) and 0 < len(f["value"]) <= 1024, f"{path}.fields[{j}].value"
            assert isinstance(f.get("inline", False), bool), f"{path}.fields[{j}].inline"
            total += len(f["name"]) + len(f["value"])
        if "footer" in e:
            assert isinstance(e["footer"]["text"], str) and len(e["footer"]["text"]) <= 2048, f"{path}.footer"
            total += len(e["footer"]["text"])
        assert not {"type", "provider", "video"} & set(e), f"{path}: fields webhooks may not set"
    assert total <= 6000, f"embeds: {total} characters in all, more than 6000"


def _card_element(el: dict, path: str) -> None:
    kind = el.get("type")
    if kind == "TextBlock":
        assert isinstance(el.get("text"), str) and el["text"], f"{path}.text"
        for key, allowed in (("color", _CARD_COLORS), ("size", _CARD_SIZES), ("weight", _CARD_WEIGHTS),
                             ("spacing", _CARD_SPACING)):
            if key in el:
                assert el[key] in allowed, f"{path}.{key}: {el[key]!r}"
        if "fontType" in el:
            assert el["fontType"] in {"Default", "Monospace"}, f"{path}.fontType"
        for key in ("wrap", "isSubtle"):
            if key in el:
                assert isinstance(el[key], bool), f"{path}.{key}"
    elif kind == "RichTextBlock":
        inlines = el.get("inlines")
        assert isinstance(inlines, list) and inlines, f"{path}.inlines"
        for j, run in enumerate(inlines):
            assert run.get("type") == "TextRun", f"{path}.inlines[{j}].type"
            assert isinstance(run.get("text"), str) and run["text"], f"{path}.inlines[{j}].text"
            for key, allowed in (("color", _CARD_COLORS), ("size", _CARD_SIZES), ("weight", _CARD_WEIGHTS),
                                 ("fontType", {"Default", "Monospace"})):
                if key in run:
                    assert run[key] in allowed, f"{path}.inlines[{j}].{key}: {run[key]!r}"
            for key in ("isSubtle", "italic", "strikethrough", "highlight"):
                if key in run:
                    assert isinstance(run[key], bool), f"{path}.inlines[{j}].{key}"
        if "spacing" in el:
            assert el["spacing"] in _CARD_SPACING, f"{path}.spacing"
    elif kind == "FactSet":
        facts = el.get("facts")
        assert isinstance(facts, list) and facts, f"{path}.facts"
        for j, f in enumerate(facts):
            assert isinstance(f.get("title"), str) and isinstance(f.get("value"), str), f"{path}.facts[{j}]"
    else:
        raise AssertionError(f"{path}.type: {kind!r} is not an element this check knows")


def check_teams(body: dict) -> None:
    """A Workflows webhook body carrying one Adaptive Card."""
    assert body.get("type") == "message", "type"
    attachments = body.get("attachments")
    assert isinstance(attachments, list) and len(attachments) == 1, "attachments"
    att = attachments[0]
    assert att.get("contentType") == "application/vnd.microsoft.card.adaptive", "contentType"
    card = att.get("content")
    assert card.get("type") == "AdaptiveCard", "content.type"
    assert re.fullmatch(r"1\.[0-4]", card.get("version", "")), f"content.version: {card.get('version')!r}"
    assert card.get("$schema", "").startswith("http://adaptivecards.io/schemas/adaptive-card.json")
    body_els = card.get("body")
    assert isinstance(body_els, list) and body_els, "content.body"
    for i, el in enumerate(body_els):
        _card_element(el, f"content.body[{i}]")
    for i, a in enumerate(card.get("actions", [])):
        assert a.get("type") == "Action.OpenUrl", f"content.actions[{i}].type"
        assert re.match(r"https?://", a.get("url", "")), f"content.actions[{i}].url"
        assert isinstance(a.get("title"), str) and a["title"], f"content.actions[{i}].title"


CHECKS = {"slack": check_slack, "discord": check_discord, "msteams": check_teams}


def check(fmt: str, body: dict) -> None:
    """The documented-schema check of ``fmt`` (generic bodies are checked by their tests)."""
    CHECKS[fmt](body)
