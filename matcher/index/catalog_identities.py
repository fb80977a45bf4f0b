"""The catalog's Flickr identities: photo id and owner per item, and lookups by them."""

from __future__ import annotations

from typing import Any, Iterable
from matcher.provenance.flickr import normalize_nsid, parse_url
from matcher.results import Item


class IdentityTables:
    """Flickr identities of :class:`matcher.index.catalog.Catalog` (its ``identities`` table)."""

    def _set_identity(self, item_id: int, identity: dict[str, Any] | None) -> None:
        if identity and any(identity.get(k) for k in ("photo_id", "owner_nsid", "owner_name")):
            self.db.execute("INSERT OR REPLACE INTO identities (item_id, photo_id, owner_nsid, owner_name) VALUES (?, ?, ?, ?)",
                            (item_id, identity.get("photo_id"), identity.get("owner_nsid"), identity.get("owner_name")))
        else:
            self.db.execute("DELETE FROM identities WHERE item_id = ?", (item_id,))

    @property
    def has_identities(self) -> bool:
        """Whether Flickr identities are recorded: False for an older catalog not yet opened for writing
        (identity lookups then find nothing; open it writable once, or rebuild it, to backfill them)."""
        return self._has_table("identities")

    def lookup(self, photo_id: str | int | None = None, owner_nsid: str | None = None, owner_name: str | None = None,
               url: str | None = None) -> list[Item]:
        """Items listed under any of the given selectors, ok or failed, by (dataset, key).

        ``photo_id``: a Flickr photo id; ``owner_nsid``: an NSID; ``owner_name``: a Flickr user name
        or path alias (case-insensitive); ``url``: any Flickr URL form (:func:`matcher.provenance.flickr.parse_url`)
        selects its photo id, and any URL selects the items with exactly that image URL.
        """
        photo_ids: list[str] = []
        if photo_id is not None:
            text = str(photo_id).strip()
            photo_ids.append(str(int(text)) if text.isdigit() and text.isascii() else text)
        exact_url = None
        if url is not None:
            exact_url = url.strip()
            ref = parse_url(url)
            if ref is not None:
                photo_ids.append(ref.photo_id)
        ids: set[int] = set()
        if self.has_identities:
            queries: list[tuple[str, list[str]]] = []  # one indexed query per selector
            if photo_ids:
                queries.append((f"photo_id IN ({','.join('?' * len(photo_ids))})", photo_ids))
            if owner_nsid is not None and owner_nsid.strip():
                queries.append(("owner_nsid = ?", [normalize_nsid(owner_nsid) or owner_nsid.strip()]))
            if owner_name is not None and owner_name.strip():
                queries.append(("lower(owner_name) = lower(?)", [owner_name.strip()]))
            for clause, args in queries:
                ids.update(r[0] for r in self.db.execute(f"SELECT item_id FROM identities WHERE {clause}", args))
        if exact_url:
            ids.update(r[0] for r in self.db.execute("SELECT id FROM items WHERE url = ?", (exact_url,)))
        items = self.items_by_id(ids).values()
        return sorted(items, key=lambda it: (it.dataset, it.key, it.id))

    def identities_of(self, item_ids: Iterable[int]) -> dict[int, dict[str, str | None]]:
        """{item id: {"photo_id", "owner_nsid", "owner_name"}} for those of the items that have a Flickr identity."""
        out: dict[int, dict[str, str | None]] = {}
        if not self.has_identities:
            return out
        ids = [int(i) for i in item_ids]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = (f"SELECT item_id, photo_id, owner_nsid, owner_name FROM identities"
                 f" WHERE item_id IN ({','.join('?' * len(chunk))})")
            for item_id, photo_id, nsid, name in self.db.execute(q, chunk):
                out[item_id] = {"photo_id": photo_id, "owner_nsid": nsid, "owner_name": name}
        return out
