"""Secret values removed from a process's command line before anything stores or shows it.

Command lines are stored and served as discovered (``/api/processes``, ``/api/health``, the
database, Parquet export, alerts), and serving processes take credentials on theirs
(``vllm serve --api-key K``, ``--hf-token``, ``HF_TOKEN=... python ...`` under ``env``,
headers for an upstream, code after ``python -c``). :func:`redact_args` replaces each such
value with :data:`MASK` and keeps the rest, so roles, patterns and people still read it.

This is a tokenizer, not a list of patterns per form. A command line is read as argv, and
each argument's text is split into tokens (:func:`tokens`: words, quoted strings, blanks and
the punctuation ``= : , ; ( ) { } [ ] & ? #``). A **name** says whether what follows is
secret (:func:`is_secret_name`: the name is split into words at ``-``, ``_``, ``.`` and
camelCase humps, lower-cased; it is secret when its last word is a credential word
(:data:`SECRET_WORDS`: key, token, secret, password, credential, auth, cookie, bearer, jwt,
webhook, ...) or ends with one (``hftoken``), or when a credential word comes just before
qualifiers such as ``url`` or ``value`` (``--webhook-url``, ``--access-key-id``). ``tokens``
(plural), ``--tokenizer``, ``--ssl-keyfile`` and ``KEY_PATH`` are not secret. The **value**
of a secret name is masked wherever the structure puts one:

- a flag: ``--NAME VALUE`` (the next argument, even when it starts with one dash, ``-X``;
  not when it is another ``--flag``) and ``--NAME=VALUE``; a comma list is one value;
- an assignment or a key: ``NAME=VALUE``, ``NAME = 'VALUE'`` in code, ``"NAME": "VALUE"``
  in JSON or Python, ``['NAME'] = 'VALUE'``; a quoted value keeps its quotes, and in a URL
  query (after ``?`` or ``&``) the value ends at the next ``&`` or ``#``;
- a header: ``NAME: VALUE`` runs to the end of the line (``Cookie: a=1; session=x`` is one
  value), keeping an auth scheme (``Authorization: Bearer ***``).

Two rules look at shapes, not names: credentials in URLs (``scheme://user:pass@host`` and
``scheme://token@host`` become ``scheme://***@host``), and tokens whose shape is
unmistakable (Hugging Face ``hf_``, OpenAI/Anthropic ``sk-``, GitHub, Slack ``xox?-`` and
webhook paths, Discord webhook paths, AWS key ids, GitLab, JWTs).

What this cannot know: a secret under a name that does not say so (``--foo K``), or a
secret-named flag that takes no value followed by a positional argument (``--use-auth-token
MODEL`` masks ``MODEL``). A false positive costs one masked word; a miss leaks a credential,
so the rules lean to masking.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator, NamedTuple

MASK = "***"
SECRET_WORDS = frozenset({
    "key", "keys", "apikey", "apikeys", "token", "secret", "secrets", "password", "passwords", "passwd", "pwd",
    "passphrase", "credential", "credentials", "creds", "auth", "authorization", "cookie", "cookies", "bearer",
    "jwt", "sig", "signature", "webhook", "webhooks", "privatekey", "accesskey", "secretkey", "sessionid",
})
# a name written as one lower-case word ("hftoken", "xapikey") is secret when it ends with one of these
_GLUED = ("token", "secret", "secrets", "password", "passwd", "apikey", "apikeys", "accesskey", "secretkey",
          "privatekey", "credential", "credentials", "cookie", "bearer", "webhook")
# words after a credential word that still name the credential (--webhook-url, --api-key-value)
_QUALIFIERS = frozenset({"url", "uri", "urls", "value", "values", "string", "str", "list", "header", "headers",
                         "data", "b64", "base64", "hex", "raw", "env", "text", "id"})
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "negotiate", "apikey", "hmac", "aws4-hmac-sha256"})

_PUNCT = "=:,;(){}[]&?#"
# a quoted string may span lines; an unclosed one ends at its line's end, so one stray quote
# does not hide the rest of a script from the rules
_LEXER = re.compile(r"""(?P<ws>\s+)|(?P<str>(?P<q>["'])(?:\\.|(?!(?P=q)).)*(?P=q)|["'][^\n]*)|(?P<op>[=:,;(){}\[\]&?#])"""
                    r"""|(?P<word>[^\s"'=:,;(){}\[\]&?#]+)""", re.S)
_CLOSED = re.compile(r"""(["'])(?:\\.|(?!\1).)*\1\Z""", re.S)
_IDENT = re.compile(r"[A-Za-z_][\w.-]*\Z")
_HUMPS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_LONG_FLAG = re.compile(r"--[A-Za-z]")
_FLAG = re.compile(r"(-{1,2}[A-Za-z][\w.-]*)(=(.*))?\Z", re.S)
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^/\s@?#]+)@")
_TOKENS = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|(?:AKIA|ASIA)[A-Z0-9]{16}|glpat-[A-Za-z0-9_-]{20,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})\b"
    r"|(?<=hooks\.slack\.com/services/)[\w/-]+|(?<=/api/webhooks/)[0-9]+/[\w-]+")
# text with none of these has no name-value structure, no URL credential and no token shape
_MAYBE = re.compile(r"[=:@]|hf_|sk-|gh[pousr]_|github_pat_|xox|AKIA|ASIA|glpat-|eyJ|/services/|/webhooks/")


class Token(NamedTuple):
    kind: str      # ws, str, op or word
    start: int
    end: int
    text: str


def tokens(text: str) -> list[Token]:
    """``text`` as tokens; an unclosed quote runs to the end of its line (the lexer never fails)."""
    return [Token(m.lastgroup if m.lastgroup != "q" else "str", m.start(), m.end(), m.group())
            for m in _LEXER.finditer(text)]


def name_words(name: str) -> list[str]:
    """``--hfToken`` -> ``["hf", "token"]``; ``X-Api-Key`` -> ``["x", "api", "key"]``."""
    words: list[str] = []
    for part in re.split(r"[-_.\s]+", name.strip("-\"' ")):
        words += [w.lower() for w in _HUMPS.findall(part)]
    return words


def is_secret_name(name: str) -> bool:
    """Whether a flag, variable, key or header name says its value is a credential."""
    words = name_words(name)
    if not words:
        return False
    last = words[-1]
    if last in SECRET_WORDS or (len(words) == 1 and last.endswith(_GLUED)):
        return True
    i = len(words) - 1
    while i >= 0 and words[i] in _QUALIFIERS:
        i -= 1
    if 0 <= i < len(words) - 1 and words[i] in SECRET_WORDS:
        # an "id" names the credential only after a key (AWS access key id); token ids are data
        return "id" not in words[i + 1:] or words[i] in ("key", "keys", "accesskey")
    return False


def redact_args(args: Iterable[str]) -> list[str]:
    """``args`` (a process's argv) with every secret value replaced by :data:`MASK`."""
    out: list[str] = []
    value_next = False
    for arg in args:
        if value_next:
            value_next = False
            if not _LONG_FLAG.match(arg):
                out.append(MASK if arg else arg)
                continue
        flag = _FLAG.match(arg)
        if flag and is_secret_name(flag.group(1)):
            if flag.group(2) is None:
                value_next = True
                out.append(arg)
            else:
                out.append(f"{flag.group(1)}={MASK}" if flag.group(3) else arg)
            continue
        out.append(redact_text(arg))
    return out


def redact_cmdline(cmdline: str) -> str:
    """A command line already joined with blanks (as psutil or a recording gives it), redacted."""
    return redact_text(cmdline)


def redact_text(text: str) -> str:
    """One string (an argument, code after ``-c``, a setproctitle title, a joined command
    line) with every secret value inside it masked."""
    if not _MAYBE.search(text) and " -" not in text and not text.startswith("-"):
        return text
    spans = list(_secret_spans(tokens(text), text))
    spans += [(m.start(2), m.end(2)) for m in _URL_USERINFO.finditer(text) if m.group(2) != MASK]
    spans += [m.span() for m in _TOKENS.finditer(text)]
    return _apply(text, spans)


def _apply(text: str, spans: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if end <= pos:
            continue
        start = max(start, pos)
        out.append(text[pos:start])
        out.append(MASK)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _secret_spans(toks: list[Token], text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every value a secret name points at (module docstring, the forms)."""
    n = len(toks)
    for i, tok in enumerate(toks):
        if tok.kind == "word" and tok.text.startswith("-") and (i == 0 or toks[i - 1].kind == "ws"):
            if is_secret_name(tok.text):
                yield from _flag_value(toks, i + 1)
            continue
        name = _name_of(tok)
        if name is None or not is_secret_name(name):
            continue
        j = _skip(toks, i + 1, "ws")
        if j < n and toks[j].text == "]" and tok.kind == "str":     # os.environ['HF_TOKEN'] = ...
            j = _skip(toks, j + 1, "ws")
        if j >= n or toks[j].kind != "op" or toks[j].text not in ("=", ":"):
            continue
        sep = toks[j].text
        if sep == ":" and (text.startswith(("//", ":"), toks[j].end)):
            continue                                               # ray::Actor, scheme://
        k = _skip(toks, j + 1, "ws")
        if k >= n:
            continue
        if toks[k].kind == "str":
            yield _inner(toks[k])
        elif sep == "=":
            query = i > 0 and toks[i - 1].text in ("?", "&")
            yield _run(toks, k, stop=("&", "#") if query else ())
        elif tok.kind == "str":                                    # "key": value (JSON, dicts)
            yield _run(toks, k, stop=(",", "}", "]"))
        else:                                                      # a header: to the end of the line
            if toks[k].text.lower() in _AUTH_SCHEMES and k + 1 < n and toks[k + 1].kind == "ws":
                k = _skip(toks, k + 1, "ws")
                if k >= n or "\n" in toks[k - 1].text:
                    continue
            yield toks[k].start, _line_end(toks, k, text)


def _flag_value(toks: list[Token], i: int) -> Iterator[tuple[int, int]]:
    """The value of a secret flag whose token ends before ``i``: ``=VALUE`` or `` VALUE``
    (not another ``--flag``)."""
    n = len(toks)
    if i + 1 < n and toks[i].text == "=" and toks[i + 1].kind != "ws":
        yield _word(toks, i + 1)
    elif i + 1 < n and toks[i].kind == "ws" and not _LONG_FLAG.match(toks[i + 1].text):
        yield _word(toks, i + 1)


def _word(toks: list[Token], i: int) -> tuple[int, int]:
    """The shell word from token ``i``: a quoted string alone keeps its quotes."""
    start, end = _run(toks, i)
    return _inner(toks[i]) if toks[i].kind == "str" and end == toks[i].end else (start, end)


def _line_end(toks: list[Token], k: int, text: str) -> int:
    """Where the line from token ``k`` ends, blanks before it left out; a quoted string that
    spans the line's end is taken whole and the line goes on after it (a cut string would
    lex otherwise when the masked text is read again)."""
    pos = toks[k].start
    while True:
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        inside = next((t for t in toks[k:] if t.kind == "str" and t.start < end < t.end), None)
        if inside is None:
            break
        pos = inside.end
    while end > toks[k].start and text[end - 1].isspace():
        end -= 1
    return end


def _name_of(tok: Token) -> str | None:
    if tok.kind == "word" and _IDENT.match(tok.text):
        return tok.text
    if tok.kind == "str" and len(tok.text) >= 2 and _IDENT.match(tok.text[1:-1]):
        return tok.text[1:-1]
    return None


def _skip(toks: list[Token], i: int, kind: str) -> int:
    while i < len(toks) and toks[i].kind == kind:
        i += 1
    return i


def _inner(tok: Token) -> tuple[int, int]:
    """A quoted string's contents (the quotes stay); an unclosed one runs to its end."""
    closed = _CLOSED.match(tok.text) is not None
    return tok.start + 1, tok.end - (1 if closed else 0)


def _run(toks: list[Token], i: int, stop: tuple[str, ...] = ()) -> tuple[int, int]:
    """From token ``i`` to the next blank (or an op in ``stop``): one shell word."""
    j = i
    while j < len(toks) and toks[j].kind != "ws" and not (toks[j].kind == "op" and toks[j].text in stop):
        j += 1
    return toks[i].start, toks[j - 1].end if j > i else toks[i].start
