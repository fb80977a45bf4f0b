"""Open and normalise the photos people really have; walk folders of them.

Everything that decodes pixels goes through :func:`load_image`, which:

* refuses files over ``max_bytes`` and images over ``max_pixels`` *before* decoding
  (decompression bombs) with :class:`~matcher.errors.ImageTooLarge`;
* turns every decoder failure (empty, truncated, corrupt, unknown format) into
  :class:`~matcher.errors.UnreadableImage` with a short reason;
* optionally uses JPEG draft decoding (DCT-domain downscale) when the caller only
  needs a small image;
* applies the EXIF orientation and converts any mode (16-bit, float, CMYK, palette,
  alpha, LAB...) to 8-bit ``L`` or ``RGB`` so that hashes depend on what the photo
  looks like, not on how it was stored.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from matcher.imaging import jpeg
from matcher.errors import ImageTooLarge, UnreadableImage

try:  # HEIC/HEIF from iPhones; AVIF is built into Pillow >= 11.3
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORT = True
except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
    HEIF_SUPPORT = False

__all__ = [
    "Limits",
    "DEFAULT_LIMITS",
    "LoadedImage",
    "load_image",
    "normalise",
    "iter_image_files",
    "IMAGE_EXTENSIONS",
    "HEIF_SUPPORT",
    "shown_path",
]

ImageFile.LOAD_TRUNCATED_IMAGES = False
# We enforce our own pixel limit before decoding; Pillow's own check stays as a backstop.
Image.MAX_IMAGE_PIXELS = 250_000_000

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .gif .webp .avif .avifs .heic .heif .hif .tif .tiff .bmp .dib".split()
)

# Exceptions Pillow and its plugins raise on hostile or broken input. Anything else is a bug
# and should surface, not be swallowed.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    RuntimeError,
    Image.DecompressionBombError,
)

Source = Union[str, os.PathLike, bytes]


@dataclass(frozen=True)
class Limits:
    """What :func:`load_image` refuses before decoding."""

    max_pixels: int = 100_000_000  # 100 MP: every phone and most cameras fit; bombs do not
    max_bytes: int = 200 * 1024 * 1024
    # JPEG scans: encoders write 1 (baseline) to ~12 (progressive); every scan costs the decoder a pass over
    # the whole image, so a few KB of repeated scans would hold a worker for hours (libjpeg-turbo's LJT-01-003)
    max_scans: int = 100


DEFAULT_LIMITS = Limits()


@dataclass
class LoadedImage:
    """A normalised 8-bit image plus facts about the original file."""

    image: Image.Image  # mode "L" or "RGB", upright
    width: int  # of the original, upright
    height: int
    format: str | None


def _describe(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    low = msg.lower()
    # "cannot identify image file <name>" first: the file's name may say "truncated"
    if isinstance(exc, UnidentifiedImageError) or "cannot identify" in low:
        return "not an image, or a format we cannot read"
    if "truncated" in low or isinstance(exc, EOFError):
        return f"truncated or incomplete image ({msg})"
    return f"cannot decode image ({msg})"


def _open(src: Source, limits: Limits) -> tuple[Image.Image, io.IOBase]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise UnreadableImage("empty (0 bytes)")
        if len(data) > limits.max_bytes:
            raise ImageTooLarge(f"{len(data):,} bytes, more than the {limits.max_bytes:,}-byte limit")
        fp = io.BytesIO(data)
    else:
        path = os.fspath(src)
        try:
            st = os.stat(path)
        except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
            raise UnreadableImage(f"cannot read file ({getattr(e, 'strerror', None) or e})") from None
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                try:
                    os.scandir(path).close()
                except OSError as e:
                    raise UnreadableImage(f"not a regular file: a folder that cannot be listed "
                                          f"({e.strerror or e})") from None
                raise UnreadableImage("not a regular file: a folder")
            raise UnreadableImage("not a regular file")
        if st.st_size == 0:
            raise UnreadableImage("empty (0 bytes)")
        if st.st_size > limits.max_bytes:
            raise ImageTooLarge(f"{st.st_size:,} bytes, more than the {limits.max_bytes:,}-byte limit")
        try:
            fp = open(path, "rb")
        except OSError as e:
            raise UnreadableImage(f"cannot read file ({e.strerror or e})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb warnings (our own limit follows), "Corrupt EXIF data"
            im = Image.open(fp)
    except Image.DecompressionBombError as e:
        fp.close()
        raise ImageTooLarge(f"decompression bomb refused ({e})") from None
    except _DECODE_ERRORS as e:
        fp.close()
        raise UnreadableImage(_describe(e)) from None
    w, h = im.size
    if w <= 0 or h <= 0:
        fp.close()
        raise UnreadableImage(f"image has no pixels ({w}x{h})")
    if w * h > limits.max_pixels:
        fp.close()
        raise ImageTooLarge(
            f"{w}x{h} = {w * h / 1e6:.0f} MP, more than the {limits.max_pixels / 1e6:.0f} MP limit "
            "(decompression bomb refused)"
        )
    if im.format in ("JPEG", "MPO"):
        scans = _jpeg_scans(fp, limits.max_scans)
        if scans > limits.max_scans:
            fp.close()
            raise ImageTooLarge(f"JPEG of more than {limits.max_scans} scans (decompression bomb refused)")
    return im, fp


def _jpeg_scans(fp, limit: int) -> int:
    """Start-of-scan markers in a JPEG file, counted up to ``limit + 1``.

    Entropy-coded data never holds FF DA (an FF there is followed by 00 or a restart marker), so
    every scan is counted; metadata may add a few false ones (an EXIF thumbnail's scan), never hide one.
    """
    pos = fp.tell()
    fp.seek(0)
    n, tail = 0, b""
    try:
        while n <= limit:
            block = fp.read(1 << 20)
            if not block:
                break
            n += (tail + block).count(b"\xff\xda")
            tail = block[-1:]
    finally:
        fp.seek(pos)
    return n


def _orientation(im: Image.Image) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data": the orientation is then 1
            value = im.getexif().get(0x0112, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_8bit(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 'L' or 'RGB' (alpha composited onto white)."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "1":
        return im.convert("L")
    # Wide modes are converted in place, in at most 4 bytes a pixel: a 100 MP float image took 2.7 GB
    # through float64 temporaries (benchmarks/bench_hostile.py).
    if mode.startswith("I;16"):
        a = np.array(im, dtype=np.int32)  # v / 257 rounded, exactly: 257 is odd, so there are no ties
        a += 128
        a //= 257
        np.clip(a, 0, 255, out=a)
        return Image.fromarray(a.astype(np.uint8), "L")
    if mode in ("I", "F"):
        a = np.array(im, dtype=np.float32)
        if mode == "I":
            top = float(a.max()) if a.size else 0.0
            if top > 255:
                a *= np.float32(255.0 / (65535.0 if top <= 65535 else top))
        else:  # float images: [0, 1] or [0, 255]
            top = float(np.nanmax(a)) if a.size else 0.0
            if top <= 1.0:
                a *= np.float32(255.0)
        np.nan_to_num(a, copy=False, nan=0.0)
        np.rint(a, out=a)
        np.clip(a, 0, 255, out=a)
        return Image.fromarray(a.astype(np.uint8), "L")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("PA", "LA", "La", "RGBa", "RGBA") or mode.endswith("A"):
        rgba = im if mode == "RGBA" else im.convert("RGBA")
        out = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(out, rgba)  # the white layer is freed before the RGB copy is made
        return out.convert("RGB")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX ...


def normalise(im: Image.Image) -> Image.Image:
    """EXIF-upright, 8-bit 'L' or 'RGB' copy of an opened image (loads it)."""
    orientation = _orientation(im)
    out = _to_8bit(im)
    if orientation != 1:
        method = {
            2: Image.Transpose.FLIP_LEFT_RIGHT,
            3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270,
            7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90,
        }[orientation]
        out = out.transpose(method)
    return out


def _read_jpeg(src: Source, limits: Limits) -> bytes | None:
    """The bytes of ``src`` if it is a regular file (or bytes) within the byte limit that starts like a JPEG."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        return data if data[:2] == b"\xff\xd8" and len(data) <= limits.max_bytes else None
    try:
        # O_NONBLOCK: a FIFO must not hang us (the Pillow path then says what it is)
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError, TypeError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not 0 < st.st_size <= limits.max_bytes:
            return None
        if os.pread(fd, 2, 0) != b"\xff\xd8":
            return None  # not a JPEG: not read any further
        chunks, left = [], st.st_size  # a file growing meanwhile is read as it was
        while left > 0:
            b = os.read(fd, left)
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        return b"".join(chunks)  # read_header checks what it holds
    except OSError:
        return None
    finally:
        os.close(fd)


def _load_jpeg_gray(src: Source, limits: Limits, n: int) -> LoadedImage | None:
    """:func:`load_image` ``(src, draft=("L", n))`` through :mod:`matcher.imaging.jpeg`, or None where that path
    does not apply (then the Pillow path decodes, or reports the error). Same pixels either way."""
    if not jpeg.available():
        return None
    data = _read_jpeg(src, limits)
    if data is None:
        return None
    hdr = jpeg.read_header(data)
    if hdr is None or hdr.width * hdr.height > limits.max_pixels:
        return None
    if hdr.multi_scan and data.count(b"\xff\xda") > limits.max_scans:  # as _jpeg_scans
        return None
    try:
        px = jpeg.decode_gray(data, hdr, n)
    except MemoryError:
        return None
    if px is None:
        return None
    w, h = (hdr.height, hdr.width) if hdr.orientation in (5, 6, 7, 8) else (hdr.width, hdr.height)
    return LoadedImage(Image.fromarray(jpeg.upright(px, hdr.orientation), "L"), w, h, "JPEG")


def load_image(
    src: Source,
    *,
    limits: Limits = DEFAULT_LIMITS,
    draft: tuple[str, int] | None = None,
    fast: bool = True,
) -> LoadedImage:
    """Decode ``src`` (a path or the file's bytes) into an upright 8-bit image.

    ``draft=("L", n)`` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 in the DCT
    domain while keeping both sides >= ``n`` pixels, and decode only luminance. It is
    ~4x faster on 12 MP photos; hashes differ from a full decode by a few bits at most.
    Plain JPEGs wanted that way go through :mod:`matcher.imaging.jpeg` (identical pixels, less
    Python) unless ``fast`` is False.
    """
    if fast and draft is not None and draft[0] == "L":
        got = _load_jpeg_gray(src, limits, draft[1])
        if got is not None:
            return got
    im, fp = _open(src, limits)
    try:
        fmt = im.format
        w, h = im.size
        if _orientation(im) in (5, 6, 7, 8):
            w, h = h, w
        try:
            if getattr(im, "is_animated", False):
                im.seek(0)
            if draft is not None and fmt == "JPEG":
                mode, n = draft
                im.draft(mode, (n, n))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im.load()
                out = normalise(im)
        except MemoryError:
            raise ImageTooLarge("not enough memory to decode this image") from None
        except _DECODE_ERRORS as e:
            raise UnreadableImage(_describe(e)) from None
        return LoadedImage(out, w, h, fmt)
    finally:
        fp.close()


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as text that can be stored and printed: bytes of a file name that are not UTF-8 (which
    Python keeps as lone surrogates) are shown as ``\\xNN``. Other paths are returned unchanged."""
    s = os.fspath(path)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return os.fsencode(s).decode("utf-8", "backslashreplace")


def iter_image_files(root: str | os.PathLike, *, all_files: bool = False) -> Iterator[Path]:
    """Image files under ``root`` (recursive, sorted, hidden names skipped).

    Symlinked folders are followed once each (loops are cut). Files are chosen by
    extension unless ``all_files``; a lone file path is yielded as is. A sub-folder that
    cannot be listed is yielded itself, so that :func:`load_image` reports why.
    """
    root = Path(root)
    if not root.is_dir():
        yield root
        return
    seen: set[tuple[int, int]] = set()

    def walk(d: Path) -> Iterator[Path]:
        # a sub-folder that cannot be listed (no permission, a path longer than PATH_MAX) is yielded
        # itself, so that it is reported (load_image says why) rather than silently missing
        try:
            st = d.stat()
        except OSError:
            if d != root:
                yield d
            return
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            return
        seen.add(ident)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            if d != root:
                yield d
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                yield from walk(p)
            elif all_files or p.suffix.lower() in IMAGE_EXTENSIONS:
                yield p

    yield from walk(root)
