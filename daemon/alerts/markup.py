"""Neutralising profiled names for each chat tool's markup (pure functions, no I/O).

Frame, file, thread and command-line names come from the profiled processes: anyone who can
start a process on the host chooses them. In a chat message they must read as the text they
are, never as markup: no link (``[pwn](https://evil.example)``), no mention (``<!channel>``,
``@everyone``), no bold, no code span closed early by a backtick, no line break that starts
a heading, no right-to-left override that makes a name read backwards. Per tool:

- every chat format: :func:`clean` turns control characters (line breaks included) into
  blanks and drops bidirectional overrides, so one name stays one line that reads as stored;
- Slack (mrkdwn has no escape character): names go into ``plain_text`` objects, or into
  code spans (:func:`slack_code`), where Slack formats nothing; a backtick, which would close
  the span, becomes ``ˋ`` (U+02CB); ``&``, ``<``, ``>`` are entity-escaped everywhere
  (:func:`slack_escape`), as Slack asks;
- Discord: Markdown backslash escapes for every character that starts markup
  (:func:`discord_escape`); ``allowed_mentions`` (in formats.py) stops pings as well;
- Teams: Adaptive Card ``TextRun`` elements, which render no Markdown at all (formats.py);
  no escaping is needed there, and none is done, since Teams shows backslashes as written.
"""
from __future__ import annotations

import re
from typing import Any, Callable

# C0 and C1 control characters (line breaks and tabs included) and DEL
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# bidirectional embeddings, overrides, isolates and marks (Trojan Source), and the line and
# paragraph separators some clients break lines on
_INVISIBLE = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
# emphasis, code, spoiler, quote, masked link, mention/timestamp, heading and list markers;
# a frame line starts a line of the message, so '#' and '-' matter anywhere in a name
_DISCORD_SPECIAL = re.compile(r"([\\*_~`|>\[\]<#@-])")
SLACK_BACKTICK = "\u02cb"


def clean(text: Any) -> str:
    """``text`` as one line of what it says: controls become blanks, bidi controls go."""
    return _INVISIBLE.sub("", _CONTROLS.sub(" ", str(text)))


def clean_tree(value: Any) -> Any:
    """Every string in a JSON-like value (dicts, lists, keys included) through :func:`clean`."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(k) if isinstance(k, str) else k: clean_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_tree(v) for v in value]
    return value


def slack_escape(text: str) -> str:
    """Slack's three control characters (``<!channel>``-style markup cannot be injected)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_code(text: str) -> str:
    """Text for the inside of a Slack code span or block: escaped, and no backtick to close it."""
    return slack_escape(text).replace("`", SLACK_BACKTICK)


def discord_escape(text: str) -> str:
    """Backslash-escape Discord Markdown: emphasis, code, spoilers, quotes, masked links,
    headings, lists, mentions and timestamps (``__init__`` stays a name)."""
    return _DISCORD_SPECIAL.sub(r"\\\1", str(text))


def cut(text: str, limit: int) -> str:
    """At most ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def fit(raw: str, limit: int, esc: Callable[[str], str]) -> str:
    """``esc(raw)`` in at most ``limit`` characters: the raw text is cut before escaping, so
    an escape (``&amp;``, ``\\_``) is never cut in half."""
    out = esc(raw)
    if len(out) <= limit:
        return out
    n = min(len(raw), limit)
    while n > 0 and len(esc(raw[:n])) + 1 > limit:
        n -= max(1, (len(esc(raw[:n])) + 1 - limit) // 5)
    return esc(raw[:max(0, n)]) + "…"
