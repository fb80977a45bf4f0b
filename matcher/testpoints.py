"""Test-only pause points, for the kill -9 harness (tests/test_kill9.py, benchmarks/bench_crash.py).

``MATCHER_TEST_PAUSE_AT=POINT[:N]`` makes the process stop itself (SIGSTOP) the ``N``-th time (default:
the first) it reaches the named point, so that the harness can SIGKILL it exactly there. Never set it
otherwise. Unset, :func:`pause` is a function that does nothing (chosen once, at import).

Points (where they are called):

* ``create.meta-written``: a new index's ``meta.json`` is written, its catalog not yet (store.py);
* ``catalog.schema``: a new catalog's tables created inside their transaction, before COMMIT (catalog.py);
* ``catalog.record``: inside the catalog transaction of a batch of items, before COMMIT (catalog.py);
* ``store.recorded``: a batch committed to the catalog, not yet added to FAISS in memory (store.py);
* ``catalog.remove``: inside the transaction of ``matcher remove``, before COMMIT (catalog.py);
* ``catalog.clear-tombstones``: inside the transaction that forgets compacted tombstones (catalog.py);
* ``remove.committed``: a removal committed, before ``matcher remove`` reports it (store.py);
* ``compact.committed``: tombstones cleared in the catalog, FAISS not yet written (store.py);
* ``shards.applied``: a shard's rows committed to the catalog, its files not yet deleted (shards.py);
* ``index.photo``: a worker about to decode a dataset image for ``add`` or ``filter`` (workers.py);
* ``query.photo``: a search worker about to decode a photo (workers.py);
* ``verify.photo``: a search worker about to verify a photo's candidates (workers.py);
* ``faiss.before-rename``: a FAISS save's temporary file written and fsynced, not renamed yet (index.py);
* ``faiss.after-rename``: the FAISS file replaced, the catalog's ``faiss_seq`` not updated yet (store.py);
* ``cluster.shard-search``: a Dask worker about to search one shard for a query (engine/cluster.py);
* ``cluster.shard-build``: a worker building a shard folder, rows recorded in its temporary folder, not yet
  renamed into place (ingest/shard_build.py).
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "pause"]

POINTS = ("create.meta-written", "catalog.schema", "catalog.record", "store.recorded", "catalog.remove", "catalog.clear-tombstones", "remove.committed",
          "compact.committed", "shards.applied", "index.photo", "query.photo", "verify.photo", "faiss.before-rename", "faiss.after-rename",
          "cluster.shard-search", "cluster.shard-build")

_SPEC = os.environ.get("MATCHER_TEST_PAUSE_AT", "")
_POINT, _, _NTH = _SPEC.partition(":")
_left = int(_NTH or 1)


def _pause(point: str) -> None:
    global _left
    if point == _POINT:
        _left -= 1
        if _left == 0:
            os.kill(os.getpid(), signal.SIGSTOP)


def _nothing(point: str) -> None:
    pass


pause = _pause if _SPEC else _nothing
