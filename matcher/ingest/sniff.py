"""What a downloaded body is, by its first bytes: an image format matcher can open, or not an image (an HTML
error page served as photo.jpg)."""

from __future__ import annotations



#: :func:`sniff_image_format` looks at no more than this many leading bytes.
_SNIFF_BYTES = 256


_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


_AVIF_BRANDS = {b"avif", b"avis"}


_HEIF_MAJOR_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}


_HEIF_BRANDS = _HEIF_MAJOR_BRANDS | {b"mif1", b"msf1"}


def _isobmff_brands(head: bytes) -> list[bytes] | None:
    """Major then compatible brands of a leading ISO-BMFF ``ftyp`` box, or None if there is none."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[0:4], "big")
    if size < 16:
        # 0 ("to end of file") and 1 (64-bit size) are legal but never used for ftyp;
        # anything else under 16 cannot hold a major brand and minor version.
        size = len(head)
    end = min(size, len(head))
    brands = [head[8:12]]
    brands.extend(head[i : i + 4] for i in range(16, end - 3, 4))
    return brands


def sniff_image_format(data: bytes) -> str | None:
    """Name the image format of ``data`` from its magic bytes, or return None.

    Recognises ``'jpeg'``, ``'png'``, ``'gif'``, ``'webp'``, ``'bmp'``, ``'tiff'``,
    ``'heif'``, ``'avif'`` and ``'ico'``. Only the first 256 bytes are examined,
    so a prefix of a body gives the same answer as the whole body once it is that
    long. This is a cheap gate against HTML error pages and the like, not a
    guarantee that the image decodes.
    """
    head = bytes(data[:_SNIFF_BYTES])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if (
        head.startswith(b"BM")
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES
    ):
        return "bmp"
    if head.startswith(b"\x00\x00\x01\x00") and len(head) >= 6 and head[4:6] != b"\x00\x00":
        return "ico"
    brands = _isobmff_brands(head)
    if brands:
        major = brands[0]
        if major in _AVIF_BRANDS:
            return "avif"
        if major in _HEIF_MAJOR_BRANDS:
            return "heif"
        if _AVIF_BRANDS.intersection(brands):
            return "avif"
        if _HEIF_BRANDS.intersection(brands):
            return "heif"
    return None
