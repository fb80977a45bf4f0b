"""OpenCV's frontal-face Haar cascade as compact JSON, for the browser's face detector (``static/faces.js``).

The CLI finds faces with ``cv2.CascadeClassifier`` over ``haarcascade_frontalface_default.xml``
(:mod:`matcher.imaging.faces`). The web page must find the same faces without uploading the photo, so it
runs the same cascade in JavaScript. This module converts the XML shipped in the installed ``cv2``
package (``cv2.data.haarcascades``) into JSON once per process: nothing generated is committed,
and the page always evaluates exactly the cascade the server's OpenCV uses.

JSON layout (numbers are the XML's values; ``faces.js`` applies OpenCV's reading rules to them,
e.g. float32 storage and the stage-threshold epsilon)::

    {"format": "opencv-haar-stumps/1", "name": "haarcascade_frontalface_default.xml",
     "opencv": "4.x.y", "license": "<the licence text from the XML header>",
     "width": 24, "height": 24,
     "stages": [{"threshold": t, "stumps": [[feature, node_threshold, left_leaf, right_leaf], ...]}, ...],
     "features": [[[x, y, w, h, weight], ...], ...]}     # 2 or 3 rects each, in window pixels

Only the "new" (``opencv-cascade-classifier``) stump-based HAAR format without tilted features is
accepted, which is what the bundled frontal-face cascade is.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

__all__ = ["CASCADE_NAME", "cascade_dict", "cascade_json", "cascade_path"]

CASCADE_NAME = "haarcascade_frontalface_default.xml"
FORMAT = "opencv-haar-stumps/1"


def cascade_path() -> Path:
    import cv2

    return Path(cv2.data.haarcascades) / CASCADE_NAME


def _f32(text: str) -> float:
    """The XML number as OpenCV stores it (float32), as the shortest decimal that reads back to it."""
    import numpy as np

    v = np.float32(float(text))
    d = float(str(v))  # numpy prints the shortest float32 repr
    # JS reads the decimal as a double and rounds it to float32 (Math.fround): that must give v again
    return d if np.float32(d) == v else float(v)


def _licence(text: str) -> str:
    m = re.search(r"<!--(.*?)-->", text, re.DOTALL)
    if not m:
        raise ValueError(f"{CASCADE_NAME}: no licence header comment")
    lines = [ln.rstrip() for ln in m.group(1).strip("\n").splitlines()]
    indent = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
    return "\n".join(ln[indent:] for ln in lines).strip() + "\n"


def _nums(el: ET.Element | None) -> list[str]:
    if el is None or el.text is None:
        raise ValueError(f"{CASCADE_NAME}: missing numbers")
    return el.text.split()


def cascade_dict(path: str | Path | None = None) -> dict:
    """The cascade at ``path`` (default: the one in the installed cv2) as JSON-ready data."""
    import cv2

    path = Path(path) if path is not None else cascade_path()
    text = path.read_text(encoding="utf-8")
    root = ET.fromstring(text.encode("utf-8"))
    c = root.find("cascade")
    if c is None or c.get("type_id") != "opencv-cascade-classifier":
        raise ValueError(f"{path.name}: not a new-format OpenCV cascade")
    if (c.findtext("stageType") or "").strip() != "BOOST" or (c.findtext("featureType") or "").strip() != "HAAR":
        raise ValueError(f"{path.name}: only BOOST stages over HAAR features are supported")
    if int((c.findtext("featureParams/maxCatCount") or "0").strip()) != 0:
        raise ValueError(f"{path.name}: categorical features are not supported")
    width, height = int(c.findtext("width")), int(c.findtext("height"))

    stages = []
    for st in c.find("stages"):
        stumps = []
        for wc in st.find("weakClassifiers"):
            nodes, leaves = _nums(wc.find("internalNodes")), _nums(wc.find("leafValues"))
            if len(nodes) != 4 or len(leaves) != 2:
                raise ValueError(f"{path.name}: only stumps (one node per weak classifier) are supported")
            stumps.append([int(nodes[2]), _f32(nodes[3]), _f32(leaves[0]), _f32(leaves[1])])
        stages.append({"threshold": _f32(st.findtext("stageThreshold")), "stumps": stumps})

    features = []
    for ft in c.find("features"):
        if int((ft.findtext("tilted") or "0").strip()):
            raise ValueError(f"{path.name}: tilted features are not supported")
        rects = []
        for r in ft.find("rects"):
            x, y, w, h, wt = r.text.split()
            x, y, w, h = int(x), int(y), int(float(w)), int(float(h))
            if not (0 <= x < width and 0 <= y < height and x + w <= width and y + h <= height):
                raise ValueError(f"{path.name}: feature rect outside the window")
            rects.append([x, y, w, h, _f32(wt)])
        if not 1 <= len(rects) <= 3:
            raise ValueError(f"{path.name}: a feature has {len(rects)} rects")
        features.append(rects)
    nfeat = len(features)
    if any(not 0 <= s[0] < nfeat for st in stages for s in st["stumps"]):
        raise ValueError(f"{path.name}: a weak classifier names a missing feature")

    return {
        "format": FORMAT,
        "name": path.name,
        "opencv": cv2.__version__,
        "license": _licence(text),
        "width": width,
        "height": height,
        "stages": stages,
        "features": features,
    }


@lru_cache(maxsize=1)
def cascade_json() -> bytes:
    """The installed cv2's frontal-face cascade as compact JSON (UTF-8), built once per process."""
    return json.dumps(cascade_dict(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
