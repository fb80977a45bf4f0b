"""Face boxes in a photo (OpenCV's Haar cascade), so face-cropped dataset copies can be looked up.

Face datasets (LFW, MegaFace, FaceScrub style) keep a tight crop around each face while
the person holds the whole photo. The query side detects faces and hashes crops around
them at a few margins (see :data:`matcher.imaging.regions.FACE_SCALES`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["detect_faces", "available"]


@lru_cache(maxsize=1)
def _cascade():
    try:
        import cv2
    except ImportError:  # pragma: no cover - declared dependency; faces are then simply not searched
        return None
    c = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    return None if c.empty() else c


def available() -> bool:
    return _cascade() is not None


#: Long side the detector runs at, and its scale step: faces down to ~9% of the short side are found
#: (the Haar window is 24 px). 256 px finds every face 288 px found on the bench corpus's face photos
#: (15 of 15) for 18% less CPU, with the same face-crop recall (15 of 16) and no false match
#: (benchmarks/bench_recall.py, docs/speed.md); 288 px was 2.3x cheaper than 384 px in steps of 1.15.
DETECT_SIDE = 256
SCALE_STEP = 1.2


def detect_faces(gray: np.ndarray, *, max_faces: int = 8) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of frontal faces in a uint8 greyscale array, largest first (in its pixels)."""
    c = _cascade()
    if c is None or min(gray.shape) < 48:
        return []
    import cv2

    f = min(1.0, DETECT_SIDE / max(gray.shape))
    small = gray if f == 1.0 else cv2.resize(gray, (round(gray.shape[1] * f), round(gray.shape[0] * f)),
                                             interpolation=cv2.INTER_AREA)
    min_side = max(18, int(min(small.shape) * 0.04))
    found = c.detectMultiScale(np.ascontiguousarray(small), scaleFactor=SCALE_STEP, minNeighbors=5,
                               minSize=(min_side, min_side))
    boxes = [tuple(int(round(v / f)) for v in b) for b in (found if len(found) else [])]
    boxes.sort(key=lambda b: -b[2] * b[3])
    return boxes[:max_faces]
