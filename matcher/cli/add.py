"""`matcher add`: build or extend a lookup over a dataset (local, sharded or on a Dask cluster)."""

from __future__ import annotations

import sys
from pathlib import Path
import click
from rich.console import Console
from rich.markup import escape
from matcher.cli.common import (EXIT_ERROR, EXIT_INTERRUPTED, _AddProgress, _err,
                                _parse_columns, allow_paths_option, download_options, fetch_settings,
                                main)
from matcher.errors import MatcherError
from matcher.imaging.images import Limits
from matcher.engine.api import add as add_items
from matcher.ingest.open_source import open_sources
from matcher.ingest.presets import PRESETS
from matcher.cli.reads import describe_read
from matcher.report.formats import visible as _visible


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="Index directory (created if missing).")
@click.option("--dataset", help="Dataset name for these items (default: folder or manifest name).")
@click.option("--column", "columns", multiple=True, metavar="FIELD=HEADER",
              help="Manifest column for a field: url, path, key, owner, license, title, page_url.")
@click.option("--format", "manifest_format", type=click.Choice(list(PRESETS) + ["auto"]),
              default=None, help="Read sources in a dataset's published layout: yfcc100m (yfcc100m_dataset lines), "
              "laion (LAION Parquet/CSV/TSV), img2dataset (its output, local images used), faces-jsonl (JSON Lines "
              "with face boxes), dif (DiF_v1.csv), megaface (a FlickrFinal2 tree or list), facescrub "
              "(facescrub_actors.txt...), or auto (one of these when the layout is unambiguous). A folder with a "
              "manifest format is read as the parts in it. Default: a folder of images, or a plain "
              "CSV/TSV/TXT/JSONL/Parquet manifest by column names. See docs/manifests.md.")
@click.option("--only-ids", "only_ids", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Add only the items whose Flickr photo id is listed in FILE (e.g. the CLIP subset of "
                   "YFCC100M, yfcc100m_subset_data.tsv); the others are counted as skipped.")
@click.option("--join", "joins", multiple=True, type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Annotate items with FILE's columns, keyed by photo id (YFCC100M's yfcc100m_hash, _autotags, "
                   "_places...): kept in the item's extra under the file's name; the YFCC100M metadata lines "
                   "themselves add each photo's owner, page and licence. Repeatable.")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="A folder of local copies of the dataset's images: a file named as a URL's last part "
                   "(2936383524_8a2b3f7d4c.jpg) or as an item's key is hashed instead of downloading the URL.")
@click.option("--version", "dataset_version", metavar="V",
              help="Record the dataset's version (e.g. 2014-v1); adding to a dataset recorded at another version is refused.")
@click.option("--new-version", is_flag=True,
              help="With --version: the dataset is now version V (its record is updated; items already added stay).")
@click.option("--workers", type=int, default=None, help="Hashing processes (default: one per core; 0 = in-process).")
@download_options
@click.option("--max-pixels", type=int, default=Limits().max_pixels, show_default=True, help="Larger images are refused as bombs.")
@click.option("--registry", "optout_registry", type=click.Path(exists=True, dir_okay=False),
              help="An opt-out registry (`matcher optout`): images that match it are not added (recorded as failed, "
                   "\"opted out\"), so a later add cannot bring an opted-out photo back.")
@click.option("--reservations/--no-reservations", "read_reservations", default=True, show_default=True,
              help="Record each image's machine-readable AI-training reservations (embedded IPTC/C2PA, response "
                   "headers; docs/reservations.md).")
@click.option("--check-sites", is_flag=True, help="Also fetch each site's tdmrep.json, robots.txt and ai.txt once "
              "and record what they reserve.")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: this machine's processes; dask: shards of rows hashed on a Dask cluster (--scheduler).")
@click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://host:8786 (--engine dask).")
@click.option("--shard-size", type=click.IntRange(1), default=None,
              help="Rows per shard task (--engine dask; default 1000; with --sharded: rows per shard folder, "
                   "default 100000). Keep it the same when resuming.")
@click.option("--sharded", is_flag=True,
              help="Build a sharded index (docs/dask.md): each task writes a finished shard folder on shared storage, "
                   "this process commits shards.json. Implied when INDEX is already sharded.")
@click.option("--thumbnails", type=click.Choice(["full", "none"]), default="full", show_default=True,
              help="full: keep a 64x64 thumbnail per entry (~4 KB) to verify matches; none: codes only (~90 bytes an "
                   "entry): a match is verified against the dataset image when it is a local file, else reported "
                   "unverified with the filter's evidence.")
@click.option("--local-features", is_flag=True,
              help="Also index local features (ORB keypoints, ~3.5 KB per image): finds corner crops, photos framed on "
                   "a blurred fill, rotated, tilted or composited copies the 64-bit codes miss. Kept by the index "
                   "from then on (local engine only).")
@allow_paths_option
@click.argument("sources", nargs=-1, required=True)
def add(index_dir, dataset, columns, manifest_format, dataset_version, new_version, workers, concurrency, per_host,
        timeout, retries, max_bytes, max_pixels, allow_private_urls, engine, scheduler, shard_size, sources, optout_registry=None,
        allow_networks=(), sharded=False, read_reservations=True, check_sites=False, thumbnails="full",
        local_features=False, allow_paths=(), only_ids=None, joins=(), images_dir=None) -> None:
    """Add dataset images to an index: SOURCES are folders or manifests (CSV, TSV, JSONL, Parquet).

    Rerunning resumes: hashed items are skipped, failed ones retried.
    """
    # Long on purpose: a click command mapping its many options onto one library call (matcher.engine.add or
    # the sharded/Dask engines) with the CLI's exit codes; the work is in the library.
    err = Console(stderr=True)
    if engine == "dask" and not scheduler:
        _err(err, "--engine dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
        sys.exit(EXIT_ERROR)
    from matcher.index.sharded import is_sharded

    sharded = sharded or is_sharded(index_dir)
    if engine == "local" and (scheduler or (shard_size is not None and not sharded)):
        _err(err, f"{'--scheduler' if scheduler else '--shard-size'} is for --engine dask")
        sys.exit(EXIT_ERROR)
    if new_version and not dataset_version:
        _err(err, "--new-version needs --version V: the version the dataset now is")
        sys.exit(EXIT_ERROR)
    if local_features and (engine != "local" or sharded):
        _err(err, "--local-features is for --engine local without --sharded (shards do not carry keypoints yet)")
        sys.exit(EXIT_ERROR)
    failed_shards = None
    progress = None
    try:
        cols = _parse_columns(columns)
        srcs = open_sources(sources, dataset, cols, preset=manifest_format, allow_paths=allow_paths)
        if only_ids or joins:
            from matcher.ingest.formats.sidefiles import IdSet, JoinTable, SideFiles

            only = IdSet(only_ids) if only_ids else None
            tables = tuple(JoinTable(j) for j in joins)
            srcs = [SideFiles(s, only, tables) for s in srcs]
        if images_dir:
            from matcher.ingest.formats.sidefiles import LocalCopies

            srcs = [LocalCopies(s, images_dir) for s in srcs]
        for s in srcs:
            if manifest_format == "auto" or s.preset:
                err.print(f"{escape(_visible(s.location))}: read as {s.preset or 'a plain manifest'}"
                          f" (dataset {escape(_visible(s.dataset))})", highlight=False, soft_wrap=True)
        settings = fetch_settings(concurrency, per_host, timeout, retries, max_bytes, allow_private_urls, allow_networks)
        limits = Limits(max_pixels=max_pixels, max_bytes=max(max_bytes, Limits().max_bytes))
        screen = None
        if optout_registry:
            from matcher.optout import Registry, Screen

            if engine != "local" and not sharded:
                raise MatcherError("--registry with --engine dask needs --sharded (the registry travels to the "
                                   "workers); or screen the manifest first with `matcher filter`")
            screen = Screen(Registry.load(optout_registry), limits)
        progress = _AddProgress(err)
        if sharded:
            stats, failed_shards = _add_sharded(err, index_dir, srcs, engine, scheduler, workers, shard_size,
                                                settings, limits, screen, dataset_version, thumbnails)
        elif engine == "local":
            from matcher.cli.reservations import add_checker

            with progress, add_checker(read_reservations, check_sites, settings) as checker:
                stats = add_items(index_dir, srcs, screen=screen, workers=workers, fetch=settings, limits=limits,
                                  progress=progress, version=dataset_version, new_version=new_version,
                                  reservations=checker, thumbnails=thumbnails, local_features=local_features,
                                  warn=lambda m: err.print(f"[yellow]warning:[/] {escape(m)}", highlight=False,
                                                           soft_wrap=True))
        else:
            from matcher.ingest.shards import SHARD_SIZE, DaskEngine, ShardsFailed, add_sharded

            with DaskEngine(scheduler) as cluster:  # connect first: a bad address leaves no index behind
                with progress:
                    try:
                        stats = add_sharded(index_dir, srcs, cluster, fetch=settings, limits=limits, progress=progress,
                                            shard_size=shard_size or SHARD_SIZE, version=dataset_version,
                                            new_version=new_version, thumbnails=thumbnails)
                    except ShardsFailed as e:
                        stats, failed_shards = e.stats, e.reason
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        _add_interrupted(err, index_dir, progress.stats if progress else None)
    failures = ", ".join(f"{k}: {v}" for k, v in sorted(stats.failures.items()))
    engine = "dask" if sharded else engine  # shard counts are reported
    shards = ""
    if engine != "local":
        shards = (f"; {stats.shards_done:,} shards ({stats.shards_reused:,} from an interrupted run, "
                  f"{stats.shard_retries:,} task retries)")
    for s in srcs:
        err.print(describe_read(s), highlight=False, soft_wrap=True)
    err.print(
        f"{stats.added:,} added, {stats.failed:,} failed{f' ({failures})' if failures else ''}, "
        f"{stats.skipped:,} already in the index; {stats.elapsed:.1f} s ({stats.rate:,.0f}/s){shards}",
        highlight=False,
    )
    if stats.added == 0 and stats.skipped == 0:
        if stats.failed:
            _err(err, f"nothing was added: every item failed ({stats.failed:,}). The failures are recorded in "
                      f"{index_dir} with their reasons (`matcher info --index {index_dir} --failures`; dead links stay "
                      f"findable by `matcher lookup`); running the same add again retries them")
        else:
            _err(err, f"nothing was added: no images found in {', '.join(str(s) for s in sources)} (folders are "
                      f"searched for image files; manifests need an image URL or path column)"
                      + ("; the new index was not kept" if stats.index_removed else ""))
        sys.exit(EXIT_ERROR)
    if stats.failed:
        err.print(f"failures are listed by `matcher info --index {escape(str(index_dir))} --failures`", highlight=False)
    if failed_shards:
        _err(err, failed_shards)
        sys.exit(EXIT_ERROR)


def _add_sharded(err, index_dir, srcs, engine, scheduler, workers, shard_size, settings, limits, screen, version,
                 thumbnails="full"):
    """`add --sharded`: shard folders built by the engine's workers (matcher.ingest.shard_build)."""
    from matcher.ingest.shard_build import SHARD_ROWS, add_shards
    from matcher.ingest.shards import DaskEngine, PoolEngine, ShardsFailed
    from matcher.ingest.run import default_workers

    cluster = DaskEngine(scheduler) if engine == "dask" else PoolEngine(default_workers() if workers is None else workers)
    with cluster, _AddProgress(err) as progress:
        try:
            return add_shards(index_dir, srcs, cluster, rows_per_shard=shard_size or SHARD_ROWS, fetch=settings,
                              limits=limits, screen=screen, progress=progress, version=version,
                              thumbnails=thumbnails), None
        except ShardsFailed as e:
            return e.stats, e.reason


def _add_interrupted(err: Console, index_dir: str, stats) -> None:
    """Ctrl-C during ``add``: what is stored stays; say how much, and that the same command resumes; exit 130."""
    done = (f"{stats.added:,} images stored, {stats.failed:,} failures recorded" if stats is not None
            else "what was stored is kept")
    kept = Path(index_dir, "meta.json").exists()
    err.print(f"interrupted: {done}" + (f" in {escape(str(index_dir))}. Run the same command again to resume: what is "
                                        f"stored is skipped, failures are retried." if kept else
                                        "; no index was left behind."), highlight=False, soft_wrap=True)
    sys.exit(EXIT_INTERRUPTED)
