"""Full-detail check: is a verified candidate the same exposure, or the next frame of a burst?

The thumbnail verification (:mod:`matcher.hashing.verify`) compares 64x64 pictures. Two frames shot
1/30 s apart (a burst, a video) agree there as well as a copy does: every object has moved
by a pixel or two, which a 64x64 thumbnail cannot show. At full detail it shows as *motion*:
after the best global alignment, a copy's pixels sit where the photo's pixels sit (resizing,
recompression, blur, noise and colour edits move nothing), while in another frame objects
have moved by different amounts.

So when the dataset image itself can be read (a local file, re-hashed to check it is the
image that was indexed), both regions are resampled to a common size (the smaller of the
two, at most :data:`SIDE` px), the dense optical flow between them is computed (Farneback,
OpenCV) and summarised as one flow per textured cell, an affine motion is fitted to the cells
robustly (that absorbs crops, scaling, stretching and small rotations left by the coarse
alignment), and the *residual* motion of the cells is measured. Its median, in units of 1/256
of the region's long side (so that the figure does not depend on the comparison size), is the
evidence: copies stay below ~0.16, different frames are ~0.25 and up. Cells where the content itself differs (a caption, a watermark)
are left out, and comparisons below MIN_SIDE px are not made (too coarse to show a pixel of motion).

No I/O here: callers pass greyscale arrays.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["SIDE", "DEFAULT_MAX_MOTION", "MIN_SIDE", "residual_motion"]

#: Longest side of the comparison (px): separates frames from copies as well as 512 px (bench) at half the cost.
SIDE = 384
#: Smallest comparison (px, long side) that can resolve the motion between two frames: below it
#: (a 256 px copy, a rotated query variant made from a small working copy) the check does not run.
MIN_SIDE = 320
#: Median residual motion (1/256 of the long side) above which a candidate is another frame, not a copy.
#: Chosen with benchmarks/bench_recall.py: copies <= 0.16, consecutive video frames 0.27 and 0.94.
DEFAULT_MAX_MOTION = 0.2
#: The motion field is summarised on a grid of about CELLS cells along the long side.
CELLS = 12
#: A cell counts when this share of its pixels has texture (Sobel magnitude > TEXTURE) ...
MIN_TEXTURED = 0.15
TEXTURE = 40.0
#: ... and its pixels, moved by the measured flow, correlate with the dataset's at least this well
#: (a caption, a watermark or an occlusion changes content, it does not move it).
MIN_AGREEMENT = 0.8
#: Fewest usable cells for a verdict.
MIN_USABLE = 8


def _match_levels(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``src`` with its grey levels mapped so that its histogram matches ``ref``'s (contrast/gamma edits)."""
    _, s_idx, s_counts = np.unique(src.ravel(), return_inverse=True, return_counts=True)
    r_vals, r_counts = np.unique(ref.ravel(), return_counts=True)
    mapped = np.interp(np.cumsum(s_counts) / src.size, np.cumsum(r_counts) / ref.size, r_vals.astype(np.float64))
    return mapped[s_idx].reshape(src.shape).astype(np.uint8)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    n = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / n if n > 0 else 0.0


def _fit_affine(pts: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Affine motion (3x2) fitted to cell flows, refitted on the 70% that fit best; and every cell's residual."""
    a = np.c_[pts, np.ones(len(pts))]
    keep = np.ones(len(pts), bool)
    for _ in range(3):
        coef = np.linalg.lstsq(a[keep], flow[keep], rcond=None)[0]
        res = np.hypot(*(flow - a @ coef).T)
        keep = res <= max(float(np.percentile(res, 70)), 1e-6)
    return coef, res


def _cell_flows(d: np.ndarray, q: np.ndarray, flow: np.ndarray, ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres and median flows of the usable cells of an ny x nx grid: textured, and where ``q`` moved
    by ``flow`` reproduces ``d`` (so the flow there measures motion, not a change of content)."""
    h, w = d.shape
    df = d.astype(np.float32)
    textured = np.hypot(cv2.Sobel(df, cv2.CV_32F, 1, 0), cv2.Sobel(df, cv2.CV_32F, 0, 1)) > TEXTURE
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    moved = cv2.remap(q, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    ys = np.linspace(0, h, ny + 1).round().astype(int)
    xs = np.linspace(0, w, nx + 1).round().astype(int)
    pts, flows = [], []
    for y0, y1 in zip(ys[:-1], ys[1:]):
        for x0, x1 in zip(xs[:-1], xs[1:]):
            sel = textured[y0:y1, x0:x1]
            if sel.mean() < MIN_TEXTURED or _corr(df[y0:y1, x0:x1], moved[y0:y1, x0:x1]) < MIN_AGREEMENT:
                continue
            pts.append(((x0 + x1) / 2, (y0 + y1) / 2))
            flows.append(np.median(flow[y0:y1, x0:x1][sel], axis=0))
    return np.array(pts, np.float64).reshape(-1, 2), np.array(flows, np.float64).reshape(-1, 2)


def residual_motion(query: np.ndarray, dataset: np.ndarray) -> float | None:
    """Median residual motion between two roughly aligned greyscale regions (see module doc).

    ``query`` and ``dataset`` are uint8 arrays of any sizes showing (about) the same region;
    they are compared at the dataset region's aspect ratio. Two passes: at half size the flow
    is measured and an affine motion fitted to the usable cells' median flows; the query is
    warped by it and the flow measured again at full size: what the affine motion cannot
    explain there is the residual. Returns
    ``None`` when the regions are too small, too flat or too different to measure motion.
    """
    h, w = dataset.shape
    side = min(SIDE, max(h, w), max(query.shape))
    if side < MIN_SIDE:
        return None
    f = side / max(h, w)
    size = (max(16, round(w * f)), max(16, round(h * f)))
    d = cv2.resize(dataset, size, interpolation=cv2.INTER_AREA)
    q = _match_levels(cv2.resize(query, size, interpolation=cv2.INTER_AREA), d)
    hh, ww = d.shape
    step = max(hh, ww) / CELLS
    ny, nx = max(2, round(hh / step)), max(2, round(ww / step))

    # pass 1, at half size: the affine motion that lines the query up (crops, scale, small rotations)
    half = (max(16, ww // 2), max(16, hh // 2))
    d2, q2 = cv2.resize(d, half, interpolation=cv2.INTER_AREA), cv2.resize(q, half, interpolation=cv2.INTER_AREA)
    pts, flows = _cell_flows(d2, q2, cv2.calcOpticalFlowFarneback(d2, q2, None, 0.5, 3, 15, 5, 5, 1.1, 0), ny, nx)
    if len(pts) < MIN_USABLE:
        return None
    fx, fy = ww / half[0], hh / half[1]
    coef, _ = _fit_affine(pts * (fx, fy), flows * (fx, fy))
    gy, gx = np.mgrid[0:hh, 0:ww].astype(np.float32)
    mx = gx + (coef[0, 0] * gx + coef[1, 0] * gy + coef[2, 0]).astype(np.float32)
    my = gy + (coef[0, 1] * gx + coef[1, 1] * gy + coef[2, 1]).astype(np.float32)
    warped = cv2.remap(q, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # pass 2, full size: the motion left once that affine motion is taken out
    pts, flows = _cell_flows(d, warped, cv2.calcOpticalFlowFarneback(d, warped, None, 0.5, 2, 15, 3, 5, 1.1, 0), ny, nx)
    if len(pts) < MIN_USABLE:
        return None
    _, res = _fit_affine(pts, flows)
    return float(np.median(res) * 256.0 / max(hh, ww))
