"""Secret-looking values removed from a process's command line before anything stores it.

Command lines are stored and served as discovered (``/api/processes``, ``/api/health``,
Parquet export, alerts), and serving processes take credentials on theirs (``vllm serve
--api-key K``, ``--hf-token``, ``HF_TOKEN=... python ...`` under ``env``, a database URL with a
password). :func:`redact_args` replaces each such value with :data:`MASK` and keeps the
rest, so roles, patterns and people still read the command line.

A name is secret when its last word (split on ``-``, ``_`` and ``.``, any case) is one of
:data:`SECRET_WORDS`: ``--api-key``, ``--hf-token``, ``--client-secret``, ``--db-password``,
``OPENAI_API_KEY``, ``AWS_SECRET_ACCESS_KEY`` are; ``--tokenizer``,
``--max-num-batched-tokens``, ``--return-tokens-as-token-ids``, ``--ssl-keyfile`` are not. The
forms handled:

- ``--NAME VALUE`` (two arguments; a next argument starting with ``-`` is another flag, left
  alone) and ``--NAME=VALUE`` / ``-NAME=VALUE``;
- ``NAME=VALUE`` anywhere in an argument (env-style, ``key=value`` pairs, code after ``-c``);
  in a URL query (after ``?`` or ``&``) the value ends at the next ``&`` or ``#``;
- ``"NAME": "VALUE"`` in JSON or Python literals (``--hf-overrides '{"api_key": ...}'``);
- credentials in URLs: ``scheme://user:pass@host`` and ``scheme://token@host`` become
  ``scheme://***@host``;
- ``Authorization: Bearer|Basic|Token VALUE`` (curl-style headers);
- bare tokens whose shape is unmistakable: Hugging Face (``hf_``), OpenAI/Anthropic (``sk-``),
  GitHub (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``, ``ghr_``, ``github_pat_``), Slack (``xox?-``),
  AWS access key ids (``AKIA``/``ASIA``), GitLab (``glpat-``).

What this cannot know: a secret under a name that does not say so (``--foo K``), or a
secret flag that takes no value followed by a positional argument (``--use-auth-token
MODEL`` masks ``MODEL``: a harmless false positive). A false positive costs one masked word;
a miss leaks a credential, so the rules lean to masking.
"""
from __future__ import annotations

import re
from typing import Iterable

MASK = "***"
SECRET_WORDS = frozenset({
    "key", "apikey", "token", "secret", "password", "passwd", "pwd", "passphrase", "credential", "credentials",
    "auth", "authorization", "cookie", "sig", "signature",
})

_WORD_SPLIT = re.compile(r"[-_.]+")
# --name or -name (at the start of an argument), optionally =value
_FLAG = re.compile(r"^(--?[A-Za-z][\w.-]*)(=(.*))?$", re.S)
# NAME=VALUE inside an argument. A query parameter (after ? or &) ends at & or #; anything
# else runs to the end of the whitespace-free stretch (a password may contain &).
_QUERY_PAIR = re.compile(r"(?<=[?&])([A-Za-z][\w.-]*)=([^&#\s]*)")
_PAIR = re.compile(r"""(?<![\w.?&-])([A-Za-z_][\w.-]*)=(?:(["'])(.*?)(?<!\\)\2|(\S*))""")
_QUOTED_PAIR = re.compile(r"""(["'])([A-Za-z_][\w.-]*)\1(\s*:\s*)(["'])(.*?)(?<!\\)\4""")
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^/\s@?#]+)@")
_AUTH_HEADER = re.compile(r"(?i)\b(authorization\s*:\s*(?:bearer|basic|token)\s+)(\S+)")
# every rule below needs one of these; most arguments have none and are returned at once
_MAYBE = re.compile(r"[=@: ]|hf_|sk-|gh[pousr]_|github_pat_|xox|AKIA|ASIA|glpat-")
_TOKENS = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|(?:AKIA|ASIA)[A-Z0-9]{16}|glpat-[A-Za-z0-9_-]{20,})\b")


def is_secret_name(name: str) -> bool:
    """Whether a flag or variable name says its value is a credential (module docstring)."""
    words = [w for w in _WORD_SPLIT.split(name.strip("-").lower()) if w]
    return bool(words) and words[-1] in SECRET_WORDS


def redact_args(args: Iterable[str]) -> list[str]:
    """``args`` (a process's argv) with every secret-looking value replaced by :data:`MASK`."""
    out: list[str] = []
    mask_next = False
    for arg in args:
        if mask_next and not arg.startswith("-"):
            out.append(MASK)
            mask_next = False
            continue
        mask_next = False
        flag = _FLAG.match(arg)
        if flag and is_secret_name(flag.group(1)):
            if flag.group(2) is None:
                mask_next = True
                out.append(arg)
            else:
                out.append(f"{flag.group(1)}={MASK}")
            continue
        out.append(redact_text(arg))
    return out


def redact_text(text: str) -> str:
    """One string (an argument, or a whole command line already joined) with every
    secret-looking value inside it masked; the ``--NAME VALUE`` two-argument form is split on
    blanks here, so a joined command line is handled too."""
    if not _MAYBE.search(text):
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, text)
    text = _QUOTED_PAIR.sub(
        lambda m: (f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{m.group(4)}{MASK}{m.group(4)}"
                   if is_secret_name(m.group(2)) else m.group(0)), text)
    text = _QUERY_PAIR.sub(lambda m: f"{m.group(1)}={MASK}" if is_secret_name(m.group(1)) else m.group(0), text)
    text = _PAIR.sub(_pair, text)
    text = _TOKENS.sub(MASK, text)
    return _mask_split_flags(text) if " " in text else text


def redact_cmdline(cmdline: str) -> str:
    """A command line already joined with blanks (as psutil or a recording gives it), redacted."""
    return redact_text(cmdline)


def _pair(m: re.Match[str]) -> str:
    """NAME=VALUE, NAME='VALUE' or NAME="VALUE" (a quoted value keeps its quotes)."""
    if not is_secret_name(m.group(1)) or m.group(4) == MASK:
        return m.group(0)
    quote = m.group(2) or ""
    return f"{m.group(1)}={quote}{MASK}{quote}"


def _mask_split_flags(text: str) -> str:
    """``--api-key K`` inside one string (a joined command line, a setproctitle title)."""
    words = text.split(" ")
    return " ".join(redact_args(words)) if any(w.startswith("-") for w in words) else text
