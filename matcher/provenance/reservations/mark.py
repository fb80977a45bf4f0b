"""A person's side: say "no AI training" in their own photos and on their own site.

:func:`mark_bytes` writes the IPTC Data Mining property (``plus:DataMining``, :mod:`.xmp`) into a JPEG or
PNG **without re-encoding it**: the XMP packet is a metadata segment (JPEG APP1) or chunk (PNG iTXt), so
the pixels, EXIF, ICC profile and every other segment stay byte for byte. An XMP packet already there
keeps its other properties (the Data Mining attribute is set on its first ``rdf:Description``). Each
result is checked before it is written: it must read back with the value and decode to the same pixels.

:func:`mark_photo` writes the marked copy to a new file (never over an existing one) or, only when asked,
replaces the photo itself atomically (temporary file, fsync, rename: a crash leaves the old or the new
file, never half of one). :func:`site_lines` is what a person adds to their site.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

from matcher.atomic import replacing
from matcher.errors import MatcherError
from .xmp import DMI_VOCAB, PLUS_NS, data_mining_xmp, find_packets, read_xmp

__all__ = ["DEFAULT_VALUE", "mark_bytes", "mark_photo", "copy_path", "site_lines"]

DEFAULT_VALUE = "DMI-PROHIBITED-AIMLTRAINING"
XMP_JPEG_ID = b"http://ns.adobe.com/xap/1.0/\x00"
PNG_SIG = b"\x89PNG\r\n\x1a\n"
_DESC = re.compile(rb"<rdf:Description\b")
_OLD = re.compile(rb"\s(?:plus|[A-Za-z_][\w.-]*):DataMining=(\"[^\"]*\"|'[^']*')")


def _merged_packet(old: bytes | None, value: str) -> bytes:
    """An XMP packet saying ``value``: ``old`` with the property set or replaced, or a new packet."""
    if old is None or not _DESC.search(old) or b"<plus:DataMining" in old:
        return data_mining_xmp(value)
    uri = (DMI_VOCAB + value).encode()
    if _OLD.search(old):
        return _OLD.sub(b' plus:DataMining="' + uri + b'"', old, count=1)
    m = _DESC.search(old)
    ns = b"" if PLUS_NS.encode() in old else b' xmlns:plus="' + PLUS_NS.encode() + b'"'
    return old[:m.end()] + ns + b' plus:DataMining="' + uri + b'"' + old[m.end():]


def _jpeg(data: bytes, value: str) -> bytes:
    segs, i, old = [], 2, None
    while True:
        if i + 4 > len(data) or data[i] != 0xFF:
            raise MatcherError("not a well-formed JPEG (its segments could not be walked)")
        marker = data[i + 1]
        if marker in (0xDA, 0xD9):
            break
        n = int.from_bytes(data[i + 2:i + 4], "big")
        seg = data[i:i + 2 + n]
        if marker == 0xE1 and seg[4:4 + len(XMP_JPEG_ID)] == XMP_JPEG_ID:
            old = seg[4 + len(XMP_JPEG_ID):]  # the old packet is replaced by the merged one
        else:
            segs.append(seg)
        i += 2 + n
    packet = _merged_packet(find_packets(old)[0] if old and find_packets(old) else None, value)
    payload = XMP_JPEG_ID + packet
    if len(payload) + 2 > 0xFFFF:
        raise MatcherError("the photo's XMP is too large to rewrite in one JPEG segment")
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    # after APP0 (JFIF) and the EXIF APP1, where readers look for XMP
    at = 0
    while at < len(segs) and segs[at][1] in (0xE0, 0xE1):
        at += 1
    return data[:2] + b"".join(segs[:at]) + app1 + b"".join(segs[at:]) + data[i:]


def _png(data: bytes, value: str) -> bytes:
    chunks, i, old = [], 8, None
    while i + 12 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        chunk = data[i:i + 12 + n]
        if kind == b"iTXt" and chunk[8:8 + 18] == b"XML:com.adobe.xmp\x00":
            old = chunk[8:8 + n]
        else:
            chunks.append((kind, chunk))
        i += 12 + n
        if kind == b"IEND":
            break
    if not chunks or chunks[-1][0] != b"IEND":
        raise MatcherError("not a well-formed PNG (no IEND chunk)")
    packets = find_packets(old) if old else []
    body = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + _merged_packet(packets[0] if packets else None, value)
    itxt = len(body).to_bytes(4, "big") + b"iTXt" + body + zlib.crc32(b"iTXt" + body).to_bytes(4, "big")
    at = next(k for k, (kind, _) in enumerate(chunks) if kind in (b"IDAT", b"IEND"))
    return PNG_SIG + b"".join(c for _, c in chunks[:at]) + itxt + b"".join(c for _, c in chunks[at:])


def mark_bytes(data: bytes, value: str = DEFAULT_VALUE) -> bytes:
    """``data`` (a JPEG or PNG) saying ``plus:DataMining`` = ``value``; raises MatcherError otherwise."""
    if data.startswith(b"\xff\xd8\xff"):
        out = _jpeg(data, value)
    elif data.startswith(PNG_SIG):
        out = _png(data, value)
    else:
        raise MatcherError("only JPEG and PNG photos can be marked without re-encoding them")
    if value not in {r.value for r in read_xmp(out).reservations} and value not in ("DMI-ALLOWED", "DMI-UNSPECIFIED"):
        raise MatcherError("the marked photo does not read back with its Data Mining value")
    return out


def _same_pixels(a: bytes, b: bytes) -> bool:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(a)) as x, Image.open(io.BytesIO(b)) as y:
        return x.size == y.size and x.mode == y.mode and x.tobytes() == y.tobytes()


def copy_path(photo: str | os.PathLike, roots: list[str], out_dir: str | os.PathLike) -> Path:
    """Where the marked copy of ``photo`` goes: its path relative to the folder given on the command line
    that holds it (or its name, for a file given directly), under ``out_dir``."""
    p = Path(photo).resolve()
    for r in roots:
        root = Path(r).resolve()
        if root.is_dir() and root in p.parents:
            return Path(out_dir) / root.name / p.relative_to(root)
    return Path(out_dir) / p.name


def mark_photo(photo: str | os.PathLike, value: str = DEFAULT_VALUE, *, copy_to: str | os.PathLike | None = None,
               in_place: bool = False) -> Path:
    """Write the marked photo: to ``copy_to`` (a new file; an existing one is never overwritten) or, with
    ``in_place``, over ``photo`` atomically. Returns the path written; raises MatcherError per photo."""
    if (copy_to is None) == (not in_place):
        raise ValueError("give copy_to or in_place, not both")
    src = Path(photo)
    try:
        data = src.read_bytes()
    except OSError as e:
        raise MatcherError(f"cannot read {src}: {e.strerror or e}") from None
    out = mark_bytes(data, value)
    if not _same_pixels(data, out):
        raise MatcherError("the marked photo would not decode to the same pixels: not written")
    target = src if in_place else Path(copy_to)
    if not in_place and (target.exists() or target.resolve() == src.resolve()):
        raise MatcherError(f"{target} exists: not overwritten")
    try:
        mode = src.stat().st_mode & 0o7777
        target.parent.mkdir(parents=True, exist_ok=True)
        with replacing(target) as f:
            f.write(out)
        if in_place:
            os.chmod(target, mode)
    except OSError as e:
        raise MatcherError(f"cannot write {target}: {e.strerror or e}") from None
    return target


def site_lines(path: str = "/", policy: str | None = None) -> str:
    """What a person can add to their site so that crawlers and curators read the reservation."""
    from .web import AI_AGENTS

    path = "/" + path.strip().lstrip("/")
    loc = path if path.endswith("*") else path.rstrip("/") + "/*" if path != "/" else "/*"
    rule = {"location": loc, "tdm-reservation": 1}
    if policy:
        rule["tdm-policy"] = policy
    import json

    robots = "\n".join(f"User-agent: {a}" for a in AI_AGENTS) + f"\nDisallow: {path}"
    return "\n".join([
        "# TDMRep: save as /.well-known/tdmrep.json on your site (W3C TDM Reservation Protocol)",
        json.dumps([rule]),
        "",
        "# robots.txt: refuse the crawlers that collect AI training data",
        robots,
        "",
        "# HTTP response headers for your images (in your web server's configuration)",
        "tdm-reservation: 1" + (f"\ntdm-policy: {policy}" if policy else ""),
        "X-Robots-Tag: noai, noimageai",
    ])


def check_mark_dir(out_dir: str | os.PathLike, roots) -> None:
    """Refuse a ``--mark-copies`` folder inside (or equal to) a folder of photos being registered: the next
    run would take the copies for more photos."""
    d = Path(out_dir).resolve()
    for r in roots:
        root = Path(r).resolve()
        if root.is_dir() and (d == root or root in d.parents):
            raise MatcherError(f"--mark-copies {out_dir} is inside {r}, a folder of photos being registered: "
                               "choose a folder outside it")
        if root.is_file() and (d == root or root in d.parents):
            raise MatcherError(f"--mark-copies {out_dir} is a photo being registered")


def mark_photos(photos: list[str], roots, value: str, out_dir: str | None, in_place: bool, out, err) -> int:
    """``matcher optout add --mark-copies/--mark-in-place``: mark each photo, print what was written;
    returns how many could not be marked (each reported)."""
    from rich.markup import escape

    failed = 0
    for f in photos:
        try:
            dst = mark_photo(f, value, copy_to=None if in_place else copy_path(f, list(roots), out_dir),
                             in_place=in_place)
        except MatcherError as e:
            failed += 1
            err.print(f"[red]error:[/] not marked: {escape(f)}: {escape(e.reason)}", highlight=False, soft_wrap=True)
            continue
        out.print(f"marked {escape(str(dst))}  (IPTC Data Mining: {value})")
    return failed
