"""A match's evidence in words a person understands: how the dataset's copy differs from the photo, and how
sure the match is. The one place these words are made; the table, the HTML report, the CSV and JSON outputs,
the letters and the web page (through the server's answers and its recipe) all take them from here.

The technical evidence stays as it is (``variant``, ``entry``, ``distance``, ``score``): the words are
computed from it, never stored instead of it.

- ``variant`` is how the person's photo was turned to meet the copy: ``<orientation>/<crop>`` (``id/full``,
  ``mirror/c80``), ``<orientation>/rot<angle>[-black|-white|-grown-black|-grown-white]`` (a small tilt) or
  ``face<i>/x<scale>[@<dx><dy>]`` (a square cut around the i-th face found in the photo);
- ``entry`` is which region of the dataset image matched: ``full``, ``trim`` (the picture inside uniform
  padding or a letterbox), ``content``/``content2``/``content3`` (the picture inside a caption bar, a
  screenshot's interface or a collage), ``face<i>`` (a face box the dataset's manifest gives).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

__all__ = ["how", "sure", "describe", "words_table", "SURE_BANDS", "SURE_EXPLAINED", "SAME_PHOTO", "IDENTITY_ONLY",
           "UNCONFIRMED", "LISTED"]

SAME_PHOTO = "the same photo"
IDENTITY_ONLY = "listed under your Flickr account (none of your photos matched it)"

#: the query's orientation -> what the dataset's copy is, seen from the person's photo
ORIENTATIONS = {
    "id": None,
    "mirror": "mirrored",
    "rot90": "rotated 90° to the left",
    "rot180": "upside down (rotated 180°)",
    "rot270": "rotated 90° to the right",
    "flipv": "mirrored top to bottom",
    "transpose": "mirrored and rotated 90°",
    "transverse": "mirrored and rotated 90°",
}

#: the dataset side's region -> where the photo sits in the dataset's image
ENTRIES = {
    "full": None,
    "trim": "padded (a border or letterbox added)",
    "content": "inside a screenshot or collage, or with a caption or border added",
}
_MANY_PICTURES = "one of several pictures inside a collage or screenshot"
_DATASET_FACE = "part of a larger photo (the face the dataset marks in it)"
_YOUR_FACE = "your face, cut from this photo"

#: (lowest verification score, words) from the surest down; the web page picks from this same table
SURE_BANDS = ((0.99, "very sure"), (0.97, "sure"), (float("-inf"), "likely"))
UNCONFIRMED = "unconfirmed: the hashes are close, but the pixels could not be compared"
#: how sure an item listed under the person's Flickr account (no photo matched it) is: it is listed
LISTED = "listed by your Flickr account"

#: what distance and score mean, said once per table, report or page (not on every match)
SURE_EXPLAINED = (
    "How sure: each photo is reduced to a 64-bit fingerprint; the distance is how many of the 64 bits differ "
    "between your photo and the copy (0 = the same fingerprint; up to 10 makes a candidate). A candidate is "
    "then checked pixel by pixel on small aligned versions of both: the score says how well they agree "
    "(1 = perfectly; a match needs 0.95). Very sure: score 0.99 or more; sure: 0.97 or more; likely: less. "
    "When the dataset's file is on this machine, the fine detail is compared too, so that two frames of one "
    "burst or video are not taken for a copy."
)

_CROP = re.compile(r"c(\d+)$")
_SIDE = re.compile(r"([lrtb])85$")
_EDGES = re.compile(r"e([ltrb]+)$")
_TILT = re.compile(r"rot([+-]\d+(?:\.\d+)?)(-grown)?(?:-(black|white))?$")
_FACE = re.compile(r"face\d+$")


def _about(removed: float) -> str:
    return f"about {max(5, round(removed * 20) * 5)}% removed"


def _region_words(region: str) -> str | None:
    """What a query crop or tilt says about the copy (None: the whole photo)."""
    if region == "full":
        return None
    m = _CROP.match(region)
    if m:
        keep = int(m.group(1)) / 100
        return f"cropped ({_about(1 - keep * keep)})"
    if _SIDE.match(region):
        return f"cropped on one side ({_about(0.15)})"
    m = _EDGES.match(region)
    if m:
        w = 1 - 0.07 * sum(s in m.group(1) for s in "lr")
        h = 1 - 0.07 * sum(s in m.group(1) for s in "tb")
        return f"cropped slightly at the edges ({_about(1 - w * h)})"
    m = _TILT.match(region)
    if m:
        angle = abs(float(m.group(1)))
        words = f"tilted by {angle:g}°"
        if m.group(2):
            return words + " on a larger canvas"
        return words + (" with its corners filled" if m.group(3) else " and cropped to fit")
    return None


def how(evidence: Mapping[str, Any] | None) -> str:
    """How the dataset's copy differs from the person's photo, in words: "the same photo", "mirrored",
    "cropped (about 35% removed)", "your face, cut from this photo", "inside a screenshot or collage, ...";
    several at once are joined with commas. Unknown names are left out (never a wrong word)."""
    evidence = evidence or {}
    variant = str(evidence.get("variant") or "")
    entry = str(evidence.get("entry") or "full")
    if not variant:
        return IDENTITY_ONLY if evidence.get("identity") is not None or evidence.get("found_by") == "identity" \
            else SAME_PHOTO
    source, _, region = variant.partition("/")
    parts: list[str] = []
    if _FACE.match(source):
        parts.append(_YOUR_FACE)
    else:
        orientation = ORIENTATIONS.get(source.split("@")[0])
        if orientation:
            parts.append(orientation)
        words = _region_words(region)
        if words and not (_EDGES.match(region) and entry != "full"):  # a few % off the edges of a region the
            parts.append(words)                                        # dataset framed is alignment, not a crop
    if entry.startswith("face"):
        parts.append(_DATASET_FACE)
    elif re.fullmatch(r"content[23]", entry):
        parts.append(_MANY_PICTURES)
    elif ENTRIES.get(entry):
        parts.append(ENTRIES[entry])
    return ", ".join(parts) or SAME_PHOTO


def sure(evidence: Mapping[str, Any] | None) -> str:
    """How sure the match is, in words, from its verification score ("very sure", "sure", "likely"), or why it
    could not be checked."""
    evidence = evidence or {}
    score = evidence.get("score")
    if evidence.get("verified") is False or score is None:
        return LISTED if evidence.get("found_by") == "identity" else UNCONFIRMED
    return next(words for low, words in SURE_BANDS if float(score) >= low)


def describe(evidence: Mapping[str, Any] | None) -> dict[str, str]:
    """``{"how": ..., "sure": ...}`` of one match's evidence."""
    return {"how": how(evidence), "sure": sure(evidence)}


def words_table() -> dict[str, Any]:
    """What a client that verifies matches itself (the web page) needs to say "how sure" in these same words:
    the score bands (lowest score, words; the last band has no lower bound), the words for a match that could
    not be compared and for an item found by account only, and the explanation of distance and score."""
    return {"sure_bands": [[None if low == float("-inf") else low, words] for low, words in SURE_BANDS],
            "unconfirmed": UNCONFIRMED, "listed": LISTED, "identity_only": IDENTITY_ONLY, "explained": SURE_EXPLAINED}
