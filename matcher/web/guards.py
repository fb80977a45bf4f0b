"""ASGI middleware that protects the API: body size and read time, per-client rate, security headers.

Pure ASGI (no BaseHTTPMiddleware): a request body is read, bounded in size and time, before the
app sees it, so an oversized or trickling body is answered 413/408 and never becomes a 500.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import time
from collections import OrderedDict
from typing import Callable, Iterable

__all__ = ["CSP", "BodyLimit", "HostCheck", "RateLimit", "SecurityHeaders", "UploadGate", "error_body"]

#: Everything the page needs comes from this server: no CDN, no inline script or style.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; worker-src 'self' blob:; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")


def error_body(code: str, message: str, details: list | None = None) -> bytes:
    err: dict = {"code": code, "message": message}
    if details:
        err["details"] = details
    return json.dumps({"error": err}).encode()


async def _send_error(send, status: int, code: str, message: str, headers: list | None = None) -> None:
    body = error_body(code, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class UploadGate:
    """At most ``slots`` request bodies of a path in memory (and being worked on) at once.

    Taken before a body is read, from its headers alone, and given back when the app has answered: the
    memory uploads hold is bounded by ``slots`` x the upload limit, however many clients send at once.
    A request that finds no slot free gets 503 at once, its body unread.
    """

    def __init__(self, slots: int):
        self.slots = max(1, slots)
        self.busy = 0

    def take(self) -> bool:
        if self.busy >= self.slots:
            return False
        self.busy += 1
        return True

    def give(self) -> None:
        self.busy -= 1


class BodyLimit:
    """Read request bodies up front: at most ``limit_for(path)`` bytes within ``timeout`` seconds.

    Larger bodies get 413 (at once when Content-Length says so), slower ones 408. The app then
    reads the body from memory; nothing is ever spooled to disk. A path with an :class:`UploadGate`
    (``gates``) must declare its Content-Length (411 otherwise) and is admitted before its body is read.
    """

    def __init__(self, app, limit_for: Callable[[str], int], timeout: float, json_paths: frozenset[str] = frozenset(),
                 gates: dict[str, UploadGate] | None = None):
        self.app = app
        self.limit_for = limit_for
        self.timeout = timeout
        self.json_paths = json_paths  # these take application/json only (415 otherwise)
        self.gates = gates or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        headers = dict(scope.get("headers") or [])
        if scope["path"] in self.json_paths:
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if ctype != b"application/json":
                return await _send_error(send, 415, "unsupported_media_type", "send the request as application/json")
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                return await _send_error(send, 400, "bad_request", "Content-Length is not a number")
            if n > limit:
                return await _send_error(send, 413, "too_large", f"request body of {n:,} bytes; the limit is {limit:,}")
        gate = self.gates.get(scope["path"])
        if gate is None:
            return await self._read_then_call(scope, receive, send, limit)
        if declared is None:
            return await _send_error(send, 411, "length_required", "send the file with a Content-Length header")
        if not gate.take():
            return await _send_error(send, 503, "busy", "the server is receiving other uploads; retry shortly",
                                     [(b"retry-after", b"2")])
        try:
            await self._read_then_call(scope, receive, send, limit)
        finally:
            gate.give()

    async def _read_then_call(self, scope, receive, send, limit: int) -> None:
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError
                msg = await asyncio.wait_for(receive(), left)
            except asyncio.TimeoutError:
                return await _send_error(send, 408, "timeout", f"request body not received within {self.timeout:g} s")
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > limit:
                return await _send_error(send, 413, "too_large", f"request body over the limit of {limit:,} bytes")
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        data = b"".join(chunks)
        chunks.clear()  # one copy of the body from here on
        sent = False

        async def replay():
            nonlocal sent, data
            if not sent:
                sent = True
                body, data = data, b""  # the app holds the only reference: gone when it is done with it
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # waits for the disconnect, as a real receive would

        await self.app(scope, replay, send)


class RateLimit:
    """Token bucket per client address on paths under ``prefix``: ``rate`` requests/s, bursts of ``burst``.

    Over the limit: 429 with Retry-After. Addresses live only in memory (the least recently seen
    are forgotten beyond ``max_clients``) and are never logged.
    """

    def __init__(self, app, rate: float, burst: float, prefix: str = "/api/", max_clients: int = 10000):
        self.app = app
        self.rate = rate
        self.burst = burst
        self.prefix = prefix
        self.max_clients = max_clients
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float) -> float:
        """0 when a request of ``client`` may go now (and count it), else seconds until it may."""
        tokens, last = self.buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self.buckets[client] = (tokens, now)
        while len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return wait

    async def __call__(self, scope, receive, send):
        if self.rate <= 0 or scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("?", 0))[0]
        wait = self.take(client, time.monotonic())
        if wait > 0:
            return await _send_error(send, 429, "rate_limited", f"too many requests; retry in {wait:.1f} s",
                                     [(b"retry-after", str(max(1, math.ceil(wait))).encode())])
        await self.app(scope, receive, send)


class HostCheck:
    """Answer only requests whose Host header names this server (DNS rebinding: a page on attacker.example
    whose name is made to resolve to 127.0.0.1 sends ``Host: attacker.example``).

    Allowed: any IP literal (a browser that navigated to an address is same-origin with the server itself),
    ``localhost``, and ``names`` (the name the server listens on, ``--allowed-host``). Others get 421.
    """

    def __init__(self, app, names: Iterable[str] = ()):
        self.app = app
        self.names = {"localhost", *(n.lower().rstrip(".") for n in names)}

    def allows(self, host: str) -> bool:
        host = host.strip().lower()
        if host.startswith("["):  # [IPv6]:port
            name = host[1 : host.find("]")] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        name = name.rstrip(".")
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in self.names

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = dict(scope.get("headers") or []).get(b"host")
        if host is not None and not self.allows(host.decode("latin-1")):
            return await _send_error(send, 421, "unknown_host",
                                     "this server does not answer for that host name (serve --allowed-host NAME)")
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds the Content-Security-Policy and related headers to every response."""

    HEADERS = [
        (b"content-security-policy", CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    ]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(msg):
            if msg["type"] == "http.response.start":
                have = {k.lower() for k, _ in msg.get("headers", [])}
                msg = {**msg, "headers": [*msg.get("headers", []), *(h for h in self.HEADERS if h[0] not in have)]}
            await send(msg)

        await self.app(scope, receive, with_headers)


class HeadAsGet:
    """HEAD is answered wherever GET is: the same status and headers (Content-Length included), no body.
    (FastAPI's GET routes answer HEAD with 405; link checkers and `curl -I` send HEAD.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def without_body(msg):
            if msg["type"] == "http.response.body":
                msg = {**msg, "body": b""}
            await send(msg)

        await self.app({**scope, "method": "GET"}, receive, without_body)
