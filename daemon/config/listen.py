"""The listen address: parsing ``HOST:PORT`` and the checks on it that need more than one key.

The host is parsed, never prefix-matched: it is an IP literal (``127.0.0.1``, ``[::1]``) or a
DNS name. Only a loopback IP literal or the name ``localhost`` counts as loopback; any other
name (``127.evil.example`` included) could resolve anywhere, so it counts as non-loopback
and needs ``web.auth_token`` like a public address.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from infersight.daemon.config.fields import ConfigError, is_host_name
from infersight.daemon.config.load import Config

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ListenAddress:
    """A parsed ``HOST:PORT``: ``ip`` is set when the host is an IP literal, None for a name."""

    host: str
    port: int
    ip: IPAddress | None

    @property
    def loopback(self) -> bool:
        return self.host.lower() == "localhost" if self.ip is None else is_loopback_ip(self.ip)


def is_loopback_ip(ip: IPAddress) -> bool:
    """127.0.0.0/8 and ::1, also as an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def parse_ip(text: str) -> IPAddress | None:
    """``text`` as an IP address (brackets and an IPv6 zone allowed), or None."""
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def parse_listen(listen: str) -> ListenAddress:
    """'HOST:PORT', '[v6]:PORT' or ':PORT' (loopback) -> ListenAddress; ValueError with a
    readable message for anything else (a bad port, a host that is neither an IP nor a name)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"expected [IPv6]:PORT, got {listen!r}")
        ip = parse_ip(host)
        if not isinstance(ip, ipaddress.IPv6Address):
            raise ValueError(f"{host} is not an IPv6 address")
        return ListenAddress(host[1:-1], int(port), ip)
    if not host:
        return ListenAddress("127.0.0.1", int(port), ipaddress.IPv4Address("127.0.0.1"))
    if ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, [ADDR]:PORT, got {listen!r}")
    ip = parse_ip(host)
    if ip is None and not is_host_name(host):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")
    return ListenAddress(host, int(port), ip)


def split_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); ValueError with a readable message."""
    addr = parse_listen(listen)
    return addr.host, addr.port


def validate_runtime(config: Config) -> None:
    """Checks that need more than one key (raise ConfigError naming the key)."""
    try:
        addr = parse_listen(config.web.listen)
    except ValueError as exc:
        raise ConfigError(f"web.listen: {exc}") from None
    if not addr.loopback and not config.web.auth_token and not config.web.allow_unauthenticated:
        what = "is not loopback" if addr.ip is not None else \
            "is a name, not loopback (only 127.0.0.0/8, ::1 and localhost are)"
        raise ConfigError(f"web.listen: {addr.host} {what}; set web.auth_token, or web.allow_unauthenticated "
                          "= true to accept anyone who can reach it")
