"""matcher.imaging.jpeg, the fast path of load_image(draft=("L", n)): the Pillow path's pixels exactly, or it steps aside."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from matcher.imaging import jpeg
from matcher.errors import ImageTooLarge, UnreadableImage
from matcher.imaging.images import DEFAULT_LIMITS, Limits, _load_jpeg_gray, iter_image_files, load_image

pytestmark = pytest.mark.skipif(not jpeg.available(), reason="simplejpeg is a declared dependency")


def same_as_pillow(src, n: int, limits: Limits = DEFAULT_LIMITS) -> bool:
    """True when the fast path applied and gave what the Pillow path gives; False when it stepped aside."""
    fast = _load_jpeg_gray(src, limits, n)
    if fast is None:
        return False
    slow = load_image(src, limits=limits, draft=("L", n), fast=False)
    assert (fast.width, fast.height, fast.format, fast.image.mode) == (slow.width, slow.height, slow.format,
                                                                       slow.image.mode)
    assert fast.image.size == slow.image.size
    assert np.array_equal(np.asarray(fast.image), np.asarray(slow.image))
    return True


@pytest.fixture(scope="module")
def photo(sample) -> Image.Image:
    with Image.open(sample / "my-photos" / "IMG_0003.jpg") as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    im.thumbnail((400, 400))
    return im


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", **kw)
    return out.getvalue()


def tiff_orientation(value: int, *, big_endian: bool, typ: int = 3) -> bytes:
    """An EXIF block holding one orientation tag, in either byte order."""
    e = ">" if big_endian else "<"
    head = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(e + "L", 8)
    val = struct.pack(e + "H", value) + b"\0\0" if typ == 3 else struct.pack(e + "L", value)
    return b"Exif\0\0" + head + struct.pack(e + "H", 1) + struct.pack(e + "HHL", 0x0112, typ, 1) + val + b"\0" * 4


def with_segment(data: bytes, marker: int, body: bytes) -> bytes:
    """``data`` with an APPn segment inserted right after SOI."""
    return data[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body + data[2:]


def test_every_jpeg_of_the_sample_and_test_data_decodes_identically(sample):
    used = 0
    for p in list(iter_image_files(sample)) + list(iter_image_files(Path(__file__).parent / "data")):
        if p.suffix.lower() in (".jpg", ".jpeg"):
            for n in (32, 256, 4096):
                used += same_as_pillow(p, n)
    assert used >= 60  # it really is the path these photos take


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("value", range(0, 10))
def test_every_exif_orientation_as_pillow_reads_it(photo, value, big_endian):
    data = jpeg_bytes(photo, exif=tiff_orientation(value, big_endian=big_endian))
    assert same_as_pillow(data, 32) and same_as_pillow(data, 256)
    li = load_image(data, draft=("L", 256))
    assert (li.width, li.height) == (photo.size[::-1] if value in (5, 6, 7, 8) else photo.size)


def test_a_long_orientation_tag_and_one_from_xmp(photo):
    assert same_as_pillow(jpeg_bytes(photo, exif=tiff_orientation(6, big_endian=True, typ=4)), 256)
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    data = jpeg_bytes(photo, xmp=xmp)
    assert same_as_pillow(data, 256)
    assert load_image(data, draft=("L", 256)).width == photo.height  # the XMP orientation was applied
    # an EXIF orientation wins over XMP's, as in Pillow
    data = jpeg_bytes(photo, exif=tiff_orientation(1, big_endian=False), xmp=xmp)
    assert same_as_pillow(data, 256) and load_image(data, draft=("L", 256)).width == photo.width


def test_progressive_grey_and_odd_sizes(photo):
    assert same_as_pillow(jpeg_bytes(photo, progressive=True, quality=70), 256)
    assert same_as_pillow(jpeg_bytes(photo.convert("L")), 32)
    for size in ((17, 300), (301, 19), (257, 255), (64, 64)):
        assert same_as_pillow(jpeg_bytes(photo.resize(size)), 32), size
        assert same_as_pillow(jpeg_bytes(photo.resize(size)), 256), size


def test_unusual_files_are_left_to_pillow(photo, tmp_path):
    cmyk = jpeg_bytes(photo.convert("CMYK"))
    assert _load_jpeg_gray(cmyk, DEFAULT_LIMITS, 256) is None
    assert load_image(cmyk, draft=("L", 256)).image.size == photo.size
    two_exif = with_segment(jpeg_bytes(photo, exif=tiff_orientation(6, big_endian=False)), 0xE1,
                            tiff_orientation(3, big_endian=False))
    assert _load_jpeg_gray(two_exif, DEFAULT_LIMITS, 256) is None
    load_image(two_exif, draft=("L", 256))  # Pillow's reading of them stands
    mpo = io.BytesIO()
    photo.save(mpo, "MPO", save_all=True, append_images=[photo.rotate(90)])
    assert _load_jpeg_gray(mpo.getvalue(), DEFAULT_LIMITS, 256) is None
    assert load_image(mpo.getvalue(), draft=("L", 256)).format == "MPO"
    broken_exif = with_segment(jpeg_bytes(photo), 0xE1, b"Exif\0\0MM\0*\0\0\0\x08\0\x09")  # a short table
    assert _load_jpeg_gray(broken_exif, DEFAULT_LIMITS, 256) is None
    assert load_image(broken_exif, draft=("L", 256)).width == photo.width  # Pillow: upright
    png = io.BytesIO()
    photo.save(png, "PNG")
    assert _load_jpeg_gray(png.getvalue(), DEFAULT_LIMITS, 256) is None


def test_errors_still_come_from_the_pillow_path(photo, tmp_path):
    data = jpeg_bytes(photo)
    assert _load_jpeg_gray(data[: len(data) // 2], DEFAULT_LIMITS, 256) is None
    with pytest.raises(UnreadableImage, match="truncated"):
        load_image(data[: len(data) // 2], draft=("L", 256))
    small = Limits(max_pixels=10_000)
    assert _load_jpeg_gray(data, small, 256) is None
    with pytest.raises(ImageTooLarge, match="MP limit"):
        load_image(data, limits=small, draft=("L", 256))
    few_scans = Limits(max_scans=3)
    prog = jpeg_bytes(photo, progressive=True)
    assert _load_jpeg_gray(prog, few_scans, 256) is None
    with pytest.raises(ImageTooLarge, match="scans"):
        load_image(prog, limits=few_scans, draft=("L", 256))
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert _load_jpeg_gray(fifo, DEFAULT_LIMITS, 256) is None  # and it did not block
    with pytest.raises(UnreadableImage, match="not a regular file"):
        load_image(fifo, draft=("L", 256))


def test_a_baseline_jpeg_with_its_scan_repeated_is_no_bomb(photo):
    """One interleaved scan: libjpeg refuses a second SOS, so the fast path need not count them."""
    data = jpeg_bytes(photo)
    sos = data.index(b"\xff\xda")
    bomb = data[:-2] + data[sos:-2] * 300 + b"\xff\xd9"
    hdr = jpeg.read_header(bomb)
    assert hdr is not None and not hdr.multi_scan
    assert jpeg.decode_gray(bomb, hdr, 256) is None  # libjpeg stops at the second scan
    assert _load_jpeg_gray(bomb, DEFAULT_LIMITS, 256) is None
    with pytest.raises(ImageTooLarge, match="scans"):
        load_image(bomb, draft=("L", 256))
    assert jpeg.read_header(jpeg_bytes(photo, progressive=True)).multi_scan
