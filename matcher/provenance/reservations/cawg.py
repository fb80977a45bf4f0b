"""C2PA / CAWG training-and-data-mining assertions embedded in an image.

A C2PA manifest store (JUMBF boxes: JPEG APP11 segments, a PNG ``caBX`` chunk, ...) may carry the CAWG
assertion ``cawg.training-mining`` (or the older ``c2pa.training-mining``) whose ``entries`` map a use
(``cawg.ai_training``, ``cawg.ai_generative_training``, ``cawg.data_mining``, ``cawg.ai_inference``; the
older ``c2pa.*`` names) to ``{"use": "allowed" | "notAllowed" | "constrained", "constraint_info"?}``.
``notAllowed`` and ``constrained`` on a training or mining use are reservations (``ai_inference`` is not
about training and is not recorded).

With the C2PA project's Python binding (``c2pa-python``, the ``c2pa`` extra) the store is read and its
signature validated by the C2PA SDK; the detail says how far: "C2PA signature valid; signer not in a
trust list" (no trust list is configured) or the validation failures. Without it, or when the SDK cannot
read the store, the JUMBF boxes are walked here and the assertion's CBOR decoded: the reservation is
reported "present, not verified".
"""

from __future__ import annotations

import io
import json
from typing import Any, Iterator

from .records import Found, Reservation

__all__ = ["has_manifest", "read_c2pa", "binding_available", "jumbf_of", "assertions_unverified", "cbor_loads"]

LABELS = ("cawg.training-mining", "c2pa.training-mining")
#: Uses that concern training or mining (ai_inference does not).
USES = ("ai_training", "ai_generative_training", "data_mining")
RESERVING_USE = ("notAllowed", "constrained")
_MIMES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "tiff": "image/tiff", "heif": "image/heif",
          "avif": "image/avif", "gif": "image/gif"}
UNVERIFIED = "present, not verified"


def binding_available() -> bool:
    try:
        import c2pa  # noqa: F401
    except ImportError:
        return False
    return True


def has_manifest(data: bytes) -> bool:
    """Whether ``data`` seems to hold a C2PA manifest store (a JUMBF box labelled ``c2pa``)."""
    return data.find(b"jumb") >= 0 and data.find(b"c2pa") >= 0


def _format(data: bytes) -> str | None:
    """The container format, for the SDK's MIME type and for finding the store (magic bytes only)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if data[4:8] == b"ftyp":
        return "avif" if data[8:12] in (b"avif", b"avis") else "heif"
    return None


def _reservations(label: str, entries: Any, detail: str) -> list[Reservation]:
    out = []
    if not isinstance(entries, dict):
        return out
    named = [(USES.index(n.split(".", 1)[-1]), n, spec) for n, spec in entries.items()
             if isinstance(n, str) and n.split(".", 1)[-1] in USES and isinstance(spec, dict)]
    for _, name, spec in sorted(named):
        use = spec.get("use")
        if use in RESERVING_USE:
            info = spec.get("constraint_info")
            d = detail + (f"; constraint: {str(info)[:200]}" if info else "")
            out.append(Reservation("embedded", f"c2pa:{name}", str(use), f"{label}; {d}"))
    return out


def _verdict(state: str | None, status: list) -> str:
    codes = [s.get("code") for s in status if isinstance(s, dict)]
    if state == "Trusted":
        return "C2PA signature valid; signer trusted"
    if state == "Valid" or (state is None and codes == ["signingCredential.untrusted"]):
        return "C2PA signature valid; signer not in a trust list"
    bad = [c for c in codes if c and c != "signingCredential.untrusted"]
    return "C2PA validation failed: " + ", ".join(str(c) for c in bad[:4]) if bad else f"C2PA {state or 'unvalidated'}"


def _read_with_binding(data: bytes, fmt: str) -> Found:
    import c2pa

    reader = c2pa.Reader(_MIMES.get(fmt, "image/jpeg"), io.BytesIO(data))
    try:
        store = json.loads(reader.json())
        state = reader.get_validation_state()
    finally:
        close = getattr(reader, "close", None)
        if close:
            close()
    found = Found()
    active = (store.get("manifests") or {}).get(store.get("active_manifest")) or {}
    detail = _verdict(state, store.get("validation_status") or [])
    for a in active.get("assertions") or ():
        label = str(a.get("label", ""))
        if label.split("__", 1)[0] in LABELS:
            found.reservations += _reservations(label, (a.get("data") or {}).get("entries"), detail)
    return found


def read_c2pa(data: bytes, *, use_binding: bool = True) -> Found:
    """The training-and-data-mining reservations of ``data``'s C2PA manifest store, if it has one."""
    if not has_manifest(data):
        return Found()
    fmt = _format(data) or "jpeg"
    found = Found()
    if use_binding and binding_available():
        import c2pa

        try:
            return _read_with_binding(data, fmt)
        except c2pa.C2paError as e:
            found.notes.append(f"embedded: the C2PA SDK could not read the manifest ({str(e)[:160]}); read unverified")
        except (ValueError, TypeError, KeyError) as e:  # a store whose JSON is not what the SDK documents
            found.notes.append(f"embedded: unexpected C2PA manifest ({e}); read unverified")
    try:
        jumbf = jumbf_of(data, fmt)
        if not jumbf:
            return found
        for label, entries in assertions_unverified(jumbf):
            found.reservations += _reservations(label, entries, UNVERIFIED)
    except ValueError as e:
        found.notes.append(f"embedded: damaged C2PA manifest store ({e})")
    return found


# --- the manifest store without the SDK -------------------------------------------------------------
def jumbf_of(data: bytes, fmt: str = "jpeg") -> bytes:
    """The C2PA JUMBF superbox of a JPEG (APP11 segments, reassembled) or PNG (``caBX`` chunk); b"" if none."""
    if fmt == "png":
        pos = 8
        while pos + 8 <= len(data):
            n = int.from_bytes(data[pos:pos + 4], "big")
            kind = data[pos + 4:pos + 8]
            if kind == b"caBX":
                return data[pos + 8:pos + 8 + n]
            if kind == b"IEND":
                break
            pos += 12 + n
        return b""
    if fmt != "jpeg":
        i = data.find(b"jumb")
        return data[i - 4:] if i >= 4 else b""
    parts: dict[int, list[tuple[int, bytes]]] = {}
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xDA, 0xD9):
            break
        n = int.from_bytes(data[i + 2:i + 4], "big")
        seg = data[i + 4:i + 2 + n]
        if marker == 0xEB and seg[:2] == b"JP" and len(seg) >= 16:
            en, z = int.from_bytes(seg[2:4], "big"), int.from_bytes(seg[4:8], "big")
            parts.setdefault(en, []).append((z, seg[8:]))
        i += 2 + n
    for en in sorted(parts):
        segs = sorted(parts[en])
        box = segs[0][1] + b"".join(s[8:] for _, s in segs[1:])  # later segments repeat LBox/TBox
        if box[4:8] == b"jumb" and b"c2pa" in box[:64]:
            return box
    return b""


def _boxes(buf: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    pos = start
    while pos + 8 <= end:
        n = int.from_bytes(buf[pos:pos + 4], "big")
        kind = buf[pos + 4:pos + 8]
        head = 8
        if n == 1:
            if pos + 16 > end:
                raise ValueError("truncated JUMBF box")
            n, head = int.from_bytes(buf[pos + 8:pos + 16], "big"), 16
        elif n == 0:
            n = end - pos
        if n < head or pos + n > end:
            raise ValueError(f"JUMBF box {kind!r} overruns its container")
        yield kind, pos + head, pos + n
        pos += n


def _label(buf: bytes, start: int, end: int) -> str:
    if end - start < 17:
        return ""
    toggles = buf[start + 16]
    if not toggles & 0x02:
        return ""
    stop = buf.find(b"\x00", start + 17, end)
    return buf[start + 17:stop if stop >= 0 else end].decode("utf-8", "replace")


def assertions_unverified(jumbf: bytes, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """``(label, entries)`` of every training-and-data-mining assertion in a JUMBF superbox (not verified)."""
    if depth > 8:
        raise ValueError("JUMBF nested too deeply")
    for kind, start, end in _boxes(jumbf, 0, len(jumbf)):
        if kind != b"jumb":
            continue
        label = ""
        inner = list(_boxes(jumbf, start, end))
        for k, s, e in inner:
            if k == b"jumd":
                label = _label(jumbf, s, e)
            elif k == b"jumb":
                yield from assertions_unverified(jumbf[s - 8:e], depth + 1)
            elif label.split("__", 1)[0] in LABELS and k in (b"cbor", b"json"):
                raw = jumbf[s:e]
                value = cbor_loads(raw) if k == b"cbor" else json.loads(raw.decode("utf-8"))
                yield label, value.get("entries") if isinstance(value, dict) else None


def cbor_loads(raw: bytes) -> Any:
    """Decode one CBOR item (RFC 8949: the subset C2PA assertions use; tags are dropped)."""
    value, end = _cbor(raw, 0, 0)
    return value


def _cbor(b: bytes, i: int, depth: int) -> tuple[Any, int]:
    if depth > 32:
        raise ValueError("CBOR nested too deeply")
    if i >= len(b):
        raise ValueError("truncated CBOR")
    major, info = b[i] >> 5, b[i] & 0x1F
    i += 1
    if info < 24:
        arg = info
    elif info in (24, 25, 26, 27):
        n = 1 << (info - 24)
        if i + n > len(b):
            raise ValueError("truncated CBOR")
        arg = int.from_bytes(b[i:i + n], "big")
        if major == 7 and info > 24:
            import struct

            return struct.unpack({2: ">e", 4: ">f", 8: ">d"}[n], b[i:i + n])[0], i + n
        i += n
    elif info == 31 and major in (2, 3, 4, 5):
        arg = None
    else:
        raise ValueError(f"unsupported CBOR item (major {major}, info {info})")
    if major == 0:
        return arg, i
    if major == 1:
        return -1 - arg, i
    if major in (2, 3):
        if arg is None:
            chunks = []
            while i < len(b) and b[i] != 0xFF:
                c, i = _cbor(b, i, depth + 1)
                chunks.append(c)
            return (b"".join(chunks) if major == 2 else "".join(chunks)), i + 1
        if i + arg > len(b):
            raise ValueError("truncated CBOR string")
        s = b[i:i + arg]
        return (bytes(s) if major == 2 else s.decode("utf-8", "replace")), i + arg
    if major in (4, 5):
        out: Any = [] if major == 4 else {}
        n = 0
        while (arg is None and i < len(b) and b[i] != 0xFF) or (arg is not None and n < arg):
            k, i = _cbor(b, i, depth + 1)
            if major == 4:
                out.append(k)
            else:
                v, i = _cbor(b, i, depth + 1)
                out[k if isinstance(k, (str, int, float)) else repr(k)] = v
            n += 1
        return out, (i + 1 if arg is None else i)
    if major == 6:
        return _cbor(b, i, depth + 1)
    return {20: False, 21: True, 22: None, 23: None}.get(arg), i
