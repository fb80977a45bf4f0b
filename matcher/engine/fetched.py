"""On-demand verification for datasets added without thumbnails (``matcher add --thumbnails none``).

A candidate that survived the filter codes has no stored thumbnail to be verified against. When its dataset image
is a local file, :func:`matcher.pipeline.photo.verify_batch` reads it. Otherwise the image is fetched here, from
the catalog's URL, with the ingest downloader (:mod:`matcher.ingest.fetch`) and the same guards as ``add``:
http(s) only, no loopback/private/link-local address unless the settings allow it (checked on every DNS answer
and every redirect), the size cap, the timeouts, a body that must be an image. The body travels with the
candidate to verification (aligned pixels, then the full-detail check, exactly as for a local file) and is
dropped with it: nothing is written to disk. A candidate whose image cannot be fetched keeps the reason
(``dataset image could not be fetched: HTTP 404 Not Found``) and is reported unverified with it.

The URLs fetched are the catalog's, never a client's, and at most :data:`MAX_FETCHES` a photo. Fetching is on
by default for ``matcher search`` (the user's own machine) and off for ``matcher serve`` unless it is started
with ``--fetch-unverified`` (a public server would otherwise fetch from dataset hosts for anyone who uploads).
"""

from __future__ import annotations

import os
from contextlib import closing
from typing import Sequence

from matcher.ingest.policy import FetchSettings

__all__ = ["MAX_FETCHES", "NOT_FETCHED", "fetch_for_verification"]

#: Dataset images fetched at most per searched photo (nearest candidates first); the rest are reported unverified.
MAX_FETCHES = 8
#: Why a candidate with a URL was not fetched when fetching is off.
NOT_FETCHED = ("dataset image not fetched from its URL: fetching is off (matcher search --fetch-unverified, "
               "matcher serve --fetch-unverified)")


def _needs_image(cand) -> bool:
    """A 64-bit candidate with a try that has no thumbnail, whose dataset image is not a local file."""
    if not any(t[3] is None for t in cand.tries):
        return False
    return not (cand.path and os.path.isfile(cand.path))


def fetch_for_verification(views: Sequence[tuple], items: dict, settings: FetchSettings | None) -> int:
    """Give the candidates of ``views`` (``[(image, faces, candidates, local candidates), ...]``, as
    :func:`matcher.pipeline.local.verify_all` takes them) that need their dataset image its bytes
    (``cand.body``) or the reason they have none (``cand.fetch_error``). ``items``: the catalog's
    :class:`~matcher.results.Item` by id. ``settings`` None: nothing is fetched (the reason says fetching is
    off). Returns how many images were downloaded."""
    want: dict[int, list] = {}
    order: list[tuple[int, int]] = []  # (nearest distance, item id)
    for _image, _faces, cands, _local in views:
        for c in cands:
            if not _needs_image(c):
                continue
            if c.item_id not in want:
                order.append((min(t[0] for t in c.tries), c.item_id))
            want.setdefault(c.item_id, []).append(c)
    if not want:
        return 0
    order.sort()
    urls: list[tuple[int, str]] = []
    for rank, (_d, item_id) in enumerate(order):
        url = items[item_id].url
        if not url:
            why = None  # "not available locally" is the whole story
        elif settings is None:
            why = NOT_FETCHED
        elif rank >= MAX_FETCHES:
            why = (f"dataset image not fetched from its URL: at most {MAX_FETCHES} dataset images are fetched "
                   f"a photo (nearest candidates first)")
        else:
            urls.append((item_id, url))
            continue
        for c in want[item_id]:
            c.fetch_error = why
    if not urls:
        return 0
    from matcher.ingest.fetch import fetch_iter  # aiohttp only when something is fetched

    got = 0
    with closing(fetch_iter(urls, settings)) as results:
        for item_id, body, error in results:
            for c in want[item_id]:
                if body is not None:
                    c.body = body
                else:
                    c.fetch_error = f"dataset image could not be fetched: {error.reason}"
            got += body is not None
    return got
