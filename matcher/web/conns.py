"""Connection limits of ``matcher serve``: a cap on open connections per client address and in total, and a
deadline for each request's headers (slowloris).

uvicorn closes a connection that stays idle after a response (``timeout_keep_alive``), but not one that
never sends a request, nor one that trickles header lines: each costs a file descriptor for as long as its
client likes, and a few hundred of them starve everyone. :func:`guarded_h11` is uvicorn's h11 protocol
with three more rules, applied per connection before any request exists:

* a client address with ``per_client`` connections open gets 503 (``connection: close``) on a new one;
  so does anyone while ``total`` connections are open (``total`` is kept below the open-file limit);
* a connection must deliver a complete request head (request line and headers) within ``header_timeout``
  seconds of opening, and again within ``header_timeout`` of each response: otherwise it is closed.

The request body has its own deadline (:class:`matcher.web.guards.BodyLimit`). Behind a reverse proxy every
connection comes from the proxy's address: see docs/serve-load.md.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections import Counter
from dataclasses import dataclass, field

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionLimits", "guarded_h11", "fd_budget"]


def fd_budget(wanted: int = 512, reserve: int = 64) -> tuple[int, int]:
    """(connections, listen backlog) that fit the open-file limit: at most ``wanted`` connections, leaving
    ``reserve`` descriptors (the index, uploads, logs) and room for one burst of ``backlog`` accepts (asyncio
    accepts up to the backlog at once, before any of them can be refused: beyond the limit, accept fails
    with EMFILE and the server stops accepting for a second)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted, 128
    backlog = max(16, min(128, soft // 4))
    return max(8, min(wanted, soft - reserve - backlog)), backlog


@dataclass
class ConnectionLimits:
    total: int = 512
    per_client: int = 32  # 0: no per-client cap (behind a reverse proxy every client is the proxy)
    header_timeout: float = 10.0
    open: Counter = field(default_factory=Counter)  # client address -> connections open
    refused: int = 0

    def admit(self, client: str) -> bool:
        if sum(self.open.values()) >= self.total or (self.per_client and self.open[client] >= self.per_client):
            self.refused += 1
            return False
        self.open[client] += 1
        return True

    def leave(self, client: str) -> None:
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]


def _busy_reply() -> bytes:
    body = json.dumps({"error": {"code": "too_many_connections",
                                 "message": "too many open connections; retry shortly"}}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 2\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


def guarded_h11(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol class under ``limits`` (pass it as ``uvicorn.Config(http=...)``)."""

    class GuardedH11Protocol(H11Protocol):
        _peer: str | None = None
        _deadline: asyncio.TimerHandle | None = None
        _armed_cycle: object = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            peer = self.client[0] if self.client else "?"
            if not limits.admit(peer):
                transport.write(_busy_reply())
                transport.close()
                return
            self._peer = peer
            self._arm()

        def _arm(self) -> None:
            """From now, a new request head must be complete within the header timeout."""
            if self._deadline is not None:
                self._deadline.cancel()
            self._armed_cycle = self.cycle
            self._deadline = self.loop.call_later(limits.header_timeout, self._expire)

        def _expire(self) -> None:
            self._deadline = None
            if self.cycle is self._armed_cycle and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()  # no request head since the deadline was set: a slow or idle client

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # uvicorn's keep-alive timer stops at the first byte; a trickled head must not

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if self._peer is not None:
                limits.leave(self._peer)
                self._peer = None
            super().connection_lost(exc)

    return GuardedH11Protocol
