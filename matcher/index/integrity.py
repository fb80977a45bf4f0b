"""Is an index whole? ``matcher check`` reads everything and says; ``matcher repair`` rebuilds FAISS.

The catalog is the truth and FAISS a cache of its entries' codes (:mod:`matcher.index.store`), so:

* the catalog is checked with SQLite's ``PRAGMA quick_check`` (every page and record readable, read-only:
  the check never writes). A damaged catalog cannot be repaired here: restore it from a backup.
* ``index.faiss`` is checked against the CRC-32 its trailer records (:func:`matcher.index.binary.checksum_problem`),
  then its ids against the catalog's: FAISS must hold exactly the live entries plus the tombstones of
  removed items awaiting ``matcher compact``.
* :func:`repair` writes FAISS again from the catalog's codes (atomically: the old file stays until the new
  one is whole), which fixes every FAISS problem at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from matcher.errors import CatalogError, MatcherError
from matcher.index.binary import BinaryIndex, checksum_problem, read_trailer
from matcher.index.catalog import read_only_uri
from matcher.index.store import CATALOG, FAISS, META, IndexStore, writing

__all__ = ["check_index", "repair_index"]


def _catalog_ids(path: Path) -> tuple[str | None, np.ndarray | None]:
    """(problem or None, the ids FAISS must hold) of a catalog, read-only."""
    try:
        db = sqlite3.connect(read_only_uri(path), uri=True, isolation_level=None)
    except sqlite3.Error as e:
        return f"cannot open it ({e})", None
    try:
        rows = [r[0] for r in db.execute("PRAGMA quick_check(10)")]
        if rows != ["ok"]:
            return "damaged: " + "; ".join(rows), None
        ids = [r[0] for r in db.execute("SELECT id FROM entries")]
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tombstones'").fetchone():
            ids += [r[0] for r in db.execute("SELECT entry_id FROM tombstones")]
        return None, np.unique(np.array(ids, dtype=np.int64))
    except sqlite3.DatabaseError as e:
        return f"damaged: {e}", None
    finally:
        db.close()


def check_index(root: str | os.PathLike) -> dict[str, Any]:
    """``{"catalog": problem | None, "faiss": problem | None, "ids": problem | None, "notes": [...], "ok": bool}``."""
    root = Path(root)
    if not (root / META).exists():
        raise CatalogError(f"{root} is not a matcher index (no {META})")
    try:
        bits = int(json.loads((root / META).read_text())["hasher"]["bits"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CatalogError(f"cannot read {root / META}: {e}") from None
    out: dict[str, Any] = {"catalog": None, "faiss": None, "ids": None, "notes": []}
    if not (root / CATALOG).exists():
        out["catalog"] = "missing"
        want = None
    else:
        out["catalog"], want = _catalog_ids(root / CATALOG)
    faiss_path = root / FAISS
    have = None
    if not faiss_path.exists():
        out["faiss"] = "missing" if want is not None and len(want) else None
    else:
        trailer = read_trailer(faiss_path)
        if trailer is None or "crc32" not in trailer:
            out["notes"].append(f"{FAISS} has no checksum (saved by an older matcher): its ids are checked, "
                                "its codes cannot be")
        out["faiss"] = checksum_problem(faiss_path)
        if out["faiss"] is None:
            try:
                have = BinaryIndex.load(faiss_path, bits).ids()
            except MatcherError as e:
                out["faiss"] = e.reason
    if want is not None and have is not None:
        missing = np.setdiff1d(want, have)
        extra = np.setdiff1d(have, want)
        dup = len(have) - len(np.unique(have))
        if len(missing) or len(extra) or dup:
            out["ids"] = (f"{FAISS} lacks {len(missing):,} catalog entries, holds {len(extra):,} ids the catalog "
                          f"does not know and {dup:,} duplicated ids")
        out["notes"].append(f"{len(have):,} ids in {FAISS}, {len(want):,} in the catalog (entries and tombstones)")
    out["ok"] = not (out["catalog"] or out["faiss"] or out["ids"])
    return out


def repair_index(root: str | os.PathLike) -> dict[str, int]:
    """Write ``index.faiss`` again from the catalog's entries (the catalog must be whole: it is checked)."""
    with writing(root), IndexStore.open(root, writable=True, rebuild_faiss=True) as store:
        return {"entries": len(store.faiss), "layout": store.faiss.layout}
