"""One run's reservation checks: what ``matcher add`` records and ``matcher filter`` respects.

A :class:`Checker` reads, per item, the reservations embedded in its bytes (:mod:`matcher.provenance.reservations`:
``xmp``, ``cawg``), those of the response that served it (``web.from_headers``; the fetcher hands the
headers over through :func:`read_with_headers`) and those of its site (:class:`matcher.ingest.sites.SiteCache`,
when site checks are on). Nothing here raises on bad input: what cannot be read becomes a note of the item.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import TYPE_CHECKING, Any, Iterable

from matcher.ingest.policy import FetchSettings
from matcher.provenance.reservations.cawg import read_c2pa
from matcher.provenance.reservations.records import EXTRA_KEY, SOURCES, Found, Reservation
from matcher.provenance.reservations.web import WANTED_HEADERS, from_headers
from matcher.provenance.reservations.xmp import read_xmp

if TYPE_CHECKING:  # the site checks download (aiohttp): loaded only by a run that checks sites
    from matcher.ingest.sites import SiteCache

__all__ = ["RESPECT_CHOICES", "parse_respect", "Checker", "read_with_headers", "embedded_of", "first_respected"]

RESPECT_CHOICES = ("all",) + SOURCES
#: Largest local file whose bytes are read for embedded reservations.
MAX_FILE_BYTES = 50 * 1024 * 1024


def parse_respect(values: Iterable[str]) -> tuple[str, ...]:
    """``--respect`` values (repeatable or comma-separated; ``all`` = every source) as sources, in order."""
    chosen: set[str] = set()
    for v in values:
        for part in str(v).split(","):
            p = part.strip().lower()
            if not p:
                continue
            if p not in RESPECT_CHOICES:
                raise ValueError(f"--respect {p!r}: expected one of {', '.join(RESPECT_CHOICES)}")
            chosen |= set(SOURCES) if p == "all" else {p}
    return tuple(s for s in SOURCES if s in chosen)


async def read_with_headers(resp, settings: FetchSettings) -> tuple[bytes, dict[str, list[str]]]:
    """Read an image as the fetcher does, with the response's reservation headers (``{name: [values]}``)."""
    from matcher.ingest.fetch import read_image

    body = await read_image(resp, settings)
    headers = {h: list(resp.headers.getall(h)) for h in WANTED_HEADERS if h in resp.headers}
    return body, headers


def embedded_of(data: bytes) -> Found:
    """The reservations embedded in an image's bytes (IPTC XMP, C2PA/CAWG)."""
    found = read_xmp(data)
    return found.extend(read_c2pa(data))


def first_respected(found: Found, respect: Iterable[str]) -> Reservation | None:
    """The first reservation (in :data:`SOURCES` order) whose source is respected."""
    wanted = tuple(respect)
    for source in SOURCES:
        if source in wanted:
            for r in found.reservations:
                if r.source == source:
                    return r
    return None


class Checker:
    """The reservation checks of one run. ``sites``: a :class:`SiteCache` when site files are checked."""

    def __init__(self, *, embedded: bool = True, headers: bool = True, sites: SiteCache | None = None):
        self.embedded = embedded
        self.headers = headers
        self.sites = sites

    @property
    def read(self):
        """What the fetcher reads a response with (image and headers), or None for the plain image."""
        return read_with_headers if self.headers else None

    def split(self, body: Any) -> tuple[bytes, dict[str, list[str]]]:
        """A fetched body as :attr:`read` returned it: ``(bytes, headers)``."""
        return body if isinstance(body, tuple) else (body, {})

    def prefetch(self, url: str | None) -> None:
        if self.sites is not None and url:
            self.sites.prefetch(url)

    def prefetching(self, rows):
        """``rows`` (``((row, item...), url)`` pairs, as the fetcher takes them), asking for each row's
        site files as it goes by (the fetcher reads rows a window ahead of the downloads)."""
        for row in rows:
            self.prefetch(row[1])
            yield row

    def of_path(self, path: str) -> Found:
        try:
            # non-blocking open, then fstat: a FIFO or device named by a manifest must not hang the add
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as e:
            return Found(notes=[f"embedded: could not read the file ({e.strerror or e})"])
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return Found(notes=["embedded: not read (not a regular file)"])
            if st.st_size > MAX_FILE_BYTES:
                return Found(notes=[f"embedded: not read (a file of {st.st_size:,} bytes)"])
            with os.fdopen(fd, "rb") as f:
                fd = -1
                return embedded_of(f.read())
        except OSError as e:
            return Found(notes=[f"embedded: could not read the file ({e.strerror or e})"])
        finally:
            if fd >= 0:
                os.close(fd)

    def collect(self, url: str | None, data: bytes | str | None, headers: dict | None = None) -> Found:
        """Every reservation of one item: ``data`` its bytes or local path, ``headers`` its response's."""
        found = Found()
        if self.embedded and data is not None:
            found.extend(embedded_of(data) if isinstance(data, (bytes, bytearray, memoryview)) else self.of_path(str(data)))
        if self.headers and headers:
            found.extend(from_headers(headers, url or ""))
        if self.sites is not None and url:
            found.extend(self.sites.verdict(url))
        return found

    def annotate(self, item, data: bytes | str | None, headers: dict | None = None):
        """``item`` (a :class:`matcher.sources.SourceItem`) with its reservations in its ``extra``."""
        found = self.collect(item.url, data, headers)
        if not found:
            return item
        return dataclasses.replace(item, extra={**item.extra, EXTRA_KEY: found.to_json()})

    def close(self) -> None:
        if self.sites is not None:
            self.sites.close()


def respected_drop(found: Found | None, respect: Iterable[str], hits: list) -> Reservation | None:
    """Why an image is dropped: its first respected reservation, or its registry match (``hits``, from
    :func:`matcher.optout.screen_entries`, when ``"registry"`` is respected), or None (kept)."""
    respect = tuple(respect)
    r = first_respected(found, respect) if found is not None else None
    if r is not None:
        return r
    if hits and "registry" in respect:
        h = hits[0]
        return Reservation("registry", "registry", h.entry_id,
                           f"variant {h.variant}, distance {h.distance}, confirmation {h.confirm_distance}")
    return None


def log_cells(found: Found | None, drop: Reservation | None) -> list[str]:
    """The filter log's last columns: ``source, rule, value, detail`` of what dropped the row, then every
    reservation and note of the item."""
    from matcher.provenance.reservations.records import summary

    head = [drop.source, drop.rule, drop.value, drop.detail] if drop is not None else ["", "", "", ""]
    if found is None:
        return head + ["", ""]
    return head + [summary(found.reservations), " | ".join(found.notes)]
