"""Open what ``matcher add`` is given: folders, manifest files, globs, a manifest in a dataset's published
layout, a folder of a multi-part release."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from matcher.errors import ManifestError
from matcher.imaging.images import shown_path
from matcher.ingest.presets import detect_preset, expand, open_preset, part_files, suggest_formats
from matcher.ingest.sources import MANIFEST_SUFFIXES, FolderSource, ManifestSource, Source, _base_suffix
from matcher.outputs import looks_like_image

__all__ = ["open_source", "open_sources"]


def open_source(spec: str | os.PathLike, dataset: str | None = None, columns: Mapping[str, str] | None = None,
                preset: str | None = None, allow_paths: Sequence[str | os.PathLike] = ()) -> Source:
    """A folder or a manifest file. ``preset``: read it in a dataset's published layout (one of
    :data:`matcher.ingest.presets.PRESETS`), or ``auto`` to pick one when its layout is unambiguous; None
    reads a folder of images or a plain CSV/TSV/TXT/JSONL/Parquet manifest. A plain manifest whose columns
    name no image URL or path is refused here, naming the ``--format`` presets its layout may fit. A
    manifest's local paths must lie inside its folder or one of ``allow_paths`` (:meth:`ManifestSource.local_path`)."""
    p = Path(spec)
    if preset == "auto":
        preset = detect_preset(p)  # None for a folder of images, or a file of no preset's layout
    if preset is None and p.is_dir():
        return FolderSource(p, dataset)
    if not p.exists():
        raise ManifestError(f"{spec}: no such file or folder")
    if preset is None and looks_like_image(p) and _base_suffix(p) not in MANIFEST_SUFFIXES:
        raise ManifestError(f"{spec}: is a photo; add takes folders of images (searched recursively) and "
                            f"manifests (CSV, TSV, JSONL, Parquet): put it in a folder and add the folder. To "
                            f"check a photo against an index: matcher search --index INDEX {spec}")
    try:
        source = ManifestSource(p, dataset, columns) if preset is None else open_preset(p, preset, dataset, columns)
        if isinstance(source, ManifestSource):
            source.allow_paths = allow_paths
        check = getattr(source, "check", None)
        if check is not None:
            check()  # the first row: a layout not understood is refused now, not row by row
    except ManifestError as e:
        fits = [f for f in suggest_formats(p) if f != preset]
        if not fits:
            raise
        raise ManifestError(f"{e.reason}; its layout may fit --format {' or --format '.join(fits)}") from None
    return source


def open_sources(specs: Sequence[str | os.PathLike], dataset: str | None = None,
                 columns: Mapping[str, str] | None = None, preset: str | None = None,
                 allow_paths: Sequence[str | os.PathLike] = ()) -> list[Source]:
    """Every source ``specs`` name: globs expanded (``'data/part-*.parquet'``, quoted so the shell left it),
    and a folder given with a manifest format (or ``auto`` finding parts in it) read as the parts in it
    (:func:`matcher.ingest.presets.part_files`), all under one dataset name: ``dataset``, else the folder's.
    Parts given one by one share a name too (:func:`matcher.ingest.sources.dataset_name`)."""
    out: list[Source] = []
    for spec in specs:
        for one in expand(str(spec)):
            p = Path(one)
            fmt = detect_preset(p) if preset == "auto" else preset
            if p.is_dir() and fmt not in (None, "megaface"):
                name = dataset or shown_path(p.resolve().name)
                out.extend(open_source(part, name, columns, fmt, allow_paths) for part in part_files(p))
            else:
                out.append(open_source(p, dataset, columns, fmt, allow_paths))
    return out
