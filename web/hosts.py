"""The Host header check that stops DNS rebinding while no token is set.

Without ``web.auth_token`` anyone who can open a connection may read profiles: on loopback,
that is the host's own users, but also any web page an operator opens, through DNS
rebinding (a name the attacker controls resolves to 127.0.0.1, and the page's requests to
that name are same-origin for the browser). Such requests carry the attacker's name in
``Host``, so the agent answers only Hosts it knows: IP literals (a page can only be
same-origin with an IP literal by being served from it), ``localhost``, the machine's host
name (``agent.host`` and the kernel's), the listen address's name, ``web.external_url``'s
name and ``web.allowed_hosts``.
Anything else gets ``421 Misdirected Request``. A request without ``Host`` (HTTP/1.0) is no
browser's and passes. With a token set the check is off: a rebinding page has no token.
"""
from __future__ import annotations

import socket
import urllib.parse

from aiohttp import web

from infersight.daemon.config.listen import parse_ip, parse_listen
from infersight.daemon.config.load import Config
from infersight.web.responses import json_response


def allowed_names(config: Config) -> frozenset[str]:
    """Lower-case host names (no port) the agent answers to; IP literals are always allowed."""
    # the host name as the kernel has it; no getfqdn(): a DNS lookup at start-up can hang
    # where the resolver does not answer (add a fully qualified name to web.allowed_hosts)
    names = {"localhost", config.host, socket.gethostname()}
    try:
        addr = parse_listen(config.web.listen)
        if addr.ip is None:
            names.add(addr.host)
    except ValueError:
        pass
    if config.web.external_url:
        try:
            external = urllib.parse.urlsplit(config.web.external_url).hostname
        except ValueError:
            external = None
        if external:
            names.add(external)
    names.update(config.web.allowed_hosts)
    return frozenset(n.lower().rstrip(".") for n in names if n)


def host_name(header: str) -> str:
    """The name or address of a Host header, without port or brackets, lower case."""
    header = header.strip()
    if header.startswith("["):
        return header[1:header.find("]")].lower() if "]" in header else header.lower()
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.lower().rstrip(".")


def host_check_middleware(config: Config):
    """A middleware answering 421 to requests whose Host is none of :func:`allowed_names`."""
    names = allowed_names(config)

    @web.middleware
    async def check_host(request: web.Request, handler):
        header = request.headers.get("Host")
        if header is not None:
            name = host_name(header)
            if name not in names and parse_ip(name) is None:
                return json_response({"error": "this agent does not answer to that Host name; add it to "
                                      "web.allowed_hosts, or set web.auth_token"}, status=421)
        return await handler(request)

    return check_host
