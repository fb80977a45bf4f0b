"""Concurrent, SSRF-guarded image downloading for dataset ingestion.

The ingest engine feeds millions of ``(key, url)`` rows from dataset manifests
through :func:`fetch_iter` and gets back ``(key, body, error)`` triples as the
downloads finish. Under the hood one asyncio event loop runs in a background
thread with one :class:`aiohttp.ClientSession`; the caller stays an ordinary
synchronous ``for`` loop and the manifest iterable is read lazily, in the
caller's own thread, a bounded window ahead of the results.

Every failure is a :class:`~matcher.errors.FetchError` with a ``kind``
(``http``, ``timeout``, ``too_large``, ``not_image``, ``connection``,
``refused``, ``bad_url``) and a short human ``reason``.

Safety rules, all enforced here rather than left to callers:

* Only ``http``/``https`` URLs with a host are fetched.
* Unless :attr:`FetchSettings.allow_private` is set, no connection is made to
  an address that is not globally routable (loopback, private, link-local,
  shared, reserved, multicast, and such addresses hidden inside NAT64, 6to4 or
  IPv4-mapped IPv6). IP literals are checked before the request, host names
  are checked on every address DNS returns (in a resolver installed into the
  aiohttp connector, so the check sits between resolution and ``connect()``),
  and redirects are followed by hand so every hop gets the same checks.
* Bodies larger than :attr:`FetchSettings.max_bytes` are abandoned as soon as
  the limit is crossed, and a body is only accepted when its first bytes are
  those of an image format (:func:`sniff_image_format`); the server's
  ``Content-Type`` and the URL's extension are never trusted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http
import itertools
import math
import os
import queue
import random
import socket
import threading
from typing import Iterable, Iterator, TypeVar

import aiohttp
from yarl import URL

from matcher.errors import FetchError
from matcher.ingest.hosts import host_address
from matcher.ingest.policy import FetchSettings, is_public_address
from matcher.ingest.session import _SESSIONS, _HostSlots, _RefusedAddress, make_session
from matcher.ingest.sniff import _SNIFF_BYTES, sniff_image_format

__all__ = [
    "FetchSettings",
    "sniff_image_format",
    "is_public_address",
    "make_session",
    "fetch_one",
    "fetch_iter",
    "read_image",
]

K = TypeVar("K")


# ---------------------------------------------------------------------------
# one download

_REDIRECTS = {301, 302, 303, 307, 308}
_RETRY_AFTER_CAP = 30.0
_DRAIN_BYTES = 64 * 1024
"""Error and redirect bodies up to this size are read so the connection can be reused."""


class _Transient(Exception):
    """An attempt failed in a way worth retrying; carries the error to report if we give up."""

    def __init__(self, error: FetchError, retry_after: float | None = None):
        super().__init__(error.reason)
        self.error = error
        self.retry_after = retry_after


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _status_text(status: int, reason: str | None) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = (reason or "").strip()[:60]
    return f"HTTP {status} {phrase}".rstrip()


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header in delta-seconds form, capped; None otherwise."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # HTTP-date form or junk: fall back to exponential backoff
    if not (seconds >= 0 and math.isfinite(seconds)):
        return None
    return min(seconds, _RETRY_AFTER_CAP)


def _parse_url(url: object) -> URL:
    """Turn a manifest value into a URL, or raise FetchError(kind="bad_url")."""
    if isinstance(url, URL):
        return url
    if not isinstance(url, str):
        raise FetchError(f"URL is not a string ({type(url).__name__})", kind="bad_url")
    text = url.strip()
    if not text:
        raise FetchError("URL is empty", kind="bad_url")
    try:
        return URL(text)
    except (ValueError, UnicodeError) as exc:
        raise FetchError(f"unparsable URL ({exc})", kind="bad_url") from None


def _check_target(url: URL, settings: FetchSettings, *, hop: str = "URL") -> None:
    """Refuse a URL we must not request: bad scheme, no host, or a non-public IP literal.

    Host names are checked later, on the addresses DNS returns (see
    :class:`_GuardedResolver`). ``hop`` names the URL in reasons ("URL", "redirect").
    """
    scheme = url.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"'{scheme}'" if scheme else "none"
        raise FetchError(f"{hop} scheme {shown} is not http or https", kind="bad_url")
    host = url.host
    if not host:
        raise FetchError(f"{hop} has no host", kind="bad_url")
    if not settings.allow_private:
        ip = host_address(host)  # every literal form, parsed here as inet_aton would (matcher.ingest.hosts)
        if ip is not None and not settings.allows(ip):
            raise FetchError(f"refusing to connect to non-public address {ip}", kind="refused")


def _map_client_error(exc: BaseException, settings: FetchSettings) -> FetchError | _Transient:
    """Translate a failure from aiohttp or the socket layer into our error vocabulary.

    Returns a :class:`_Transient` for failures worth retrying.
    """
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return _Transient(
            FetchError(f"connection timed out after {_seconds(settings.connect_timeout)}", kind="timeout")
        )
    if isinstance(exc, asyncio.TimeoutError):
        return _Transient(FetchError(f"timed out after {_seconds(settings.timeout)}", kind="timeout"))
    if isinstance(exc, aiohttp.InvalidURL):
        return FetchError(f"invalid URL ({exc})", kind="bad_url")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        error = FetchError(f"could not resolve host {exc.host}", kind="connection")
        cause = exc.os_error
        if isinstance(cause, socket.gaierror) and cause.errno in _DNS_PERMANENT:
            return error  # the name does not exist: asking again will not change that
        return _Transient(error)
    if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)):
        return FetchError(f"TLS failure talking to the server ({_short(exc)})", kind="connection")
    if isinstance(exc, aiohttp.ClientConnectorError):
        code = exc.os_error.errno
        why = os.strerror(code).lower() if code else _short(exc.os_error)
        return _Transient(FetchError(f"could not connect to {exc.host}:{exc.port} ({why})", kind="connection"))
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return _Transient(FetchError("server closed the connection early", kind="connection"))
    if isinstance(exc, aiohttp.ClientPayloadError):
        return _Transient(FetchError("response body was cut short or malformed", kind="connection"))
    if isinstance(exc, aiohttp.ClientResponseError):
        # Raised by aiohttp's parser for responses it cannot read (bad headers etc.).
        return FetchError(f"invalid HTTP response ({_short(exc.message)})", kind="http")
    if isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
        return _Transient(FetchError(f"connection failed ({_short(exc)})", kind="connection"))
    return FetchError(f"request failed ({_short(exc)})", kind="connection")


_DNS_PERMANENT = {
    code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None)) if code
}


def _short(thing: object, limit: int = 120) -> str:
    text = str(thing).strip() or type(thing).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _discard(resp: aiohttp.ClientResponse) -> None:
    """Finish with a response we do not want; small bodies are read so the connection is reused."""
    length = resp.content_length
    if length is not None and length <= _DRAIN_BYTES:
        try:
            await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            resp.close()
    else:
        resp.close()


async def _read_image(resp: aiohttp.ClientResponse, settings: FetchSettings) -> bytes:
    """Stream the body, enforcing ``max_bytes`` and sniffing the first bytes as soon as they arrive."""
    limit = settings.max_bytes
    length = resp.content_length
    if length is not None and length > limit:
        resp.close()
        raise FetchError(f"body is {_size(length)}, over the {_size(limit)} limit", kind="too_large")
    chunks: list[bytes] = []
    received = 0
    sniffed = False
    async for chunk in resp.content.iter_any():
        received += len(chunk)
        if received > limit:
            resp.close()
            raise FetchError(f"body is over the {_size(limit)} limit", kind="too_large")
        chunks.append(chunk)
        if not sniffed and received >= _SNIFF_BYTES:
            head = chunks[0] if len(chunks[0]) >= _SNIFF_BYTES else b"".join(chunks)
            _require_image(head, resp)
            sniffed = True
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not sniffed:
        _require_image(body, resp)
    return body


read_image = _read_image


def _require_image(head: bytes, resp: aiohttp.ClientResponse) -> None:
    if sniff_image_format(head) is None:
        resp.close()
        if not head:
            raise FetchError("not an image (empty body)", kind="not_image")
        raise FetchError(f"not an image (starts with {head[:16]!r})", kind="not_image")


async def _attempt(
    session: aiohttp.ClientSession, url: URL, settings: FetchSettings, slots: _HostSlots | None, read=None
) -> bytes:
    """One attempt: follow redirects by hand, checking each hop, and read the image (or what ``read`` reads)."""
    loop = asyncio.get_running_loop()
    budget = settings.timeout
    for hop in range(settings.max_redirects + 1):
        key = (url.scheme, url.host or "", url.port)
        if slots is not None:
            await slots.acquire(key)
        started = loop.time()
        try:
            timeout = aiohttp.ClientTimeout(total=budget, connect=settings.connect_timeout)
            async with session.get(url, allow_redirects=False, timeout=timeout) as resp:
                status = resp.status
                if 200 <= status < 300:
                    return await (read or _read_image)(resp, settings)
                if status in _REDIRECTS:
                    location = resp.headers.get("Location")
                    if not location:
                        await _discard(resp)
                        raise FetchError(
                            f"{_status_text(status, resp.reason)} without a Location header",
                            kind="http",
                            status=status,
                        )
                    try:
                        target = resp.url.join(URL(location.strip())).with_fragment(None)
                    except (ValueError, UnicodeError):
                        await _discard(resp)
                        raise FetchError("redirect to an unparsable URL", kind="bad_url") from None
                    await _discard(resp)
                else:
                    error = FetchError(_status_text(status, resp.reason), kind="http", status=status)
                    retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
                    await _discard(resp)
                    if status == 429 or status >= 500:
                        raise _Transient(error, retry_after)
                    raise error
        except _RefusedAddress as exc:
            raise FetchError(exc.reason, kind="refused") from None
        finally:
            if slots is not None:
                slots.release(key)
        budget -= loop.time() - started
        if budget <= 0:
            raise _Transient(FetchError(f"timed out after {_seconds(settings.timeout)}", kind="timeout"))
        _check_target(target, settings, hop="redirect")
        url = target
    raise FetchError(f"too many redirects (more than {settings.max_redirects})", kind="http")


async def fetch_one(
    session: aiohttp.ClientSession, url: str, settings: FetchSettings = FetchSettings(), read=None
) -> bytes:
    """Download one image and return its bytes, or raise :class:`~matcher.errors.FetchError`.

    ``session`` must come from :func:`make_session` (it carries the DNS address
    check and the per-host slots); a foreign session is refused with ValueError
    unless ``settings.allow_private``, since its lookups would go unchecked.
    Timeouts, connection errors, 429 and 5xx are retried up to
    ``settings.retries`` times with jittered exponential backoff (or the
    server's ``Retry-After``); every other failure is final at once.

    ``read`` (``async (response, settings) -> value``) replaces how a 2xx response is read and what is
    returned: :func:`read_image` by default; a text file of a site, or the image with some of its
    response headers (:mod:`matcher.ingest.reservations`).
    """
    info = _SESSIONS.get(session)
    if not settings.allow_private and (info is None or not info.guarded):
        raise ValueError(
            "fetch_one needs a session from make_session(settings) with allow_private=False "
            "so that DNS answers are checked"
        )
    slots = info.slots if info is not None else None
    target = _parse_url(url)
    _check_target(target, settings)
    attempts = settings.retries + 1
    for attempt in range(attempts):
        try:
            try:
                return await _attempt(session, target, settings, slots, read)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                raise _map_client_error(exc, settings) from None
        except _Transient as transient:
            if attempt + 1 >= attempts:
                error = transient.error
                if attempts > 1:
                    error = FetchError(
                        f"{error.reason} (gave up after {attempts} attempts)",
                        kind=error.kind,
                        status=error.status,
                    )
                raise error from None
            delay = transient.retry_after
            if delay is None:
                delay = settings.backoff * (2**attempt) * (0.5 + random.random())
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # the loop always returns or raises


# ---------------------------------------------------------------------------
# many downloads


class _Crash:
    """Sentinel carrying an unexpected exception from the event loop thread to the consumer."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


class _LoopThread:
    """An event loop in a daemon thread that runs fetch tasks and posts their results to a queue."""

    def __init__(self, settings: FetchSettings, read=None):
        self._settings = settings
        self._read = read
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self._loop = asyncio.new_event_loop()
        # DNS lookups run in the loop's default executor; the stock one has only
        # cpu+4 threads, which would throttle a crawl across many distinct hosts.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(4, min(settings.concurrency, 64)), thread_name_prefix="matcher-dns"
        )
        self._loop.set_default_executor(self._executor)
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._run, name="matcher-fetch", daemon=True)

    # consumer side ------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error

    def submit(self, batch: list[tuple[object, object]]) -> None:
        self._loop.call_soon_threadsafe(self._spawn, batch)

    def close(self) -> None:
        """Cancel whatever is in flight, close the session and join the thread."""
        if self._thread.is_alive() and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass  # the loop already closed on its own (after a crash)
        if self._thread.ident is not None:
            self._thread.join()
        # Threads stuck in getaddrinfo cannot be interrupted; let them finish in the background.
        self._executor.shutdown(wait=False, cancel_futures=True)

    # loop side ----------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer, not swallowed
            self.results.put(_Crash(exc))
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._limit = asyncio.Semaphore(self._settings.concurrency)
        self._session = make_session(self._settings)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            await self._session.close()

    def _spawn(self, batch: list[tuple[object, object]]) -> None:
        for key, url in batch:
            task = self._loop.create_task(self._fetch(key, url))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    async def _fetch(self, key: object, url: object) -> None:
        async with self._limit:
            try:
                body = await fetch_one(self._session, url, self._settings, self._read)  # type: ignore[arg-type]
            except FetchError as error:
                self.results.put((key, None, error))
            else:
                self.results.put((key, body, None))

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug, not a download failure: surface it in the consumer's thread.
            self.results.put(_Crash(task.exception()))


def fetch_iter(
    items: Iterable[tuple[K, str]], settings: FetchSettings = FetchSettings(), read=None
) -> Iterator[tuple[K, bytes | None, FetchError | None]]:
    """Download each ``(key, url)``; yield ``(key, body, None)`` or ``(key, None, error)``.

    Results come in completion order, each key exactly once. ``items`` is read
    lazily in the caller's thread (so it may be a database cursor or a
    100-million-row manifest), never more than ``2 * concurrency`` rows ahead of
    the results handed out, which also bounds the bodies held in memory when the
    consumer is slower than the network.

    The downloads run on an event loop in a background thread. Closing the
    generator early (``break`` followed by garbage collection, ``.close()``, or
    an exception thrown into it) cancels the requests in flight, closes the
    session and joins the thread; wrap it in :func:`contextlib.closing` to make
    that happen at a fixed point. An unexpected exception inside the fetcher (a
    bug, never a download failure) is re-raised here, as is the ValueError of a
    row that is not a ``(key, url)`` pair. ``read``: as for :func:`fetch_one`.
    """
    window = 2 * settings.concurrency
    iterator = iter(items)
    runner = _LoopThread(settings, read)
    try:
        runner.start()
        outstanding = 0
        exhausted = False
        while True:
            if not exhausted and outstanding < window:
                batch = []
                for key, url in itertools.islice(iterator, window - outstanding):
                    batch.append((key, url))
                if len(batch) < window - outstanding:
                    exhausted = True
                if batch:
                    runner.submit(batch)
                    outstanding += len(batch)
            if outstanding == 0:
                return
            result = runner.results.get()
            if isinstance(result, _Crash):
                raise result.exc
            outstanding -= 1
            yield result
    finally:
        runner.close()
