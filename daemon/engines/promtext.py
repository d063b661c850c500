"""A tolerant parser of the Prometheus text exposition format (0.0.4) and OpenMetrics text.

:func:`parse` turns one scrape into an :class:`Exposition`: every well-formed sample as a
:class:`Sample` (name, labels as a tuple of ``(name, value)`` pairs sorted by label name,
value as a float), the declared type of every family (``# TYPE``), and the number of lines
it could not read. A bad line costs only itself: the samples before and after it are kept.
It never raises on any ``str`` input.

What real engines emit and this handles: ``_created`` samples and families, ``_count``
before ``_sum``, ``le`` anywhere in the label set, escaped label values (``\\\\``, ``\\"``,
``\\n``; other escapes are kept verbatim, as prometheus_client does), ``NaN``/``+Inf``/
``-Inf``, counters with and without ``_total``, timestamps (ignored), OpenMetrics exemplars
(ignored) and ``# EOF`` (nothing after it is read; non-blank lines after it are bad), CRLF
line ends, UTF-8 label values, and quoted UTF-8 metric/label names (``{"my.metric",a="b"}``).

Why not prometheus_client's parser: it raises on the first bad line, so one broken line
loses the whole scrape, and it is about 3x slower on the engine fixtures (vLLM's 712 lines:
~14 ms against ~4.3 ms; bench/promtext_speed.py). tests/test_promtext.py uses it
as the reference on well-formed text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

# Families types as written after "# TYPE name". Anything else is a bad line.
KNOWN_TYPES = frozenset(
    {"counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", "stateset", "gaugehistogram"}
)
# Sample-name suffixes a family's samples may carry (OpenMetrics and 0.0.4 together).
SUFFIXES = ("_total", "_created", "_bucket", "_count", "_sum", "_gcount", "_gsum", "_info")
MAX_KEPT_ERRORS = 5

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LNAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_QUOTED = r'"(?:[^"\\\n]|\\.)*"'
_VALUE = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?|(?i:inf(?:inity)?|nan))"
_TS = r"[+-]?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?"
_TAIL = rf"[ \t]+({_VALUE})(?:[ \t]+{_TS})?(?:[ \t]+#.*)?[ \t]*$"
_PAIR = rf"[ \t]*{_LNAME}[ \t]*=[ \t]*{_QUOTED}[ \t]*"

# The common case in one pass: legacy name, optional legacy labels, value, timestamp, exemplar.
_FAST_LINE = re.compile(rf"({_NAME})[ \t]*(?:\{{((?:{_PAIR},)*(?:{_PAIR})?)\}})?{_TAIL}")
_FAST_PAIR = re.compile(rf"({_LNAME})[ \t]*=[ \t]*\"((?:[^\"\\\n]|\\.)*)\"")
# The general case (quoted UTF-8 names) term by term: a name or quoted string, optionally
# followed by ="value", then a comma or the closing brace.
_TERM = re.compile(rf'[ \t]*(?:({_LNAME})|({_QUOTED}))[ \t]*(?:=[ \t]*({_QUOTED})[ \t]*)?(,|\}})')
_NAME_ONLY = re.compile(rf"[ \t]*({_NAME})?[ \t]*")
_TAIL_RE = re.compile(_TAIL)
_ESCAPE = re.compile(r"\\(.)")
_LEGACY_NAME = re.compile(rf"{_NAME}\Z")


class Sample(NamedTuple):
    """One sample. ``labels`` are sorted by label name; ``value`` may be NaN or infinite."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(slots=True)
class Exposition:
    """What one scrape said. ``errors`` keeps the first few bad lines as "line N: why"."""

    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    bad_lines: int = 0
    errors: list[str] = field(default_factory=list)
    eof: bool = False                 # an OpenMetrics "# EOF" was seen
    lines: int = 0                    # non-blank lines read

    def by_name(self) -> dict[str, list[Sample]]:
        """Samples grouped by sample name, in exposition order."""
        out: dict[str, list[Sample]] = {}
        for s in self.samples:
            out.setdefault(s.name, []).append(s)
        return out

    def family_type(self, sample_name: str) -> str:
        """The declared type of the family a sample belongs to, or "untyped"."""
        return self.types.get(family_of(sample_name, self.types), "untyped")


def family_of(sample_name: str, types: dict[str, str]) -> str:
    """The family a sample name belongs to: itself when declared, else the declared name left
    after removing one known suffix (``foo_total`` -> ``foo``), else the name itself."""
    if sample_name in types:
        return sample_name
    for suffix in SUFFIXES:
        if sample_name.endswith(suffix):
            base = sample_name[: -len(suffix)]
            if base in types:
                return base
    return sample_name


def parse(text: str) -> Exposition:
    """Parse one exposition; never raises for ``str`` input (see the module docstring)."""
    out = Exposition()
    samples = out.samples
    fast = _FAST_LINE.match
    lines = text.split("\n")
    for number, raw in enumerate(lines, 1):
        line = raw.strip(" \t\r")
        if not line:
            continue
        out.lines += 1
        if line[0] == "#":
            if _comment(line, number, out):
                _after_eof(lines, number, out)
                break
            continue
        m = fast(line)
        if m is not None:
            name, body, value = m.group(1, 2, 3)
            if body:
                pairs = _FAST_PAIR.findall(body)
                if "\\" in body:
                    pairs = [(k, _unescape(v)) for k, v in pairs]
                labels = tuple(sorted(pairs))
                if len(labels) > 1 and _has_duplicates(labels):
                    _bad(out, number, "duplicate label name", line)
                    continue
            else:
                labels = ()
            samples.append(Sample(name, labels, float(value)))
            continue
        problem = _slow_sample(line, samples)
        if problem:
            _bad(out, number, problem, line)
    return out


def _comment(line: str, number: int, out: Exposition) -> bool:
    """Read a comment line; True when it is "# EOF"."""
    parts = line[1:].split(None, 3)
    if not parts:
        return False
    keyword = parts[0]
    if keyword == "EOF" and len(parts) == 1:
        out.eof = True
        return True
    if keyword == "TYPE":
        if len(parts) < 3:
            _bad(out, number, "TYPE without a type", line)
            return False
        name, kind = _comment_name(parts[1]), parts[2].strip().lower()
        if name is None or kind not in KNOWN_TYPES or len(parts) > 3:
            _bad(out, number, "unreadable TYPE line", line)
            return False
        out.types[name] = kind
    return False  # HELP, UNIT and free comments carry nothing we use


def _comment_name(token: str) -> str | None:
    if _LEGACY_NAME.match(token):
        return token
    if len(token) >= 2 and token[0] == '"' and token[-1] == '"':
        return _unescape(token[1:-1])
    return None


def _after_eof(lines: list[str], number: int, out: Exposition) -> None:
    for later, raw in enumerate(lines[number:], number + 1):
        if raw.strip(" \t\r"):
            out.lines += 1
            _bad(out, later, "text after # EOF", raw)


def _slow_sample(line: str, samples: list[Sample]) -> str:
    """The general grammar; appends the sample and returns "" or returns why it is bad."""
    m = _NAME_ONLY.match(line)
    name = m.group(1) or ""
    pos = m.end()
    pairs: list[tuple[str, str]] = []
    if pos < len(line) and line[pos] == "{":
        pos += 1
        if line.startswith("}", pos):
            pos += 1
        else:
            while True:
                t = _TERM.match(line, pos)
                if t is None:
                    return "unreadable labels"
                bare, quoted, value, end = t.groups()
                pos = t.end()
                key = bare if bare is not None else _unescape(quoted[1:-1])
                if value is None:
                    if quoted is None or name:
                        return "label without a value"
                    name = key
                else:
                    pairs.append((key, _unescape(value[1:-1])))
                if end == "}":
                    break
                rest = line[pos:].lstrip(" \t")
                if rest.startswith("}"):
                    pos = len(line) - len(rest) + 1
                    break
    if not name:
        return "no metric name"
    tail = _TAIL_RE.match(line, pos)
    if tail is None:
        return "no readable value"
    labels = tuple(sorted(pairs))
    if _has_duplicates(labels):
        return "duplicate label name"
    samples.append(Sample(name, labels, float(tail.group(1))))
    return ""


def _has_duplicates(labels: tuple[tuple[str, str], ...]) -> bool:
    return any(labels[i][0] == labels[i + 1][0] for i in range(len(labels) - 1))


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _ESCAPE.sub(_replace_escape, value)


def _replace_escape(m: re.Match[str]) -> str:
    c = m.group(1)
    if c == "n":
        return "\n"
    if c == "\\" or c == '"':
        return c
    return m.group(0)


def _bad(out: Exposition, number: int, why: str, line: str) -> None:
    out.bad_lines += 1
    if len(out.errors) < MAX_KEPT_ERRORS:
        shown = line if len(line) <= 80 else line[:77] + "..."
        out.errors.append(f"line {number}: {why}: {shown!r}")
