"""Where engine metrics may be served: URL clean-up and the listening ports of processes."""
from __future__ import annotations

import ipaddress
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

import psutil

WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def normalize_url(url: str) -> str:
    """``host:port`` -> ``http://host:port/metrics``; an empty path becomes ``/metrics``;
    anything else is kept as given (surrounding blanks removed)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else "/metrics"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def listening_endpoints(pids: Iterable[int]) -> list[tuple[int, float, int, str]]:
    """``(pid, create_time, port, url)`` for every TCP port the processes listen on, the URL
    being that port's ``/metrics`` on the address it is bound to (loopback for wildcards).

    Blocking (reads /proc); call it in a thread. Processes that are gone or that this agent
    may not inspect are skipped.
    """
    out: list[tuple[int, float, int, str]] = []
    for pid in sorted(set(pids)):
        try:
            proc = psutil.Process(pid)
            ctime = proc.create_time()
            # psutil >= 6 names it net_connections; 5.9 (the oldest we accept) connections.
            reader = getattr(proc, "net_connections", None) or proc.connections
            conns = reader(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        ports: dict[int, str] = {}
        for c in conns:
            if c.status != psutil.CONN_LISTEN or not c.laddr:
                continue
            ip, port = c.laddr.ip, c.laddr.port
            # One URL per port: a dual-stack listener shows up twice; loopback reaches both.
            if port not in ports or ip in WILDCARDS:
                ports[port] = _host_for(ip)
        for port, host in sorted(ports.items()):
            out.append((pid, ctime, port, f"http://{host}:{port}/metrics"))
    return out


def _host_for(ip: str) -> str:
    if ip in WILDCARDS:
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "127.0.0.1"
    return f"[{ip}]" if addr.version == 6 else ip
