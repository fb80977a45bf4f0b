"""Open what ``matcher add`` is given: a folder, a manifest file, or a manifest in a dataset's published layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from matcher.errors import ManifestError
from matcher.ingest.presets import detect_preset, open_preset
from matcher.ingest.sources import FolderSource, ManifestSource, Source, _base_suffix
from matcher.outputs import looks_like_image

__all__ = ["open_source"]


def open_source(spec: str | os.PathLike, dataset: str | None = None, columns: Mapping[str, str] | None = None,
                preset: str | None = None, allow_paths: Sequence[str | os.PathLike] = ()) -> Source:
    """A folder or a manifest file. ``preset``: read the manifest in a dataset's published layout
    (``yfcc100m``, ``laion``, ``faces-jsonl``), or ``auto`` to pick one when the file's layout is
    unambiguous (see :mod:`matcher.ingest.presets`); None reads it as a plain CSV/TSV/JSONL/Parquet manifest.
    A manifest's local paths must lie inside its folder or one of ``allow_paths``
    (:meth:`ManifestSource.local_path`)."""
    p = Path(spec)
    src: Source | None = None
    if preset is not None:
        if preset == "auto":
            preset = detect_preset(p)  # None for a folder, or a file of no preset's layout
        if preset is not None:
            src = open_preset(p, preset, dataset, columns)
    if src is None and p.is_dir():
        return FolderSource(p, dataset)
    if src is None and p.is_file():
        if looks_like_image(p) and _base_suffix(p) not in (".csv", ".tsv", ".jsonl", ".parquet"):
            raise ManifestError(f"{spec}: is a photo; add takes folders of images (searched recursively) and "
                                f"manifests (CSV, TSV, JSONL, Parquet): put it in a folder and add the folder. To "
                                f"check a photo against an index: matcher search --index INDEX {spec}")
        src = ManifestSource(p, dataset, columns)
    if src is None:
        raise ManifestError(f"{spec}: no such file or folder")
    if isinstance(src, ManifestSource):
        src.allow_paths = allow_paths
    return src
