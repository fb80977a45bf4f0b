"""The ``matcher`` commands that read an index or serve it: `lookup`, `info`, `bench`, `serve` (add, search and
the maintenance commands have modules of their own)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from matcher.cli.common import (EXIT_ERROR, EXIT_MATCH, EXIT_NO_MATCH, _err,
                                _guard_outputs, download_options, engine_options, fetch_settings,
                                force_option, main)
from matcher.errors import MatcherError
from matcher.engine.api import DEFAULT_THRESHOLD
from matcher.index.sharded import ShardedStore, is_sharded, open_index
from matcher.cli.reads import read_line
from matcher.cli.search import _flickr_who


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
        from matcher.cli.reservations import reservation_counts

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
