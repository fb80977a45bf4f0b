"""Shared helpers for the benchmark scripts: photo discovery and a machine/parameter header."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_PHOTOS = Path(os.environ.get("MATCHER_BENCH_PHOTOS", Path.home() / ".cache/matcher/bench-photos"))
SHARED = ROOT.parent / "shared" / "images"
EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def photos(*dirs: Path, min_side: int = 0) -> list[Path]:
    out = []
    for d in dirs:
        if d.is_dir():
            out += sorted(p for p in d.rglob("*") if p.suffix.lower() in EXTS and p.is_file())
    if min_side:
        from PIL import Image

        keep = []
        for p in out:
            with Image.open(p) as im:
                if min(im.size) >= min_side:
                    keep.append(p)
        out = keep
    return out


def header(name: str, **params) -> None:
    import faiss
    import numpy
    import PIL

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"# {name}")
    print(f"# machine: {platform.machine()} {cpu}, {os.cpu_count()} cpus, Python {sys.version.split()[0]}, "
          f"Pillow {PIL.__version__}, numpy {numpy.__version__}, faiss {faiss.__version__}")
    for k, v in params.items():
        print(f"# {k}: {v}")
