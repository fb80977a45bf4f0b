"""The downloader's HTTP session: a resolver that refuses non-public addresses (the URL guard at connection
time, whatever DNS answers), per-host connection slots, and the session settings."""

from __future__ import annotations

import weakref

import asyncio
import socket
from dataclasses import dataclass
import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from matcher.ingest.policy import FetchSettings


class _RefusedAddress(Exception):
    """Raised by :class:`_GuardedResolver`; turned into a fresh FetchError per request.

    Not an OSError on purpose: aiohttp wraps OSErrors from the resolver into
    ClientConnectorDNSError, while other exceptions reach the caller unchanged.
    """

    def __init__(self, host: str, address: str):
        super().__init__(f"{host} resolves to non-public address {address}")
        self.reason = f"{host} resolves to non-public address {address}"


class _GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses a host if any address it resolves to is not public.

    aiohttp calls the resolver for every host name that is not an IP literal,
    after the DNS cache misses, and connects only to the addresses returned; the
    cache only ever holds results that passed this check. Refusing the host when
    *any* address is private (rather than filtering) leaves nothing to a DNS
    answer that mixes a public decoy with an internal target.
    """

    def __init__(self, settings: "FetchSettings") -> None:
        self._inner = aiohttp.DefaultResolver()
        self._settings = settings

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not self._settings.allows(result["host"]):
                raise _RefusedAddress(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


class _HostSlots:
    """Per-host connection slots taken *before* asking aiohttp for a connection.

    aiohttp would queue excess requests to a host itself, but its total timeout
    starts before that wait, so a long queue for a popular host would turn into
    spurious timeouts. Waiting here instead keeps :attr:`FetchSettings.timeout`
    about the transfer only. Entries are dropped when their last user leaves,
    so the table never grows beyond the hosts currently in use.
    """

    def __init__(self, limit: int):
        self._limit = limit
        self._slots: dict[tuple[str, str, int | None], list] = {}

    async def acquire(self, key: tuple[str, str, int | None]) -> None:
        entry = self._slots.get(key)
        if entry is None:
            entry = self._slots[key] = [asyncio.Semaphore(self._limit), 0]
        entry[1] += 1
        try:
            await entry[0].acquire()
        except BaseException:
            self._leave(key, entry)
            raise

    def release(self, key: tuple[str, str, int | None]) -> None:
        entry = self._slots[key]
        entry[0].release()
        self._leave(key, entry)

    def _leave(self, key: tuple[str, str, int | None], entry: list) -> None:
        entry[1] -= 1
        if entry[1] == 0:
            del self._slots[key]


@dataclass(frozen=True)
class _SessionInfo:
    guarded: bool
    slots: _HostSlots | None


_SESSIONS: "weakref.WeakKeyDictionary[aiohttp.ClientSession, _SessionInfo]" = (
    weakref.WeakKeyDictionary()
)


def make_session(settings: FetchSettings = FetchSettings()) -> aiohttp.ClientSession:
    """Create the ClientSession :func:`fetch_one` expects. Call it inside a running event loop.

    One session (one connection pool, one DNS cache) serves every request.
    Unless ``settings.allow_private``, its connector uses a resolver that refuses
    host names resolving to non-public addresses. Cookies are not kept (a crawl
    across millions of hosts would only accumulate them) and proxy settings from
    the environment are ignored (a proxy would hide the real target from the
    address check). Close it with ``await session.close()``.
    """
    resolver = None if settings.allow_private else _GuardedResolver(settings)
    connector = aiohttp.TCPConnector(
        limit=settings.concurrency,
        limit_per_host=settings.per_host,
        resolver=resolver,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": settings.user_agent, "Accept": "image/*, */*;q=0.8"},
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        # Some CDNs send long cookie/CSP headers; aiohttp's 8 KiB default rejects them.
        max_line_size=32768,
        max_field_size=32768,
    )
    slots = _HostSlots(settings.per_host) if settings.per_host else None
    _SESSIONS[session] = _SessionInfo(guarded=resolver is not None, slots=slots)
    return session
