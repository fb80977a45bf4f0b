"""Local binary features: the second retrieval path, for partial and geometric copies.

A 64-bit code describes a whole region; when a copy keeps only a corner of the photo, frames it on a
blurred copy of itself, rotates it by any angle or tilts it in perspective, no code of the photo is
near any code of the copy. Local features survive all of these: ORB keypoints (FAST corners with a
256-bit rotated BRIEF descriptor, OpenCV) sit on the same scene points in both images, at any
rotation and over a ~4x range of scale, and a copy shares many of them.

Keypoints alone match bursts and stereo pairs as well as copies (the same scene points are there), so
they only *find* candidates and *align* them: a homography is fitted to the matched points (RANSAC),
the query is warped into the dataset image's frame, and the verdict is the same cell-by-cell pixel
comparison as for every other match (:func:`matcher.hashing.verify.cell_score`, on the cells the warped
photo covers), followed by the full-detail check when the dataset file is local.

No I/O here: callers pass greyscale arrays.
"""

from __future__ import annotations

import cv2
import numpy as np

from matcher.hashing.verify import THUMB, cell_score

__all__ = ["INDEX_FEATURES", "QUERY_FEATURES", "LOCAL_SIDE", "DESC_BYTES", "MIN_INLIERS", "extract", "fit_homography",
           "warp_score", "warp_region", "to_pixels"]

#: Keypoints kept per dataset image: 36 bytes each in the index (descriptor + position). 96 keep a corner
#: crop of 30% of the photo findable (~25 of its keypoints survive) at ~3.5 KB per image.
INDEX_FEATURES = 96
#: Keypoints of a query photo (only searched, never stored).
QUERY_FEATURES = 500
#: Long side (px) both sides are described at.
LOCAL_SIDE = 384
DESC_BYTES = 32
#: Fewest RANSAC inliers that make a geometric match worth a pixel comparison.
MIN_INLIERS = 8
#: RANSAC reprojection tolerance, in px of the query's working image.
RANSAC_PX = 4.0


def _orb(n: int):
    # edgeThreshold/patchSize 19: keypoints up to 19 px from the border (a crop's new edges keep their corners)
    return cv2.ORB_create(nfeatures=n, scaleFactor=1.3, nlevels=6, edgeThreshold=19, patchSize=19, fastThreshold=12)


def extract(gray: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` ORB keypoints of a greyscale image, strongest first, spread over the picture.

    Returns (positions as fractions of width/height, float32 (k, 2); descriptors, uint8 (k, 32)).
    The image is described at :data:`LOCAL_SIDE` px on its long side. ORB is asked for 3x ``n``
    keypoints, and they are kept round-robin over a 4x4 grid of the image, strongest first in each
    cell, so that a corner of the photo keeps its share.
    """
    h, w = gray.shape
    f = LOCAL_SIDE / max(h, w)
    a = gray if abs(f - 1) < 0.05 else cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))),
                                                 interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    kps, desc = _orb(3 * n).detectAndCompute(np.ascontiguousarray(a), None)
    if desc is None or not kps:
        return np.empty((0, 2), np.float32), np.empty((0, DESC_BYTES), np.uint8)
    ah, aw = a.shape
    xy = (np.array([k.pt for k in kps], np.float32) + 0.5) / (aw, ah)  # pixel centres -> fractions of the frame
    strength = np.array([k.response for k in kps], np.float32)
    cell = np.minimum((xy * 4).astype(int), 3)
    cell_id = cell[:, 1] * 4 + cell[:, 0]
    order = np.lexsort((-strength, cell_id))  # by cell, strongest first within a cell
    rank = np.empty(len(order), int)
    starts = np.searchsorted(cell_id[order], np.arange(16))
    for c in range(16):
        end = starts[c + 1] if c < 15 else len(order)
        rank[order[starts[c]:end]] = np.arange(end - starts[c])
    keep = np.lexsort((-strength, rank))[:n]  # round-robin over cells
    return np.ascontiguousarray(xy[keep]), np.ascontiguousarray(desc[keep])


def fit_homography(q_xy: np.ndarray, d_xy: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Homography (3x3) mapping query points (px) to dataset points (fractions), and its RANSAC inliers.

    ``None`` when fewer than :data:`MIN_INLIERS` pairs agree, or the fit is degenerate (it folds the
    picture, or shrinks/grows it by more than 20x). MAGSAC++ first (~10x faster); when it finds no
    valid fit, classic RANSAC (it now and then settles on a small or degenerate consensus).
    """
    if len(q_xy) < MIN_INLIERS:
        return None
    # the dataset side in a px frame of LOCAL_SIDE: the tolerance is then in comparable px
    q_px, d_px = q_xy.astype(np.float64), d_xy.astype(np.float64) * LOCAL_SIDE
    cv2.setRNGSeed(0x17)  # the same pairs always give the same fit (RANSAC samples at random)
    for method, conf in ((cv2.USAC_MAGSAC, 0.99), (cv2.RANSAC, 0.995)):
        h, mask = cv2.findHomography(q_px, d_px, method, RANSAC_PX, maxIters=2000, confidence=conf)
        fit = _valid(h, mask, q_px, d_px)
        if fit is not None:
            return np.diag([1 / LOCAL_SIDE, 1 / LOCAL_SIDE, 1.0]) @ fit[0], fit[1]
    return None


def _valid(h, mask, q_px: np.ndarray, d_px: np.ndarray) -> tuple[np.ndarray, int] | None:
    if h is None or mask is None:
        return None
    sel = mask.ravel().astype(bool)
    if sel.sum() < MIN_INLIERS:
        return None
    a, _ = cv2.estimateAffinePartial2D(q_px[sel], d_px[sel], method=cv2.LMEDS)
    if a is None:
        return None
    scale = float(np.hypot(a[0, 0], a[1, 0]))
    if float(np.linalg.det(h[:2, :2])) <= 0 or not (1 / 20 < scale < 20):
        return None
    return h, int(sel.sum())


def _to_frame(h: np.ndarray, w: int, hh: int) -> np.ndarray:
    """``h`` (query px -> dataset fractions) followed by the mapping to the pixel centres of a ``w`` x ``hh`` frame."""
    return np.array([[w, 0, -0.5], [0, hh, -0.5], [0, 0, 1]], np.float64) @ h


def to_pixels(xy: np.ndarray, w: int, h: int) -> np.ndarray:
    """Fractions of a ``w`` x ``h`` frame (as :func:`extract` returns them) -> pixel coordinates (centres)."""
    return xy.astype(np.float64) * (w, h) - 0.5


def warp_region(query: np.ndarray, h: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The query warped into the dataset region's frame of ``size`` (w, h) px, and where it is defined (bool)."""
    m = _to_frame(h, *size)
    out = cv2.warpPerspective(query, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    cover = cv2.warpPerspective(np.full(query.shape, 255, np.uint8), m, size, flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, cover > 0


def _shrunk(query: np.ndarray, h: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The query reduced so that the part mapped onto a ``side`` px frame is about ``side`` px (no aliasing)."""
    corners = np.float32([[0, 0], [1, 0], [1, 1], [0, 1]]).reshape(-1, 1, 2)
    inv = np.linalg.inv(h)
    pts = cv2.perspectiveTransform(corners, inv).reshape(-1, 2)
    extent = float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1.0))
    f = min(1.0, side / extent)
    if f >= 0.8:
        return query, h, 1.0
    small = cv2.resize(query, (max(1, round(query.shape[1] * f)), max(1, round(query.shape[0] * f))),
                       interpolation=cv2.INTER_AREA)
    f = small.shape[1] / query.shape[1]
    return small, h @ np.diag([1 / f, 1 / f, 1.0]), f


def _covered_cells(cover: np.ndarray, cells: int) -> np.ndarray:
    n = cover.shape[0] // cells
    c = cover[: n * cells, : n * cells].reshape(cells, n, cells, n).transpose(0, 2, 1, 3).reshape(cells * cells, -1)
    return c.all(axis=1)


def warp_score(query: np.ndarray, h: np.ndarray, thumb: np.ndarray) -> tuple[float, np.ndarray]:
    """Pixel verification of a geometric match: :func:`cell_score` of the warped query against ``thumb``.

    The query is warped into the 64x64 thumbnail's frame by ``h`` (query px -> dataset fractions);
    cells the warped photo does not wholly cover (a fill, a background, a lost corner) are left out.
    The alignment is then refined by ECC (OpenCV's enhanced correlation coefficient, homography
    motion) over the covered area, as :func:`matcher.hashing.verify.align` refines a box, and the
    better score kept. Returns (score, the homography used).
    """
    small, hs, f = _shrunk(query, h, 2 * THUMB)
    warped, cover = warp_region(small, hs, (THUMB, THUMB))
    covered = _covered_cells(cover, 8)
    best = cell_score(warped, thumb, cells_ok=covered)
    best_h = h
    if best >= 0.999 or covered.sum() < 12:
        return best, best_h
    m = _to_frame(hs, THUMB, THUMB)
    try:
        _, refined = cv2.findTransformECC(thumb.astype(np.float32), small.astype(np.float32),
                                          np.linalg.inv(m).astype(np.float32), cv2.MOTION_HOMOGRAPHY,
                                          (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-5),
                                          np.ones(small.shape, np.uint8), 3)
    except cv2.error:  # ECC did not converge (flat cells, a poor start): the RANSAC fit stands
        return best, best_h
    m2 = np.linalg.inv(refined.astype(np.float64))
    h2 = np.linalg.inv(_to_frame(np.eye(3), THUMB, THUMB)) @ m2
    warped2, cover2 = warp_region(small, h2, (THUMB, THUMB))
    s2 = cell_score(warped2, thumb, cells_ok=_covered_cells(cover2, 8))
    if s2 > best:
        best, best_h = s2, h2 @ np.diag([f, f, 1.0])  # query px -> small px -> fractions
    return best, best_h
