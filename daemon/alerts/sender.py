"""One delivery attempt: POST the exact body to a target and classify the outcome.

Headers: ``Content-Type: application/json``, ``X-Infersight-Delivery`` (the message's
unique id, the same on every attempt), ``X-Infersight-Timestamp`` (Unix seconds of this
attempt) and, when the target has a ``secret``, ``X-Infersight-Signature:
sha256=<hex>``: HMAC-SHA256 with the secret over the exact body bytes (GitHub's scheme;
the body carries the delivery id and creation time, so a receiver can reject replays).

Outcomes: any 2xx is delivered; 408, 425, 429 and 5xx, timeouts and connection errors are
retried (``Retry-After`` in seconds or as an HTTP date is passed on); redirects and other
4xx give up at once (the receiver refused this message; retrying cannot help). Every error
text is built here from the status or the exception class, then scrubbed of the target's
URL, path, query and secret: logs, /api/health and the outbox show only scheme and host.
"""
from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable

import aiohttp

from infersight.daemon.config.load import WebhookConfig

SIGNATURE_HEADER = "X-Infersight-Signature"
TIMESTAMP_HEADER = "X-Infersight-Timestamp"
DELIVERY_HEADER = "X-Infersight-Delivery"
USER_AGENT = "infersight-alerts/1"
RETRY_STATUSES = frozenset({408, 425, 429})
ERROR_BODY_CHARS = 200      # of a refusing receiver's body kept in the error text
REDACTED = "[redacted]"


def sign(secret: str, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=`` + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def redact_url(url: str) -> str:
    """Only the scheme and host (and port) of ``url``: what logs and the API may show."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme or '?'}://{host}{port}"


class Redactor:
    """Removes a target's secrets (URL, its path, query and user info, the HMAC key) from text."""

    def __init__(self, url: str, secret: str = "") -> None:
        pieces = {url, secret}
        try:
            parts = urllib.parse.urlsplit(url)
            pieces |= {url.split("://", 1)[-1], parts.path, parts.query, parts.fragment,
                       parts.netloc.rpartition("@")[0], parts.path + ("?" + parts.query if parts.query else "")}
        except ValueError:
            pass
        pieces |= {urllib.parse.unquote(p) for p in list(pieces)}
        pieces |= {urllib.parse.quote(p, safe=safe) for p in list(pieces) for safe in ("/", "")}
        # a piece of a few characters ("/" or "/x") would shred ordinary words
        self._pieces = sorted((p for p in pieces if p and len(p) >= 4), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for piece in self._pieces:
            text = text.replace(piece, REDACTED)
        return text


@dataclass(frozen=True)
class Result:
    outcome: str                    # delivered, retry, give_up
    status: int | None = None       # HTTP status when a response came
    retry_after: float | None = None
    error: str | None = None        # redacted


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


class Sender:
    """An aiohttp client session for every target; ``start``/``close`` inside the event loop."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.time) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            # trust_env: hosts that reach chat services through HTTP(S)_PROXY (and NO_PROXY) work
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                                  headers={"User-Agent": USER_AGENT}, trust_env=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, target: WebhookConfig, body: bytes, delivery: str) -> Result:
        """One attempt; never raises for network or HTTP problems (they are the Result)."""
        await self.start()
        assert self._session is not None
        scrub = Redactor(target.url, target.secret)
        now = self.clock()
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery, TIMESTAMP_HEADER: str(int(now))}
        if target.secret:
            headers[SIGNATURE_HEADER] = sign(target.secret, body)
        dest = redact_url(target.url)
        try:
            async with self._session.post(target.url, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                if 200 <= status < 300:
                    return Result("delivered", status)
                snippet = (await resp.content.read(ERROR_BODY_CHARS * 4)).decode("utf-8", "replace")
                snippet = " ".join(snippet.split())[:ERROR_BODY_CHARS]
                error = scrub(f"HTTP {status} from {dest}" + (f": {snippet}" if snippet else ""))
                if status in RETRY_STATUSES or status >= 500:
                    return Result("retry", status, parse_retry_after(resp.headers.get("Retry-After"), self.clock()),
                                  error)
                if 300 <= status < 400:
                    error = f"HTTP {status} redirect from {dest}: set the webhook url to the final address"
                return Result("give_up", status, None, error)
        except asyncio.TimeoutError:
            return Result("retry", error=f"no answer from {dest} within {self.timeout_s:g} s")
        except aiohttp.InvalidURL:
            return Result("give_up", error=f"invalid webhook url for {dest}")
        except aiohttp.ClientSSLError as exc:
            return Result("retry", error=scrub(f"TLS error with {dest}: {type(exc).__name__}"))
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror if exc.os_error is not None and exc.os_error.strerror else type(exc).__name__
            return Result("retry", error=scrub(f"cannot connect to {dest}: {reason}"))
        except aiohttp.ServerDisconnectedError:
            return Result("retry", error=f"{dest} closed the connection without an answer")
        except (aiohttp.ClientError, OSError) as exc:
            return Result("retry", error=scrub(f"request to {dest} failed: {type(exc).__name__}"))
