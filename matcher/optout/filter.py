"""`matcher filter`: drop every row of a manifest that an opt-out registry (or a reservation) covers, write the\nclean manifest in the input's format and a log of each row dropped and why."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
import numpy as np
from matcher.errors import ManifestError, MatcherError
from matcher.imaging.images import DEFAULT_LIMITS, Limits
from matcher.optout.confirm import Screen, filter_batch
from matcher.optout.registry import Registry, _hasher


# --- matcher filter: a clean manifest -------------------------------------------------------------
#: Columns of the filter log, one row per dropped image and per image that could not be read.
LOG_COLUMNS = ("row", "key", "url", "path", "action", "reason", "registry_entry", "variant", "entry_kind",
               "distance", "confirm_distance", "error_kind", "source", "rule", "value", "detail", "reservations", "notes")


ON_ERROR = ("drop", "keep")


@dataclass
class FilterStats:
    rows: int = 0
    kept: int = 0
    dropped: int = 0  # matched a registry entry
    unreadable: int = 0  # could not be read or screened (dropped or kept by on_error)
    unreadable_kept: int = 0
    by_entry: dict = field(default_factory=dict)  # registry entry id -> images dropped for it
    by_source: dict = field(default_factory=dict)  # reservation source -> images dropped for it (registry too)
    reserved: dict = field(default_factory=dict)  # reservation source -> images that carry one (dropped or not)
    errors: dict = field(default_factory=dict)  # failure kind -> count
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.kept + self.dropped + self.unreadable - self.unreadable_kept

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


def _numbered_items(src) -> Iterator[tuple[int, Any, bool]]:
    """``(row number, SourceItem, parsed?)`` for every row of a manifest, numbered as
    :class:`~matcher.ingest.sources.ManifestSource` numbers them (CSV/TSV: records, the header being 1; JSONL:
    lines; Parquet: rows from 1). ``parsed`` is False for a record that could not be read at all."""
    from matcher.ingest.sources import SourceItem

    mapping = None if src.fmt == "jsonl" else src._mapping(src.headers())
    for n, row, err in src._rows():
        if row is None:
            yield n, SourceItem(src.dataset, f"row:{n}", error=err), False
            continue
        if mapping is None:
            mapping = src._mapping(list(row))
        yield n, src._item(n, row, mapping), True


def _open_out_text(path: Path, gz: bool):
    if gz:
        return io.TextIOWrapper(gzip.open(path, "wb"), encoding="utf-8", newline="")
    return open(path, "w", encoding="utf-8", newline="")


def _path_rebaser(src, out: Path):
    """``(path header, rebase)`` when the clean manifest lands in another folder than ``src``: ``rebase(cell)``
    makes a relative path cell relative to the new folder, so it still names the same file; else None."""
    base, target = src.path.parent, out.resolve().parent
    if base == target:
        return None
    try:
        header = src._mapping(src.headers()).get("path") if src.fmt != "jsonl" else None
    except MatcherError:
        header = None
    if header is None and src.fmt != "jsonl":
        return None

    def rebase(cell):
        if not isinstance(cell, str) or not cell.strip() or Path(cell.strip()).is_absolute():
            return cell
        return os.path.relpath(base / cell.strip(), target)

    return header, rebase


def _write_clean(src, out: Path, dropped: set[int], gz: bool = False) -> int:
    """Copy the manifest's rows, except ``dropped`` (row numbers), to ``out`` in its format and columns
    (text formats gzip-compressed with ``gz``). Relative paths are rewritten relative to ``out``'s folder
    when it is not the manifest's, so each still names the same file."""
    from matcher.ingest.sources import _open_text

    rebaser = _path_rebaser(src, out)
    written = 0
    if src.fmt in ("csv", "tsv"):
        delim = "\t" if src.fmt == "tsv" else ","
        with _open_text(src.path) as f, _open_out_text(out, gz) as g:
            reader = csv.reader(f, delimiter=delim)
            writer = csv.writer(g, delimiter=delim, lineterminator="\n")
            try:
                header = next(reader)
            except StopIteration:
                return 0
            writer.writerow(header)
            col = header.index(rebaser[0]) if rebaser and rebaser[0] in header else None
            n = 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error:  # an unreadable record: never written (it names no image)
                    n += 1
                    continue
                n += 1
                if any(c.strip() for c in row) and n not in dropped:
                    if col is not None and col < len(row):
                        row[col] = rebaser[1](row[col])
                    writer.writerow(row)
                    written += 1
    elif src.fmt == "jsonl":
        with _open_text(src.path) as f, _open_out_text(out, gz) as g:
            for n, line in enumerate(f, 1):
                if line.strip() and n not in dropped:
                    g.write(_rebased_json_line(src, line, rebaser) if rebaser else
                            line if line.endswith("\n") else line + "\n")
                    written += 1
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(src.path)
        drop = np.fromiter(sorted(dropped), np.int64, len(dropped))
        n = 0
        with pq.ParquetWriter(out, pf.schema_arrow) as writer:
            for batch in pf.iter_batches(batch_size=8192):
                rows = np.arange(n + 1, n + 1 + batch.num_rows)
                n += batch.num_rows
                keep = ~np.isin(rows, drop)
                table = pa.Table.from_batches([batch], schema=pf.schema_arrow).filter(pa.array(keep))
                if rebaser and rebaser[0] in table.column_names:
                    i = table.column_names.index(rebaser[0])
                    column = pa.array([rebaser[1](v) for v in table.column(i).to_pylist()], table.schema.field(i).type)
                    table = table.set_column(i, table.schema.field(i), column)
                writer.write_table(table)
                written += int(keep.sum())
    return written


def _rebased_json_line(src, line: str, rebaser) -> str:
    """A JSON Lines row with its path field rebased (:func:`_path_rebaser`); a line that is not a JSON object
    with a path is copied as it is."""
    try:
        row = json.loads(line)
    except ValueError:
        row = None
    if isinstance(row, dict):
        try:
            header = src._mapping(list(row)).get("path")
        except MatcherError:
            header = None
        if header is not None and isinstance(row.get(header), str):
            row[header] = rebaser[1](row[header])
            return json.dumps(row, ensure_ascii=False) + "\n"
    return line if line.endswith("\n") else line + "\n"


def filter_manifest(
    manifest: str | os.PathLike,
    registry: Registry,
    out: str | os.PathLike,
    *,
    log: str | os.PathLike | None = None,
    fmt: str | None = None,
    columns: dict[str, str] | None = None,
    on_error: str = "drop",
    fetch=None,
    workers: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Callable[[FilterStats], None] | None = None,
    batch: int = 16,
    respect: Sequence[str] = ("registry",),
    checker=None,
    allow_paths: Sequence[str | os.PathLike] = (),
) -> FilterStats:
    """Write ``out``: the rows of ``manifest`` whose image matches no entry of ``registry``.

    Every image is read (a local ``path`` that exists) or downloaded (its ``url``, with matcher's
    fetcher and its address guard), hashed as ``matcher add`` hashes it, and screened
    (:func:`screen_entries`). ``out`` has the manifest's format and columns (CSV/TSV/JSONL/Parquet;
    a ``.gz`` name is compressed); it is written by a temporary file and a rename. ``log`` (CSV,
    :data:`LOG_COLUMNS`) gets one row per dropped image and per image that could not be read, in the
    order they were decided. An image that cannot be read or screened (a failed download, not an image,
    a row without URL or path) is dropped with ``on_error="drop"`` (the default: what was not screened
    does not pass) and kept with ``"keep"``; a record that cannot be parsed at all is never written.

    ``checker`` (a :class:`matcher.ingest.reservations.Checker`) reads each image's reservations (embedded,
    response headers, site files); an image with one whose source is in ``respect`` (or a registry match,
    with ``"registry"``) is dropped for the first of them; the others are logged as kept.
    """
    # Long on purpose: one streaming pass over the manifest (read, screen in the workers, decide, write the
    # clean file and the log) whose state (rows in flight, counters, the log writer) every step shares.
    from matcher.ingest.fetch import FetchSettings, fetch_iter
    from matcher.ingest.run import default_workers, is_local
    from matcher.ingest.sources import ManifestSource
    from matcher.pipeline.photo import HashSpec
    from matcher.pipeline.pool import Batches
    from matcher.ingest.reservations import log_cells, respected_drop

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    src = ManifestSource(manifest, fmt=fmt, columns=columns, allow_paths=allow_paths)  # paths: its folder only
    if src.fmt == "sniff":  # a .txt manifest: filter rewrites it row for row, in a layout it must be told
        raise ManifestError(f"{src.path.name}: unknown manifest format for filter (a .txt file): say --format csv, "
                            "tsv or jsonl")
    out = Path(out)
    if out.resolve() == src.path or (log is not None and Path(log).resolve() in (src.path, out.resolve())):
        raise MatcherError("the clean manifest and the log must be new files, not the manifest itself")
    fetch = fetch or FetchSettings()
    workers = default_workers() if workers is None else workers
    stats = FilterStats()
    dropped: set[int] = set()
    logf = open(log, "w", newline="", encoding="utf-8") if log is not None else None
    logw = csv.writer(logf) if logf else None
    if logw:
        logw.writerow(LOG_COLUMNS)
    found_of: dict[int, Any] = {}  # row -> its reservations (checker), until the row is decided

    def record(n: int, item, parsed: bool, outcome: tuple) -> None:
        found = found_of.pop(n, None)
        for source in {r.source for r in found.reservations} if found else ():
            stats.reserved[source] = stats.reserved.get(source, 0) + 1
        if outcome[0] == "ok":
            hits = outcome[1] if "registry" in respect else []
            drop = respected_drop(found, respect, hits)
            if drop is None:
                stats.kept += 1
                if logw and found:
                    logw.writerow([n, item.key, item.url or "", item.path or "", "kept", "reservation not respected",
                                   "", "", "", "", "", "", *log_cells(found, None)])
            else:
                dropped.add(n)
                stats.dropped += 1
                stats.by_source[drop.source] = stats.by_source.get(drop.source, 0) + 1
                h = hits[0] if drop.source == "registry" else None
                if h is not None:
                    stats.by_entry[h.entry_id] = stats.by_entry.get(h.entry_id, 0) + 1
                if logw:
                    reg = [h.entry_id, h.variant, h.kind, h.distance, h.confirm_distance] if h else [""] * 5
                    logw.writerow([n, item.key, item.url or "", item.path or "", "dropped",
                                   "opted out" if h else "reserved", *reg, "", *log_cells(found, drop)])
        else:
            _, reason, kind = outcome
            stats.unreadable += 1
            stats.errors[kind] = stats.errors.get(kind, 0) + 1
            keep = on_error == "keep" and parsed
            if keep:
                stats.unreadable_kept += 1
                stats.kept += 1
            else:
                dropped.add(n)
            if logw:
                logw.writerow([n, item.key, item.url or "", item.path or "", "kept" if keep else "dropped", reason,
                               "", "", "", "", "", kind, *log_cells(found, None)])
        if progress:
            progress(stats)

    jobs = Batches(workers, (filter_batch, HashSpec.of(_hasher(), True, limits), Screen(registry, limits)),
                   lambda r, o: record(*r, o))
    try:
        # pass 1: rows that name no image, and local files
        rows, payloads = [], []
        remote = 0
        for n, item, parsed in _numbered_items(src):
            stats.rows += 1
            if item.error:
                record(n, item, parsed, ("err", item.error, "bad_row"))
            elif is_local(item.url, item.path):
                if checker is not None:
                    found_of[n] = checker.collect(item.url, item.path)
                rows.append((n, item, parsed))
                payloads.append(item.path)
                if len(rows) >= batch:
                    jobs.submit(rows, payloads)
                    rows, payloads = [], []
                jobs.harvest()
            else:
                remote += 1
        if rows:
            jobs.submit(rows, payloads)
        # pass 2: remote images, downloaded concurrently, screened as they arrive
        if remote:
            wanted = ((r, r[1].url) for r in _numbered_items(src)
                      if not r[1].error and not is_local(r[1].url, r[1].path))
            if checker is not None:  # each new site's files are asked for as its first image is
                wanted = checker.prefetching(wanted)
            rows, payloads = [], []
            for r, body, err in fetch_iter(wanted, fetch, read=checker.read if checker is not None else None):
                if err is not None:
                    record(*r, ("err", err.reason, err.kind))
                else:
                    if checker is not None:
                        body, headers = checker.split(body)
                        found_of[r[0]] = checker.collect(r[1].url, body, headers)
                    rows.append(r)
                    payloads.append(body)
                    if len(rows) >= batch or jobs.idle_workers():
                        jobs.submit(rows, payloads)
                        rows, payloads = [], []
                jobs.harvest()
            if rows:
                jobs.submit(rows, payloads)
        jobs.drain()
    finally:
        jobs.close()
        if logf:
            logf.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        _write_clean(src, tmp, dropped, gz=out.name.endswith(".gz"))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return stats
