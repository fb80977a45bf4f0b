"""The fast path for the commonest decode: a plain JPEG wanted small and grey (``load_image(draft=("L", n))``).

Pillow's draft decode of a web-size JPEG spends a fifth of its time in Python (the marker walk of
``Image.open``, EXIF parsing, the chunked read loop). Here the header walk is a few byte comparisons
and the pixels come from libjpeg-turbo through simplejpeg, at the very scale and colour conversion
Pillow's draft asks libjpeg for, so the pixels are **identical** (tested against the Pillow path on
every test photo, every EXIF orientation and the hostile corpus).

The fast path never decides that a file is bad. Whenever anything is unusual (not a baseline or
progressive 8-bit JPEG in YCbCr or grey, several EXIF blocks, a multi-picture file, an EXIF block it
cannot read exactly as Pillow would, a size or scan count over the limits, any decoder warning) it
returns None and :func:`matcher.imaging.images.load_image` takes the Pillow path, which reports errors.
"""

from __future__ import annotations

import re
import struct

import numpy as np

try:
    import simplejpeg
except ImportError:  # pragma: no cover - a declared dependency; Pillow then does all the work
    simplejpeg = None

__all__ = ["available", "Header", "read_header", "decode_gray", "upright"]

#: SOF markers of the JPEGs decoded here: baseline, extended sequential and progressive Huffman.
_SOF = (0xC0, 0xC1, 0xC2)
#: Markers without a length field.
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')  # as Pillow's getexif reads XMP


def available() -> bool:
    return simplejpeg is not None


class Header:
    """What the marker walk found: stored size (before orientation), components, EXIF orientation."""

    __slots__ = ("width", "height", "components", "orientation", "multi_scan")

    def __init__(self, width: int, height: int, components: int, orientation: int, multi_scan: bool):
        self.width, self.height, self.components = width, height, components
        self.orientation = orientation
        #: whether libjpeg reads more than one scan: progressive, or the first scan holds only some components.
        #: A baseline file whose first scan interleaves every component is one scan: libjpeg stops with an
        #: error at a second SOS (jdinput.c, JERR_EOI_EXPECTED), so it cannot be a scan bomb.
        self.multi_scan = multi_scan


_ABSENT = -1


def _exif_orientation(seg: bytes) -> int | None:
    """The orientation tag of an EXIF APP1 body (``Exif\\0\\0`` + TIFF), ``_ABSENT`` without one, None when
    this parser cannot be sure to read it as Pillow does (then the caller falls back to Pillow)."""
    tiff = seg[6:]
    if tiff.startswith(b"Exif\0\0"):  # Pillow strips a doubled prefix too
        tiff = tiff[6:]
    if len(tiff) < 8:
        return None
    if tiff[:4] == b"II*\0":
        end = "<"
    elif tiff[:4] == b"MM\0*":
        end = ">"
    else:
        return None
    (ifd,) = struct.unpack_from(end + "L", tiff, 4)
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(end + "H", tiff, ifd)
    if ifd + 2 + 12 * count + 4 > len(tiff):  # Pillow raises on a short table: orientation 1 there
        return None
    found = _ABSENT
    for k in range(count):
        tag, typ, n = struct.unpack_from(end + "HHL", tiff, ifd + 2 + 12 * k)
        if tag != 0x0112:
            continue
        if found != _ABSENT or n != 1 or typ not in (3, 4):
            return None
        found = struct.unpack_from(end + ("H" if typ == 3 else "L"), tiff, ifd + 2 + 12 * k + 8)[0]
    return found


def read_header(data: bytes) -> Header | None:
    """Walk the markers up to the first scan. None unless the file is one this path decodes exactly."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos = 2
    exif: bytes | None = None
    xmp: bytes | None = None
    size = None
    while True:
        if pos + 4 > n or data[pos] != 0xFF:
            return None  # junk between segments, or the file ends first: Pillow decides
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9):
            return None
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2 or pos + 2 + length > n:
            return None
        seg = data[pos + 4 : pos + 2 + length]
        if marker == 0xDA:  # start of scan: the header is over
            if not seg:
                return None
            scan_components = seg[0]
            break
        if marker == 0xE1:
            if seg.startswith(b"Exif\0\0"):
                if exif is not None:
                    return None  # Pillow joins several EXIF blocks
                exif = seg
            elif seg.startswith(b"http://ns.adobe.com/xap/1.0/\0"):
                xmp = seg.split(b"\0", 1)[1]
        elif marker == 0xE2 and seg.startswith(b"MPF\0"):
            return None  # a multi-picture file (Pillow: MPO)
        elif marker in _SOF:
            if size is not None or len(seg) < 6 or seg[0] != 8:
                return None
            h, w = struct.unpack_from(">HH", seg, 1)
            size = (w, h, seg[5], marker == 0xC2)
        elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # lossless, hierarchical, arithmetic: rare; Pillow decides
        pos += 2 + length
    if size is None:
        return None
    w, h, comps, progressive = size
    if w <= 0 or h <= 0 or comps not in (1, 3):
        return None
    orientation = _ABSENT
    if exif is not None:
        o = _exif_orientation(exif)
        if o is None:
            return None
        orientation = o
    if orientation == _ABSENT and xmp is not None:  # Pillow reads XMP only without an EXIF orientation
        m = _XMP_ORIENTATION.search(xmp)
        orientation = int(m[2]) if m else _ABSENT
    if not 1 <= orientation <= 8:  # as matcher.imaging.images._orientation: anything else is upright
        orientation = 1
    return Header(w, h, comps, orientation, progressive or scan_components < comps)


def decode_gray(data: bytes, header: Header, n: int) -> np.ndarray | None:
    """Luminance decoded at the scale Pillow's ``draft("L", (n, n))`` picks (1/8, 1/4, 1/2 or 1 while both
    sides stay >= n), as a (rows, cols) uint8 array in stored orientation; None on any decoder complaint."""
    if simplejpeg is None:
        return None
    w, h = header.width, header.height
    if min(w, h) < 16:
        return None  # at tiny sizes libjpeg's 3/8, 5/8... scales could be picked instead of Pillow's
    scale = min(w // n, h // n)
    s = next((s for s in (8, 4, 2) if scale >= s), 1)
    ow, oh = (w + s - 1) // s, (h + s - 1) // s
    try:
        cs = simplejpeg.decode_jpeg_header(data)[2]
        if cs not in ("Gray", "YCbCr"):
            return None
        out = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_width=ow, min_height=oh, strict=True)
    except ValueError:
        return None
    if out.ndim == 3:
        out = out[:, :, 0]
    if out.shape != (oh, ow):
        return None
    return out


def upright(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) as Pillow's ``Transpose`` methods do in matcher.imaging.images.normalise."""
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1]
    elif orientation == 5:
        a = a.T
    elif orientation == 6:
        a = np.rot90(a, -1)
    elif orientation == 7:
        a = a.T[::-1, ::-1]
    elif orientation == 8:
        a = np.rot90(a, 1)
    return np.ascontiguousarray(a)
