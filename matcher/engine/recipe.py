"""What a client must compute from a photo to search an index: the *recipe* the web page follows.

The CLI hashes a photo as many variants (orientations x crops, small rotations, face crops;
see :func:`matcher.imaging.regions.query_variants`) and verifies candidates against stored thumbnails.
A browser that must not upload the photo computes the same things itself. This module states
them as plain data (JSON), derived from the constants the CLI uses, so the server tells the
page what to compute and the two cannot drift apart: :func:`expand` turns the recipe back into
the CLI's variants for a given working-image size, and a test checks it against
:func:`~matcher.imaging.regions.query_variants`.

Recipe variants (``recipe["variants"]``), each ``{"name", "source", "box"}``:

* ``source = {"orient": o}``: the working image in orientation ``o`` (:data:`~matcher.imaging.regions.DIHEDRAL`);
  ``box`` = [l, t, r, b] as fractions of that oriented image;
* ``source = {"orient": o, "angle": a, "fill": "black"|"white", "grown": bool}``: the SMALL_SIDE copy
  of the image in orientation ``o``, rotated ``a`` degrees counter-clockwise about its centre (bilinear),
  on a canvas of the same size or grown to hold the whole rotated image, corners filled;
  ``box`` = ``"inner"`` (the largest centred rectangle of the same aspect inside the rotated image)
  or [l, t, r, b] fractions of the canvas.

Face variants are not listed (they depend on the faces found): ``recipe["faces"]`` gives the
detector settings and the crops around each face, as :data:`~matcher.imaging.regions.FACE_SCALES`.
"""

from __future__ import annotations

from typing import Any

from matcher.imaging import faces as _faces
from matcher.imaging import regions as _r
from matcher.hashing import verify as _v
from matcher.pipeline import photo as _w

__all__ = ["RECIPE_VERSION", "recipe", "expand"]

RECIPE_VERSION = 1


def _variant_specs() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for dn in _r.DIHEDRAL:
        for bn, box in _r.query_boxes(fine=dn in ("id", "mirror")).items():
            out.append({"name": f"{dn}/{bn}", "source": {"orient": dn}, "box": [float(v) for v in box]})
    for dn, angles in (("id", _r.ROTATIONS + _r.WIDE_ROTATIONS), ("mirror", _r.ROTATIONS)):
        for angle in angles:
            src = {"orient": dn, "angle": angle, "fill": "black", "grown": False}
            out.append({"name": f"{dn}/rot{angle:+g}", "source": src, "box": "inner"})
            if abs(angle) <= 5:
                out.append({"name": f"{dn}/rot{angle:+g}-black", "source": src, "box": [0.0, 0.0, 1.0, 1.0]})
                out.append({"name": f"{dn}/rot{angle:+g}-white", "source": {**src, "fill": "white"},
                            "box": [0.0, 0.0, 1.0, 1.0]})
            for fill in ("black", "white"):
                out.append({"name": f"{dn}/rot{angle:+g}-grown-{fill}",
                            "source": {"orient": dn, "angle": angle, "fill": fill, "grown": True},
                            "box": [0.0, 0.0, 1.0, 1.0]})
    return out


def recipe(store=None, *, threshold: int | None = None, min_score: float | None = None) -> dict[str, Any]:
    """The recipe for searching ``store`` (an open :class:`~matcher.index.store.IndexStore`), as JSON-ready data."""
    from matcher.engine.api import DEFAULT_THRESHOLD, MAX_CANDIDATES

    hasher = store.hasher if store is not None else None
    regions = store.regions if store is not None else True
    return {
        "version": RECIPE_VERSION,
        "hasher": {
            "name": getattr(hasher, "name", "phash"),
            "bits": getattr(hasher, "bits", 64),
            "hash_size": getattr(hasher, "hash_size", 8),
            "img_size": getattr(hasher, "img_size", 32),
        },
        # the working image: JPEGs as libjpeg's DCT scaling gives them (the largest 1/2^k reduction keeping
        # both sides >= query_draft), then at most query_side px on the long side (Lanczos)
        "query_draft": _w.QUERY_DRAFT,
        "query_side": _w.QUERY_SIDE,
        "hash_side": _w.HASH_SIDE,  # orientation x crop variants are hashed from a copy this size (area resampling)
        "small_side": _r.SMALL_SIDE,  # rotated variants are made from a copy this size
        "min_detail": _w.MIN_DETAIL,  # a variant whose 32x32 pixels have a smaller std is not searched
        "regions": regions,
        "variants": _variant_specs() if regions else [{"name": "id/full", "source": {"orient": "id"},
                                                        "box": [0.0, 0.0, 1.0, 1.0]}],
        "faces": {
            "enabled": regions,
            "detect_side": _faces.DETECT_SIDE,
            "scale_step": _faces.SCALE_STEP,
            "min_neighbors": 5,
            "max_faces": 8,
            "scales": list(_r.FACE_SCALES),
            "shift": _r.FACE_SHIFT,
            "shifts": [[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]],
        },
        "verify": {
            "thumb": _v.THUMB,
            "cells": _v.CELLS,
            "min_cells": _v.MIN_CELLS,
            "min_score": _v.DEFAULT_MIN_SCORE if min_score is None else min_score,
            "max_tries": MAX_CANDIDATES,
        },
        "threshold": DEFAULT_THRESHOLD if threshold is None else threshold,
    }


def expand(rec: dict[str, Any], width: int, height: int) -> list[tuple[str, str, tuple[float, float, float, float]]]:
    """The recipe's variants for an upright working image of ``width`` x ``height``, as
    ``(name, source key, pixel box)`` in the form :class:`~matcher.imaging.regions.Variant` uses (no faces)."""
    import numpy as np

    f = min(1.0, rec["small_side"] / max(width, height))
    sw, sh = (max(1, round(width * f)), max(1, round(height * f))) if f < 1.0 else (width, height)
    out = []
    for v in rec["variants"]:
        s = v["source"]
        o = s["orient"]
        if "angle" not in s:
            w, h = (width, height) if o in ("id", "mirror", "rot180", "flipv") else (height, width)
            l, t, r, b = v["box"]
            out.append((v["name"], o, (l * w, t * h, r * w, b * h)))
            continue
        angle = float(s["angle"])
        key = f"{o}@{angle:+g}{'e' if s['grown'] else ''}{'/white' if s['fill'] == 'white' else ''}"
        a = np.deg2rad(abs(angle))
        if s["grown"]:
            cw, ch = (int(np.ceil(sw * np.cos(a) + sh * np.sin(a))), int(np.ceil(sw * np.sin(a) + sh * np.cos(a))))
        else:
            cw, ch = sw, sh
        if v["box"] == "inner":
            k = 1 / (np.cos(a) + np.sin(a) * max(sw / sh, sh / sw))
            box = ((sw - sw * k) / 2, (sh - sh * k) / 2, (sw + sw * k) / 2, (sh + sh * k) / 2)
        else:
            l, t, r, b = v["box"]
            box = (l * cw, t * ch, r * cw, b * ch)
        out.append((v["name"], key, tuple(float(x) for x in box)))
    return out
