"""Opening the photos people really have: every format normalises to the same upright 8-bit picture."""

import struct
import zlib

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from matcher.errors import ImageTooLarge, UnreadableImage
from matcher.hashing.hashers import PHash
from matcher.imaging.images import Limits, iter_image_files, load_image

H = PHash(draft=None)


@pytest.fixture(scope="module")
def upright(sample):
    """A real photo, upright, RGB, 8-bit."""
    return load_image(sample / "my-photos" / "IMG_0003.jpg").image.convert("RGB")


def hash_of(src):
    return H.hash_file(src).hash


def test_exif_orientation_is_applied(tmp_path, upright):
    ref = H.hash_image(upright)
    # Each orientation tag with the pixels stored so that the upright view is the photo.
    inverse = {
        2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180], 4: [Image.Transpose.FLIP_TOP_BOTTOM],
        5: [Image.Transpose.TRANSPOSE], 6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE],
        8: [Image.Transpose.ROTATE_270],
    }
    for tag, ops in inverse.items():
        stored = upright
        for op in ops:
            stored = stored.transpose(op)
        exif = Image.Exif()
        exif[0x0112] = tag
        p = tmp_path / f"o{tag}.png"
        stored.save(p, exif=exif.tobytes())
        li = load_image(p)
        assert (li.width, li.height) == upright.size
        assert hash_of(p) == ref, tag
        # the naive way is far off: that is why we normalise
        if tag in (6, 8):
            assert H.hash_image(Image.open(p)) - ref > 10


def test_exif_rotated_jpeg_from_the_sample(sample):
    li = load_image(sample / "my-photos" / "IMG_0001.jpg")
    raw = Image.open(sample / "my-photos" / "IMG_0001.jpg")
    assert raw.size == (1200, 1600) and (li.width, li.height) == (1600, 1200)


def test_16bit_png_hashes_like_8bit(tmp_path, upright):
    gray8 = np.asarray(upright.convert("L"), dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(gray8 * 257).save(p)  # full 16-bit range
    assert Image.open(p).mode.startswith("I")
    assert hash_of(p) == H.hash_image(upright.convert("L"))
    # naive conversion clips everything above 255 to white
    assert H.hash_image(Image.open(p)) != H.hash_image(upright.convert("L"))


def test_cmyk_jpeg_and_tiff(tmp_path, upright):
    ref = H.hash_image(upright)
    for ext in ("jpg", "tif"):
        p = tmp_path / f"cmyk.{ext}"
        upright.convert("CMYK").save(p, quality=95) if ext == "jpg" else upright.convert("CMYK").save(p)
        assert Image.open(p).mode == "CMYK"
        assert hash_of(p) - ref <= 2


def test_heic_from_pillow_heif(tmp_path, upright):
    p = tmp_path / "IMG_1234.HEIC"
    pillow_heif.from_pillow(upright).save(p, quality=90)
    li = load_image(p)
    assert li.format in ("HEIF", "HEIC")
    assert hash_of(p) - H.hash_image(upright) <= 2


@pytest.mark.parametrize("fmt,ext,kw", [
    ("PNG", "png", {}), ("WEBP", "webp", {"quality": 90}), ("AVIF", "avif", {"quality": 90}),
    ("TIFF", "tif", {}), ("BMP", "bmp", {}), ("JPEG", "jpg", {"quality": 90}),
])
def test_common_formats(tmp_path, upright, fmt, ext, kw):
    p = tmp_path / f"x.{ext}"
    upright.save(p, fmt, **kw)
    assert hash_of(p) - H.hash_image(upright) <= 2


def test_palette_alpha_and_gif_first_frame(tmp_path, upright):
    ref = H.hash_image(upright)
    pal = upright.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    pal.save(tmp_path / "p.png")
    assert hash_of(tmp_path / "p.png") - ref <= 4
    # alpha: transparent padding composites onto white, like a viewer shows it
    rgba = upright.convert("RGBA")
    rgba.save(tmp_path / "a.png")
    assert hash_of(tmp_path / "a.png") == ref
    # GIF: the first frame counts
    other = Image.effect_noise(upright.size, 80).convert("RGB")
    pal.save(tmp_path / "anim.gif", save_all=True, append_images=[other.convert("P")], duration=100)
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    assert hash_of(tmp_path / "anim.gif") - ref <= 4


def _png_header_only(w, h):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")


def test_decompression_bombs_and_oversized_files_are_refused(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(50_000, 50_000))
    with pytest.raises(ImageTooLarge, match="decompression bomb"):
        load_image(bomb)
    with pytest.raises(ImageTooLarge, match="MP limit"):
        load_image(_png_header_only(20_000, 10_000), limits=Limits(max_pixels=100_000_000))
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff" + b"\x00" * 2000)
    with pytest.raises(ImageTooLarge, match="byte limit"):
        load_image(big, limits=Limits(max_bytes=1000))


def test_broken_files_give_reasons(tmp_path, sample):
    good = (sample / "my-photos" / "IMG_0003.jpg").read_bytes()
    cases = {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (good[: len(good) // 3], "truncated"),
        "text.jpg": (b"hello, I am not a photo\n" * 10, "not an image"),
        "random.png": (bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)), "not an image"),
        "header-only.png": (b"\x89PNG\r\n\x1a\n", "truncated|not an image|cannot decode"),
    }
    for name, (data, reason) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(UnreadableImage, match=reason):
            load_image(p)
        if data:
            with pytest.raises(UnreadableImage):
                load_image(data)
    with pytest.raises(UnreadableImage, match="cannot read"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(UnreadableImage, match="not a regular file"):
        load_image(tmp_path)


def test_folder_walk_recurses_skips_hidden_and_cuts_symlink_loops(tmp_path, sample):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    src = (sample / "my-photos" / "IMG_0003.jpg").read_bytes()
    for rel in ("1.jpg", "a/2.JPG", "a/b/3.heic", ".hidden/4.jpg", "a/._5.jpg", "a/notes.txt"):
        (tmp_path / rel).write_bytes(src)
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert found == ["1.jpg", "a/2.JPG", "a/b/3.heic"]
