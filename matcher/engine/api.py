"""The engine's public face: build an index from sources, search photos against it."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from matcher.hashing.detail import DEFAULT_MAX_MOTION
from matcher.errors import IndexMismatch, MatcherError
from matcher.ingest.policy import FetchSettings
from matcher.imaging.images import DEFAULT_LIMITS, Limits, iter_image_files, shown_path
from matcher.ingest.run import AddStats, Progress, default_workers, ingest
from matcher.results import Item, Match, QueryResult
from matcher.ingest.sources import Source
from matcher.index.binary import one_search_thread
from matcher.index.store import IndexStore, writing
from matcher.hashing.verify import DEFAULT_MIN_SCORE
from matcher.engine.fetched import fetch_for_verification
from matcher.engine.local import local_candidates
from matcher.hashing.local_features import INDEX_FEATURES
from matcher.pipeline.local import verify_all
from matcher.pipeline.photo import Candidate, HashSpec, QueryHashes, query_batch
from matcher.pipeline.pool import CRASH_REASON, Task, Workers

__all__ = ["DEFAULT_THRESHOLD", "DEFAULT_MIN_SCORE", "DEFAULT_MAX_MOTION", "MAX_CANDIDATES", "add", "search", "iter_query_files",
           "remove", "compact", "search_bytes", "rank_candidates"]

#: Largest 64-bit pHash distance (inclusive) between a query variant and an index entry that
#: makes the dataset item a candidate. Chosen with benchmarks/bench_recall.py (README).
DEFAULT_THRESHOLD = 10
#: Candidates verified per dataset item (nearest first) before giving up on it.
MAX_CANDIDATES = 6


def add(
    index_dir: str | os.PathLike,
    sources: Sequence[Source],
    *,
    workers: int | None = None,
    fetch: FetchSettings = FetchSettings(),
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    version: str | None = None,
    new_version: bool = False,
    screen=None,
    reservations=None,
    thumbnails: str = "full",
    warn=None,
    local_features: bool = False,
) -> AddStats:
    """Create or extend the index at ``index_dir`` with every item of ``sources``.

    An index this call creates is removed again when nothing was recorded in it (the sources held no images,
    an error or an interrupt before the first item): ``stats.index_removed``. An index whose items all failed
    is kept: its failure records are evidence (a dead link proves the photo was listed; ``lookup`` finds it by
    Flickr identity) and a rerun retries them.
    ``warn(message)`` is told, before any work, about a source already added under another dataset name
    (its images would be stored once per dataset).

    Each source's dataset is recorded first, at ``version`` if given (:meth:`IndexStore.register_sources`):
    a dataset recorded at another version raises CatalogError, adding nothing, unless ``new_version``.
    ``screen`` (a :class:`matcher.optout.registry.Screen` over an opt-out registry): images that match one of
    its entries are not added but recorded as failed ("opted out (registry entry ...)", kind ``opted_out``).
    ``reservations`` (a :class:`matcher.ingest.reservations.Checker`): each item's reservations are read and
    stored with it. ``thumbnails``: the datasets' thumbnail tier from now on (:meth:`IndexStore.set_thumbnails`).
    ``local_features``: give the index its local-feature tier (:mod:`matcher.index.local`; kept from then on):
    ORB keypoints of every image added, searched beside the 64-bit codes, for corner crops, framed,
    rotated and tilted copies.
    """
    for source in sources:  # one that cannot be read at all (no URL or path column) is refused first:
        rows = iter(source.items())  # nothing is registered, no index is created
        next(rows, None)
        getattr(rows, "close", lambda: None)()
    created = _new_index_root(index_dir)
    try:
        stats = _add(index_dir, sources, workers, fetch, limits, progress, version, new_version, screen, warn,
                     reservations, thumbnails, local_features)
    except BaseException:
        if created is not None:
            _remove_if_empty(created, index_dir)
        raise
    if created is not None and stats.added == 0 and stats.failed == 0:
        stats.index_removed = _remove_if_empty(created, index_dir)
    return stats


def _add(index_dir, sources, workers, fetch, limits, progress, version, new_version, screen, warn, reservations,
         thumbnails, local_features=False) -> AddStats:
    with writing(index_dir), IndexStore.open(index_dir, create=True, writable=True) as store:
        if warn is not None:
            for location, other, items in sources_added_before(store, sources):
                warn(f"{location} was added before as dataset {other!r} ({items:,} items): added again as another "
                     f"dataset, each of its images is stored once per dataset. To resume the first add instead, "
                     f"give --dataset {other}")
        if screen is not None and store.hasher.identity() != screen.hasher:
            raise IndexMismatch(f"index {index_dir} hashes with {store.hasher.identity()}; the registry's codes "
                                f"are {screen.hasher}")
        store.register_sources(sources, version=version, new_version=new_version)
        store.set_thumbnails([s.dataset for s in sources], thumbnails)
        if local_features:
            store.enable_local(INDEX_FEATURES)
        return ingest(store, sources, workers=workers, fetch=fetch, limits=limits, progress=progress, screen=screen,
                      reservations=reservations)


def sources_added_before(store: IndexStore, sources: Sequence[Source]) -> list[tuple[str, str, int]]:
    """(location, other dataset, its items) for each source already recorded under another dataset's name (and
    not under its own: a rerun that resumes a dataset is not warned about)."""
    recorded = store.catalog.dataset_rows()
    counts = {d["dataset"]: d["items"] for d in store.catalog.stats()}
    places = {name: {os.path.realpath(p) for p in (row.get("source") or "").split("; ") if p}
              for name, row in recorded.items()}
    out = []
    for source in sources:
        where = os.path.realpath(source.location)
        if where in places.get(source.dataset, ()):
            continue  # resuming (or extending) this dataset: nothing new is doubled
        out += [(source.location, name, counts[name]) for name in sorted(places)
                if name != source.dataset and where in places[name] and counts.get(name)]
    return out


def _new_index_root(index_dir: str | os.PathLike) -> Path | None:
    """The topmost folder an add into ``index_dir`` is about to create (None: the index exists already)."""
    root = Path(index_dir).absolute()
    if root.exists():
        return None
    while not root.parent.exists():
        root = root.parent
    return root


def _remove_if_empty(created: Path, index_dir: str | os.PathLike) -> bool:
    """Remove the folder an add created (``created``: the index, or the topmost new folder above it) when the
    index holds no item, stored or failed; True if removed."""
    import shutil

    if Path(index_dir).is_dir():
        try:
            with IndexStore.open(index_dir) as store:
                if any(d["items"] for d in store.catalog.stats()):
                    return False
        except MatcherError:
            pass  # an index the interrupted add left half made: nothing in it worth keeping
    shutil.rmtree(created, ignore_errors=True)
    return not created.exists()


def remove(
    index_dir: str | os.PathLike,
    *,
    dataset: str | None = None,
    keys: Sequence[str] = (),
    urls: Sequence[str] = (),
) -> dict[str, int]:
    """Remove items from the index at ``index_dir`` without rebuilding it (see :meth:`IndexStore.remove_items`).

    Select by ``keys`` or ``urls`` (optionally within ``dataset``), or a whole ``dataset``. Searches stop
    returning them at once; :func:`compact` later drops their ids from FAISS. Raises CatalogError and
    changes nothing when a selector matches no item. A later ``add`` of a source that still lists an
    item adds it back (with new entry ids).
    """
    with writing(index_dir), IndexStore.open(index_dir, writable=True) as store:
        return store.remove_items(dataset=dataset, keys=keys, urls=urls)


def compact(index_dir: str | os.PathLike) -> dict:
    """Rebuild the FAISS file of ``index_dir`` without removed items' ids, in the layout its size calls for."""
    with writing(index_dir), IndexStore.open(index_dir, writable=True) as store:
        return store.compact()


def iter_query_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files named directly, and image files found under folders (recursive)."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            yield from iter_image_files(p)
        else:
            yield p


def search(
    store: IndexStore,
    paths: Iterable[str | os.PathLike],
    *,
    threshold: int = DEFAULT_THRESHOLD,
    min_score: float = DEFAULT_MIN_SCORE,
    max_motion: float | None = DEFAULT_MAX_MOTION,
    workers: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    report_rejected: bool = False,
    fetch: FetchSettings | None = None,
) -> Iterator[QueryResult]:
    """Hash each photo and yield its matches (in input order), or the reason it could not be read.

    Each photo is hashed as many *variants* (8 orientations x likely crops, small rotations,
    crops around faces). Every index entry within ``threshold`` of a variant is a candidate;
    a candidate is reported only when its region of the photo, aligned to the entry's stored
    thumbnail, correlates at ``min_score`` or better (indexes built without thumbnails fall
    back to the hash distance alone). When the dataset image is a local file that still
    hashes as indexed, the match must also pass the full-detail check of :mod:`matcher.hashing.detail`:
    residual motion at most ``max_motion`` (another frame of a burst fails it; ``None`` skips
    the check). The evidence of each match says which variant and
    entry matched, the hash distance and the correlation. ``report_rejected`` (for
    benchmarks) also returns candidates that failed verification, with
    ``evidence["verified"] = False``.

    A candidate of a dataset added with ``--thumbnails none`` is verified against the dataset image: the local
    file, else the image fetched from its URL with ``fetch`` (the ingest downloader's guards; nothing stored:
    :mod:`matcher.engine.fetched`); ``fetch`` None fetches nothing. Without the image it is reported with
    ``evidence["verified"] = False`` and the reason (``unverifiable``).
    """
    # Long on purpose: one pipeline over two shared queues (photos being hashed, photos being verified) that
    # keeps input order and bounded memory.
    files = [str(p) for p in iter_query_files(paths)]
    one_search_thread()  # the cores are the workers'; a photo's lookup is a small batch
    spec = _spec(store, limits)
    workers = default_workers() if workers is None else workers
    chunks = [files[i : i + 4] for i in range(0, len(files), 4)]
    pool = Workers(workers if workers > 0 and len(files) > 4 else 0)
    window = 2 * max(1, workers)  # chunks in flight: hashing stays ahead of verification, memory stays bounded

    def hashed(chunk: list[str], task: Task) -> list[tuple]:
        try:
            return task.result()
        except BrokenProcessPool:  # a worker died: each photo of the chunk again, on its own
            return [pool.rerun(task, [("err", CRASH_REASON, "crash")], (spec, [f]))[0] for f in chunk]

    def verified(entry: tuple) -> tuple:
        """``entry`` with its verification outcomes in hand (or the reason they are missing)."""
        f, error, hash_hex, items, task = entry
        if not isinstance(task, Task):
            return entry
        try:
            return f, error, hash_hex, items, task.result()
        except BrokenProcessPool:
            outcomes = pool.rerun(task, None)
            if outcomes is None:
                return f, "a worker process died twice while verifying this photo's matches " \
                          "(out of memory, or a crashing decoder)", None, None, None
            return f, error, hash_hex, items, outcomes

    try:
        hashing = deque()
        pending: deque = deque()  # per photo, in input order: (file, error, hash, items, outcomes or Task)
        it = iter(chunks)
        for chunk in it:
            hashing.append((chunk, pool.submit(query_batch, spec, chunk)))
            if len(hashing) >= window:
                break
        while hashing:
            chunk, task = hashing.popleft()
            outs = hashed(chunk, task)
            nxt = next(it, None)
            if nxt is not None:
                hashing.append((nxt, pool.submit(query_batch, spec, nxt)))
            for f, o in zip(chunk, outs):
                if o[0] != "ok":
                    pending.append((f, o[1], None, None, None))
                    continue
                items, views = _views(store, o[2], threshold)
                if spec.regions:  # an index without regions is verified by hash distance alone: nothing to fetch for
                    fetch_for_verification(views, items, fetch)
                task = pool.submit(verify_all, spec, views, min_score, max_motion) if views else []
                pending.append((f, None, o[1].hex(), items, task))
            # hand out what is ready, in order, without waiting on photos still being verified
            while pending and (_ready(pending[0][4]) or len(pending) > 4 * window):
                yield _result(verified(pending.popleft()), threshold, min_score, report_rejected)
        while pending:
            yield _result(verified(pending.popleft()), threshold, min_score, report_rejected)
    finally:
        pool.shutdown()


def _spec(store: IndexStore, limits: Limits) -> HashSpec:
    return HashSpec.of(store.hasher, store.regions, limits, local=store.local.features if store.local is not None else 0)


def _ready(outcomes) -> bool:
    """Outcomes of a photo are ready: none (an error), a list (verified in-process) or a finished task."""
    return not isinstance(outcomes, Task) or outcomes.done()


def rank_candidates(names: Sequence[str], hits) -> list[tuple[Item, list[tuple[int, int, str, bytes | None]]]]:
    """Dataset items near any variant, each with its tries ``(distance, variant position, entry kind, thumbnail)``
    best first (nearest; unrotated variants before rotated ones; then by name), at most MAX_CANDIDATES.

    ``names[i]`` is the name of variant ``i``, ``hits[i]`` its row of :meth:`IndexStore.search_codes`.
    The CLI and the web API order candidates with this one function.
    """
    by_item: dict[int, list] = {}
    items: dict[int, Item] = {}
    for i, row in enumerate(hits):
        for item, kind, d, thumb in row:
            items[item.id] = item
            by_item.setdefault(item.id, []).append((d, i, kind, thumb))
    out = []
    for item_id, tries in by_item.items():
        tries.sort(key=lambda c: (c[0], "/rot" in names[c[1]], names[c[1]]))
        out.append((items[item_id], tries[:MAX_CANDIDATES]))
    return out


def _candidates(store: IndexStore, q: QueryHashes, threshold: int, stages: dict | None = None
                ) -> tuple[dict, list[Candidate]]:
    """The dataset items some variant of the photo came within ``threshold`` of (and whose filter code is near
    that variant's, :mod:`matcher.index.filtercodes`), with what verifying them needs; ``stages`` gets the counts
    (:meth:`IndexStore.search_codes`)."""
    stages = {} if stages is None else stages
    hits = store.search_codes(q.codes, threshold, q.fcodes, stages)
    ranked = rank_candidates([v.name for v in q.variants], hits)
    items = {item.id: item for item, _ in ranked}
    cands = [Candidate(item.id, item.path, item.hash, [(d, q.variants[i], kind, thumb) for d, i, kind, thumb in tries],
                       item.extra.get("faces"), stages.get("filter_radius"))
             for item, tries in ranked]
    return items, cands


def _views(store: IndexStore, q: QueryHashes, threshold: int) -> tuple[dict, list[tuple]]:
    """The photo's candidates (64-bit and local), per way it was decoded (a photo with transparency: two),
    as :func:`matcher.pipeline.local.verify_all` takes them; views without candidates are left out."""
    items: dict = {}
    views = []
    for view in (q, q.alt):
        if view is None:
            continue
        found, cands = _candidates(store, view, threshold)
        items.update(found)
        local = local_candidates(store, view, items)
        if cands or local:
            views.append((view.image, view.faces, cands, local))
    return items, views


def search_bytes(
    store: IndexStore,
    name: str,
    data: bytes,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    min_score: float = DEFAULT_MIN_SCORE,
    max_motion: float | None = DEFAULT_MAX_MOTION,
    limits: Limits = DEFAULT_LIMITS,
    run_store=None,
    fetch: FetchSettings | None = None,
) -> QueryResult:
    """Search one photo given as its file's bytes, in this process, exactly as :func:`search` searches a file.

    Nothing is written anywhere (the web check's upload path for photos a browser cannot decode).
    ``run_store(fn, *args)`` runs ``fn(store, *args)`` where the store may be used (the web server
    keeps it on a thread of its own); by default, here. ``fetch``: as for :func:`search`.
    """
    spec = _spec(store, limits)
    (out,) = query_batch(spec, [data])
    if out[0] != "ok":
        return QueryResult(query=name, error=out[1])
    q = out[2]

    items, views = run_store(_views, q, threshold) if run_store else _views(store, q, threshold)
    if spec.regions:  # an index without regions is verified by hash distance alone: nothing to fetch for
        fetch_for_verification(views, items, fetch)
    outcomes = verify_all(spec, views, min_score, max_motion) if views else []
    return _result((name, None, out[1].hex(), items, outcomes), threshold, min_score, False)


def _result(entry: tuple, threshold: int, min_score: float, report_rejected: bool) -> QueryResult:
    f, error, hash_hex, items, outcomes = entry
    f = shown_path(f)  # a file name that is not UTF-8 must still print and serialise
    if error is not None:
        return QueryResult(query=f, error=error)
    out: list[Match] = []
    for item_id, score, d, variant, kind, detail in outcomes:
        verified = score is None or score >= min_score
        if verified and "motion" in detail:
            verified = detail["motion"] <= detail["max_motion"]
        if "unverifiable" in detail:  # reported as such: neither confirmed nor ruled out
            verified = False
        elif not verified and not report_rejected:
            continue
        evidence = {"variant": variant.name, "entry": kind, "distance": d, "threshold": threshold}
        if detail.get("via"):  # found by local features: the 64-bit distance is reported, it was not the gate
            evidence.pop("threshold")
        if score is not None:
            evidence.update(score=round(score, 4), min_score=min_score)
        evidence.update(detail)
        if report_rejected or "unverifiable" in detail:
            evidence["verified"] = verified
        out.append(Match(items[item_id], d, evidence))
    out.sort(key=lambda m: (m.distance, -m.evidence.get("score", 0), m.item.id))
    return QueryResult(query=f, matches=out, hash=hash_hex)
