#!/usr/bin/env python3
"""Why a 64-bit pHash needs verification: distances of re-hosted copies vs. distances of different photos.

For each real photo: make seeded "re-host" copies (resize, recompress, grayscale, colour,
blur, noise) and measure the 64-bit pHash and 256-bit verification distances from the
original file. For every pair of *different* photos measure the same distances. Prints
recall of copies and false pairs for each (64-bit threshold, 256-bit threshold).

    .venv/bin/python benchmarks/bench_threshold.py [--photos DIR ...] [--seed 0]

Photos default to sample/, ../shared/images and ~/.cache/matcher/bench-photos
(fetch them with ../shared/get-bench-photos).
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_PHOTOS, ROOT, SHARED, header, photos  # noqa: E402

from matcher.hashing.hashers import PHash  # noqa: E402
from matcher.imaging.images import load_image  # noqa: E402

H, V = PHash(), PHash(hash_size=16)  # the 64-bit index hash, and a 256-bit pHash as a candidate verifier


def encode(img: Image.Image, fmt="JPEG", **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def shrink(img, side):
    im = img.copy()
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return im


def transforms(img: Image.Image, rng: np.random.Generator) -> dict[str, bytes]:
    base = shrink(img, 1600)
    noise = np.clip(np.asarray(base, np.float32) + rng.normal(0, 8, np.asarray(base).shape), 0, 255).astype(np.uint8)
    return {
        "resize_256": encode(shrink(base, 256), quality=85),
        "resize_512": encode(shrink(base, 512), quality=85),
        "jpeg_q25": encode(base, quality=25),
        "webp_q50": encode(base, "WEBP", quality=50),
        "grayscale": encode(base.convert("L"), quality=85),
        "brightness_1.3": encode(ImageEnhance.Brightness(base).enhance(1.3), quality=85),
        "contrast_0.7": encode(ImageEnhance.Contrast(base).enhance(0.7), quality=85),
        "saturation_1.6": encode(ImageEnhance.Color(base).enhance(1.6), quality=85),
        "blur_1.5": encode(base.filter(ImageFilter.GaussianBlur(1.5)), quality=85),
        "noise_8": encode(Image.fromarray(noise), quality=85),
        "resize_320_q40": encode(shrink(base, 320), quality=40),
    }


def sig(src):
    li = H.load(src)
    r = H.hash_loaded(li)
    return r.hash, V.hash_image(li.image), r.informative


def work(args):
    path, seed = args
    rng = np.random.default_rng(seed)
    h, v, ok = sig(path)
    if not ok:  # nearly uniform: matcher refuses to match these (MIN_DETAIL)
        return str(path), None, None, {}
    img = load_image(path).image.convert("RGB")
    out = {}
    for name, data in transforms(img, rng).items():
        ch, cv, _ = sig(data)
        out[name] = (h - ch, v - cv)
    return str(path), h.data, v.data, out


def main() -> None:
    ap = argparse.ArgumentParser()
    # Default: the shared reference photos and the bench photos (distinct sources). The bundled sample is
    # made from the shared photos, so it is used only when they are absent.
    default = [SHARED, BENCH_PHOTOS] if SHARED.is_dir() else [ROOT / "sample" / "my-photos", BENCH_PHOTOS]
    ap.add_argument("--photos", nargs="*", type=Path, default=default)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    files = photos(*a.photos)
    # pdq/dih, bridge-mods and exif-rotn hold edits of one photo each: keep one of each
    files = [f for f in files if not ("dih" in f.parts and "original" not in f.name)
             and "bridge-mods" not in f.parts and not ("exif-rotn" in f.parts and not f.name.endswith("-1.jpg"))]
    header("bench_threshold", photos=len(files), seed=a.seed, hasher=H.identity(), verifier=V.identity())
    with ProcessPoolExecutor() as pool:
        res = list(pool.map(work, [(f, a.seed + i) for i, f in enumerate(files)]))
    copies = [(n, d) for _, _, _, out in res for n, d in out.items()]
    # different photos: every pair, excluding known copies (sample ground truth and byte-identical files)
    uniform = [p for p, h, _, _ in res if h is None]
    print(f"# skipped as nearly uniform: {len(uniform)}: {', '.join(Path(p).name for p in uniform)}")
    res = [r for r in res if r[1] is not None]
    codes = {p: (h, v) for p, h, v, _ in res}
    # The wallpaper packages ship one artwork at several resolutions/aspect ratios (Name_1920x1080.png,
    # Name_768x1024_Portrait.png): those are copies of each other, not different photos.
    import re

    def artwork(p: str) -> str:
        return re.sub(r"[_-]?\d{3,4}x\d{3,4}(_portrait)?$", "", Path(p).stem.lower())

    # Colour/tint variants that the packages ship of one artwork (checked by eye): copies under a colour edit.
    variants = [{"ubuntu-mate-cold-no-logo", "ubuntu-mate-warm-no-logo", "ubuntu-mate-radioactive-no-logo"},
                {"licorice-d", "licorice-l"}, {"grid-d", "grid-l"}]

    def same_artwork(a: str, b: str) -> bool:
        a, b = artwork(a), artwork(b)
        return a == b or any(a in g and b in g for g in variants)

    pairs = []
    for (pa, (ha, va)), (pb, (hb, vb)) in itertools.combinations(codes.items(), 2):
        if same_artwork(pa, pb):
            continue
        d64 = int.bit_count(int.from_bytes(ha, "big") ^ int.from_bytes(hb, "big"))
        d256 = int.bit_count(int.from_bytes(va, "big") ^ int.from_bytes(vb, "big"))
        pairs.append((d64, d256, pa, pb))
    print(f"\n{len(copies)} copies of {len(res)} photos; {len(pairs)} pairs of different photos\n")
    names = sorted({n for n, _ in copies})
    print("copy distances (64-bit max / 256-bit max) per transform:")
    for n in names:
        ds = [d for m, d in copies if m == n]
        print(f"  {n:16s} 64-bit p99 {np.percentile([d[0] for d in ds], 99):5.1f} max {max(d[0] for d in ds):3d}"
              f" | 256-bit p99 {np.percentile([d[1] for d in ds], 99):5.1f} max {max(d[1] for d in ds):3d}")
    print("\nclosest pairs of different photos (64-bit, 256-bit):")
    for d64, d256, pa, pb in sorted(pairs)[:12]:
        print(f"  {d64:3d} {d256:4d}  {Path(pa).name} ~ {Path(pb).name}")
    from matcher.engine.api import DEFAULT_THRESHOLD as T

    VT = 44  # the 256-bit verification threshold of matcher 0.1's first design (since replaced: README)
    print(f"\npairs of different photos within 64-bit <= {T} (256-bit shown, rejected above {VT}):")
    for d64, d256, pa, pb in sorted(pairs):
        if d64 <= T:
            print(f"  {d64:3d} {d256:4d} {'MATCH' if d256 <= VT else 'rejected':8s} {Path(pa).name} ~ {Path(pb).name}")
    rec = np.mean([d[0] <= T and d[1] <= VT for _, d in copies])
    print(f"64-bit <= {T} and 256-bit <= {VT}: copy recall {rec:.4f}, false matches {sum(1 for a, b, _, _ in pairs if a <= T and b <= VT)}")
    print("\n  T(64)  V(256)  copy recall  false pairs")
    for t in (6, 8, 10, 12, 14):
        for v in (None, 40, 48, 56, 64, 72):
            rec = np.mean([d[0] <= t and (v is None or d[1] <= v) for _, d in copies])
            fp = sum(1 for d64, d256, _, _ in pairs if d64 <= t and (v is None or d256 <= v))
            print(f"  {t:5d}  {str(v):>6s}  {rec:11.4f}  {fp:11d}")


if __name__ == "__main__":
    main()
