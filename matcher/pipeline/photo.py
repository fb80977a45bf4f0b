"""The per-image pipeline, top to bottom: decode, find regions, hash; on the query side variants, then
verification of candidates. One batch of files per task (run in-process or by :mod:`matcher.pipeline.pool`).

Each task returns one outcome per input, in order, never raising for a bad image:

* dataset side (:func:`index_batch`): ``("ok", full code, entries, width, height, format)``
  where ``entries`` is ``[(kind, code, thumbnail png), ...]`` (the whole image, and the
  photo inside padding or a frame when there is one), or ``("err", reason, kind)``;
* query side (:func:`query_batch`): ``("ok", full code, QueryHashes)`` or ``("err", reason, kind)``.

Nearly uniform images (blank, placeholders) are ``("err", ..., "uniform")``: their hash bits
are noise and would match every other blank image.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Sequence, Union

import cv2
import numpy as np
from PIL import Image

from matcher.errors import ImageTooLarge, MatcherError
from matcher.imaging.facebox import MAX_FACE_ENTRIES, face_index, face_kind, face_region, indexable, normalise
from matcher.imaging.faces import detect_faces
from matcher.hashing.hashers import get_hasher
from matcher.hashing.hashers.base import MIN_DETAIL
from matcher.hashing.hashers.phash import phash_pixels
from matcher.hashing.local_features import QUERY_FEATURES, extract as local_extract
from matcher.imaging.alpha import BLACK, on_black
from matcher.imaging.images import Limits, load_image
from matcher.imaging.regions import Variant, index_boxes, query_variants
from matcher.stages import lap, start
from matcher.testpoints import pause
from matcher.hashing.verify import encode_thumb, thumb_array

__all__ = ["HashSpec", "index_batch", "query_batch", "QueryHashes", "QUERY_SIDE", "dataset_region",
           "Candidate", "verify_batch"]

# One process per core does the work: OpenCV's own thread pool would only add contention.
cv2.setNumThreads(1)

#: Long side of the working image a query photo is searched at.
QUERY_SIDE = 512
#: JPEG draft target for query photos: a 12 MP photo decodes at 1/8 scale (500x375) and needs no
#: further resize; ~35% cheaper than decoding at >= 512 px and resizing (benchmarks/bench_hash_speed.py).
QUERY_DRAFT = 256
#: Long side of the copy the orientation x crop variants of a query are hashed from.
HASH_SIDE = 160
#: Long side at which a dataset image's regions (padding, caption bars, screenshot frames) are found:
#: at 192 px the text of a screenshot merges with its photo (bench: screenshot recall 0.97 -> 0.66).
BOXES_SIDE = 320
#: The filter code (matcher.index.filtercodes): the region at FILTER_SIDE x FILTER_SIDE, FILTER_HASH² DCT bits.
FILTER_SIDE, FILTER_HASH = 64, 16
#: JPEG draft target for dataset images when regions/thumbnails are kept: frames and captions
#: must still be resolvable (a 1280x800 screenshot decodes at 320x200 instead of 160x100).
INDEX_DRAFT = 256


def _recipe(h) -> tuple | None:
    if h is None:
        return None
    options = {"draft": h.draft} if hasattr(h, "draft") else {}
    return (h.name, tuple(sorted(h.params().items())), tuple(sorted(options.items())))


class HashSpec:
    """Picklable description of how to hash: the index hasher, whether to keep regions/thumbnails, limits.
    ``thumbnails`` False: regions are still found and hashed, their thumbnails not made (the datasets being
    added keep none: ``add --thumbnails none``)."""

    def __init__(self, hasher: tuple, regions: bool, limits: Limits, thumbnails: bool = True, local: int = 0):
        self.hasher = hasher
        self.regions = regions
        self.limits = limits
        self.thumbnails = thumbnails
        self.local = local  # keypoints kept per dataset image (the local-feature tier); 0: none

    @classmethod
    def of(cls, hasher, regions: bool, limits: Limits, thumbnails: bool = True, local: int = 0) -> "HashSpec":
        return cls(_recipe(hasher), regions, limits, thumbnails, local)


_cache: dict[tuple, Any] = {}


def _build(recipe: tuple):
    h = _cache.get(recipe)
    if h is None:
        name, params, options = recipe
        h = _cache[recipe] = get_hasher(name, **dict(params), **dict(options))
    return h


def _uniform(detail: float) -> tuple:
    return ("err", f"nearly uniform image (grey-level spread {detail:.1f} < {MIN_DETAIL}): "
            "too little detail to match by content", "uniform")


def _region_codes(img: Image.Image, boxes: Sequence[tuple[float, float, float, float]], size: int,
                  reducing_gap: float | None = None):
    """pHash bits and detail of each pixel box of ``img`` (batched DCT)."""
    px = np.stack([np.asarray(img.resize((size, size), Image.Resampling.LANCZOS, box=b, reducing_gap=reducing_gap))
                   for b in boxes])
    bits = phash_pixels(px)
    return np.packbits(bits, axis=-1), px.reshape(len(boxes), -1).std(axis=1)


def _oriented(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` (H x W) in one of the 8 orientations of :data:`matcher.imaging.regions.DIHEDRAL` (a numpy view)."""
    ops = {"id": lambda x: x, "mirror": lambda x: x[:, ::-1], "rot90": lambda x: np.rot90(x, 1),
           "rot180": lambda x: x[::-1, ::-1], "rot270": lambda x: np.rot90(x, -1), "flipv": lambda x: x[::-1],
           "transpose": lambda x: x.T, "transverse": lambda x: x[::-1, ::-1].T}
    return ops[name](a)


def _area_pixels(a: np.ndarray, boxes: Sequence[tuple[float, float, float, float]], size: int) -> np.ndarray:
    """``size`` x ``size`` pixels of each pixel box of the uint8 array ``a``, resampled by area averaging."""
    h, w = a.shape
    px = np.empty((len(boxes), size, size), np.uint8)
    for k, (l, t, r, b) in enumerate(boxes):
        l, t = min(max(0, round(l)), w - 1), min(max(0, round(t)), h - 1)
        r, b = max(l + 1, min(w, round(r))), max(t + 1, min(h, round(b)))
        px[k] = cv2.resize(np.ascontiguousarray(a[t:b, l:r]), (size, size), interpolation=cv2.INTER_AREA)
    return px


def _area_codes(a: np.ndarray, boxes: Sequence[tuple[float, float, float, float]], size: int, hash_size: int = 8,
                detail: bool = True):
    """pHash bits (``hash_size``² of them) and detail (None unless ``detail``) of each pixel box of the uint8
    array ``a``, resampled to ``size`` x ``size`` by area averaging."""
    px = _area_pixels(a, boxes, size)
    return np.packbits(phash_pixels(px, hash_size), axis=-1), (px.reshape(len(boxes), -1).std(axis=1) if detail
                                                              else None)


def filter_codes(a: np.ndarray, boxes: Sequence[tuple[float, float, float, float]]) -> np.ndarray:
    """The 256-bit filter code (:mod:`matcher.index.filtercodes`) of each pixel box of the greyscale array ``a``:
    (len(boxes), 32) uint8, the opt-out registry's confirmation code of the same region."""
    return _area_codes(a, boxes, FILTER_SIDE, FILTER_HASH, detail=False)[0]


def _entry_boxes(a: np.ndarray) -> dict:
    """:func:`matcher.imaging.regions.index_boxes` of a dataset image, found on a copy of at most BOXES_SIDE px
    (frames, bars and panels are large structures; a 12 MP photo decodes at 500 px)."""
    f = min(1.0, BOXES_SIDE / max(a.shape))
    if f < 1.0:
        a = cv2.resize(a, (max(1, round(a.shape[1] * f)), max(1, round(a.shape[0] * f))), interpolation=cv2.INTER_AREA)
    return index_boxes(a)


# --- dataset side -----------------------------------------------------------------------
def _face_boxes(faces: list | None, w: int, h: int) -> dict[str, tuple[float, float, float, float]]:
    """Entry kind -> fraction box of the regions around the published face boxes (``faces``: normalised)."""
    out = {}
    for i, box in enumerate((faces or [])[:MAX_FACE_ENTRIES]):
        region = face_region(box, w, h)
        if indexable(region, w, h):
            l, t, r, b = region
            out[face_kind(i)] = (l / w, t / h, r / w, b / h)
    return out


def index_one(hasher, regions: bool, src: Union[str, bytes], limits: Limits, faces=None, thumbnails: bool = True,
              local: int = 0) -> tuple:
    """Hash one dataset image. ``faces``: the face boxes its manifest gives (:data:`matcher.imaging.facebox.RawFaces`);
    with regions, each adds an entry ``face<i>`` (the square around face ``i``, :func:`matcher.imaging.facebox.face_region`).
    Entries get a thumbnail when ``regions`` and ``thumbnails``, else None. ``local``: keep that many keypoints
    (:mod:`matcher.hashing.local_features`), returned as a 7th element."""
    pause("index.photo")
    start()
    try:
        loaded = load_image(src, limits=limits, draft=("L", INDEX_DRAFT)) if regions else hasher.load(src, limits)
    except ImageTooLarge as e:
        return ("err", e.reason, "too_large")
    except MatcherError as e:
        return ("err", e.reason, "unreadable")
    img = loaded.image.convert("L")
    lap("decode")
    w, h = img.size
    kinds = {"full": (0.0, 0.0, 1.0, 1.0)}
    if regions:
        kinds = _entry_boxes(np.asarray(img))
        if faces is not None:
            kinds.update(_face_boxes(normalise(faces, (loaded.width, loaded.height)), w, h))
    lap("regions")
    boxes = [(l * w, t * h, r * w, b * h) for (l, t, r, b) in kinds.values()]
    codes, detail = _region_codes(img, boxes, hasher.img_size)
    lap("codes")
    if detail[0] < MIN_DETAIL:
        return _uniform(float(detail[0]))
    longs = filter_codes(np.asarray(img), boxes)
    lap("filter codes")
    entries = []
    for (kind, box), code, d, long in zip(zip(kinds, boxes), codes, detail, longs):
        if d < MIN_DETAIL:
            continue
        thumb = encode_thumb(thumb_array(img, box)) if regions and thumbnails else None
        entries.append((kind, code.tobytes(), thumb, long.tobytes()))
    lap("thumbnails")
    if local:
        return ("ok", codes[0].tobytes(), entries, loaded.width, loaded.height, loaded.format,
                local_extract(np.asarray(img), local))
    return ("ok", codes[0].tobytes(), entries, loaded.width, loaded.height, loaded.format)


def dataset_region(hasher, path: str | bytes, kind: str, expected_hash: str | None, limits: Limits,
                   faces: list | None = None) -> np.ndarray | str:
    """The greyscale pixels of entry ``kind`` of the dataset image at ``path`` (or its bytes), decoded as at index
    time.

    Returns a reason (str) instead when the file cannot be read, or no longer hashes to
    ``expected_hash`` (it was replaced since it was indexed), or has no such region. A face entry
    (``face<i>``) is re-derived from ``faces``, the item's stored face boxes (``extra["faces"]``).
    """
    try:
        loaded = load_image(path, limits=limits, draft=("L", INDEX_DRAFT))
    except MatcherError as e:
        return f"dataset image unreadable: {e.reason}"
    img = loaded.image.convert("L")
    w, h = img.size
    code, _ = _region_codes(img, [(0.0, 0.0, float(w), float(h))], hasher.img_size)
    if expected_hash is not None and code[0].tobytes().hex() != expected_hash:
        return "dataset image changed since it was indexed"
    if face_index(kind) is not None:
        box = _face_boxes(faces, w, h).get(kind)
    else:
        box = _entry_boxes(np.asarray(img)).get(kind)
    if box is None:
        return f"dataset image has no {kind} region any more"
    l, t, r, b = box
    return np.asarray(img.crop((round(l * w), round(t * h), round(r * w), round(b * h))))


def index_batch(spec: HashSpec, sources: Sequence[Union[str, bytes]]) -> list[tuple]:
    """Hash each dataset path or body, or ``(path or body, face boxes)`` (:func:`index_one`'s ``faces``).
    Used by the process pool (and in-process when workers=0)."""
    hasher = _build(spec.hasher)
    local = getattr(spec, "local", 0)
    out = []
    for s in sources:
        src, faces = s if isinstance(s, tuple) else (s, None)
        o = index_one(hasher, spec.regions, src, spec.limits, faces, spec.thumbnails, local=local)
        if o[0] == "ok" and spec.regions:
            _add_black(hasher, src, spec.limits, o[2], spec.thumbnails)
        out.append(o)
    return out


def _add_black(hasher, src, limits: Limits, entries: list, thumbnails: bool = True) -> None:
    """An image with transparency also gets an entry flattened onto black (:mod:`matcher.imaging.alpha`)."""
    black = on_black(src, limits)
    if black is None:
        return
    o = index_one(hasher, True, black, limits, None, thumbnails)
    if o[0] == "ok" and o[2] and o[2][0][1] != entries[0][1]:
        entries.append((BLACK, *o[2][0][1:]))


# --- query side -------------------------------------------------------------------------
@dataclass
class QueryHashes:
    """What a query photo was searched with: its working image, faces, and one code per variant."""

    image: np.ndarray  # upright greyscale working image (uint8)
    faces: list[tuple[int, int, int, int]]
    variants: list[Variant]
    codes: np.ndarray  # (len(variants), bytes) uint8
    width: int
    height: int
    fcodes: np.ndarray | None = None  # (len(variants), 32) uint8: each variant's filter code (matcher.index.filtercodes)
    local: tuple | None = None  # the working image's keypoints (fractions, descriptors), for a local-feature tier
    alt: "QueryHashes | None" = None  # a photo with transparency: the same, flattened onto black


def query_one(hasher, regions: bool, src: Union[str, bytes], limits: Limits) -> tuple:
    pause("query.photo")
    start()
    try:
        loaded = load_image(src, limits=limits, draft=("L", QUERY_DRAFT))
    except ImageTooLarge as e:
        return ("err", e.reason, "too_large")
    except MatcherError as e:
        return ("err", e.reason, "unreadable")
    img = loaded.image.convert("L")
    img.thumbnail((QUERY_SIDE, QUERY_SIDE), Image.Resampling.LANCZOS)
    arr = np.asarray(img)
    lap("decode")
    faces = detect_faces(arr) if regions else []
    lap("faces")
    if regions:
        sources, variants = query_variants(img, faces)
    else:
        sources, variants = {"id": img}, [Variant("id/full", "id", (0.0, 0.0, float(img.width), float(img.height)))]
    lap("variants")
    # Orientation x crop variants are hashed from a HASH_SIDE copy (a crop keeps >= half of each side,
    # so >= 2x the 32 px the hash needs), resampled by area averaging in OpenCV: ~20x cheaper than
    # Pillow's Lanczos from the working image, and as close to the dataset side's hash (measured:
    # benchmarks/bench_hash_speed.py). Face crops can be small: they come from the working image.
    f = min(1.0, HASH_SIDE / max(img.size))
    medium = arr if f == 1.0 else cv2.resize(arr, (max(1, round(img.width * f)), max(1, round(img.height * f))),
                                             interpolation=cv2.INTER_AREA)
    fx, fy = medium.shape[1] / img.width, medium.shape[0] / img.height
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, v in enumerate(variants):
        groups.setdefault((v.source, "@" not in v.source and not v.name.startswith("face")), []).append(i)
    px = np.empty((len(variants), hasher.img_size, hasher.img_size), np.uint8)
    long_px = np.empty((len(variants), FILTER_SIDE, FILTER_SIDE), np.uint8)
    for (key, from_medium), idx in groups.items():
        if from_medium:
            src = _oriented(medium, key)
            sx, sy = (fx, fy) if key in ("id", "mirror", "rot180", "flipv") else (fy, fx)
            boxes = [(l * sx, t * sy, r * sx, b * sy) for (l, t, r, b) in (variants[i].box for i in idx)]
        else:
            src = sources[key]
            src = np.asarray(src if src.mode == "L" else src.convert("L"))
            boxes = [variants[i].box for i in idx]
        px[idx] = _area_pixels(src, boxes, hasher.img_size)
        long_px[idx] = _area_pixels(src, boxes, FILTER_SIDE)
    # one DCT and one spread for all ~150 variants (per source group, 53 of them, they cost more than resampling)
    codes = np.packbits(phash_pixels(px), axis=-1)
    keep = px.reshape(len(variants), -1).std(axis=1) >= MIN_DETAIL
    longs = np.packbits(phash_pixels(long_px, FILTER_HASH), axis=-1)
    # the whole photo is hashed exactly as the dataset side hashes an image (Lanczos from the decoded
    # pixels), so that a byte-identical file in the dataset is at distance 0 and the reported hash is its hash
    full, detail = _region_codes(img, [variants[0].box], hasher.img_size)
    codes[0], keep[0] = full[0], detail[0] >= MIN_DETAIL
    longs[0] = filter_codes(arr, [variants[0].box])[0]
    if not keep[0]:
        return _uniform(float(detail[0]))
    variants = [v for v, k in zip(variants, keep) if k]
    lap("codes")
    return ("ok", codes[0].tobytes(), QueryHashes(arr, faces, variants, codes[keep], loaded.width, loaded.height,
                                             longs[keep]))


def query_batch(spec: HashSpec, sources: Sequence[Union[str, bytes]]) -> list[tuple]:
    hasher = _build(spec.hasher)
    out = []
    for s in sources:
        o = query_one(hasher, spec.regions, s, spec.limits)
        if o[0] == "ok":
            black = on_black(s, spec.limits) if spec.regions else None
            alt = query_one(hasher, spec.regions, black, spec.limits) if black is not None else None
            if alt is not None and alt[0] == "ok":  # a photo with transparency: searched flattened both ways
                o[2].alt = alt[2]
            for q in (o[2], o[2].alt):
                if q is not None and getattr(spec, "local", 0):
                    q.local = local_extract(q.image, QUERY_FEATURES)
        out.append(o)
    return out


# --- verification -----------------------------------------------------------------------
@dataclass
class Candidate:
    """A dataset item some variants of a query came near: what verifying it needs."""

    item_id: int
    path: str | None  # the dataset image, when it is a local file
    item_hash: str | None  # its full-image code as indexed (hex)
    tries: list  # [(distance, Variant, entry kind, thumbnail png | None)], best first
    faces: list | None = None  # the item's stored face boxes (extra["faces"]): face entries' regions
    filter_radius: int | None = None  # the 256-bit filter distance it passed (None: not filtered)
    # the dataset image fetched on demand from its URL (matcher.engine.fetched; never stored), or why not
    body: bytes | None = None
    fetch_error: str | None = None


def _local_region(hasher, cand, kind: str, limits: Limits) -> np.ndarray | str:
    """The dataset image's region ``kind`` as indexed: from the local file, else from the body fetched on demand
    (a :class:`Candidate` or a local-feature candidate); a reason (str) when neither can be read."""
    if cand.path and os.path.isfile(cand.path):
        return dataset_region(hasher, cand.path, kind, cand.item_hash, limits, cand.faces)
    if cand.body is not None:
        return dataset_region(hasher, cand.body, kind, cand.item_hash, limits, cand.faces)
    return cand.fetch_error or "dataset image not available locally"


#: Why a candidate could not be verified (``evidence["unverifiable"]``).
UNVERIFIABLE = "the stored thumbnail of this dataset image cannot be read (damaged catalog): run `matcher check`"


def _no_thumbnail(why: str, d: int, radius: int | None) -> str:
    found = f"found by its 64-bit code ({d} bits away)" + (
        f" and its 256-bit filter code (within {radius} bits)" if radius is not None else "")
    return (f"not verified by pixels: its dataset was added with --thumbnails none and the image cannot be "
            f"compared ({why}); {found}")


def verify_batch(spec: HashSpec, image: np.ndarray, faces: list, cands: Sequence[Candidate], min_score: float,
                 max_motion: float | None) -> list[tuple]:
    """Verify each candidate of one query photo: ``(item_id, score | None, distance, Variant, kind, detail)``.

    The candidate's nearest variants (in order) are aligned to the entry's thumbnail until one
    scores ``min_score``; the best is kept. A verified candidate whose dataset image is a local
    file then gets the full-detail check (:mod:`matcher.hashing.detail`): ``detail`` is
    ``{"motion": m, "max_motion": t}`` or ``{"detail": why it did not run}``; ``{}`` when not run.
    Runs in a worker process (or in-process when searching without workers).
    """
    pause("verify.photo")
    from matcher.hashing.detail import residual_motion
    from matcher.hashing.verify import align, decode_thumb

    hasher = _build(spec.hasher)
    sources = None
    out = []
    start()
    for cand in cands:
        best = None
        no_thumb = None  # why a candidate without a stored thumbnail could not be verified
        for d, variant, kind, thumb in cand.tries:
            if thumb is None and not spec.regions:  # an index without thumbnails: the hash distance is all there is
                best = (None, d, variant, kind, None)
                break
            if thumb is None:  # a dataset added with --thumbnails none: the dataset image itself, when local
                region = _local_region(hasher, cand, kind, spec.limits)
                if isinstance(region, str):
                    no_thumb = region
                    continue
                stored = thumb_array(Image.fromarray(np.ascontiguousarray(region), "L"))
            else:
                try:
                    stored = decode_thumb(thumb)
                except (OSError, ValueError, SyntaxError, zlib.error, struct.error):
                    continue  # a damaged catalog: this entry's thumbnail cannot be read (the next try may be another)
            if sources is None:
                sources, _ = query_variants(Image.fromarray(image, "L"), faces)
            score, box = align(sources[variant.source], variant.box, stored,
                               filled_corners=variant.name.endswith(("-black", "-white")))
            if best is None or score > best[0]:
                best = (score, d, variant, kind, box)
            if score >= min_score:
                break
        if best is None:  # no thumbnail could be read or made: say so and why, do not guess
            d, variant, kind, _ = cand.tries[0]
            out.append((cand.item_id, None, d, variant, kind, {"unverifiable": UNVERIFIABLE} if no_thumb is None
                        else {"unverifiable": _no_thumbnail(no_thumb, d, cand.filter_radius)}))
            continue
        score, d, variant, kind, box = best
        detail: dict = {}
        lap("verification")
        if score is not None and score >= min_score and max_motion is not None:
            region = _local_region(hasher, cand, kind, spec.limits)
            if isinstance(region, str):
                detail = {"detail": region}
            else:
                motion = residual_motion(_pixels(sources[variant.source], box), region)
                detail = ({"detail": "too small or flat to measure motion"} if motion is None
                          else {"motion": round(motion, 3), "max_motion": max_motion})
            lap("full-detail")
        out.append((cand.item_id, score, d, variant, kind, detail))
    return out


def _pixels(img: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
    """Greyscale pixels of ``box`` in ``img``; parts outside the image repeat its edge pixels."""
    a = np.asarray(img if img.mode == "L" else img.convert("L"))
    h, w = a.shape
    l, t, r, b = (round(v) for v in box)
    pl, pt, pr, pb = max(0, -l), max(0, -t), max(0, r - w), max(0, b - h)
    if pl or pt or pr or pb:
        a = np.pad(a, ((pt, pb), (pl, pr)), mode="edge")
    return a[t + pt : b + pt, l + pl : r + pl]
