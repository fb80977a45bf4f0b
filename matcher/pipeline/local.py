"""The query side of the local-feature tier: keypoints of a photo, and the verification of what they found.

:func:`verify_all` is what a search runs per photo in a worker: first the 64-bit candidates
(:func:`matcher.pipeline.photo.verify_batch`, unchanged), then, for dataset images only the local
features found or that the 64-bit path did not verify, the geometric path: a homography fitted
to the matched keypoints (RANSAC), the photo warped into the dataset image's frame, the same
cell-by-cell pixel score against the entry's thumbnail (:func:`matcher.hashing.local_features.warp_score`)
and, when the dataset file is local, the same full-detail check on the warped photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from matcher.hashing.detail import residual_motion
from matcher.hashing.local_features import QUERY_FEATURES, extract, fit_homography, to_pixels, warp_region, warp_score
from matcher.hashing.verify import decode_thumb
from matcher.imaging.regions import Variant
from matcher.pipeline.photo import HashSpec, _build, _local_region, verify_batch

__all__ = ["LocalCandidate", "query_features", "verify_local", "verify_all", "VIA"]

#: Geometric candidates verified per photo view (most votes first, among those the 64-bit path did not verify).
MAX_LOCAL = 8
#: ``evidence["via"]`` of a match found by local features.
VIA = "local features"
#: A geometric match's residual motion is measured after a homography refined at the check's own resolution
#: (:func:`_refined`): copies are left with ~0.01-0.05, but a planar scene shot from another viewpoint (a
#: wall of graffiti) is a homography too and drops to ~0.14. So the limit is this share of ``max_motion``.
LOCAL_MOTION = 0.5


@dataclass
class LocalCandidate:
    """A dataset item whose image many of the photo's keypoints voted for."""

    item_id: int
    path: str | None
    item_hash: str | None
    kind: str  # the entry the keypoints belong to ("full")
    thumb: bytes | None
    distance: int  # 64-bit distance between the photo's and the item's whole-image codes (reported, not a gate)
    votes: int
    query_xy: np.ndarray  # (k, 2) fractions of the photo's working image
    dataset_xy: np.ndarray  # (k, 2) fractions of the dataset image
    faces: list | None = None
    one_to_one: np.ndarray | None = None  # bool (k,): the pairs to fit again with when all of them give no fit
    body: bytes | None = None  # the dataset image fetched on demand (as Candidate.body), or why not
    fetch_error: str | None = None


def query_features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of a query photo's working image: (fractions (k, 2), descriptors (k, 32))."""
    return extract(image, QUERY_FEATURES)


def _covered_box(cover: np.ndarray) -> tuple[int, int, int, int] | None:
    """A box (l, t, r, b) wholly inside ``cover``: its bounding box, shrunk until >= 99% of it is covered."""
    ys, xs = np.nonzero(cover)
    if not len(xs):
        return None
    l, t, r, b = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    for _ in range(12):
        if cover[t:b, l:r].mean() >= 0.99:
            return l, t, r, b
        dx, dy = max(1, (r - l) // 25), max(1, (b - t) // 25)
        l, t, r, b = l + dx, t + dy, r - dx, b - dy
        if r - l < 16 or b - t < 16:
            return None
    return None


def _refined(query: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``query`` warped onto ``region`` by the homography ECC finds at this resolution.

    The keypoint fit was made at 384 px and refined at 64 px: at the full-detail check's resolution
    it can leave a sub-pixel tilt, which the check's affine model would call motion. One homography
    for the whole picture absorbs a tilt, never the objects that moved between two frames.
    """
    try:
        _, w = cv2.findTransformECC(region.astype(np.float32), query.astype(np.float32), np.eye(3, dtype=np.float32),
                                    cv2.MOTION_HOMOGRAPHY, (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5),
                                    None, 5)
    except cv2.error:  # no convergence (flat, or too different): compare as the keypoints aligned them
        return query
    h, w_ = region.shape
    return cv2.warpPerspective(query, w, (w_, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)


def _detail(spec: HashSpec, image: np.ndarray, h: np.ndarray, cand: LocalCandidate) -> dict:
    """The full-detail check of a geometric match: the photo warped into the dataset region's frame."""
    hasher = _build(spec.hasher)
    region = _local_region(hasher, cand, cand.kind, spec.limits)
    if isinstance(region, str):
        return {"detail": region}
    rh, rw = region.shape
    warped, cover = warp_region(image, h, (rw, rh))
    box = _covered_box(cover)
    if box is None:
        return {"detail": "too small or flat to measure motion"}
    l, t, r, b = box
    motion = residual_motion(_refined(warped[t:b, l:r], region[t:b, l:r]), region[t:b, l:r])
    return {"detail": "too small or flat to measure motion"} if motion is None else {"motion": round(motion, 3)}


def _fit(cand: LocalCandidate, iw: int, ih: int):
    q = to_pixels(cand.query_xy, iw, ih)
    fit = fit_homography(q, cand.dataset_xy)
    if fit is None and cand.one_to_one is not None and 0 < cand.one_to_one.sum() < len(q):
        fit = fit_homography(q[cand.one_to_one], cand.dataset_xy[cand.one_to_one])
    return fit


def verify_local(spec: HashSpec, image: np.ndarray, cands: Sequence[LocalCandidate], min_score: float,
                 max_motion: float | None) -> list[tuple]:
    """Verify each geometric candidate: ``(item_id, score | None, distance, Variant, kind, detail)``,
    as :func:`matcher.pipeline.photo.verify_batch` returns them; ``detail`` also says ``via``, the
    inliers and votes. No fit, or no thumbnail to compare with: score 0 (never reported as a match)."""
    out = []
    ih, iw = image.shape
    for cand in cands:
        info = {"via": VIA, "votes": cand.votes}
        variant = Variant("local/homography", "id", (0.0, 0.0, float(iw), float(ih)))
        fit = _fit(cand, iw, ih) if cand.thumb is not None else None
        if fit is None:
            out.append((cand.item_id, 0.0, cand.distance, variant, cand.kind, {**info, "inliers": 0}))
            continue
        h, inliers = fit
        score, h = warp_score(image, h, decode_thumb(cand.thumb))
        info["inliers"] = inliers
        if score >= min_score and max_motion is not None:
            d = _detail(spec, image, h, cand)
            if "motion" in d:
                d["max_motion"] = round(max_motion * LOCAL_MOTION, 4)
            info.update(d)
        out.append((cand.item_id, score, cand.distance, variant, cand.kind, info))
    return out


def verify_all(spec: HashSpec, views: Sequence[tuple], min_score: float, max_motion: float | None) -> list[tuple]:
    """Verify one photo's candidates, ``views`` = ``[(image, faces, 64-bit candidates, local candidates), ...]``
    (one view, or two for a photo with transparency: flattened onto white and onto black).

    Per view, :func:`verify_batch` on the 64-bit candidates, then :func:`verify_local` on the local ones whose
    item is not verified yet. One outcome per item: a verified one if any, else the best score.
    """
    best: dict[int, tuple] = {}
    for image, faces, cands, local in views:
        out = verify_batch(spec, image, faces, cands, min_score, max_motion) if cands else []
        for o in out:
            _keep(best, o, min_score)
        rest = [c for c in local if not _verified(best.get(c.item_id), min_score)][:MAX_LOCAL]
        for o in verify_local(spec, image, rest, min_score, max_motion) if rest else []:
            _keep(best, o, min_score)
    return list(best.values())


def _verified(o: tuple | None, min_score: float) -> bool:
    if o is None:
        return False
    score, detail = o[1], o[5]
    return (score is None or score >= min_score) and ("motion" not in detail or detail["motion"] <= detail["max_motion"])


def _keep(best: dict[int, tuple], o: tuple, min_score: float) -> None:
    cur = best.get(o[0])
    if cur is None or (_verified(o, min_score), o[1] or 0.0) > (_verified(cur, min_score), cur[1] or 0.0):
        best[o[0]] = o
