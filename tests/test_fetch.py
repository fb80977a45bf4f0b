"""Tests for matcher.ingest.fetch against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import collections
import io
import itertools
import threading
import time

import pytest
from aiohttp import web
from PIL import Image
from yarl import URL

from matcher.ingest import fetch as fetch_module
from matcher.errors import FetchError
from matcher.ingest.fetch import FetchSettings, fetch_iter, fetch_one, is_public_address
from matcher.ingest.sniff import sniff_image_format

# Loopback tests need allow_private; keep backoff tiny so retry tests stay fast.
LOCAL = FetchSettings(allow_private=True, backoff=0.01, timeout=5.0, connect_timeout=2.0)


def _image_bytes(fmt: str, size=(32, 24), **save_args) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buf, format=fmt, **save_args)
    return buf.getvalue()


JPEG = _image_bytes("JPEG", quality=80)


# ---------------------------------------------------------------------------
# test server


class Server:
    """aiohttp.web app on 127.0.0.1 in its own thread; counts requests per path."""

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.user_agents: dict[str, str] = {}
        self.finished: dict[str, bool] = {}
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._count])
        app.router.add_get("/img/{name}", self._img)
        app.router.add_get("/status/{code}/{name}", self._status)
        app.router.add_get("/flaky/{name}", self._flaky)
        app.router.add_get("/slow/{name}", self._slow)
        app.router.add_get("/html", self._html)
        app.router.add_get("/big", self._big)
        app.router.add_get("/big-chunked", self._big_chunked)
        app.router.add_get("/redirect/{n}/{name}", self._redirect)
        app.router.add_get("/loop", self._loop_redirect)
        app.router.add_get("/to", self._to)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    @web.middleware
    async def _count(self, request, handler):
        self.hits[request.path] += 1
        self.user_agents[request.path] = request.headers.get("User-Agent", "")
        return await handler(request)

    async def _img(self, request):
        return web.Response(body=JPEG, content_type="image/jpeg")

    async def _status(self, request):
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def _flaky(self, request):
        """Fail with ?status= for the first ?fail= requests to this path, then serve the image."""
        if self.hits[request.path] <= int(request.query.get("fail", "1")):
            headers = {}
            if "retry_after" in request.query:
                headers["Retry-After"] = request.query["retry_after"]
            return web.Response(status=int(request.query.get("status", "500")), headers=headers, text="busy")
        return web.Response(body=JPEG, content_type="image/jpeg")

    async def _slow(self, request):
        await asyncio.sleep(float(request.query.get("delay", "3")))
        return web.Response(body=JPEG, content_type="image/jpeg")

    async def _html(self, request):
        # Claims to be an image: the fetcher must look at the bytes, not the header.
        return web.Response(body=b"<!DOCTYPE html><html>404</html>", content_type="image/jpeg")

    async def _big(self, request):
        size = int(request.query["size"])
        return web.Response(body=JPEG[:64] + b"\0" * (size - 64), content_type="image/jpeg")

    async def _big_chunked(self, request):
        """Streams JPEG-looking data with no Content-Length; records whether it got to the end."""
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self.finished[request.path] = False
        await resp.write(JPEG[:64])
        for _ in range(160):  # 10 MiB in total
            await resp.write(b"\0" * 65536)
            await asyncio.sleep(0.002)
        await resp.write_eof()
        self.finished[request.path] = True
        return resp

    async def _redirect(self, request):
        n = int(request.match_info["n"])
        name = request.match_info["name"]
        if n == 0:
            return web.Response(body=JPEG, content_type="image/jpeg")
        # Relative Location, resolved against the current URL.
        raise web.HTTPFound(f"/redirect/{n - 1}/{name}")

    async def _loop_redirect(self, request):
        raise web.HTTPFound("/loop")

    async def _to(self, request):
        raise web.HTTPFound(request.query["url"])


@pytest.fixture(scope="module")
def server():
    srv = Server()
    srv.start()
    yield srv
    srv.stop()


def get(url: str, settings: FetchSettings = LOCAL) -> bytes:
    """Run fetch_one on a fresh session in a fresh loop."""

    async def go():
        session = fetch_module.make_session(settings)
        try:
            return await fetch_one(session, url, settings)
        finally:
            await session.close()

    return asyncio.run(go())


def fetch_error(url: str, settings: FetchSettings = LOCAL) -> FetchError:
    with pytest.raises(FetchError) as info:
        get(url, settings)
    return info.value


# ---------------------------------------------------------------------------
# sniffing


@pytest.mark.parametrize(
    "fmt, name, args",
    [
        ("JPEG", "jpeg", {}),
        ("PNG", "png", {}),
        ("GIF", "gif", {}),
        ("WEBP", "webp", {}),
        ("BMP", "bmp", {}),
        ("TIFF", "tiff", {}),
        ("ICO", "ico", {}),
    ],
)
def test_sniff_real_images(fmt, name, args):
    assert sniff_image_format(_image_bytes(fmt, **args)) == name


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    payload = major + b"\0\0\0\0" + b"".join(compatible)
    return (8 + len(payload)).to_bytes(4, "big") + b"ftyp" + payload + b"\0\0\0\x08meta"


def test_sniff_isobmff_brands():
    assert sniff_image_format(_ftyp(b"heic", b"mif1", b"heic")) == "heif"
    assert sniff_image_format(_ftyp(b"mif1", b"mif1", b"heic")) == "heif"
    assert sniff_image_format(_ftyp(b"avif", b"avif", b"mif1")) == "avif"
    assert sniff_image_format(_ftyp(b"mif1", b"mif1", b"avif")) == "avif"
    assert sniff_image_format(_ftyp(b"isom", b"isom", b"mp41")) is None  # an MP4 video


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"<!DOCTYPE html><html></html>",
        b"BM is not a bitmap, just text",
        b"RIFF\x10\x00\x00\x00WAVEfmt ",
        b"\x00\x00\x01\x00\x00\x00",
        b'{"error": "not found"}',
    ],
)
def test_sniff_rejects_non_images(data):
    assert sniff_image_format(data) is None


def test_sniff_prefix_matches_whole():
    data = _image_bytes("PNG", size=(64, 64))
    assert sniff_image_format(data[:256]) == sniff_image_format(data) == "png"


# ---------------------------------------------------------------------------
# address policy


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "64:ff9b::808:808", "::ffff:8.8.8.8"],
)
def test_public_addresses(address):
    assert is_public_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "192.0.2.1",
        "198.18.0.1",
        "240.0.0.1",
        "224.0.0.1",
        "239.255.255.250",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "ff0e::1",
        "2001:db8::1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a00:1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::7f00:1",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::1",
    ],
)
def test_non_public_addresses(address):
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.jpg",
        "http://[::1]/x.jpg",
        "http://10.0.0.1/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://[64:ff9b::7f00:1]/",
        "http://[::ffff:127.0.0.1]/",
        "https://[fe80::1%25eth0]/",
    ],
)
def test_check_target_refuses_private_literals(url):
    with pytest.raises(FetchError) as info:
        fetch_module._check_target(URL(url), FetchSettings(), hop="redirect")
    assert info.value.kind == "refused"


def test_check_target_allows_public():
    fetch_module._check_target(URL("https://8.8.8.8/a.jpg"), FetchSettings())
    fetch_module._check_target(URL("https://example.com/a.jpg"), FetchSettings())


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/img/refused-v4.jpg",
        "http://[::1]:{port}/img/refused-v6.jpg",
        "http://localhost:{port}/img/refused-dns.jpg",
        "http://10.0.0.1:{port}/img/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/x.jpg",
        "http://[64:ff9b::7f00:1]:{port}/img/refused-nat64.jpg",
        "http://[::ffff:127.0.0.1]:{port}/img/refused-mapped.jpg",
        "http://0x7f000001:{port}/img/refused-hex.jpg",
    ],
)
def test_private_targets_refused_without_request(server, url):
    url = url.format(port=server.port)
    started = time.monotonic()
    err = fetch_error(url, FetchSettings(timeout=2, connect_timeout=1, retries=0))
    assert err.kind == "refused", err.reason
    assert time.monotonic() - started < 1.5
    assert server.hits[URL(url).path] == 0


def test_localhost_refused_by_dns_check(server):
    err = fetch_error(server.url("/img/dns.jpg", host="localhost"), FetchSettings(retries=0))
    assert err.kind == "refused"
    assert "localhost resolves to non-public address" in err.reason
    assert server.hits["/img/dns.jpg"] == 0


def test_decimal_ipv4_not_fetched(server):
    err = fetch_error(f"http://2130706433:{server.port}/img/decimal.jpg", FetchSettings(retries=0))
    assert err.kind in ("refused", "bad_url")
    assert server.hits["/img/decimal.jpg"] == 0


def test_redirect_hop_is_checked(server):
    """Only 127.0.0.1 is allowed (allow_networks): a redirect from it to 127.0.0.2 must be refused."""
    settings = FetchSettings(retries=0, allow_networks=("127.0.0.1/32",))
    # Control: the first hop is allowed and the image arrives.
    assert get(server.url("/img/hop-ok.jpg"), settings) == JPEG
    target = f"http://127.0.0.2:{server.port}/img/hop-private.jpg"
    err = fetch_error(server.url(f"/to?url={target}"), settings)
    assert err.kind == "refused" and "127.0.0.2" in err.reason
    assert server.hits["/to"] == 1
    assert server.hits["/img/hop-private.jpg"] == 0
    # host names: the resolver admits the allowed network's addresses and nothing else
    err = fetch_error(f"http://localhost:{server.port}/img/name-refused.jpg",
                      FetchSettings(retries=0, allow_networks=("127.0.0.2/32",)))
    assert err.kind == "refused" and "resolves to non-public address" in err.reason
    assert server.hits["/img/name-refused.jpg"] == 0
    assert get(f"http://localhost:{server.port}/img/hop-ok.jpg",
               FetchSettings(retries=0, allow_networks=("127.0.0.0/8", "::1/128"))) == JPEG


def test_allow_networks_is_checked():
    with pytest.raises(ValueError, match="not an IP network"):
        FetchSettings(allow_networks=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="not one string"):
        FetchSettings(allow_networks="10.0.0.0/8")
    s = FetchSettings(allow_networks=("10.1.2.3/24",))
    assert s.allow_networks == ("10.1.2.0/24",)
    assert s.allows("10.1.2.200") and not s.allows("10.1.3.1") and s.allows("8.8.8.8")
    assert not s.allows("169.254.169.254")


def test_foreign_session_refused_when_private_disallowed():
    async def go():
        import aiohttp

        async with aiohttp.ClientSession() as session:
            await fetch_one(session, "http://example.com/x.jpg", FetchSettings())

    with pytest.raises(ValueError, match="make_session"):
        asyncio.run(go())


# ---------------------------------------------------------------------------
# downloads


def test_fetch_image_and_user_agent(server):
    assert get(server.url("/img/ok.jpg")) == JPEG
    assert server.hits["/img/ok.jpg"] == 1
    assert server.user_agents["/img/ok.jpg"] == LOCAL.user_agent
    assert LOCAL.user_agent.startswith("matcher/")


def test_404_is_not_retried(server):
    err = fetch_error(server.url("/status/404/a"))
    assert (err.kind, err.status) == ("http", 404)
    assert err.reason == "HTTP 404 Not Found"
    assert server.hits["/status/404/a"] == 1


def test_500_then_200_succeeds_on_retry(server):
    assert get(server.url("/flaky/five-hundred?status=500&fail=1")) == JPEG
    assert server.hits["/flaky/five-hundred"] == 2


def test_persistent_503_gives_up(server):
    err = fetch_error(server.url("/status/503/b"), FetchSettings(allow_private=True, retries=2, backoff=0.01))
    assert (err.kind, err.status) == ("http", 503)
    assert "gave up after 3 attempts" in err.reason
    assert server.hits["/status/503/b"] == 3


def test_429_with_retry_after_zero(server):
    started = time.monotonic()
    # A big backoff shows Retry-After: 0 took precedence.
    settings = FetchSettings(allow_private=True, backoff=5.0)
    assert get(server.url("/flaky/busy?status=429&fail=1&retry_after=0"), settings) == JPEG
    assert server.hits["/flaky/busy"] == 2
    assert time.monotonic() - started < 2


def test_retry_after_parsing():
    assert fetch_module._parse_retry_after("0") == 0
    assert fetch_module._parse_retry_after(" 7 ") == 7
    assert fetch_module._parse_retry_after("3600") == 30
    assert fetch_module._parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert fetch_module._parse_retry_after("-1") is None
    assert fetch_module._parse_retry_after(None) is None


def test_timeout(server):
    settings = FetchSettings(allow_private=True, timeout=0.5, retries=1, backoff=0.01)
    started = time.monotonic()
    err = fetch_error(server.url("/slow/t?delay=3"), settings)
    elapsed = time.monotonic() - started
    assert err.kind == "timeout"
    assert err.reason.startswith("timed out after 0.5 s")
    assert server.hits["/slow/t"] == 2  # the timeout was retried once
    assert elapsed < 2.0


def test_html_is_not_an_image(server):
    err = fetch_error(server.url("/html"))
    assert err.kind == "not_image"
    assert err.reason.startswith("not an image (starts with b'<!DOCTYPE")
    assert server.hits["/html"] == 1


def test_too_large_with_content_length(server):
    settings = FetchSettings(allow_private=True, max_bytes=100_000)
    err = fetch_error(server.url("/big?size=200000"), settings)
    assert err.kind == "too_large"
    assert server.hits["/big"] == 1
    # Exactly at the limit is fine.
    assert len(get(server.url("/big?size=100000"), settings)) == 100_000


def test_too_large_chunked_aborts_early(server):
    settings = FetchSettings(allow_private=True, max_bytes=100_000)
    started = time.monotonic()
    err = fetch_error(server.url("/big-chunked"), settings)
    assert err.kind == "too_large"
    assert server.hits["/big-chunked"] == 1
    assert time.monotonic() - started < 2
    # Had the client read on to the end, the server would have finished writing
    # before the client returned; it is still (or was cut off) mid-stream.
    time.sleep(0.05)
    assert server.finished.get("/big-chunked") is False


def test_redirect_chain(server):
    assert get(server.url("/redirect/3/chain")) == JPEG
    assert all(server.hits[f"/redirect/{n}/chain"] == 1 for n in range(4))


def test_too_many_redirects(server):
    err = fetch_error(server.url("/redirect/6/long"))
    assert err.kind == "http"
    assert "too many redirects" in err.reason


def test_redirect_loop(server):
    err = fetch_error(server.url("/loop"))
    assert err.kind == "http"
    assert "too many redirects" in err.reason
    assert server.hits["/loop"] == LOCAL.max_redirects + 1


def test_redirect_to_file_scheme(server):
    err = fetch_error(server.url("/to?url=file:///etc/passwd"))
    assert err.kind == "bad_url"


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/a.jpg", "javascript:alert(1)", "http:///nohost.jpg",
     "http://[::1", "", "   ", "example.com/a.jpg", None, 3.5],
)
def test_bad_urls(url):
    err = fetch_error(url, FetchSettings())
    assert err.kind == "bad_url", err.reason


def test_connection_refused_is_connection_error(server):
    # A port nobody listens on: grab one, then close it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = fetch_error(f"http://127.0.0.1:{port}/x.jpg", FetchSettings(allow_private=True, retries=1, backoff=0.01))
    assert err.kind == "connection"
    assert "gave up after 2 attempts" in err.reason


def test_settings_validation():
    with pytest.raises(ValueError):
        FetchSettings(concurrency=0)
    with pytest.raises(ValueError):
        FetchSettings(timeout=0)


# ---------------------------------------------------------------------------
# fetch_iter


def _fetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "matcher-fetch"]


def test_fetch_iter_many(server):
    keys = range(300)
    items = [
        (k, server.url(f"/img/many-{k}.jpg") if k % 10 else server.url(f"/status/404/many-{k}"))
        for k in keys
    ]
    seen = collections.Counter()
    for key, body, err in fetch_iter(items, FetchSettings(allow_private=True, concurrency=32)):
        seen[key] += 1
        if key % 10:
            assert body == JPEG and err is None
        else:
            assert body is None and err.kind == "http" and err.status == 404
    assert seen == collections.Counter(keys)
    assert all(server.hits[f"/img/many-{k}.jpg"] == 1 for k in keys if k % 10)
    assert not _fetch_threads()


def test_fetch_iter_empty():
    assert list(fetch_iter([])) == []
    assert not _fetch_threads()


def test_fetch_iter_is_lazy(server):
    pulled = 0

    def endless():
        nonlocal pulled
        for k in itertools.count():
            pulled += 1
            yield k, server.url(f"/img/lazy-{k}.jpg")

    settings = FetchSettings(allow_private=True, concurrency=4)
    gen = fetch_iter(endless(), settings)
    got = [next(gen) for _ in range(10)]
    gen.close()
    assert len(got) == 10
    assert pulled <= 10 + 2 * settings.concurrency + 1
    assert not _fetch_threads()


def test_fetch_iter_early_close_does_not_hang(server):
    items = [("fast", server.url("/img/early.jpg"))]
    items += [(k, server.url(f"/slow/early-{k}?delay=10")) for k in range(20)]
    gen = fetch_iter(items, FetchSettings(allow_private=True, concurrency=8))
    key, body, err = next(gen)
    assert key == "fast" and body == JPEG
    started = time.monotonic()
    gen.close()
    assert time.monotonic() - started < 2
    assert not _fetch_threads()


def test_fetch_iter_break_out_of_loop(server):
    items = [(k, server.url(f"/slow/brk-{k}?delay={0 if k == 0 else 10}")) for k in range(10)]
    started = time.monotonic()
    gen = fetch_iter(items, FetchSettings(allow_private=True))
    for _ in gen:
        break
    gen.close()
    assert time.monotonic() - started < 3
    assert not _fetch_threads()


def test_fetch_iter_reports_errors_per_item():
    out = dict((k, e) for k, _, e in fetch_iter([("a", "ftp://x/y"), ("b", "http://127.0.0.1/")]))
    assert out["a"].kind == "bad_url"
    assert out["b"].kind == "refused"


def test_fetch_iter_bad_item_shape_raises():
    with pytest.raises(ValueError):
        list(fetch_iter([("a", "http://x", "extra")]))
    assert not _fetch_threads()


def test_fetch_iter_surfaces_an_exception_of_the_rows_and_cleans_up(server):
    """A manifest reader that fails mid-way: its exception reaches the caller, downloads in flight are
    cancelled, and the loop thread is gone."""
    def rows():
        for k in range(5):
            yield k, server.url("/img/a.jpg")
        raise ZeroDivisionError("the manifest reader broke")

    got = []
    with pytest.raises(ZeroDivisionError, match="manifest reader"):
        for k, body, err in fetch_iter(rows(), FetchSettings(allow_private=True, concurrency=2)):
            got.append(k)
    assert len(got) <= 5
    assert not _fetch_threads()


