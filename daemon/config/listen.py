"""The listen address: parsing ``HOST:PORT`` and the checks on it that need more than one key."""
from __future__ import annotations

from infersight.daemon.config.fields import ConfigError
from infersight.daemon.config.load import Config


def split_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); ValueError with a readable message."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def validate_runtime(config: Config) -> None:
    """Checks that need more than one key (raise ConfigError naming the key)."""
    try:
        host, _ = split_listen(config.web.listen)
    except ValueError as exc:
        raise ConfigError(f"web.listen: {exc}") from None
    loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
    if not loopback and not config.web.auth_token and not config.web.allow_unauthenticated:
        raise ConfigError(f"web.listen: {host} is not loopback; set web.auth_token, or web.allow_unauthenticated "
                          "= true to accept anyone who can reach it")
