"""The ``matcher`` commands that build, check and maintain an index: a thin click layer over :mod:`matcher.engine`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from matcher.cli.common import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_MATCH, EXIT_NO_MATCH, _AddProgress, _err,
                                _guard_outputs, _parse_columns, allow_paths_option, download_options, engine_options, fetch_settings,
                                force_option, main)
from matcher.errors import MatcherError
from matcher.imaging.images import Limits
from matcher.engine.api import DEFAULT_MAX_MOTION, DEFAULT_MIN_SCORE, DEFAULT_THRESHOLD, add as add_items, search as search_photos
from matcher.ingest.open_source import open_sources
from matcher.ingest.presets import PRESETS
from matcher.engine.cluster import open_searchable
from matcher.index.sharded import ShardedStore, is_sharded, open_index
from matcher.cli.reads import describe_read, read_line
from matcher.index.store import IndexStore
from matcher.report.formats import plural as report_plural
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
            from matcher.optout.registry import Registry, Screen

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

@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The index to check the photos against (a folder `matcher add` made).")
@click.option("--threshold", type=click.IntRange(0, 64), default=DEFAULT_THRESHOLD, show_default=True,
              help="Largest 64-bit Hamming distance that makes a dataset image a candidate.")
@click.option("--min-score", type=click.FloatRange(-1.0, 1.0), default=DEFAULT_MIN_SCORE, show_default=True,
              help="Verification score a candidate needs (aligned pixels, cell by cell).")
@click.option("--max-motion", type=click.FloatRange(0.0), default=DEFAULT_MAX_MOTION, show_default=True,
              help="Full-detail check, when the dataset image is a local file: largest residual motion "
                   "(1/256 of the picture) a copy may show; another frame of a burst moves more.")
@click.option("--no-detail", is_flag=True, help="Skip the full-detail check (thumbnail verification only).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines on stdout: one object per photo.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout: one row per match.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write a self-contained HTML report.")
@click.option("--workers", type=int, default=None, help="Hashing processes (default: one per core).")
@click.option("--letters", "letters_dir", type=click.Path(), metavar="DIR",
              help="Also write removal-request letters for the matches, one per dataset and template "
                   "(list, gdpr, bipa), into DIR (created).")
@click.option("--requester-name", help="Your name, for the letters (default: a [YOUR NAME] placeholder).")
@click.option("--requester-email", help="Your email address, for the letters (default: a placeholder).")
@click.option("--flickr-user", metavar="NAME",
              help="Also report every item the index lists under this Flickr account (user name, path alias, "
                   "NSID or profile URL), matched by a photo or not; each match says found_by content, "
                   "identity or both.")
@click.option("--nsid", metavar="ID", help="The same, by Flickr NSID (e.g. 12345678@N01).")
@engine_options
@click.option("--show-paths", is_flag=True,
              help="Show local paths (your photos' folders, the dataset's files, the index) in the HTML report; "
                   "by default it names files only, since a report is sent to others.")
@click.option("--fetch-unverified/--no-fetch", "fetch_unverified", default=True, show_default=True,
              help="A candidate of a dataset added with --thumbnails none whose image is not a local file: fetch "
                   "the image from its URL (the download options' guards; nothing stored) and verify it as a "
                   "local file. --no-fetch: report it unverified.")
@download_options
@force_option
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def search(index_dir, threshold, min_score, max_motion, no_detail, as_json, as_csv, html_path, workers,
           letters_dir, requester_name, requester_email, flickr_user, nsid, show_paths, fetch_unverified,
           concurrency, per_host, timeout, retries, max_bytes, allow_private_urls, allow_networks, force, paths,
           engine="local", scheduler=None) -> None:
    """Check photos (files or folders, recursive) against an index.

    With --flickr-user/--nsid, the items listed under that Flickr identity are joined in: matches found
    both ways say so, and the listed items no photo matched are reported after the photos.

    Exit status as grep: 0 if a photo matched (or an item is listed under the identity), 1 if none
    did, 2 if an error occurred.
    """
    from matcher import report

    out = Console()
    err = Console(stderr=True)
    if as_json and as_csv:
        _err(err, "choose one of --json and --csv")
        sys.exit(EXIT_ERROR)
    if (requester_name or requester_email) and not letters_dir:
        _err(err, "--requester-name and --requester-email are for --letters DIR")
        sys.exit(EXIT_ERROR)
    _guard_search_outputs(err, html_path, letters_dir, [*paths, index_dir], force)
    if letters_dir:
        problem = _letters_dir_problem(Path(letters_dir))
        if problem:  # said before the search, not after minutes of it
            _err(err, f"cannot write letters to {letters_dir}: {problem}")
            sys.exit(EXIT_ERROR)
    who_nsid, who_name = _flickr_who(flickr_user, nsid, err)
    try:
        fetch = fetch_settings(concurrency, per_host, timeout, retries, max_bytes, allow_private_urls,
                               allow_networks) if fetch_unverified else None
    except ValueError as e:  # FetchSettings' own checks (a negative timeout, ...)
        _err(err, str(e))
        sys.exit(EXIT_ERROR)
    try:
        store = open_searchable(index_dir, engine=engine, scheduler=scheduler)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    from matcher.provenance.identities import NO_IDENTITIES, IdentityJoin

    results = []
    listed = []  # the items found by Flickr identity only: one result whose query is None
    try:
        with store:
            join = IdentityJoin(store.catalog, nsid=who_nsid, name=who_name)
            if join.active and not join.available:
                err.print(f"[yellow]warning:[/] {escape(NO_IDENTITIES.format(index=index_dir))}", highlight=False)
            stream = join.annotate(search_photos(store, paths, threshold=threshold, min_score=min_score,
                                                 max_motion=None if no_detail else max_motion, workers=workers,
                                                 fetch=fetch))

            def tee():
                for r in stream:
                    results.append(r)
                    yield r

            def identity_last():
                yield from tee()
                if join.active:
                    listed.append(join.remainder())
                    yield listed[-1]

            if as_json:
                report.write_jsonl(identity_last(), sys.stdout)
            elif as_csv:
                report.write_csv(identity_last(), sys.stdout)
            else:
                report.print_table(tee(), out, found_by=join.active)
                if join.active:
                    listed.append(join.remainder())
                    report.print_identity(listed[-1], out, join.label)
            summary = report.summarise(results)
            if store.catalog.unreadable:
                err.print(f"[yellow]warning:[/] {store.catalog.unreadable:,} index entries near these photos could not "
                          f"be read from the damaged catalog and were left out: `matcher check --index "
                          f"{escape(str(index_dir))}` says more", highlight=False)
            if html_path:  # the index by its name only unless --show-paths: a report is sent to others
                info = {"index": str(Path(index_dir).resolve()) if show_paths else Path(index_dir).resolve().name,
                        "threshold": threshold, "min_score": min_score}
                if join.active:
                    info["Flickr account"] = join.label
                report.write_html(results + listed, html_path, index_info=info, show_paths=show_paths)
    except MatcherError as e:  # e.g. the cluster lost every worker mid-search (engine/cluster.py)
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    err.print(
        f"{report.plural(summary['photos'], 'photo')} checked, {summary['with_matches']:,} found "
        f"({report.plural(summary['matches'], 'copy', 'copies')}), {summary['errors']:,} could not be read"
        + (f"; {report.plural(len(join.listed), 'item')} listed under {escape(_visible(join.label))} ({join.found_by_both:,} "
           f"of them also matched a photo)" if join.active else "")
        + (f"; report written to {html_path}" if html_path else ""),
        highlight=False,
    )
    if letters_dir:
        requester = {k: v for k, v in (("name", requester_name), ("email", requester_email),
                                       ("flickr_user", who_name or who_nsid)) if v}
        if not _write_search_letters(results + listed, letters_dir, requester, err, force):
            sys.exit(EXIT_ERROR)
    if summary["errors"] or summary["photos"] == 0:
        if summary["photos"] == 0:
            _err(err, "no photos found in the given paths")
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_MATCH if summary["with_matches"] or join.listed else EXIT_NO_MATCH)


def _guard_search_outputs(err: Console, html_path, letters_dir, inputs, force: bool) -> None:
    from matcher.outputs import HTML_GENERATOR, Output, check_output

    if html_path:
        html = Output(Path(html_path), "the HTML report", "--html", (HTML_GENERATOR, "<title>matcher report"))
        _guard_outputs(err, lambda: check_output(html, inputs=inputs, force=force))
        inputs = [*inputs, html_path]


def _flickr_who(flickr_user: str | None, nsid: str | None, err: Console) -> tuple[str | None, str | None]:
    """(NSID, user name) from --flickr-user and --nsid; exit 2 on a value that is neither."""
    from matcher.provenance.flickr import normalize_nsid, parse_owner

    who_nsid = who_name = None
    if flickr_user is not None:
        who_nsid, who_name = parse_owner(flickr_user)
        if who_nsid is None and who_name is None:
            _err(err, f"--flickr-user {repr(flickr_user)}: not a Flickr user name, NSID or profile URL")
            sys.exit(EXIT_ERROR)
    if nsid is not None:
        n = normalize_nsid(nsid)
        if n is None:
            _err(err, f"--nsid {repr(nsid)}: not a Flickr NSID (they look like 12345678@N01)")
            sys.exit(EXIT_ERROR)
        if who_nsid is not None and who_nsid != n:
            _err(err, f"--flickr-user is NSID {who_nsid} but --nsid is {n}: give one account")
            sys.exit(EXIT_ERROR)
        who_nsid = n
    return who_nsid, who_name


def _letters_dir_problem(path: Path) -> str | None:
    """Why letters could not be written into ``path`` (checked before a search), or None."""
    if path.exists():
        if not path.is_dir():
            return "it exists and is not a folder"
        return None if os.access(path, os.W_OK | os.X_OK) else "the folder is not writable"
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a folder"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"{parent} is not writable"


def _write_search_letters(results, letters_dir: str, requester: dict, err: Console, force: bool = False) -> bool:
    """The letters of every template for the matches of a search; False after an error (said)."""
    from matcher.errors import OutputRefused
    from matcher.provenance.letters import SIGNATURE, TEMPLATES, build_letters, write_letters
    from matcher.outputs import Output, check_output

    matches = [m for r in results for m in r.matches]
    if not matches:
        err.print(f"no matches: no letters written to {escape(letters_dir)}", highlight=False)
        return True
    letters = sorted((letter for t in TEMPLATES for letter in build_letters(matches, t, requester)),
                     key=lambda letter: (letter.dataset, TEMPLATES.index(letter.template)))
    try:  # every letter's file checked before any is written
        for letter in letters:
            check_output(Output(Path(letters_dir) / letter.filename, "a letter", "--letters", (SIGNATURE,)),
                         force=force)
    except OutputRefused as e:
        _err(err, e.reason)
        return False
    try:
        written = write_letters(letters, letters_dir)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        _err(err, f"cannot write letters to {letters_dir}: {reason}")
        return False
    datasets = sorted({letter.dataset for letter in letters})
    err.print(f"{len(written):,} removal-request letters ({', '.join(TEMPLATES)}) for {len(datasets):,} "
              f"dataset{'' if len(datasets) == 1 else 's'} written to {escape(str(Path(letters_dir)))}:",
              highlight=False, soft_wrap=True)
    for p in written:
        err.print(f"  {escape(str(p))}", highlight=False, soft_wrap=True)
    return True


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The index to look in (a folder `matcher add` made).")
@click.option("--flickr-user", metavar="NAME",
              help="Items listed under this Flickr user name or path alias (case-insensitive; an NSID or a "
                   "profile URL works too).")
@click.option("--nsid", metavar="ID", help="Items listed under this Flickr NSID (e.g. 12345678@N01).")
@click.option("--photo-id", metavar="N", help="Items that are this Flickr photo (its numeric id).")
@click.option("--url", metavar="U",
              help="Any Flickr URL of a photo (image, page, flic.kr short link): that photo; any other URL: the "
                   "items with exactly that image URL.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def lookup(index_dir, flickr_user, nsid, photo_id, url, as_json) -> None:
    """Which items of an index are listed under a Flickr identity: by user, NSID, photo id or URL.

    Exact and cheap: no photo is hashed. Items that failed to download (dead links) are listed too:
    the dataset lists them all the same. Several selectors: items matching any of them.
    Exit status as search: 0 if an item is listed, 1 if none is, 2 if an error occurred.
    """
    from matcher.index.catalog import Catalog
    from matcher.errors import CatalogError
    from matcher.provenance.flickr import parse_url
    from matcher.provenance.identities import NO_IDENTITIES, item_json
    from matcher.index.store import CATALOG, META

    out = Console()
    err = Console(stderr=True)
    if all(v is None for v in (flickr_user, nsid, photo_id, url)):
        _err(err, "say what to look up: --flickr-user, --nsid, --photo-id or --url")
        sys.exit(EXIT_ERROR)
    who_nsid, who_name = _flickr_who(flickr_user, nsid, err)
    if photo_id is not None:
        photo_id = photo_id.strip()
        if not (photo_id.isascii() and photo_id.isdigit()):
            _err(err, f"--photo-id {repr(photo_id)}: a Flickr photo id is a number")
            sys.exit(EXIT_ERROR)
    if url is not None and not url.strip():
        _err(err, "--url is empty")
        sys.exit(EXIT_ERROR)
    ref = parse_url(url) if url is not None else None
    root = Path(index_dir)
    try:
        if is_sharded(root):
            catalog = ShardedStore.open(root, load=False).catalog  # every shard's catalog, in global ids
        elif not (root / META).exists():
            raise CatalogError(f"{root} is not a matcher index (no {META})")
        else:
            catalog = Catalog(root / CATALOG, readonly=True)  # the catalog alone: no FAISS file to load
        try:
            recorded = catalog.has_identities
            items = catalog.lookup(photo_id=photo_id, owner_nsid=who_nsid, owner_name=who_name, url=url)
            identities = catalog.identities_of(it.id for it in items)
        finally:
            catalog.close()
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    by_identity = bool(who_nsid or who_name or photo_id or ref is not None)
    if as_json:
        query = {"flickr_user": flickr_user, "nsid": who_nsid, "owner_name": who_name, "photo_id": photo_id,
                 "url": url, "url_photo_id": ref.photo_id if ref else None}
        click.echo(json.dumps({"index": str(root.resolve()), "query": query, "identities_recorded": recorded,
                               "items": [item_json(it, identities.get(it.id)) for it in items]},
                              indent=2, ensure_ascii=False))
    elif items:  # a record per item: whole URLs, which are what a removal request quotes
        from matcher.report import print_items

        print_items(items, out)
    if by_identity and not recorded:
        message = NO_IDENTITIES.format(index=index_dir)
        if not items:  # "not listed" would be a guess: say it cannot tell
            _err(err, message)
            sys.exit(EXIT_ERROR)
        err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)
    failed = sum(it.status != "ok" for it in items)
    err.print(f"{len(items):,} item{'' if len(items) == 1 else 's'} listed"
              + (f" ({failed:,} failed to download or read: dead links are still listed)" if failed else ""),
              highlight=False)
    sys.exit(EXIT_MATCH if items else EXIT_NO_MATCH)


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The index to describe (a folder `matcher add` made).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--failures", is_flag=True, help="List every failed item with its reason.")
def info(index_dir, as_json, failures) -> None:
    """What an index holds: items per dataset, failures, hasher, size on disk."""
    out = Console()
    err = Console(stderr=True)
    try:
        store = open_index(index_dir)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    with store:
        data = {
            "index": str(Path(index_dir).resolve()),
            "hasher": store.hasher.identity(),
            "entries": len(store.faiss) - len(store.dead),
            "removed_entries": len(store.dead),
            "layout": store.faiss.layout,
            "size_bytes": store.size_on_disk(),
            "datasets": store.catalog.dataset_overview(),
        }
        from matcher.cli.reservations import info_lines, reservation_counts

        data["reservations"] = reservation_counts(store.catalog)
        failed = []
        if failures:
            failed = [
                {"dataset": i.dataset, "key": i.key, "url": i.url, "path": i.path, "error": i.error}
                for i in store.catalog.items(status="failed")
            ]
            data["failed"] = failed
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    _print_info(out, data, failures)


def _print_info(out: Console, data: dict, failures: bool) -> None:
    """``matcher info`` in words, one record per dataset (nothing a terminal's width can cut)."""
    from matcher.report import plural, visible

    def line(text: str, style: str = "") -> None:
        out.print(Text(text, style=style), soft_wrap=True, highlight=False)

    h, ds = data["hasher"], data["datasets"]
    items, hashed = sum(d["items"] for d in ds), sum(d["hashed"] for d in ds)
    line(f"index {visible(data['index'])}", "bold")
    line(f"  {plural(len(ds), 'dataset')}, {plural(items, 'item')}: {hashed:,} hashed, {items - hashed:,} failed; "
         f"{plural(data['entries'], 'entry', 'entries')} searched ({data['layout']} layout); "
         f"{data['size_bytes'] / 1e6:,.1f} MB on disk")
    params = ", ".join(f"{k} {v}" for k, v in sorted(h.get("params", {}).items()))
    line(f"  hashed with {h['name']} version {h['version']}: {h['bits']} bits" + (f" ({params})" if params else ""))
    if data["removed_entries"]:
        line(f"  {plural(data['removed_entries'], 'entry', 'entries')} of removed items wait for `matcher compact`")
    for d in ds:
        line(f"{visible(d['dataset'])}" + (f" (version {visible(d['version'])})" if d["version"] else ""), "bold")
        line(f"  {plural(d['items'], 'item')}: {d['hashed']:,} hashed, {d['failed']:,} failed, "
             f"{plural(d['dead_links'], 'dead link')}; {plural(d['entries'], 'entry', 'entries')}")
        if d.get("source"):
            line(f"  from {visible(d['source'])}")
        if d.get("read"):
            line("  " + read_line(d["read"], d["failed"]))
        if d["failures"]:
            line("  failures: " + ", ".join(f"{n:,} {visible(k)}" for k, n in sorted(d["failures"].items())))
        if d["removed"]:
            line(f"  removed: {plural(d['removed'], 'item')} taken out by `matcher remove`, until `matcher compact`")
    from matcher.cli.reservations import info_lines

    for text in info_lines(data.get("reservations") or {}):
        line(visible(text))
    if failures:
        failed = data["failed"]
        if not failed:
            line("no failed items: every item was hashed")
            return
        line(f"{plural(len(failed), 'failed item')}:", "bold")
        for f in failed:
            line(f"  {visible(f['dataset'])} {visible(f['key'])}: {visible(f['error'] or 'unknown reason')}")
            if f["url"] or f["path"]:
                line(f"     {visible(f['url'] or f['path'])}", "cyan")


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False),
              help="The index to remove items from (a folder `matcher add` made).")
@click.option("--key", "keys", multiple=True, help="Remove the item with this key (repeatable).")
@click.option("--url", "urls", multiple=True, help="Remove the item(s) with this image URL (repeatable).")
@click.option("--dataset", help="Remove every item of this dataset; with --key/--url, only look in it.")
@click.option("--matching", is_flag=True,
              help="Remove every item that PHOTOS match, searched exactly as `matcher search` does (verified).")
@click.option("--registry", "optout_registry", type=click.Path(exists=True, dir_okay=False),
              help="Remove every item that matches an entry of this opt-out registry (`matcher optout`).")
@click.option("--workers", type=int, default=None, help="With --matching: hashing processes (default: one per core).")
@click.argument("photos", nargs=-1, type=click.Path())
def remove(index_dir, keys, urls, dataset, matching=False, optout_registry=None, workers=None, photos=()) -> None:
    """Remove items from an index without rebuilding it.

    Searches stop returning them at once; `matcher compact` later drops them from the FAISS file.
    A later `add` of a source that still lists an item adds it back. Exit 2, changing nothing,
    when a key, URL or dataset matches no item.

    By content (a person's request): `--matching PHOTOS...` removes every item the photos match
    (searched as `matcher search` does, verified), `--registry FILE` every item that matches an
    entry of an opt-out registry; each removed item is printed. Exit 0 if something was removed,
    1 if nothing matched, 2 on an error (a photo could not be read).
    """
    from matcher.engine.api import remove as remove_items

    if matching or optout_registry or photos:  # by content: exits 0 removed, 1 nothing matched, 2 error
        from matcher.cli.optout import remove_by_content

        remove_by_content(index_dir, keys, urls, dataset, matching, optout_registry, photos, workers)
    err = Console(stderr=True)
    if keys and urls:
        _err(err, "choose one of --key and --url")
        sys.exit(EXIT_ERROR)
    if not (keys or urls or dataset):
        _err(err, "say what to remove: --key, --url or --dataset")
        sys.exit(EXIT_ERROR)
    try:
        stats = remove_items(index_dir, dataset=dataset, keys=keys, urls=urls)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    whole = f"dataset {dataset} (and its version record): " if dataset and not keys and not urls else ""
    err.print(
        f"removed {whole}{report_plural(stats['items'], 'item')} ({report_plural(stats['entries'], 'index entry', 'index entries')}); searches no longer return them. "
        f"{report_plural(stats['tombstones'], 'removed entry', 'removed entries')} "
        f"{'waits' if stats['tombstones'] == 1 else 'wait'} for `matcher compact --index {index_dir}`",
        highlight=False,
    )


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False),
              help="The index to compact (a folder `matcher add` made).")
def compact(index_dir) -> None:
    """Rebuild an index's FAISS file without removed items (and in the layout its size calls for)."""
    from matcher.engine.api import compact as compact_index

    err = Console(stderr=True)
    try:
        stats = compact_index(index_dir)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    err.print(f"FAISS: {stats['before']:,} -> {stats['after']:,} entries ({stats['dropped']:,} removed items' "
              f"entries dropped), layout {stats['layout']}", highlight=False)


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False),
              help="The index whose items are grouped (a folder `matcher add` made).")
@click.option("--across-datasets", is_flag=True, help="Also group items of different datasets (default: within each dataset).")
@click.option("--dataset", help="Only items of this dataset (with --across-datasets: and the items that duplicate them).")
@click.option("--threshold", type=click.IntRange(0, 64), default=DEFAULT_THRESHOLD, show_default=True,
              help="Largest 64-bit Hamming distance between two entries that makes a candidate pair.")
@click.option("--min-score", type=click.FloatRange(-1.0, 1.0), default=DEFAULT_MIN_SCORE, show_default=True,
              help="Verification score a pair needs (the two thumbnails aligned, cell by cell).")
@click.option("--max-motion", type=click.FloatRange(0.0), default=DEFAULT_MAX_MOTION, show_default=True,
              help="Full-detail check when both images are local files: largest residual motion of a copy.")
@click.option("--no-detail", is_flag=True, help="Skip the full-detail check (thumbnail verification only).")
@click.option("--no-variants", is_flag=True,
              help="Search each entry's stored code only, not the mirrored and cropped edits of its thumbnail "
                   "(9x fewer searches; mirrored and cropped copies are then missed).")
@click.option("--workers", type=click.IntRange(0), default=None, help="Verification processes (default: one per core).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per group (with every verified link).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write the CSV (or JSON Lines) here, not to stdout.")
@force_option
def duplicates(index_dir, across_datasets, dataset, threshold, min_score, max_motion, no_detail, no_variants, workers,
               as_json, out_path, force) -> None:
    """Group near-duplicate items of an index: the same photo re-hosted, resized, recompressed, cropped.

    CSV on stdout (or --out): one row per item in a group. Exit 0 if duplicates were found, 1 if none, 2 on error.
    """
    from matcher.engine.duplicates import SIGNATURES, find_duplicates, write_csv, write_jsonl
    from matcher.outputs import Output, check_output

    err = Console(stderr=True)
    if out_path:
        dups = Output(Path(out_path), "the duplicates list", "--out", SIGNATURES)
        _guard_outputs(err, lambda: check_output(dups, inputs=[index_dir], force=force))
        problem = _out_file_problem(Path(out_path))
        if problem:  # said before the search, not after it
            _err(err, f"cannot write {out_path}: {problem}")
            sys.exit(EXIT_ERROR)
    try:
        store = IndexStore.open(index_dir)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    try:
        with store, _PhaseProgress(err) as progress:
            report = find_duplicates(store, threshold=threshold, min_score=min_score,
                                     max_motion=None if no_detail else max_motion, across_datasets=across_datasets,
                                     dataset=dataset, variants=not no_variants, workers=workers, progress=progress)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    write = write_jsonl if as_json else write_csv
    try:
        if out_path:
            with open(out_path, "w", newline="", encoding="utf-8") as f:
                write(report.groups, f)
        else:
            write(report.groups, sys.stdout)
            sys.stdout.flush()
    except OSError as e:
        _err(err, f"cannot write {out_path or 'stdout'}: {e.strerror or str(e)}")
        sys.exit(EXIT_ERROR)
    s, groups = report.stats, report.groups
    largest = max(groups, key=lambda g: (g.size, -g.id)) if groups else None
    scope = "across datasets" if across_datasets else "within datasets"
    err.print(
        f"{report_plural(len(groups), 'group')} of near-duplicates {scope}, {report_plural(sum(g.size for g in groups), 'item')} in them"
        + (f"; largest: {largest.size:,} items (group {largest.id}, {escape(_visible(largest.members[0].item.dataset))}:"
           f"{escape(_visible(largest.members[0].item.key))})" if largest else "")
        + f". {s.entries:,} entries searched ({s.queries:,} codes), {s.pairs:,} candidate pairs: {s.verified:,} verified"
        + (f" ({s.distance_only:,} by distance only: no thumbnails)" if s.distance_only else "")
        + f", {s.rejected:,} rejected"
        + (f" ({s.rejected_motion:,} by the full-detail check)" if s.rejected_motion else "")
        + f"; {s.elapsed:.1f} s" + (f"; written to {escape(out_path)}" if out_path else ""),
        highlight=False, soft_wrap=True,
    )
    sys.exit(EXIT_MATCH if groups else EXIT_NO_MATCH)


class _PhaseProgress:
    """A rich progress bar per phase on stderr, only when stderr is a terminal."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True,
                                 disable=not console.is_terminal)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(phase, total=total)
        self.progress.update(self.tasks[phase], completed=done, total=total)


def _out_file_problem(path: Path) -> str | None:
    """Why the file ``path`` could not be written (checked before a long run), or None."""
    if path.is_dir():
        return "it is a folder"
    if path.exists():
        return None if os.access(path, os.W_OK) else "the file is not writable"
    parent = path.absolute().parent
    if not parent.is_dir():
        return f"no folder {parent}"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"{parent} is not writable"


@main.command()
@click.argument("photos_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--distractors", type=click.Path(exists=True, file_okay=False),
              help="Images added to the index as dataset 'distractors' (any match to one is false).")
@click.option("--faces", type=click.Path(exists=True, file_okay=False),
              help="Photos with boxes.csv (file,x,y,w,h): a face crop of each is planted, the full photo queried.")
@click.option("--same-scene", "same_scene", type=click.Path(exists=True, file_okay=False),
              help="NAME-a / NAME-b pairs: the b's are indexed, the a's queried and must not match them.")
@click.option("--out", "out_dir", default="bench-out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (copies, manifest, index, reports).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random edit and of the split.")
@click.option("--transforms", "transform_names", metavar="A,B,...", help="Only these transforms (default: all).")
@click.option("--max-distractors", type=click.IntRange(0), default=None, help="Use at most N distractors (sorted order).")
@click.option("--workers", type=click.IntRange(0), default=None, help="Processes (default: one per core; 0 = in-process).")
@click.option("--latency-sample", type=click.IntRange(0), default=50, show_default=True,
              help="Queries also searched one at a time to measure single-photo latency.")
@click.option("--local-features/--no-local-features", default=True, show_default=True,
              help="Build the bench index with the local-feature tier (`matcher add --local-features`).")
@force_option
def bench(photos_dir, distractors, faces, same_scene, out_dir, seed, transform_names, max_distractors, workers,
          latency_sample, local_features, force) -> None:
    """Measure recall: plant seeded copies of PHOTOS_DIR's images in an index, search for them, report.

    Writes OUT/report.json, OUT/report.md and OUT/sweep.png, and prints the table.
    """
    from importlib.util import find_spec

    from matcher import bench as B

    out = Console()
    err = Console(stderr=True)
    missing = [m for m in ("pdqhash", "matplotlib") if find_spec(m) is None]
    if missing:
        _err(err, f"matcher bench needs {' and '.join(missing)}: pip install 'photo-dataset-check[bench]'")
        sys.exit(EXIT_ERROR)
    names = [n.strip() for n in transform_names.split(",") if n.strip()] if transform_names else None
    _guard_outputs(err, lambda: B.check_out_dir(out_dir, [p for p in (photos_dir, distractors, faces, same_scene) if p],
                                                force=force))
    try:
        report = B.run_bench(
            photos_dir, out_dir, distractors=distractors, faces=faces, same_scene=same_scene, seed=seed,
            transforms=names, max_distractors=max_distractors, workers=workers, latency_sample=latency_sample,
            local_features=local_features, log=lambda msg: err.print(f"[dim]bench:[/] {msg}", highlight=False),
        )
        paths = B.write_reports(report, out_dir)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    B.print_table(report, out)
    err.print(f"reports: {paths['markdown']}, {paths['json']}, {paths['plot']}", highlight=False)


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The index to serve (a folder `matcher add` made).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--threshold", type=click.IntRange(0, 64), default=DEFAULT_THRESHOLD, show_default=True,
              help="Largest hash distance a client may ask for (and the default).")
@click.option("--rate-limit", type=click.FloatRange(0.0), default=20.0, show_default=True,
              help="Requests per second per client address (bursts of 2x allowed); 0 = no limit.")
@click.option("--max-photos", type=click.IntRange(1), default=64, show_default=True,
              help="Largest number of photos in one search request (413 beyond).")
@click.option("--body-timeout", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Seconds a client has to send a request body (408 after: slow clients are cut off).")
@click.option("--max-queue", type=click.IntRange(1), default=128, show_default=True,
              help="Searches that may wait for the index; more are refused at once with 429 (bounded latency).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow cross-origin API calls from ORIGIN (repeatable; off by default).")
@click.option("--access-log", is_flag=True,
              help="Log each request with the client address (off by default: no addresses are kept).")
@click.option("--registry", "registry_path", type=click.Path(dir_okay=False),
              help="Also serve this opt-out registry: /optout (a page), POST /api/v1/optout/check, GET /api/v1/optout/export.")
@click.option("--accept-registrations", is_flag=True,
              help="With --registry: people may register photos (hashed in their browser) at POST /api/v1/optout/register.")
@click.option("--registrations-per-minute", type=click.FloatRange(0.1), default=6.0, show_default=True,
              help="Registrations accepted per client address per minute.")
@click.option("--serve-originals", is_flag=True,
              help="Item images are small JPEGs of the dataset's local files (default: only the stored 64x64 "
                   "thumbnails, the evidence every search result carries anyway).")
@click.option("--trust-proxy", is_flag=True,
              help="Take the client address from X-Forwarded-For (rate limits, logs): only when a reverse proxy is "
                   "the sole way in (docs/serve-load.md).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Answer requests for this host name (repeatable); IP addresses, localhost and --host are always "
                   "answered, other names get 421 (DNS rebinding).")
@click.option("--max-connections", type=click.IntRange(8), default=512, show_default=True,
              help="Open connections in total (and never more than the open-file limit allows); beyond, 503.")
@click.option("--max-connections-per-client", type=click.IntRange(0), default=32, show_default=True,
              help="Open connections per client address; beyond, 503. 0 = no cap (behind a reverse proxy).")
@click.option("--header-timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds a connection has to send a complete request head; slower (or idle) ones are closed.")
@click.option("--fetch-unverified", is_flag=True,
              help="Uploaded photos (POST /api/v1/search-upload) only: a candidate of a dataset added with "
                   "--thumbnails none is verified against its image fetched from the catalog's URL (the download "
                   "options' guards, at most 8 a photo, nothing stored). Off by default: otherwise reported "
                   "unverified.")
@download_options
@engine_options
def serve(index_dir, host, port, threshold, rate_limit, max_photos, body_timeout, max_queue, cors_origins,
          access_log, engine="local", scheduler=None, registry_path=None, accept_registrations=False,
          registrations_per_minute=6.0, serve_originals=False, trust_proxy=False, allowed_hosts=(),
          max_connections=512, max_connections_per_client=32, header_timeout=10.0, fetch_unverified=False,
          concurrency=64, per_host=8, timeout=30.0, retries=3, max_bytes=50 << 20, allow_private_urls=False,
          allow_networks=()) -> None:
    """Serve the private web check: photos are hashed in the browser, only hashes reach this server."""
    from importlib.util import find_spec

    err = Console(stderr=True)
    if find_spec("fastapi") is None or find_spec("uvicorn") is None:
        _err(err, "matcher serve needs fastapi and uvicorn: pip install photo-dataset-check")
        sys.exit(EXIT_ERROR)
    if accept_registrations and not registry_path:
        _err(err, "--accept-registrations needs --registry FILE (where registrations are written)")
        sys.exit(EXIT_ERROR)
    from matcher.web.app import ServeSettings, run

    try:
        fetch = fetch_settings(concurrency, per_host, timeout, retries, max_bytes, allow_private_urls,
                               allow_networks) if fetch_unverified else None
    except ValueError as e:  # FetchSettings' own checks
        _err(err, str(e))
        sys.exit(EXIT_ERROR)
    try:
        run(index_dir, ServeSettings(fetch=fetch, threshold=threshold, rate_limit=rate_limit, max_photos=max_photos, max_queue=max_queue,
                                     body_timeout=body_timeout,
                                     cors_origins=tuple(cors_origins), access_log=access_log, engine=engine,
                                     scheduler=scheduler, registry=registry_path,
                                     accept_registrations=accept_registrations,
                                     registrations_per_minute=registrations_per_minute,
                                     serve_originals=serve_originals, trust_proxy=trust_proxy,
                                     allowed_hosts=tuple(allowed_hosts), max_connections=max_connections,
                                     max_connections_per_client=max_connections_per_client,
                                     header_timeout=header_timeout),
            host=host, port=port, log=lambda msg: err.print(msg, highlight=False))
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)



if __name__ == "__main__":  # pragma: no cover
    main()
