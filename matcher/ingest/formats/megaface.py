"""``--format megaface``: MegaFace's Flickr images as released, ``FlickrFinal2/{NSID[:3]}/{NSID}/{photoid}_{i}.jpg``.

Each image has a JSON sidecar beside it, ``{photoid}_{i}.jpg.json``, whose ``bounding_box`` (``x``, ``y``,
``width``, ``height`` in the image's pixels) is the face the file was listed for (``i``, its index in the
photo); other keys of the sidecar (landmarks, ``id``...) are not used. The lists of the devkit name files
by their path relative to ``FlickrFinal2/``, one a line, or as the ``path`` list of a JSON object.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from matcher.errors import ManifestError
from matcher.imaging.facebox import FaceSpecError, parse_face
from matcher.provenance.flickr import normalize_nsid
from matcher.imaging.images import IMAGE_EXTENSIONS, shown_path
from matcher.ingest.sources import Source, SourceItem, guarded, open_text

__all__ = ["MegafaceSource", "looks_megaface", "megaface_root"]

_FILE = re.compile(r"([0-9]{1,20})_([0-9]{1,4})")
SIDECAR = ".json"
_MAX_SIDECAR = 1 << 20


def megaface_root(path: Path) -> Path:
    """The ``FlickrFinal2`` folder ``path`` is or holds (``path`` itself when neither)."""
    if path.name == "FlickrFinal2" or not (path / "FlickrFinal2").is_dir():
        return path
    return path / "FlickrFinal2"


def looks_megaface(folder: Path) -> bool:
    """A MegaFace tree: under its root, a ``{3 chars}/{NSID}/`` folder holding ``{id}_{i}.jpg[.json]`` files."""
    root = megaface_root(folder)
    try:
        for prefix in sorted(os.scandir(root), key=lambda e: e.name)[:20]:
            if not prefix.is_dir():
                continue
            for owner in sorted(os.scandir(prefix.path), key=lambda e: e.name)[:20]:
                if owner.is_dir() and normalize_nsid(owner.name):
                    names = [e.name for e in os.scandir(owner.path)][:50]
                    return any(_FILE.fullmatch(n.split(".")[0]) for n in names)
    except OSError:
        return False
    return False


class MegafaceSource(Source):
    """A MegaFace tree (the ``FlickrFinal2`` folder or a folder holding it) or a list file of paths relative
    to ``FlickrFinal2/`` (text, one a line, ``.gz``/``.bz2``; or JSON with a ``path`` list).

    One item per image file. Key = its path relative to ``FlickrFinal2`` (``100/10000000@N05/3437290774_0.jpg``).
    From the path: owner (the NSID), ``extra.photo_id``, ``extra.owner_nsid``, ``extra.face_index``, and the
    page URL ``https://www.flickr.com/photos/{NSID}/{photo id}/``. From the sidecar: the face box (a face
    entry); a sidecar that cannot be read or has no ``bounding_box`` is named in ``extra.face_errors``.
    Skipped and counted: sidecars whose image is not there, other files. An image whose path is not
    MegaFace's naming is still indexed, without an identity. A listed file that is not there is a failed
    item (kind ``missing``) that keeps its identity.
    """

    preset = "megaface"
    counts_rows = True

    def __init__(self, spec: str | Path, dataset: str | None = None):
        p = Path(spec).resolve()
        if p.is_dir():
            self.root, self.listing = megaface_root(p), None
        elif p.is_file():
            self.listing = p
            base = p.parent
            self.root = megaface_root(base)
        else:
            raise ManifestError(f"{spec}: no such file or folder")
        self.dataset = dataset or ("megaface" if self.root.name == "FlickrFinal2" else shown_path(p.name.split(".")[0]))
        self.location = shown_path(p)

    # the files -------------------------------------------------------------------------
    def _tree(self) -> Iterator[tuple[str, Path, Path | None]]:
        """(relative path, image path, its sidecar or None) of every image under the root, folder by folder."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            names = set(filenames)
            images = {n.rsplit(".", 1)[0] for n in filenames if Path(n).suffix.lower() in IMAGE_EXTENSIONS}
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                rel = PurePosixPath(Path(dirpath).relative_to(self.root).as_posix(), name).as_posix()
                if rel.startswith("./"):
                    rel = rel[2:]
                if name.lower().endswith(SIDECAR):
                    base = name[: -len(SIDECAR)]  # X.jpg for X.jpg.json (the release), X for X.json
                    if base not in names and base not in images:
                        self.counts.rows += 1
                        self.counts.skipped["sidecar without its image"] += 1
                    continue
                self.counts.rows += 1
                if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                    self.counts.skipped["not an image"] += 1
                    continue
                side = next((Path(dirpath) / c for c in (name + SIDECAR, name.rsplit(".", 1)[0] + SIDECAR)
                             if c in names), None)
                yield shown_path(rel), Path(dirpath) / name, side

    def _listed(self) -> Iterator[tuple[str, Path, Path | None]]:
        assert self.listing is not None
        for rel in guarded(self.listing.name, _list_paths(self.listing)):
            self.counts.rows += 1
            rel = rel.lstrip("/")
            if rel.startswith("FlickrFinal2/"):
                rel = rel[len("FlickrFinal2/"):]
            path = self.root / rel
            sides = (Path(str(path) + SIDECAR), path.with_suffix(SIDECAR))
            yield rel, path, next((c for c in sides if c.is_file()), None)

    def _items(self) -> Iterator[SourceItem]:
        for rel, path, sidecar in (self._tree() if self.listing is None else self._listed()):
            yield self._item(rel, path, sidecar)

    def _item(self, rel: str, path: Path, sidecar: Path | None) -> SourceItem:
        parts = rel.split("/")
        extra: dict[str, Any] = {}
        fields: dict[str, Any] = {"url": None, "page_url": None, "path": str(path), "owner": None, "license": None,
                                  "title": None}
        m = _FILE.fullmatch(parts[-1].split(".")[0])
        nsid = normalize_nsid(parts[-2]) if len(parts) >= 2 else None
        if m and nsid:
            photo_id = str(int(m.group(1)))
            extra.update(photo_id=photo_id, owner_nsid=nsid, face_index=int(m.group(2)))
            fields.update(owner=nsid, page_url=f"https://www.flickr.com/photos/{nsid}/{photo_id}/")
        item = SourceItem(self.dataset, rel, path=str(path), fields=fields, extra=extra)
        if not path.is_file():
            item.error, item.error_kind = f"{rel}: listed, but no such file under {shown_path(self.root)}", "missing"
            return item
        if sidecar is not None:
            box, why = _sidecar_box(sidecar)
            if box is not None:
                item.faces = ((box,), None)
            else:
                extra["face_errors"] = [why]
        return item


def _sidecar_box(path: Path) -> tuple[tuple | None, str]:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_SIDECAR + 1)
        if len(data) > _MAX_SIDECAR:
            return None, f"{path.name}: larger than {_MAX_SIDECAR} bytes"
        obj = json.loads(data.decode("utf-8-sig", "replace"))
    except OSError as e:
        return None, f"{path.name}: unreadable ({e.strerror or e})"
    except (ValueError, RecursionError):
        return None, f"{path.name}: not JSON"
    box = obj.get("bounding_box") if isinstance(obj, dict) else None
    if not isinstance(box, dict):
        return None, f"{path.name}: no bounding_box"
    try:
        l, t, r, b, _ = parse_face(box, units=True)
    except FaceSpecError as e:
        return None, f"{path.name}: {e}"
    return (l, t, r, b, True), ""


def _list_paths(path: Path) -> Iterator[str]:
    """The paths a MegaFace list names: JSON ``{"path": [...]}`` (the devkit's), or one path a line."""
    with open_text(path) as f:
        head = f.read(1)
        if head in ("{", "["):
            try:
                obj = json.loads(head + f.read())
            except ValueError as e:
                raise ManifestError(f"{path.name}: not a JSON list of paths ({e})") from None
            paths = obj.get("path") if isinstance(obj, dict) else obj
            if not isinstance(paths, list):
                raise ManifestError(f"{path.name}: JSON without a \"path\" list")
            yield from (str(p).strip() for p in paths if str(p).strip())
            return
        first = True
        for line in f:
            if first:
                line, first = head + line, False
            line = line.strip()
            if line and not line.startswith("#"):
                yield line
        if first and head.strip():
            yield head.strip()
