"""Face boxes in a photo (OpenCV's Haar cascade), so face-cropped dataset copies can be looked up.

Face datasets (LFW, MegaFace, FaceScrub style) keep a tight crop around each face while
the person holds the whole photo. The query side detects faces and hashes crops around
them at a few margins (see :data:`matcher.regions.FACE_SCALES`).
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


def detect_faces(gray: np.ndarray, *, max_faces: int = 8) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of frontal faces in a uint8 greyscale array, largest first."""
    c = _cascade()
    if c is None or min(gray.shape) < 48:
        return []
    min_side = max(20, int(min(gray.shape) * 0.04))
    found = c.detectMultiScale(np.ascontiguousarray(gray), scaleFactor=1.15, minNeighbors=6,
                               minSize=(min_side, min_side))
    boxes = [tuple(int(v) for v in f) for f in (found if len(found) else [])]
    boxes.sort(key=lambda b: -b[2] * b[3])
    return boxes[:max_faces]
