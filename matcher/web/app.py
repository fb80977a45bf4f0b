"""``matcher serve``: the web check's FastAPI app. Only hashes come in; photos stay in the browser.

The page (``static/``) hashes each photo as the recipe (:mod:`matcher.engine.recipe`) says, sends the
hashes to ``POST /api/v1/search``, and verifies the candidates against the thumbnails that come
back, in the browser. Files a browser cannot decode (HEIC in Chromium) may be sent, one by one
and only on request, to ``POST /api/v1/search-upload``: hashed in memory and forgotten.

The index is opened once, read-only, on a thread of its own (SQLite connections belong to one
thread; FAISS searches are serialised there). CPU work for uploads runs on a small pool.
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import logging
import os
import re
import sqlite3
import time
from contextlib import asynccontextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from matcher import __version__
from matcher.errors import MatcherError
from matcher.imaging.images import DEFAULT_LIMITS, load_image
from matcher.ingest.policy import FetchSettings
from matcher.engine.api import DEFAULT_THRESHOLD, rank_candidates, search_bytes
from matcher.engine.recipe import recipe as make_recipe
from matcher.engine.cluster import open_searchable
from matcher.index.sharded import ShardedStore
from matcher.evidence import how as how_words, words_table
from matcher.report.formats import CSV_COLUMNS
from matcher.index.store import IndexStore
from matcher.web.guards import BodyLimit, HeadAsGet, HostCheck, RateLimit, SecurityHeaders, UploadGate, error_body
from matcher.web.listen import listen_socket
from matcher.web.models import MAX_ID, ApiError, LettersIn, LookupIn, SearchIn, SearchOut, _item_json

__all__ = ["ServeSettings", "create_app", "run"]

log = logging.getLogger("matcher.web")
STATIC = Path(__file__).parent / "static"
UPLOAD_PATH = "/api/v1/search-upload"


@dataclass(frozen=True)
class ServeSettings:
    threshold: int = DEFAULT_THRESHOLD  # default and largest distance a client may ask for
    rate_limit: float = 20.0  # requests/s per client address on /api/ (bursts of 2x); 0 = off
    max_photos: int = 64  # photos in one search request
    max_hashes: int = 1024  # hashes per photo
    max_body: int = 1 << 20  # bytes of a JSON request
    max_upload: int = 50 << 20  # bytes of one uploaded file
    body_timeout: float = 30.0  # seconds to receive a request body
    upload_workers: int = 2  # uploads hashed at once; more wait, then get 429
    max_queue: int = 128  # searches waiting for the index; beyond, 429 at once (latency stays bounded)
    cors_origins: tuple[str, ...] = ()
    serve_originals: bool = False  # /api/v1/items/{id}/image: the stored 64x64 thumbnail only, unless set
    trust_proxy: bool = False  # take the client address from X-Forwarded-For (only behind a reverse proxy)
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides IP literals and localhost (DNS rebinding)
    max_connections: int = 512  # open connections in total (kept below the open-file limit)
    max_connections_per_client: int = 32  # open connections per client address; 0 = no cap
    header_timeout: float = 10.0  # seconds to send a complete request head after connecting or a response
    access_log: bool = False
    engine: str = "local"  # "dask": a sharded index's shards held by the workers of `scheduler` (docs/dask.md)
    scheduler: str | None = None
    registry: str | None = None  # an opt-out registry served at /api/v1/optout/* and /optout (matcher.web.registry)
    accept_registrations: bool = False  # POST /api/v1/optout/register writes to it
    registrations_per_minute: float = 6.0  # per client address (bursts of half as many)
    # uploads: verify a codes-only candidate against its image fetched from the catalog's URL (None: never;
    # `serve --fetch-unverified`, matcher.engine.fetched)
    fetch: FetchSettings | None = None




_HEX = re.compile(r"^[0-9a-fA-F]+$")


#: Items a Flickr lookup returns at most (a prolific account in a big dataset; the CLI lists them all).
LOOKUP_MAX = 5000


class _Index:
    """The open index, used from one thread only, reopened when a writer has changed it.

    Every ``recheck`` seconds at most (before a call), the index thread compares the index's signature (the
    FAISS file's identity, the catalog's tombstones): an ``add`` or ``compact`` that saved FAISS, or a
    ``remove`` that recorded tombstones, makes it reopen the index, so removed items stop being returned
    and added ones start being found without a restart. A reopen that fails keeps the index as it was.
    """

    def __init__(self, index_dir: str | os.PathLike, recheck: float = 2.0, engine: str = "local",
                 scheduler: str | None = None):
        self.dir = Path(index_dir)
        self.recheck = recheck
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="matcher-index")
        self._open = lambda: open_searchable(self.dir, engine=engine, scheduler=scheduler)
        self.store = self.pool.submit(self._open).result()
        self.pool.submit(self._settle).result()

    def _signature(self) -> tuple:
        if isinstance(self.store, ShardedStore):  # shards.json and every listed shard's files
            return self.store.signature()
        try:
            st = os.stat(self.dir / "index.faiss")
            faiss_file = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            faiss_file = None
        tomb = self.store.catalog.db.execute("SELECT COUNT(*), MAX(entry_id) FROM tombstones").fetchone() \
            if self.store.catalog._has_tombstones_table() else None
        return faiss_file, tuple(tomb) if tomb else None

    def _settle(self) -> None:
        """Record what the open index is (on the index thread)."""
        self._sig = self._signature()
        self._checked = time.monotonic()
        s = self.store
        self.overview = {"stats": s.catalog.stats(), "entries": len(s.faiss) - len(s.dead)}

    def _fresh(self) -> None:
        if time.monotonic() - self._checked < self.recheck:
            return
        self._checked = time.monotonic()
        try:
            if self._signature() == self._sig:
                return
            new = self._open()
        except (OSError, MatcherError, sqlite3.Error) as e:
            log.warning("the index changed but could not be reopened (%s); still serving it as it was", e)
            return
        if new.hasher.identity() != self.store.hasher.identity():
            log.warning("the index at %s now uses another hasher; restart the server to serve it", self.dir)
            new.close()
            return
        old, self.store = self.store, new
        self._settle()
        old.close()
        log.info("index reopened (%d entries)", self.overview["entries"])

    def _call(self, fn: Callable, *args):
        self._fresh()
        return fn(self.store, *args)

    def call(self, fn: Callable, *args):
        """Run ``fn(store, *args)`` on the index thread (blocking the calling thread)."""
        return self.pool.submit(self._call, fn, *args).result()

    async def run(self, fn: Callable, *args):
        return await asyncio.wrap_future(self.pool.submit(self._call, fn, *args))

    def close(self) -> None:
        self.pool.submit(self.store.close).result()
        self.pool.shutdown()


def _search(store: IndexStore, photos: list[tuple[str, list[str], np.ndarray]], threshold: int, thumbs: bool) -> dict:
    codes = np.concatenate([c for _, _, c in photos]) if photos else np.zeros((0, store.hasher.bits // 8), np.uint8)
    hits = store.search_codes(codes, threshold) if len(codes) else []
    out, at = [], 0
    for pid, names, c in photos:
        ranked = rank_candidates(names, hits[at : at + len(c)])
        at += len(c)
        cands = []
        for item, tries in ranked:
            t = {}
            for _, _, kind, thumb in tries:
                if kind not in t:
                    t[kind] = base64.b64encode(thumb).decode() if (thumbs and thumb is not None) else None
            cands.append({"item": _item_json(item),
                          "tries": [{"distance": d, "variant": names[i], "entry": kind,
                                     "how": how_words({"variant": names[i], "entry": kind})} for d, i, kind, _ in tries],
                          "thumbs": t})
        cands.sort(key=lambda c: (c["tries"][0]["distance"], c["item"]["id"]))
        out.append({"id": pid, "candidates": cands})
    return {"threshold": threshold, "results": out}


def _preview(data: bytes, side: int = 256) -> str | None:
    """A small colour JPEG of an uploaded photo (data URL), for the page to show; kept in memory only."""
    try:
        img = load_image(data, limits=DEFAULT_LIMITS, draft=("RGB", side)).image.convert("RGB")
    except MatcherError:
        return None
    img.thumbnail((side, side))
    b = io.BytesIO()
    img.save(b, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(b.getvalue()).decode()


def _dataset_image(store: IndexStore, item_id: int, originals: bool) -> tuple[str, str | bytes] | None:
    """What ``/items/{id}/image`` shows: the entry's stored 64x64 thumbnail (the evidence a match was verified
    on: published with every search result anyway), or with ``originals`` a small JPEG of the local file."""
    items = store.catalog.items_by_id([item_id])
    it = items.get(item_id)
    if it is None:
        return None
    if originals and it.path and os.path.isfile(it.path):
        return ("path", it.path)
    thumb = store.catalog.entry_thumb(item_id, "full")
    return ("png", thumb) if thumb else None


def _jpeg_of(path: str, side: int = 256) -> bytes | None:
    try:
        img = load_image(path, limits=DEFAULT_LIMITS, draft=("RGB", side)).image.convert("RGB")
    except MatcherError:
        return None
    img.thumbnail((side, side))
    b = io.BytesIO()
    img.save(b, "JPEG", quality=82)
    return b.getvalue()


def create_app(index_dir: str | os.PathLike, settings: ServeSettings = ServeSettings()):
    """The ASGI app serving the index at ``index_dir`` (opened now; MatcherError if it cannot be)."""
    # Long on purpose: every route is a closure over this app's state (the store's thread, limits, rate
    # limiter, registry); declared in one place, each route's guards are seen together. The work is in
    # matcher.engine, matcher.report and web/guards.py.
    index = _Index(index_dir, engine=settings.engine, scheduler=settings.scheduler)
    cpu = ThreadPoolExecutor(max(1, settings.upload_workers), thread_name_prefix="matcher-upload")
    uploads = UploadGate(max(1, settings.upload_workers) * 2)  # bodies in memory at once (taken before reading)
    turn = asyncio.Semaphore(1)  # searches take turns on the index thread, waiting here (not in its queue)
    waiting = 0
    rec = index.call(lambda s: make_recipe(s, threshold=settings.threshold))
    rec["limits"] = {"max_photos": settings.max_photos, "max_hashes": settings.max_hashes,
                     "max_body": settings.max_body, "max_upload": settings.max_upload}
    nbytes = index.store.hasher.bits // 8

    @asynccontextmanager
    async def lifespan(app):
        yield
        cpu.shutdown(wait=False, cancel_futures=True)
        index.close()  # after the search running now, if any (the others wait on `turn`, not in its queue)

    app = FastAPI(lifespan=lifespan, title="matcher web check", version=__version__, docs_url=None, redoc_url=None,
                  description="Are my photos in this AI training dataset? Send perceptual hashes of your photos "
                              "(computed in your browser, see /api/v1/recipe); get the dataset items they match. "
                              "Photos are never needed: only hashes.")
    app.state.index = index

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return Response(error_body(e.code, e.message, e.details), status_code=e.status, media_type="application/json",
                        headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        errs = e.errors()
        details = [{"loc": ".".join(str(p) for p in err.get("loc", ())), "msg": err.get("msg", "")} for err in errs[:20]]
        if any(err.get("type") == "json_invalid" for err in errs):
            return Response(error_body("malformed_json", "the request body is not valid JSON", details),
                            status_code=400, media_type="application/json")
        return Response(error_body("invalid_request", "the request does not match the API schema (see /docs)", details),
                        status_code=422, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}
        return Response(error_body(codes.get(e.status_code, "http_error"), str(e.detail)), status_code=e.status_code,
                        media_type="application/json", headers=getattr(e, "headers", None))

    @app.exception_handler(sqlite3.DatabaseError)
    async def _damaged(request: Request, e: sqlite3.DatabaseError):  # a damaged catalog: say so, keep serving
        log.error("the catalog cannot be read on %s %s: %s (run `matcher check`)", request.method, request.url.path, e)
        return Response(error_body("index_damaged", "this part of the index cannot be read (damaged catalog)"),
                        status_code=503, media_type="application/json")

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):  # a bug of ours: say so without echoing anything sent
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=e)
        return Response(error_body("internal", "internal error"), status_code=500, media_type="application/json")

    # --- pages -------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(STATIC / "api.html", media_type="text/html")

    @app.get("/static/cascade.json", include_in_schema=False)
    async def cascade():
        try:
            from matcher.web.cascade import cascade_json
        except ImportError:
            raise ApiError(404, "not_found", "no face detector data on this server") from None
        return Response(cascade_json(), media_type="application/json", headers={"cache-control": "max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # --- API ---------------------------------------------------------------------------
    @app.get("/api/v1/health", summary="Liveness and index size")
    async def health():
        overview = index.overview  # counted when the index was (re)opened, not per probe
        s = overview["stats"]
        return {"status": "ok", "version": __version__, "items": sum(d["hashed"] for d in s), "datasets": len(s),
                "entries": overview["entries"]}

    @app.get("/api/v1/datasets", summary="Datasets in this index with their item counts")
    async def datasets():
        overview = await index.run(lambda store: index.overview)  # after a check for a changed index
        return {"datasets": overview["stats"]}

    @app.get("/api/v1/recipe", summary="What a client computes from each photo (hash variants, verification)")
    async def get_recipe():
        return rec

    @app.get("/api/v1/report-format", summary="The words of the evidence and the CSV layout every output shares")
    async def get_report_format():
        """How sure a match is, in words, by its score (the bands), and what distance and score mean; the columns
        of `matcher search --csv`, which the page's CSV export uses in the same order."""
        return {**words_table(), "csv_columns": list(CSV_COLUMNS)}

    @app.post("/api/v1/search", response_model=SearchOut, summary="Search a batch of photos by their hashes",
              responses={400: {"description": "malformed JSON or hash"}, 413: {"description": "too large"},
                         415: {"description": "not JSON"}, 422: {"description": "schema mismatch"},
                         429: {"description": "rate limited"}})
    async def search(body: SearchIn, request: Request):
        """Every dataset item within ``threshold`` of any hash of a photo is a *candidate*, with the tries
        (hash kind, entry, distance) a client verifies in order against the returned thumbnails."""
        if len(body.photos) > settings.max_photos:
            raise ApiError(413, "too_many_photos", f"{len(body.photos)} photos in one request; the limit is {settings.max_photos}")
        threshold = settings.threshold if body.threshold is None else body.threshold
        if threshold > settings.threshold:
            raise ApiError(400, "threshold_too_high", f"threshold {threshold} is above this server's {settings.threshold}")
        photos, problems = [], []
        for p, photo in enumerate(body.photos):
            if not photo.hashes:
                problems.append({"loc": f"photos.{p}.hashes", "msg": "no hashes"})
                continue
            if len(photo.hashes) > settings.max_hashes:
                raise ApiError(413, "too_many_hashes",
                               f"photo {p} has {len(photo.hashes)} hashes; the limit is {settings.max_hashes}")
            codes = np.empty((len(photo.hashes), nbytes), np.uint8)
            for k, h in enumerate(photo.hashes):
                if len(h.hash) != 2 * nbytes or not _HEX.match(h.hash):
                    problems.append({"loc": f"photos.{p}.hashes.{k}.hash",
                                     "msg": f"expected {2 * nbytes} hex digits ({8 * nbytes}-bit code), got {h.hash[:40]!r}"})
                    continue
                codes[k] = np.frombuffer(bytes.fromhex(h.hash), np.uint8)
            photos.append((photo.id, [h.kind for h in photo.hashes], codes))
        if problems:
            raise ApiError(400, "invalid_hash", "malformed hashes", problems[:50])
        nonlocal waiting
        if waiting >= settings.max_queue:
            raise ApiError(429, "busy", f"{waiting} searches are waiting; retry shortly", headers={"retry-after": "2"})
        waiting += 1
        try:
            async with turn:
                if await request.is_disconnected():  # its client gave up while it waited: do not search
                    raise ApiError(499, "client_closed", "the client closed the connection")
                return await index.run(_search, photos, threshold, body.thumbnails)
        finally:
            waiting -= 1

    @app.post(UPLOAD_PATH, summary="Search one photo the browser could not decode (hashed in memory, never stored)",
              openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                  "schema": {"type": "string", "format": "binary"}}}}})
    async def search_upload(request: Request, name: str = "upload"):
        """The file's bytes as the body. It is decoded and hashed in memory, searched exactly as the CLI
        searches a photo (variants, faces, verification), and dropped; the response carries the matches
        and a small preview for the page."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/octet-stream", "") and not ctype.startswith("image/"):
            raise ApiError(415, "unsupported_media_type", "send the file's bytes as application/octet-stream")
        data = await request.body()
        if not data:
            raise ApiError(400, "empty", "empty body: send the file's bytes")
        name = name[:256]
        try:  # this upload holds one of the `uploads` slots (BodyLimit took it before reading the body)
            loop = asyncio.get_running_loop()

            def work():
                res = search_bytes(index.store, name, data, threshold=settings.threshold,
                                   limits=DEFAULT_LIMITS, run_store=index.call, fetch=settings.fetch)
                return res, (_preview(data) if res.error is None else None)

            res, preview = await loop.run_in_executor(cpu, work)
        finally:
            data = b""  # the photo's bytes go now, not when the request object does
        if res.error is not None:
            raise ApiError(422, "unreadable_image", res.error)
        return {"id": name, "hash": res.hash, "matches": [m.to_json() | {"path": None} for m in res.matches],
                "preview": preview}

    @app.get("/api/v1/items/{item_id}/image", summary="A small image of a dataset item (JPEG, or its 64x64 thumbnail)",
             responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, 404: {"description": "no image"}})
    async def item_image(item_id: Annotated[int, PathParam(ge=0, le=MAX_ID)]):
        found = await index.run(_dataset_image, item_id, settings.serve_originals)
        if found is None:
            raise ApiError(404, "not_found", f"no image for item {item_id}")
        kind, value = found
        if kind == "path":
            jpeg = await asyncio.get_running_loop().run_in_executor(cpu, _jpeg_of, value)
            if jpeg is not None:
                return Response(jpeg, media_type="image/jpeg", headers={"cache-control": "max-age=3600"})
            thumb = await index.run(lambda s: s.catalog.entry_thumb(item_id, "full"))
            if not thumb:
                raise ApiError(404, "not_found", f"no image for item {item_id}")
            value = thumb
        return Response(value, media_type="image/png", headers={"cache-control": "max-age=3600"})

    @app.post("/api/v1/lookup", summary="Dataset items listed under a Flickr account (by identity: no photo needed)")
    async def lookup(body: LookupIn):
        """The items whose manifest row names this Flickr account as the owner (ok or failed: a dead link is
        evidence too), as ``matcher lookup`` and ``matcher search --flickr-user`` find them. A page joins them
        with its content matches by item id."""
        from matcher.provenance.flickr import parse_owner
        from matcher.provenance.identities import IdentityJoin

        nsid, name = parse_owner(body.flickr_user)
        if nsid is None and name is None:
            raise ApiError(400, "not_a_flickr_user", "not a Flickr user name, NSID (12345678@N01) or profile URL")

        def find(store):
            join = IdentityJoin(store.catalog, nsid=nsid, name=name)
            return join.available, join.label, join.listed, join.identities

        available, label, listed, identities = await index.run(find)
        return {"label": label, "available": available, "total": len(listed), "truncated": len(listed) > LOOKUP_MAX,
                "items": [_item_json(it) | {"status": it.status, "error": it.error, "flickr": identities.get(it.id)}
                          for it in listed[:LOOKUP_MAX]]}

    @app.post("/api/v1/letters", summary="Removal-request letters for matched items, one per dataset")
    async def letters(body: LettersIn, request: Request):
        from matcher.provenance.letters import build_letters

        items = await index.run(lambda s: s.catalog.items_by_id(body.items))
        missing = [i for i in body.items if i not in items]
        if missing:
            raise ApiError(404, "unknown_items", f"{len(missing)} item ids are not in this index", missing[:20])
        requester = {k: v for k, v in (body.requester.model_dump() if body.requester else {}).items() if v}
        try:
            out = build_letters([items[i] for i in dict.fromkeys(body.items)], body.template, requester or None)
        except ValueError as e:
            raise ApiError(400, "bad_letter_request", str(e)) from None
        return {"letters": [{"dataset": l.dataset, "template": l.template, "filename": l.filename, "text": l.text}
                            for l in out]}

    if settings.registry:
        from matcher.web.registry import RegistryService, mount_registry

        service = RegistryService(settings.registry, accept=settings.accept_registrations,
                                  registrations_per_minute=settings.registrations_per_minute)
        mount_registry(app, service, ApiError, lambda fn, *a: asyncio.get_running_loop().run_in_executor(cpu, fn, *a))

    wrapped: Any = app
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        wrapped = CORSMiddleware(wrapped, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                                 allow_headers=["Content-Type"])
    wrapped = BodyLimit(wrapped, lambda path: settings.max_upload if path == UPLOAD_PATH else settings.max_body,
                        settings.body_timeout, frozenset({"/api/v1/search", "/api/v1/letters", "/api/v1/lookup",
                                                          "/api/v1/optout/check", "/api/v1/optout/register"}),
                        gates={UPLOAD_PATH: uploads})
    wrapped = RateLimit(wrapped, settings.rate_limit, max(1.0, 2 * settings.rate_limit))
    wrapped = HostCheck(wrapped, settings.allowed_hosts)
    wrapped = SecurityHeaders(HeadAsGet(wrapped))
    wrapped.fastapi = app  # for tests and for run()
    return wrapped


def run(index_dir: str | os.PathLike, settings: ServeSettings = ServeSettings(), *, host: str = "127.0.0.1",
        port: int = 8000, log: Callable[[str], None] = print) -> None:
    """Open the index and serve until interrupted."""
    import uvicorn

    from matcher.web.conns import ConnectionLimits, fd_budget, guarded_h11

    try:
        is_address = bool(ipaddress.ip_address(host))
    except ValueError:
        is_address = False
    if not is_address:  # the name it listens on is one it answers for
        settings = replace(settings, allowed_hosts=(*settings.allowed_hosts, host))
    sock = listen_socket(host, port)  # before the index is opened and before "serving" is said: a busy port is an error
    asgi = create_app(index_dir, settings)
    total, backlog = fd_budget(settings.max_connections)
    limits = ConnectionLimits(total=total,
                              per_client=settings.max_connections_per_client, header_timeout=settings.header_timeout)
    config = uvicorn.Config(asgi, host=host, port=port, access_log=settings.access_log,
                            log_level="info" if settings.access_log else "warning", lifespan="on",
                            http=guarded_h11(limits), timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024,
                            limit_concurrency=limits.total + 1, backlog=backlog, timeout_graceful_shutdown=5,
                            proxy_headers=settings.trust_proxy,
                            forwarded_allow_ips="*" if settings.trust_proxy else None)
    server = uvicorn.Server(config)
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    log(f"matcher web check on http://{shown}:{port}/  (index {index_dir}; API docs at /docs; Ctrl-C stops)")
    server.run(sockets=[sock])

