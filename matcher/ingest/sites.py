"""A site's reservation files, fetched once per origin and kept for the run.

For each origin (scheme, host, port) of an image URL, ``/.well-known/tdmrep.json``, ``/robots.txt`` and
``/ai.txt`` are fetched with matcher's fetcher (:mod:`matcher.fetch`: the same address guard, timeouts,
retries and redirect checks as image downloads; a body cap of :data:`MAX_TEXT_BYTES`). A file that is
absent (404, 410, or any 4xx) says nothing; one that cannot be fetched or parsed gives a note on every
item of that origin. Origins are fetched in a small thread pool as soon as they are first seen
(:meth:`SiteCache.prefetch`), so a manifest's images rarely wait for them.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from matcher.errors import FetchError
from matcher.ingest.fetch import fetch_one
from matcher.ingest.session import make_session
from matcher.ingest.policy import FetchSettings
from matcher.provenance.reservations.records import Found, Reservation
from matcher.provenance.reservations.web import RobotsFile, TdmRep, robots_reservations

__all__ = ["SITE_FILES", "MAX_TEXT_BYTES", "SiteRules", "SiteCache", "origin_of"]

SITE_FILES = ("/.well-known/tdmrep.json", "/robots.txt", "/ai.txt")
MAX_TEXT_BYTES = 512 * 1024


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, or None."""
    try:
        u = URL(url.strip())
    except (ValueError, UnicodeError, AttributeError):
        return None
    if u.scheme not in ("http", "https") or not u.host:
        return None
    return str(u.origin())


async def _read_text(resp: aiohttp.ClientResponse, settings: FetchSettings) -> str:
    chunks, n = [], 0
    async for chunk in resp.content.iter_any():
        n += len(chunk)
        if n > MAX_TEXT_BYTES:
            resp.close()
            raise FetchError(f"over the {MAX_TEXT_BYTES // 1024} KiB limit for a site file", kind="too_large")
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


@dataclass
class SiteRules:
    """What one origin's files say, parsed."""

    origin: str
    tdmrep: TdmRep | None = None
    robots: RobotsFile | None = None
    aitxt: RobotsFile | None = None
    notes: list[str] = field(default_factory=list)

    def verdict(self, url: str) -> Found:
        """The reservations these files make on ``url``."""
        u = URL(url)
        path = u.raw_path_qs or "/"
        found = Found(notes=list(self.notes))
        if self.tdmrep is not None:
            hit = self.tdmrep.decide(path)
            if hit is not None and hit[1]:
                detail = f"{self.origin}/.well-known/tdmrep.json location {hit[0]}" + (f"; policy {hit[2]}" if hit[2] else "")
                found.reservations.append(Reservation("site", "tdmrep.json", "tdm-reservation 1", detail))
        if self.robots is not None:
            found.reservations += robots_reservations(self.robots, path, f"{self.origin}/robots.txt")
        if self.aitxt is not None:
            found.reservations += robots_reservations(self.aitxt, path, f"{self.origin}/ai.txt", rule="ai.txt")
        return found


async def _fetch_site(origin: str, settings: FetchSettings) -> SiteRules:
    rules = SiteRules(origin)
    session = make_session(settings)
    try:
        got = await asyncio.gather(*(fetch_one(session, origin + f, settings, _read_text) for f in SITE_FILES),
                                   return_exceptions=True)
    finally:
        await session.close()
    for name, res in zip(SITE_FILES, got):
        if isinstance(res, FetchError):
            if res.kind == "http" and res.status is not None and 400 <= res.status < 500:
                continue  # no such file: it says nothing
            rules.notes.append(f"site: {origin}{name} could not be read ({res.reason})")
            continue
        if isinstance(res, BaseException):
            raise res
        try:
            if name.endswith("tdmrep.json"):
                rules.tdmrep = TdmRep.parse(res)
            elif name == "/robots.txt":
                rules.robots = RobotsFile.parse(res)
            else:
                rules.aitxt = RobotsFile.parse(res)
        except ValueError as e:
            rules.notes.append(f"site: {origin}{name} is malformed ({e})")
    return rules


class SiteCache:
    """Site files per origin, fetched once per run (thread-safe)."""

    def __init__(self, settings: FetchSettings = FetchSettings(), threads: int = 8):
        # site files are small and per origin: fewer retries than images, so a dead host costs little
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="matcher-sites")
        self._sites: dict[str, Future] = {}
        self._lock = threading.Lock()
        self.fetched = 0

    def prefetch(self, url: str | None) -> None:
        origin = origin_of(url) if url else None
        if origin is None:
            return
        with self._lock:
            if origin not in self._sites:
                self._sites[origin] = self._pool.submit(asyncio.run, _fetch_site(origin, self.settings))
                self.fetched += 1

    def verdict(self, url: str | None) -> Found:
        """The reservations ``url``'s site makes on it (fetched now if it was not prefetched)."""
        origin = origin_of(url) if url else None
        if origin is None:
            return Found()
        self.prefetch(url)
        return self._sites[origin].result().verdict(url)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "SiteCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
