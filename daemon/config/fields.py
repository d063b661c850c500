"""Field declarations and scalar checks for the config tree (see config.py)."""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping

# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class ConfigError(ValueError):
    """A config problem; the message starts with the key path and is fit to show a user."""


def opt(default: Any, doc: str, *, min: float | None = None, max: float | None = None,
        choices: tuple[str, ...] | None = None, secret: bool = False) -> Any:
    """A config field with its documentation, unit (inside ``doc``) and valid range.

    ``secret`` fields are never logged or returned by the API; they are left out of the
    dataclass repr, so a config printed in a log line or a traceback does not show them.
    """
    meta = {"doc": doc, "min": min, "max": max, "choices": choices, "secret": secret}
    if isinstance(default, (list, tuple)):
        frozen = tuple(default)
        return dataclasses.field(default_factory=lambda: frozen, metadata=meta, repr=not secret)
    return dataclasses.field(default=default, metadata=meta, repr=not secret)


def check_value(hint: Any, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
    """Validate one scalar against its declared type and range; returns the typed value."""
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {shown(value)}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and not isinstance(value, int)):
            kind = "an integer" if hint is int else "a number"
            positive = meta.get("min") is not None and meta["min"] > 0
            raise ConfigError(f"{path}: expected {'a positive ' + kind[2:] if positive and hint is float else kind}"
                              f", got {shown(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value}")
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and value < lo:
            raise ConfigError(f"{path}: must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise ConfigError(f"{path}: must be <= {hi}, got {value}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {shown(value)}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{path}: expected one of {', '.join(choices)}, got {shown(value)}")
        return value
    raise ConfigError(f"{path}: unsupported type {hint!r}")


def shown(value: Any) -> str:
    """A value as a config error message quotes it."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


def is_host_name(text: str) -> bool:
    """Whether ``text`` is a syntactically valid DNS host name (a trailing dot allowed)."""
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))
