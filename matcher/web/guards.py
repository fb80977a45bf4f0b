"""ASGI middleware that protects the API: body size and read time, per-client rate, security headers.

Pure ASGI (no BaseHTTPMiddleware): a request body is read, bounded in size and time, before the
app sees it, so an oversized or trickling body is answered 413/408 and never becomes a 500.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict
from typing import Callable

__all__ = ["CSP", "BodyLimit", "RateLimit", "SecurityHeaders", "error_body"]

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


class BodyLimit:
    """Read request bodies up front: at most ``limit_for(path)`` bytes within ``timeout`` seconds.

    Larger bodies get 413 (at once when Content-Length says so), slower ones 408. The app then
    reads the body from memory; nothing is ever spooled to disk.
    """

    def __init__(self, app, limit_for: Callable[[str], int], timeout: float, json_paths: frozenset[str] = frozenset()):
        self.app = app
        self.limit_for = limit_for
        self.timeout = timeout
        self.json_paths = json_paths  # these take application/json only (415 otherwise)

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
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
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
