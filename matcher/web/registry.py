"""``matcher serve --registry FILE``: an opt-out registry as a service, by content.

* ``GET /api/v1/optout/info``: how many entries, whether registrations are accepted, and how a client
  computes code pairs (the confirmation code's parameters; the variants are the search recipe's);
* ``POST /api/v1/optout/check``: hashes in, registry entries out (as ``/api/v1/search`` takes hashes): per
  photo, the entries with a code within the registry's threshold of one of its hashes, nearest first;
  with ``confirm`` codes sent too, each try's 256-bit distance and whether it confirms;
* ``POST /api/v1/optout/register`` (only with ``--accept-registrations``): one photo's code pairs, computed
  in the browser by the page's hasher (``hasher.js`` ``codePairs``): no pixels. Rate limited per client
  address (:class:`_Bucket`), written atomically under the registry's lock (``Registry.save``);
* ``GET /api/v1/optout/export``: the registry file, for ``matcher filter --registry``;
* ``GET /optout``: the page that does it (``static/optout.html``).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from matcher.errors import RegistryError
from matcher.optout import CONFIRM, Registry, RegistryCode, RegistryEntry, locked
from matcher.optout.registry import CONFIRM_SIDE, CONFIRM_SOURCE_SIDE

__all__ = ["RegistryService", "mount_registry", "REGISTRY_PATHS"]

STATIC = Path(__file__).parent / "static"
REGISTRY_PATHS = frozenset({"/api/v1/optout/check", "/api/v1/optout/register"})
_HEX = re.compile(r"^[0-9a-fA-F]+$")
MAX_CODES = 1024
MAX_PHOTOS = 64


class CodeIn(BaseModel):
    kind: str = Field(max_length=64, description="variant name from the recipe, e.g. id/full, mirror/c80")
    hash: str = Field(max_length=16, description="the 64-bit pHash, 16 hex digits")
    confirm: Optional[str] = Field(None, max_length=64, description="the 256-bit confirmation code, 64 hex digits")


class CheckPhoto(BaseModel):
    id: str = Field(max_length=256)
    hashes: list[CodeIn]


class CheckIn(BaseModel):
    photos: list[CheckPhoto]


class RegisterIn(BaseModel):
    codes: list[CodeIn] = Field(description="first id/full, each with its confirm code")
    note: Optional[str] = Field(None, max_length=500, description="how curators can reach you (stored, published)")


class _Bucket:
    """A token bucket per client address: ``rate`` per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens: dict[str, tuple[float, float]] = {}

    def take(self, who: str) -> float:
        """0 when allowed, else the seconds to wait."""
        now = time.monotonic()
        tokens, at = self.tokens.get(who, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self.tokens[who] = (tokens, now)
            return (1 - tokens) / self.rate
        self.tokens[who] = (tokens - 1, now)
        if len(self.tokens) > 10000:  # forget the fullest buckets first
            self.tokens = dict(sorted(self.tokens.items(), key=lambda kv: kv[1][0])[:5000])
        return 0.0


class RegistryService:
    """The registry file behind the endpoints: reloaded when it changes on disk, written under its lock."""

    def __init__(self, path: str, *, accept: bool = False, registrations_per_minute: float = 6.0):
        self.path = Path(path)
        self.accept = accept
        self.lock = threading.Lock()
        self.bucket = _Bucket(registrations_per_minute / 60.0, max(1.0, registrations_per_minute / 2))
        self._stamp: tuple | None = None
        self.registry = Registry.load(self.path, missing_ok=accept)
        self._stamp = self._signature()

    def _signature(self) -> tuple | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> Registry:
        with self.lock:
            sig = self._signature()
            if sig != self._stamp:
                self.registry = Registry.load(self.path, missing_ok=self.accept)
                self._stamp = sig
            return self.registry

    def check(self, photos: list[tuple[str, list[tuple[str, bytes, bytes | None]]]]) -> dict[str, Any]:
        reg = self.current()
        compiled = reg.compiled()
        out = []
        for pid, codes in photos:
            tries = compiled.candidates([(k, h) for k, h, _ in codes], reg.threshold)
            confirm_of = {k: c for k, _, c in codes}
            matches = []
            for n, ts in tries.items():
                e = reg.entries[n]
                best = []
                for d, code_no, kind in ts:
                    t: dict[str, Any] = {"distance": d, "variant": compiled.kinds[code_no], "hash_kind": kind}
                    c = confirm_of.get(kind)
                    if c is not None:
                        mine = np.unpackbits(np.frombuffer(c, np.uint8)).astype(bool)
                        t["confirm_distance"] = int(np.count_nonzero(mine != compiled.confirms[code_no]))
                        t["confirmed"] = t["confirm_distance"] <= reg.confirm_threshold
                    best.append(t)
                m = {"entry": e.id, "added_at": e.added_at, "note": e.note, "tries": best}
                if any("confirmed" in t for t in best):
                    m["confirmed"] = any(t.get("confirmed") for t in best)
                matches.append(m)
            matches.sort(key=lambda m: (not m.get("confirmed", False), m["tries"][0]["distance"], m["entry"]))
            out.append({"id": pid, "matches": matches})
        return {"photos": out, "threshold": reg.threshold, "confirm_threshold": reg.confirm_threshold}

    def register(self, codes: list[RegistryCode], note: str | None) -> tuple[RegistryEntry, bool]:
        with self.lock, locked(self.path):
            reg = Registry.load(self.path, missing_ok=True)
            entry, new = reg.add(RegistryEntry.make(codes, note=note))
            if new:
                reg.save(self.path)
            self.registry, self._stamp = reg, self._signature()
            return entry, new


def _codes(items: list[CodeIn], where: str, *, need_confirm: bool) -> tuple[list, list]:
    codes, problems = [], []
    for k, c in enumerate(items):
        if len(c.hash) != 16 or not _HEX.match(c.hash):
            problems.append({"loc": f"{where}.{k}.hash", "msg": f"expected 16 hex digits, got {c.hash[:40]!r}"})
            continue
        conf = None
        if c.confirm is not None:
            if len(c.confirm) != 64 or not _HEX.match(c.confirm):
                problems.append({"loc": f"{where}.{k}.confirm", "msg": "expected 64 hex digits"})
                continue
            conf = bytes.fromhex(c.confirm)
        elif need_confirm:
            problems.append({"loc": f"{where}.{k}.confirm", "msg": "missing: a registration needs every confirm code"})
            continue
        codes.append((c.kind, bytes.fromhex(c.hash), conf))
    return codes, problems


def mount_registry(app: FastAPI, service: RegistryService, api_error, run) -> None:
    """Add the registry's routes to ``app``. ``api_error(status, code, message, details?, headers?)`` makes
    the app's error; ``run(fn, *args)`` runs blocking work off the event loop."""

    @app.get("/optout", include_in_schema=False)
    async def optout_page():
        return FileResponse(STATIC / "optout.html", media_type="text/html")

    @app.get("/api/v1/optout/info", summary="The opt-out registry: entries, registrations, how to compute codes")
    async def optout_info():
        reg = await run(service.current)
        return {"entries": len(reg), "accepts_registrations": service.accept, "threshold": reg.threshold,
                "confirm_threshold": reg.confirm_threshold, "hasher": reg.hasher,
                "confirm": {**CONFIRM, "hash_size": CONFIRM["params"]["hash_size"], "side": CONFIRM_SIDE,
                            "source_side": CONFIRM_SOURCE_SIDE}}

    @app.post("/api/v1/optout/check", summary="Which registry entries a photo's hashes match (no pixels)")
    async def optout_check(body: CheckIn):
        if len(body.photos) > MAX_PHOTOS:
            raise api_error(413, "too_many_photos", f"{len(body.photos)} photos; the limit is {MAX_PHOTOS}")
        photos, problems = [], []
        for p, photo in enumerate(body.photos):
            if len(photo.hashes) > MAX_CODES:
                raise api_error(413, "too_many_hashes", f"photo {p} has {len(photo.hashes)} hashes; the limit is {MAX_CODES}")
            codes, bad = _codes(photo.hashes, f"photos.{p}.hashes", need_confirm=False)
            problems += bad
            photos.append((photo.id, codes))
        if problems:
            raise api_error(400, "invalid_hash", "malformed hashes", problems[:50])
        return await run(service.check, photos)

    @app.post("/api/v1/optout/register", summary="Register one photo by its code pairs (computed in the browser)")
    async def optout_register(body: RegisterIn, request: Request):
        if not service.accept:
            raise api_error(403, "registrations_closed", "this server does not accept registrations")
        if not body.codes or body.codes[0].kind != "id/full":
            raise api_error(400, "invalid_codes", "the first code must be the whole photo's (id/full)")
        if len(body.codes) > MAX_CODES:
            raise api_error(413, "too_many_hashes", f"{len(body.codes)} codes; the limit is {MAX_CODES}")
        codes, problems = _codes(body.codes, "codes", need_confirm=True)
        if problems:
            raise api_error(400, "invalid_hash", "malformed codes", problems[:50])
        if len({k for k, _, _ in codes}) != len(codes):
            raise api_error(400, "invalid_codes", "a variant appears twice")
        note = (body.note or "").strip() or None
        wait = service.bucket.take(request.client.host if request.client else "?")  # valid requests only
        if wait:
            raise api_error(429, "rate_limited", "too many registrations from your address; retry later",
                            headers={"retry-after": str(max(1, round(wait)))})
        try:
            entry, new = await run(service.register, [RegistryCode(k, h, c) for k, h, c in codes], note)
        except RegistryError as e:
            raise api_error(500, "registry_unwritable", e.reason) from None
        return {"id": entry.id, "new": new, "codes": len(entry.codes)}

    @app.get("/api/v1/optout/export", summary="The registry file, for `matcher filter --registry`")
    async def optout_export():
        reg = await run(service.current)
        return Response(reg.dumps(), media_type="application/json", headers={
            "content-disposition": 'attachment; filename="optout-registry.json"'})

