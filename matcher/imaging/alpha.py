"""Photos with transparency, flattened the other way.

matcher flattens an alpha channel onto white (:func:`matcher.imaging.images.load_image`). Dataset
pipelines often flatten onto black instead (Pillow's ``convert("RGB")`` keeps the colour stored
under transparent pixels, which encoders usually zero), so a logo or a sticker and its dataset copy
can be 26-50 bits apart. A photo with transparency is therefore also described flattened onto
black: the query side searches both, the index side stores both (an extra ``black`` entry).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

from matcher.errors import MatcherError
from matcher.imaging.images import DEFAULT_LIMITS, Limits, Source, _open

__all__ = ["on_black", "BLACK"]

#: Entry kind (index side) and variant prefix (query side) of the version flattened onto black.
BLACK = "black"


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)


def on_black(src: Source, limits: Limits = DEFAULT_LIMITS) -> bytes | None:
    """A PNG of ``src`` (upright) flattened onto black when it has pixels that are not opaque; else ``None``
    (no alpha channel, a fully opaque one, or a file that cannot be read: the caller's own decode says why)."""
    try:
        im, fp = _open(src, limits)
    except MatcherError:
        return None
    try:
        if not _has_alpha(im):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if getattr(im, "is_animated", False):
                im.seek(0)
            rgba = ImageOps.exif_transpose(im.convert("RGBA"))
        lo, _ = rgba.getchannel("A").getextrema()
        if lo == 255:
            return None
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
        out = io.BytesIO()
        flat.save(out, "PNG", compress_level=1)
        return out.getvalue()
    except (OSError, ValueError, SyntaxError, MemoryError):  # undecodable: the white-flattened path reports it
        return None
    finally:
        fp.close()
