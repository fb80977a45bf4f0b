"""The catalog's dataset records: versions, how each source was read, per-dataset counts for `info`."""

from __future__ import annotations

import json
from typing import Any
from matcher.errors import CatalogError
from matcher.index.catalog_schema import _json_object, _now, _read_summary


class DatasetTables:
    """Dataset records of :class:`matcher.index.catalog.Catalog` (its ``datasets`` and ``reads`` tables)."""

    def stats(self) -> list[dict[str, Any]]:
        """Per dataset: items, hashed, failed, entries, and failures by kind."""
        out: dict[str, dict[str, Any]] = {}
        for dataset, status, n in self.db.execute(
            "SELECT dataset, status, COUNT(*) FROM items GROUP BY dataset, status ORDER BY dataset"
        ):
            d = out.setdefault(dataset, {"dataset": dataset, "items": 0, "hashed": 0, "failed": 0, "entries": 0, "failures": {}})
            d["items"] += n
            d["hashed" if status == "ok" else "failed"] += n
        for dataset, n in self.db.execute(
            "SELECT items.dataset, COUNT(*) FROM entries JOIN items ON items.id = entries.item_id GROUP BY items.dataset"
        ):
            out[dataset]["entries"] = n
        for dataset, kind, n in self.db.execute(
            "SELECT dataset, COALESCE(error_kind, 'other'), COUNT(*) FROM items WHERE status = 'failed'"
            " GROUP BY dataset, error_kind"
        ):
            out[dataset]["failures"][kind] = n
        return list(out.values())

    # datasets ---------------------------------------------------------------------
    def _has_datasets_table(self) -> bool:
        # a catalog written before the table existed and opened read-only has none (writable opens create it)
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'datasets'").fetchone() is not None

    def _has_reads(self) -> bool:
        return any(r[1] == "reads" for r in self.db.execute("PRAGMA table_info(datasets)"))

    def dataset_rows(self) -> dict[str, dict[str, Any]]:
        """{name: {"version", "source", "created_at", "updated_at", "reads"}} of the datasets ``add``
        recorded; ``reads``: {source location: how it was read (:meth:`record_read`)}."""
        if not self._has_datasets_table():
            return {}
        reads = "reads" if self._has_reads() else "NULL"
        return {name: {"version": version, "source": source, "created_at": created, "updated_at": updated,
                       "reads": _json_object(r)}
                for name, version, source, created, updated, r in self.db.execute(
                    f"SELECT name, version, source, created_at, updated_at, {reads} FROM datasets ORDER BY name")}

    def record_read(self, dataset: str, location: str, read: dict[str, Any]) -> None:
        """Record how one source of ``dataset`` was last read through: ``{"format", "rows", "items",
        "faces", "skipped": {reason: rows}}`` (a later read of the same location replaces it)."""
        if not self._has_reads():
            return
        row = self.db.execute("SELECT reads FROM datasets WHERE name = ?", (dataset,)).fetchone()
        if row is None:
            return
        reads = _json_object(row[0])
        reads[location] = read
        self.db.execute("UPDATE datasets SET reads = ? WHERE name = ?", (json.dumps(reads), dataset))

    def register_datasets(self, sources: dict[str, list[str]], *, version: str | None = None,
                          new_version: bool = False) -> list[tuple[str, str | None, str]]:
        """Record each dataset an ``add`` is about to fill: ``{name: [source locations]}``, at ``version``.

        A dataset recorded at another version is refused (CatalogError, nothing changed, for every
        dataset of the call) unless ``new_version``: then its version is updated. Without ``version``
        a dataset keeps the version it has. Returns ``[(name, old version, new version)]`` for the
        versions that changed (a dataset's first version included).
        """
        if new_version and version is None:
            raise CatalogError("--new-version needs --version V: the version the dataset now is")
        rows = self.dataset_rows()
        for name in sources:
            old = rows.get(name, {}).get("version")
            if version is not None and old is not None and old != version and not new_version:
                raise CatalogError(
                    f"dataset {name!r} is version {old!r} in this index, not {version!r}: adding to it would mix two "
                    f"versions. Pass --new-version to record that {name!r} is now version {version!r} (items already "
                    f"added stay until `matcher remove --dataset {name}`), or add it under another --dataset name; "
                    "nothing was changed")
        now = _now()
        changed = []
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for name, locations in sources.items():
                old = rows.get(name)
                source = "; ".join(dict.fromkeys(locations)) or None
                if old is None:
                    first = db.execute("SELECT MIN(added_at) FROM items WHERE dataset = ?", (name,)).fetchone()[0]
                    db.execute("INSERT INTO datasets (name, version, source, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                               (name, version, source, first or now, now))
                else:
                    db.execute("UPDATE datasets SET version = COALESCE(?, version), source = ?, updated_at = ? WHERE name = ?",
                               (version, source, now, name))
                if version is not None and (old is None or old["version"] != version):
                    changed.append((name, None if old is None else old["version"], version))
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return changed

    def dataset_overview(self) -> list[dict[str, Any]]:
        """Per dataset, by name: :meth:`stats` plus ``version``, ``source``, ``created_at``, ``updated_at``
        (None when ``add`` never recorded the dataset), ``dead_links`` (failed items whose image is gone,
        :data:`DEAD_LINK_SQL`) and ``removed`` / ``removed_entries`` (items removed and their entries,
        until ``matcher compact`` takes them out of FAISS). A dataset recorded but without items is listed
        with zeros."""
        stats = {d["dataset"]: d for d in self.stats()}
        rows = self.dataset_rows()
        dead = dict(self.db.execute(f"SELECT dataset, COUNT(*) FROM items WHERE {self.DEAD_LINK_SQL} GROUP BY dataset"))
        removed: dict[str, tuple[int, int]] = {}
        if self._has_tombstones_table():
            removed = {ds: (items, entries) for ds, items, entries in self.db.execute(
                "SELECT dataset, COUNT(DISTINCT item_id), COUNT(*) FROM tombstones GROUP BY dataset")}
        out = []
        for name in sorted(set(stats) | set(rows)):
            d = stats.get(name) or {"dataset": name, "items": 0, "hashed": 0, "failed": 0, "entries": 0, "failures": {}}
            r = rows.get(name, {})
            gone = removed.get(name, (0, 0))
            out.append({**d, "version": r.get("version"), "dead_links": dead.get(name, 0), "removed": gone[0],
                        "removed_entries": gone[1], "source": r.get("source"), "created_at": r.get("created_at"),
                        "updated_at": r.get("updated_at"), "read": _read_summary(r.get("reads") or {})})
        return out
