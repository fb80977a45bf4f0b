"""The library's public face: build an index (add), check photos (search, search_bytes), take items out
(remove, compact), plus what a script needs around them (open_source, IndexStore, the result types).
What the CLI and the web server call; documented with a runnable example in docs/library.md."""

from matcher.engine.api import (DEFAULT_MAX_MOTION, DEFAULT_MIN_SCORE, DEFAULT_THRESHOLD, MAX_CANDIDATES, add, compact,
                                iter_query_files, rank_candidates, remove, search, search_bytes)
from matcher.index.store import IndexStore
from matcher.ingest.open_source import open_source
from matcher.results import Item, Match, QueryResult

__all__ = ["DEFAULT_THRESHOLD", "DEFAULT_MIN_SCORE", "DEFAULT_MAX_MOTION", "MAX_CANDIDATES", "add", "search",
           "search_bytes", "iter_query_files", "remove", "compact", "rank_candidates", "open_source", "IndexStore",
           "Item", "Match", "QueryResult"]
