"""Seeded, parameterised edits that turn a photo into the kind of copy a dataset holds.

Used by ``matcher bench`` and the tests to plant copies and measure recall. Each
transform takes an upright RGB image and a numpy Generator and returns the copy as
encoded bytes (JPEG q85 unless the transform is about the encoding). Every random
choice comes from the generator, so a seed reproduces the same copies.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = ["Transform", "TRANSFORMS", "FAMILIES", "TARGETS", "ALPHA_QUERY", "encode", "apply", "face_crop", "with_alpha"]

Rng = np.random.Generator


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    b = io.BytesIO()
    if fmt == "JPEG":
        img = img.convert("RGB") if img.mode not in ("RGB", "L") else img
        kw.setdefault("quality", 85)
    img.save(b, fmt, **kw)
    return b.getvalue()


def _fit(img: Image.Image, side: int) -> Image.Image:
    im = img.copy()
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return im


def _crop_frac(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


_WORDS = ("sunset over the lake", "best day ever", "#travel #nofilter", "photo of the week", "summer 2019",
          "found this online", "when you see it", "credit: unknown", "tag a friend", "repost")


# --- benign ---------------------------------------------------------------------------
def resize_256(img, rng):
    return encode(_fit(img, 256))


def jpeg_q25(img, rng):
    return encode(img, quality=25)


def webp_q50(img, rng):
    return encode(img, "WEBP", quality=50)


def grayscale(img, rng):
    return encode(img.convert("L"))


def brightness(img, rng):
    return encode(ImageEnhance.Brightness(img).enhance(float(rng.choice([0.75, 1.25]))))


def contrast(img, rng):
    return encode(ImageEnhance.Contrast(img).enhance(float(rng.choice([0.7, 1.3]))))


def saturation(img, rng):
    return encode(ImageEnhance.Color(img).enhance(float(rng.choice([0.5, 1.6]))))


def blur(img, rng):
    return encode(img.filter(ImageFilter.GaussianBlur(max(img.size) * 0.0015)))


def noise(img, rng):
    a = np.asarray(img, dtype=np.float32)
    return encode(Image.fromarray(np.clip(a + rng.normal(0, 8, a.shape), 0, 255).astype(np.uint8)))


# --- dihedral ---------------------------------------------------------------------------
def mirror(img, rng):
    return encode(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))


def rot90(img, rng):
    return encode(img.transpose(Image.Transpose.ROTATE_90))


def rot180(img, rng):
    return encode(img.transpose(Image.Transpose.ROTATE_180))


def rot270(img, rng):
    return encode(img.transpose(Image.Transpose.ROTATE_270))


# --- geometric ------------------------------------------------------------------------
def rotate_small(img, rng):
    """Rotated 2-5 degrees either way, cropped to the largest upright rectangle inside (no corners)."""
    angle = float(rng.uniform(2, 5) * rng.choice([-1, 1]))
    w, h = img.size
    rot = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    a = np.deg2rad(abs(angle))
    # largest axis-aligned rectangle of the same aspect inside the rotated frame
    scale = 1 / (np.cos(a) + np.sin(a) * max(w / h, h / w))
    cw, ch = w * scale, h * scale
    return encode(rot.crop((round((w - cw) / 2), round((h - ch) / 2), round((w + cw) / 2), round((h + ch) / 2))))


def rotate_small_fill(img, rng):
    """Rotated 2-5 degrees either way, canvas kept, corners filled with black or white."""
    angle = float(rng.uniform(2, 5) * rng.choice([-1, 1]))
    fill = (0, 0, 0) if rng.random() < 0.5 else (255, 255, 255)
    return encode(img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=fill))


def stretch(img, rng):
    """One direction scaled by 1.2-1.4 (or by its inverse)."""
    f = float(rng.uniform(1.2, 1.4))
    w, h = img.size
    size = (round(w * f), h) if rng.random() < 0.5 else (w, round(h * f))
    return encode(img.resize(size, Image.Resampling.LANCZOS))


# --- crop and pad ---------------------------------------------------------------------
def crop_center_10(img, rng):
    return encode(_crop_frac(img, 0.05, 0.05, 0.05, 0.05))


def crop_center_20(img, rng):
    return encode(_crop_frac(img, 0.10, 0.10, 0.10, 0.10))


def crop_side_15(img, rng):
    side = int(rng.integers(4))
    f = [0.0, 0.0, 0.0, 0.0]
    f[side] = 0.15
    return encode(_crop_frac(img, *f))


def pad_20(img, rng):
    """20% padding in total on each axis, a solid colour (black, white or grey)."""
    w, h = img.size
    colour = tuple(int(c) for c in rng.choice([[0, 0, 0], [255, 255, 255], [128, 128, 128]]))
    return encode(ImageOps.expand(img, border=(round(w * 0.1), round(h * 0.1)), fill=colour))


def letterbox(img, rng):
    """Fitted into a 16:9 frame (portrait photos) or a square frame (landscape), black bars."""
    w, h = img.size
    tw, th = (round(h * 16 / 9), h) if h >= w else (w, w)
    canvas = Image.new("RGB", (tw, th), (0, 0, 0))
    canvas.paste(img, ((tw - w) // 2, (th - h) // 2))
    return encode(canvas)


def crop_resize_recompress(img, rng):
    """10-15% off two random sides, resized to 400 px, JPEG q50."""
    f = [0.0, 0.0, 0.0, 0.0]
    for side in rng.choice(4, 2, replace=False):
        f[int(side)] = float(rng.uniform(0.05, 0.075))
    return encode(_fit(_crop_frac(img, *f), 400), quality=50)


# --- overlays ---------------------------------------------------------------------------
def caption(img, rng):
    """A caption bar (12-18% of the height) added above or below, with text."""
    w, h = img.size
    bar = round(h * float(rng.uniform(0.12, 0.18)))
    dark = rng.random() < 0.5
    bg, fg = ((0, 0, 0), (255, 255, 255)) if dark else ((255, 255, 255), (0, 0, 0))
    canvas = Image.new("RGB", (w, h + bar), bg)
    top = rng.random() < 0.5
    canvas.paste(img, (0, bar if top else 0))
    d = ImageDraw.Draw(canvas)
    d.text((round(w * 0.04), (0 if top else h) + bar * 0.25), str(rng.choice(_WORDS)), fill=fg, font=_font(round(bar * 0.5)))
    return encode(canvas)


def watermark(img, rng):
    """A semi-transparent text watermark across the middle and a logo-like mark in a corner."""
    w, h = img.size
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    size = round(min(w, h) * 0.09)
    text = str(rng.choice(["© stockphotos", "SAMPLE", "example.com", "preview only"]))
    d.text((w * 0.15, h * 0.45), text, fill=(255, 255, 255, 110), font=_font(size), stroke_width=2,
           stroke_fill=(0, 0, 0, 90))
    r = round(min(w, h) * 0.06)
    d.ellipse((w - 3 * r, h - 3 * r, w - r, h - r), fill=(255, 255, 255, 140))
    return encode(Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB"))


def screenshot(img, rng):
    """The photo shown inside a desktop/web screenshot: window chrome, sidebar, text, and the photo at 55-70% width."""
    W, H = 1280, 800
    bg = tuple(int(c) for c in rng.choice([[245, 245, 245], [32, 33, 36], [255, 255, 255]]))
    fg = (20, 20, 20) if sum(bg) > 300 else (230, 230, 230)
    canvas = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(canvas)
    d.rectangle((0, 0, W, 36), fill=(60, 64, 67))  # title/tab bar
    d.rectangle((0, 36, W, 72), fill=(222, 225, 230) if sum(bg) > 300 else (53, 54, 58))  # address bar
    d.text((90, 44), "https://social.example/photo/8823412311", fill=fg, font=_font(16))
    side = int(rng.integers(200, 280))
    for i in range(12):  # sidebar text lines
        d.text((16, 100 + i * 28), str(rng.choice(_WORDS)), fill=fg, font=_font(15))
    frac = float(rng.uniform(0.55, 0.70))
    pw = round((W - side) * frac)
    ph = round(pw * img.size[1] / img.size[0])
    if ph > H - 140:
        ph = H - 140
        pw = round(ph * img.size[0] / img.size[1])
    photo = img.resize((pw, ph), Image.Resampling.LANCZOS)
    x = side + (W - side - pw) // 2
    canvas.paste(photo, (x, 100))
    d.text((x, 100 + ph + 10), "42 likes  ·  " + str(rng.choice(_WORDS)), fill=fg, font=_font(16))
    return encode(canvas, "PNG")


# --- second round (issue 17): corner crops, filled frames, rotations, perspective, transparency, compound ----
def crop_corner(img, rng):
    """One corner kept: a horizontal and a vertical side cut by different amounts (8-30% each, >= 5 points apart)."""
    a = float(rng.uniform(0.08, 0.30))
    b = float(rng.uniform(0.08, 0.30))
    if abs(a - b) < 0.05:
        b = a + 0.05 if a < 0.25 else a - 0.05
    f = [0.0, 0.0, 0.0, 0.0]
    f[int(rng.choice([0, 2]))] = a  # left or right
    f[int(rng.choice([1, 3]))] = b  # top or bottom
    return encode(_crop_frac(img, *f))


def crop_corner_resize(img, rng):
    """A corner crop (15-35% and 5-20% off two adjacent sides, either way round), resized to 360-520 px, JPEG q60."""
    f = [0.0, 0.0, 0.0, 0.0]
    big, small = float(rng.uniform(0.15, 0.35)), float(rng.uniform(0.05, 0.20))
    hs, vs = int(rng.choice([0, 2])), int(rng.choice([1, 3]))
    if rng.random() < 0.5:
        f[hs], f[vs] = big, small
    else:
        f[hs], f[vs] = small, big
    return encode(_fit(_crop_frac(img, *f), int(rng.integers(360, 521))), quality=60)


def _frame_size(w: int, h: int, aspect: float) -> tuple[int, int]:
    """The smallest canvas of ``aspect`` (w/h) that holds a w x h photo."""
    return (max(w, round(h * aspect)), h) if w / h < aspect else (w, max(h, round(w / aspect)))


def _fill_frame(img: Image.Image, rng: Rng, aspect: float, mode: str) -> Image.Image:
    """The photo (scaled to 80-100% of the frame's fitting size) centred on a frame of ``aspect`` whose
    background is the photo itself stretched and blurred (``mode="blur"``) or mirrored at the edges (``"mirror"``)."""
    w, h = img.size
    cw, ch = _frame_size(w, h, aspect)
    if (cw, ch) == (w, h):  # already that shape: the frame adds a margin all round
        cw, ch = round(w * 1.25), round(w * 1.25 / aspect)
    s = min(cw / w, ch / h) * float(rng.uniform(0.8, 1.0))
    pw, ph = max(1, round(w * s)), max(1, round(h * s))
    photo = img.resize((pw, ph), Image.Resampling.LANCZOS)
    x, y = (cw - pw) // 2, (ch - ph) // 2
    if mode == "blur":
        bg = img.resize((cw, ch), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(max(cw, ch) * float(rng.uniform(0.02, 0.05))))
        bg = ImageEnhance.Brightness(bg).enhance(float(rng.uniform(0.6, 0.9)))
    else:
        a = np.asarray(photo)
        bg = Image.fromarray(np.pad(a, ((y, ch - ph - y), (x, cw - pw - x), (0, 0)), mode="symmetric"))
    bg.paste(photo, (x, y))
    return bg


def fill_blur_16x9(img, rng):
    """Fitted into a 16:9 (portrait photos: 9:16) frame filled with a blurred, stretched, darkened copy of itself."""
    w, h = img.size
    return encode(_fill_frame(img, rng, 16 / 9 if w >= h * 1.2 or h < w else 9 / 16, "blur"))


def fill_blur_square(img, rng):
    """Fitted into a 1:1 frame filled with a blurred, stretched, darkened copy of itself (the social-app square)."""
    return encode(_fill_frame(img, rng, 1.0, "blur"))


def fill_mirror(img, rng):
    """Fitted into a 16:9 or 1:1 frame whose margins mirror the photo's edges."""
    return encode(_fill_frame(img, rng, float(rng.choice([16 / 9, 1.0])), "mirror"))


def rotate_small_expand(img, rng):
    """Rotated 0.5-6 degrees either way on a grown canvas (the whole photo kept), corners black, white or grey."""
    angle = float(rng.uniform(0.5, 6) * rng.choice([-1, 1]))
    fill = tuple(int(c) for c in rng.choice([[0, 0, 0], [255, 255, 255], [128, 128, 128]]))
    return encode(img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill))


def rotate_any(img, rng):
    """Rotated by an arbitrary angle (12-348 degrees, away from the quarter turns) on a grown canvas."""
    angle = float(rng.uniform(12, 78) + 90 * int(rng.integers(4)))
    fill = (0, 0, 0) if rng.random() < 0.5 else (255, 255, 255)
    return encode(img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill))


def _quad_warp(img: Image.Image, quad: list[tuple[float, float]], fill) -> Image.Image:
    """The photo mapped onto ``quad`` (its four corners' new places, clockwise from top-left) on its own canvas size."""
    import cv2

    w, h = img.size
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    m = cv2.getPerspectiveTransform(src, np.float32(quad))
    out = cv2.warpPerspective(np.asarray(img), m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=fill)
    return Image.fromarray(out)


def perspective(img, rng):
    """A perspective tilt: each corner moved inwards by 0-12% of the side (one edge shortened more)."""
    w, h = img.size
    d = rng.uniform(0.0, 0.12, size=(4, 2))
    quad = [(w * d[0, 0], h * d[0, 1]), (w * (1 - d[1, 0]), h * d[1, 1]),
            (w * (1 - d[2, 0]), h * (1 - d[2, 1])), (w * d[3, 0], h * (1 - d[3, 1]))]
    fill = (0, 0, 0) if rng.random() < 0.5 else (255, 255, 255)
    return encode(_quad_warp(img, quad, fill))


def skew(img, rng):
    """Sheared horizontally or vertically by 4-14 degrees, canvas kept, corners filled."""
    w, h = img.size
    t = np.tan(np.deg2rad(float(rng.uniform(4, 14)))) * float(rng.choice([-1, 1]))
    if rng.random() < 0.5:
        dx = t * h
        quad = [(max(0.0, dx), 0), (w - max(0.0, -dx), 0), (w - max(0.0, dx), h),
                (max(0.0, -dx), h)]
    else:
        dy = t * w
        quad = [(0, max(0.0, dy)), (w, max(0.0, -dy)), (w, h - max(0.0, dy)), (0, h - max(0.0, -dy))]
    fill = (0, 0, 0) if rng.random() < 0.5 else (255, 255, 255)
    return encode(_quad_warp(img, quad, fill))


def blur_strong(img, rng):
    """A strong Gaussian blur (radius 0.4-0.9% of the long side): flat and synthetic images lose their edges."""
    return encode(img.filter(ImageFilter.GaussianBlur(max(img.size) * float(rng.uniform(0.004, 0.009)))))


def caption_small(img, rng):
    """Shrunk to 220-340 px with a meme-style caption bar above (and sometimes below), text in it."""
    small = _fit(img, int(rng.integers(220, 341)))
    w, h = small.size
    top = round(h * float(rng.uniform(0.18, 0.30)))
    bottom = round(h * float(rng.uniform(0.12, 0.2))) if rng.random() < 0.5 else 0
    bg, fg = ((255, 255, 255), (0, 0, 0)) if rng.random() < 0.6 else ((0, 0, 0), (255, 255, 255))
    canvas = Image.new("RGB", (w, h + top + bottom), bg)
    canvas.paste(small, (0, top))
    d = ImageDraw.Draw(canvas)
    d.text((round(w * 0.05), round(top * 0.2)), str(rng.choice(_WORDS)), fill=fg, font=_font(round(top * 0.35)))
    if bottom:
        d.text((round(w * 0.05), top + h + round(bottom * 0.15)), str(rng.choice(_WORDS)), fill=fg,
               font=_font(round(bottom * 0.5)))
    return encode(canvas)


def _background(rng: Rng, size: tuple[int, int]) -> Image.Image:
    """A seeded synthetic background: a two-colour gradient with random blobs and lines (no photo of the corpus)."""
    w, h = size
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w)[None, :, None] * 0.6 + np.linspace(0, 1, h)[:, None, None] * 0.4
    bg = Image.fromarray((c0 * (1 - t) + c1 * t).astype(np.uint8))
    d = ImageDraw.Draw(bg)
    for _ in range(int(rng.integers(6, 14))):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(max(4, w // 30), max(5, w // 6)))
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            d.ellipse((x - r, y - r, x + r, y + r), fill=col)
        else:
            d.line((x, y, int(rng.integers(0, w)), int(rng.integers(0, h))), fill=col, width=max(2, r // 4))
    return bg.filter(ImageFilter.GaussianBlur(1.5))


def overlay_background(img, rng):
    """The photo scaled to 45-75% of the canvas width and pasted at a random place on a synthetic background."""
    w, h = img.size
    cw, ch = round(w * float(rng.uniform(1.0, 1.3))), round(h * float(rng.uniform(1.0, 1.3)))
    s = float(rng.uniform(0.45, 0.75))
    pw, ph = max(1, round(cw * s)), max(1, round(cw * s * h / w))
    if ph > ch * 0.95:
        ph = round(ch * 0.95)
        pw = round(ph * w / h)
    canvas = _background(rng, (cw, ch))
    canvas.paste(img.resize((pw, ph), Image.Resampling.LANCZOS),
                 (int(rng.integers(0, cw - pw + 1)), int(rng.integers(0, ch - ph + 1))))
    return encode(canvas)


def masked_composite(img, rng):
    """An elliptical or rounded-rectangle cut-out of the photo (55-85% of each side) on a synthetic background."""
    w, h = img.size
    mw, mh = w * float(rng.uniform(0.55, 0.85)), h * float(rng.uniform(0.55, 0.85))
    x0, y0 = float(rng.uniform(0, w - mw)), float(rng.uniform(0, h - mh))
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    if rng.random() < 0.5:
        d.ellipse((x0, y0, x0 + mw, y0 + mh), fill=255)
    else:
        d.rounded_rectangle((x0, y0, x0 + mw, y0 + mh), radius=round(min(mw, mh) * 0.15), fill=255)
    return encode(Image.composite(img, _background(rng, (w, h)), mask))


def meme_text(img, rng):
    """Impact-style white text with a black outline over the top and bottom of the photo."""
    out = img.copy()
    w, h = out.size
    d = ImageDraw.Draw(out)
    size = round(h * float(rng.uniform(0.08, 0.13)))
    for y in (h * 0.04, h * (0.96 - 0.13)):
        d.text((w * 0.06, y), str(rng.choice(_WORDS)).upper(), fill=(255, 255, 255), font=_font(size),
               stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return encode(out)


def stripes(img, rng):
    """Semi-transparent stripes (horizontal, vertical or diagonal; 25-45% opacity) over the whole photo."""
    w, h = img.size
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    period = max(8, round(max(w, h) * float(rng.uniform(0.04, 0.10))))
    width = max(2, round(period * float(rng.uniform(0.2, 0.45))))
    col = tuple(int(c) for c in rng.choice([[255, 255, 255], [0, 0, 0], [200, 30, 30]])) + (int(rng.integers(64, 116)),)
    kind = int(rng.integers(3))
    for k in range(-max(w, h), 2 * max(w, h), period):
        if kind == 0:
            d.rectangle((0, k, w, k + width), fill=col)
        elif kind == 1:
            d.rectangle((k, 0, k + width, h), fill=col)
        else:
            d.line((k, 0, k + h, h), fill=col, width=width)
    return encode(Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB"))


def tiles_shuffled(img, rng):
    """Split into two halves (side by side or stacked) or 2x2 tiles, the tiles shuffled (never left in place)."""
    w, h = img.size
    nx, ny = [(2, 1), (1, 2), (2, 2)][int(rng.integers(3))]
    tw, th = w // nx, h // ny
    tiles = [img.crop((x * tw, y * th, (x + 1) * tw, (y + 1) * th)) for y in range(ny) for x in range(nx)]
    n = len(tiles)
    order = np.roll(np.arange(n), int(rng.integers(1, n)))  # a rotation of the order: every tile moves
    out = Image.new("RGB", (tw * nx, th * ny))
    for k, t in enumerate(order.tolist()):
        out.paste(tiles[t], ((k % nx) * tw, (k // nx) * th))
    return encode(out)


# --- transparency: the query is a photo with an alpha channel -----------------------------------
def with_alpha(img: Image.Image, rng: Rng) -> Image.Image:
    """An RGBA version of the photo, as a sticker or logo PNG holds it: outside a seeded rounded shape
    (60-90% of each side) the pixels are fully transparent, and their colour is zeroed (as most encoders store it)."""
    w, h = img.size
    mw, mh = w * float(rng.uniform(0.6, 0.9)), h * float(rng.uniform(0.6, 0.9))
    x0, y0 = (w - mw) * float(rng.uniform(0.2, 0.8)), (h - mh) * float(rng.uniform(0.2, 0.8))
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    if rng.random() < 0.5:
        d.ellipse((x0, y0, x0 + mw, y0 + mh), fill=255)
    else:
        d.rounded_rectangle((x0, y0, x0 + mw, y0 + mh), radius=round(min(mw, mh) * 0.2), fill=255)
    rgba = Image.composite(img.convert("RGB"), Image.new("RGB", (w, h)), mask).convert("RGBA")
    rgba.putalpha(mask)
    return rgba


def alpha_black(img, rng):
    """The transparent photo flattened onto black, as ``convert("RGB")`` does in a dataset pipeline (JPEG)."""
    rgba = img if img.mode == "RGBA" else with_alpha(img, rng)
    return encode(Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB"))


def alpha_white(img, rng):
    """The transparent photo flattened onto white (JPEG)."""
    rgba = img if img.mode == "RGBA" else with_alpha(img, rng)
    return encode(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB"))


# --- faces --------------------------------------------------------------------------
def face_crop(img: Image.Image, box: tuple[int, int, int, int], rng: Rng, size: int = 250) -> bytes:
    """A tight square crop around a face box (x, y, w, h) as face datasets publish them (LFW: 250x250).

    The crop side is 1.8-2.4x the box and its centre is jittered by up to 8% of the box, to stand
    in for another detector's box and another dataset's margin convention.
    """
    x, y, w, h = box
    s = max(w, h) * float(rng.uniform(1.8, 2.4))
    cx = x + w / 2 + float(rng.uniform(-0.08, 0.08)) * w
    cy = y + h / 2 + float(rng.uniform(-0.08, 0.08)) * h
    crop = img.crop((round(cx - s / 2), round(cy - s / 2), round(cx + s / 2), round(cy + s / 2)))
    return encode(crop.resize((size, size), Image.Resampling.LANCZOS))


@dataclass(frozen=True)
class Transform:
    name: str
    family: str
    fn: Callable[[Image.Image, Rng], bytes]


FAMILIES: dict[str, list[Callable]] = {
    "benign": [resize_256, jpeg_q25, webp_q50, grayscale, brightness, contrast, saturation, blur, noise],
    "dihedral": [mirror, rot90, rot180, rot270],
    "geometric": [rotate_small, rotate_small_fill, stretch],
    "crop": [crop_center_10, crop_center_20, crop_side_15, pad_20, letterbox, crop_resize_recompress],
    "overlay": [caption, watermark, screenshot],
    "corner": [crop_corner, crop_corner_resize],
    "fill": [fill_blur_16x9, fill_blur_square, fill_mirror],
    "rotation": [rotate_small_expand],
    "warp": [rotate_any, perspective, skew],
    "transparency": [alpha_black, alpha_white],
    "compound": [blur_strong, caption_small, overlay_background, masked_composite, meme_text, stripes, tiles_shuffled],
}

#: Transforms whose query is not the original itself but a version of it with transparency
#: (:func:`with_alpha`, same generator): the bench writes that PNG and searches with it.
ALPHA_QUERY = {"alpha_black", "alpha_white"}

#: Recall each family must reach at the default settings (issue: match quality).
TARGETS = {"benign": 0.99, "dihedral": 0.99, "geometric": 0.90, "crop": 0.90, "overlay": 0.80, "face": 0.80,
           "corner": 0.90, "fill": 0.90, "rotation": 0.99, "warp": 0.90, "transparency": 0.995, "compound": 0.90}

TRANSFORMS: dict[str, Transform] = {
    fn.__name__: Transform(fn.__name__, family, fn) for family, fns in FAMILIES.items() for fn in fns
}


def apply(name: str, img: Image.Image, rng: Rng) -> bytes:
    """Apply the named transform to an upright RGB image (large photos are first fitted to 1600 px)."""
    img = img.convert("RGB")
    if max(img.size) > 1600:
        img = _fit(img, 1600)
    return TRANSFORMS[name].fn(img, rng)
