"""What every stage of ``matcher bench`` shares: its constants, worker pool, machine facts, the baselines' hashes."""

from __future__ import annotations

import io
import os
import platform
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from matcher import __version__
from matcher.errors import MatcherError


#: Largest 64-bit threshold searched; the sweep covers 0..SWEEP_MAX.
SWEEP_MAX = 16
#: Fraction of the originals that get no copies and are queried as non-members.
HOLDOUT = 0.1
#: Baselines: imagehash.phash at Hamming <= 10, PDQ at Hamming <= 31 (the PDQ paper's threshold).
PHASH_BASELINE = 10
PDQ_BASELINE = 31
FACE_TRANSFORM = "face_crop"
FACE_FAMILY = "face"
#: The ``j`` of the face copies' generators (``default_rng([seed, k, FACE_J])``): outside TRANSFORMS' range.
FACE_J = 1000
#: transforms.apply first fits photos larger than this (LANCZOS thumbnail); the bench does it once per photo.
APPLY_MAX_SIDE = 1600

DATASET_COPIES = "copies"
DATASET_DISTRACTORS = "distractors"
DATASET_SAME_SCENE = "same-scene"

Log = Callable[[str], None]


class BenchError(MatcherError):
    """The bench cannot run with these inputs."""


# --- small helpers ----------------------------------------------------------------------
def sniff_ext(data: bytes) -> str:
    """File extension for encoded image bytes, from their magic number."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return "bin"


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _pool(workers: int) -> ProcessPoolExecutor | None:
    if workers <= 0:
        return None
    import multiprocessing

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))


def _map(pool: ProcessPoolExecutor | None, fn, items: Sequence, chunksize: int = 1) -> Iterator:
    if pool is None:
        return map(fn, items)
    return pool.map(fn, items, chunksize=chunksize)


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def machine_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    libs = {}
    for name in ("numpy", "Pillow", "faiss-cpu", "imagehash", "pdqhash", "matplotlib"):
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            libs[name] = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "matcher": __version__,
        "libraries": libs,
    }


# --- baselines: hashes of the raw files, as a dedup tool computes them ----------------------------
def baseline_hashes(src: str | bytes) -> tuple[bytes | None, bytes | None]:
    """(64-bit imagehash.phash, 256-bit PDQ) of a file path or encoded bytes, packed; None where it fails.

    No EXIF transpose, no mode normalisation beyond what each library does itself: this is
    what a tool that calls ``Image.open`` and hashes (imagededup, a PDQ pipeline) sees.
    """
    import imagehash
    import pdqhash
    from PIL import Image

    def opened():
        return Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)

    ph = pdq = None
    try:
        with opened() as im:
            ph = np.packbits(np.asarray(imagehash.phash(im).hash, dtype=bool).ravel()).tobytes()
    except Exception:  # noqa: BLE001 - a baseline that cannot hash a file simply does not match it
        ph = None
    try:
        with opened() as im:
            vec, _quality = pdqhash.compute(np.ascontiguousarray(np.asarray(im.convert("RGB"))))
            pdq = np.packbits(np.asarray(vec).astype(bool).ravel()).tobytes()
    except Exception:  # noqa: BLE001
        pdq = None
    return ph, pdq


def _baseline_paths(paths: Sequence[str]) -> list[tuple[bytes | None, bytes | None]]:
    return [baseline_hashes(p) for p in paths]


# --- copies --------------------------------------------------------------------------
