"""The HTML report of a search: evidence a person reads, prints and attaches to a removal request.

One self-contained page (thumbnails inline, no scripts): at the top what was found, per dataset, with a list of
the photos found that links to each; then each photo found, with every copy on one compact row (the copy's
thumbnail, how it differs from the photo and how sure, in words; where it is: dataset, key, URL, page, owner,
licence; the technical evidence in small print); then the photos not found and those that could not be read,
listed openly. Local paths (of the photos, of the dataset's files, of the index) are left out unless
``show_paths``: a report is meant to be sent to others. Thumbnails are never lazy, so a printed report holds
them all.
"""

from __future__ import annotations

import base64
import html
import io
import os
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

from PIL import Image

from matcher.atomic import replacing
from matcher.evidence import SURE_EXPLAINED, describe
from matcher.imaging.images import load_image
from matcher.outputs import HTML_GENERATOR
from matcher.report.formats import by_dataset, dataset_counts, plural, summarise
from matcher.results import Match, QueryResult

__all__ = ["write_html"]


def _h(value: Any) -> str:
    """HTML-escape anything (quotes too); drop characters HTML does not allow."""
    if value is None:
        return ""
    s = str(value)
    if not s.isprintable():
        s = "".join(ch if ch in "\t\n " or unicodedata.category(ch) not in ("Cc", "Cs") else "\ufffd" for ch in s)
    return html.escape(s, quote=True)


def _http_url(url: Any) -> str | None:
    """``url`` if it is an absolute http(s) URL that is safe to put in href/src, else None."""
    if not isinstance(url, str) or not url:
        return None
    url = url.strip().replace(" ", "%20")  # scraped URLs sometimes carry raw spaces
    if any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0x9F for c in url):
        return None  # browsers ignore tabs/newlines inside schemes; refuse rather than guess
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def _link(url: Any, text: str | None = None) -> str:
    """A link for http(s) URLs; any other value is shown as inert text."""
    safe = _http_url(url)
    if safe is not None:
        return f'<a href="{_h(safe)}" rel="noopener noreferrer" target="_blank">{_h(text or url)}</a>'
    return f'<code class="inert">{_h(url)}</code>'


def _thumbnail(path: Any, size: int) -> tuple[str | None, str | None, tuple[int, int] | None]:
    """``(data_uri, None, (w, h))`` for a readable local image, else ``(None, reason, None)``."""
    if not path:
        return None, "no local copy", None
    try:
        im = load_image(os.fspath(path), draft=("RGB", size)).image
        im.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=82)
    except Exception as e:  # noqa: BLE001 - a thumbnail must never break the report
        reason = getattr(e, "reason", None) or str(e).strip() or type(e).__name__
        return None, reason, None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), None, im.size


class _Thumbs:
    """Thumbnails of one report, each file made once (a file may appear in several places)."""

    def __init__(self, size: int):
        self.size = size
        self._cache: dict[str, tuple[str | None, str | None, tuple[int, int] | None]] = {}

    def img(self, path: Any, alt: str) -> tuple[str | None, str | None]:
        """``(<img> html, None)`` or ``(None, reason)``."""
        if not path:
            return None, "no local copy"
        key = os.fspath(path)
        if key not in self._cache:
            self._cache[key] = _thumbnail(key, self.size)
        uri, reason, wh = self._cache[key]
        if uri is None:
            return None, reason
        return f'<img class="thumb" src="{uri}" width="{wh[0]}" height="{wh[1]}" alt="{_h(alt)}">', None


def _placeholder(reason: str | None) -> str:
    detail = f'<span class="why">{_h(reason)}</span>' if reason else ""
    return f'<div class="thumb placeholder"><span>no thumbnail</span>{detail}</div>'


_CSS = """
:root { --thumb: %(size)dpx; color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f; background: #f5f5f7;
       margin: 0; padding: 20px; }
main { max-width: 1100px; margin: 0 auto; }
h1 { font-size: 22px; margin: 0 0 2px; }
h2 { font-size: 16px; margin: 0 0 6px; overflow-wrap: anywhere; }
.sub, .tech, .note { color: #6e6e73; font-size: 12px; overflow-wrap: anywhere; }
.note { max-width: 90ch; }
.card { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.12); padding: 12px 14px; margin: 12px 0; }
.lead { font-size: 16px; margin: 4px 0 10px; }
table.datasets { border-collapse: collapse; margin: 4px 0 10px; }
table.datasets th, table.datasets td { text-align: left; padding: 2px 14px 2px 0; vertical-align: top; }
table.datasets td.n { text-align: right; }
ol.toc, ul.names { columns: 4 200px; margin: 4px 0; padding-left: 22px; font-size: 13px; }
ol.toc li, ul.names li { overflow-wrap: anywhere; unicode-bidi: isolate; break-inside: avoid; }
.photo { display: grid; grid-template-columns: calc(var(--thumb) + 12px) 1fr; gap: 4px 12px; }
.photo h2 { grid-column: 1 / -1; }
ol.copies { list-style: none; margin: 0; padding: 0; min-width: 0; }
li.copy { display: flex; gap: 10px; align-items: flex-start; padding: 6px 0; border-top: 1px solid #e5e5ea; }
li.copy:first-child { border-top: 0; padding-top: 0; }
.what { min-width: 0; font-size: 13px; overflow-wrap: anywhere; unicode-bidi: isolate; }
.what p { margin: 0; }
.how { font-weight: 600; }
.sure { color: #1b7f3b; }
.sure.likely { color: #8a5a00; }
figure { margin: 0; }
figcaption { font-size: 11px; color: #6e6e73; overflow-wrap: anywhere; }
.thumb { display: block; max-width: var(--thumb); max-height: var(--thumb); border-radius: 3px; background: #e5e5ea; }
img.thumb.remote { width: var(--thumb); height: var(--thumb); object-fit: contain; }
.placeholder { width: var(--thumb); height: var(--thumb); display: flex; flex-direction: column; align-items: center;
               justify-content: center; text-align: center; color: #6e6e73; background: #d8d8dc; padding: 4px;
               font-size: 11px; }
.placeholder .why { font-size: 10px; margin-top: 4px; overflow-wrap: anywhere; }
.err { color: #b00020; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow-wrap: anywhere; }
a { color: #0646ad; overflow-wrap: anywhere; }
@media print { body { background: #fff; padding: 0; font-size: 11px; } .card { box-shadow: none; border: 1px solid #ccc; }
               .photo, li.copy { break-inside: avoid; } a { color: #000; } }
"""


class _Page:
    """What the report shows of each photo and copy: file names only unless ``show_paths``."""

    def __init__(self, thumbs: _Thumbs, show_paths: bool):
        self.thumbs, self.show_paths = thumbs, show_paths

    def name(self, query: str) -> str:
        return query if self.show_paths else (Path(query).name or query)

    def copy_thumb(self, m: Match) -> str:
        it = m.item
        img, reason = self.thumbs.img(it.path, f"the dataset's copy: {it.dataset} {it.key}")
        if img is not None:
            return img
        remote = _http_url(it.url)
        if remote is not None:  # loaded when the report is opened (no referrer sent); never lazy: printable
            return (f'<img class="thumb remote" src="{_h(remote)}" referrerpolicy="no-referrer" '
                    f'alt="{_h(f"the copy online: {it.dataset} {it.key} (may be offline)")}">')
        why = (f"local copy unreadable: {reason}" if it.path else
               "no local copy; URL is not http(s)" if it.url else "no local copy or URL")
        return _placeholder(why)

    def copy(self, m: Match, listed: bool = False) -> str:
        it = m.item
        words = describe({**m.evidence, "found_by": m.found_by})
        sure_cls = "sure likely" if words["sure"] not in ("very sure", "sure") else "sure"
        head = (f'<p><span class="how">{_h(words["how"])}</span> · <span class="{sure_cls}">{_h(words["sure"])}</span>'
                + (" · found by your photo and your Flickr account" if m.found_by == "both" else "") + "</p>")
        where = [f"<b>{_h(it.dataset)}</b> <code>{_h(it.key)}</code>"]
        where += [_h(v) for v in (it.owner and f"owner {it.owner}", it.license, it.title and f"“{it.title}”") if v]
        links = [_link(it.url)] if it.url else []
        if it.page_url:
            links.append(_link(it.page_url, "photo page"))
        if listed and it.status != "ok":
            links.append(f'<span class="err">not hashed: {_h(it.error or "failed")} (the listing is evidence all the '
                         "same)</span>")
        tech = [f"distance {m.distance}" if m.distance is not None else None,
                f"score {m.evidence['score']:.3f}" if isinstance(m.evidence.get("score"), float) else None,
                (f"{m.evidence.get('variant')} → {m.evidence.get('entry')}" if m.evidence.get("variant") else None),
                f"motion {m.evidence['motion']}" if "motion" in m.evidence else None,
                f"hash {it.hash}" if it.hash else None,
                f"local copy {it.path}" if it.path and self.show_paths else None]
        return (f'<li class="copy"><figure>{self.copy_thumb(m)}</figure><div class="what">{head}'
                f"<p>{' · '.join(where)}</p><p>{' · '.join(links)}</p>"
                f'<p class="tech">{_h(" · ".join(t for t in tech if t))}</p></div></li>')

    def photo(self, r: QueryResult, anchor: str) -> str:
        img, reason = self.thumbs.img(r.query, f"your photo {self.name(r.query)}")
        datasets = sorted({m.item.dataset for m in r.matches})
        head = (f'<h2 id="{anchor}">{_h(self.name(r.query))} <span class="sub">found '
                f'{plural(len(r.matches), "time")} in {_h(", ".join(datasets))}</span></h2>')
        copies = "".join(self.copy(m) for _, group in by_dataset(r.matches) for m in group)
        return (f'<section class="card photo">{head}<figure>{img or _placeholder(reason)}'
                f'<figcaption>your photo</figcaption></figure><ol class="copies">{copies}</ol></section>')

    def identity(self, r: QueryResult) -> str:
        n = len(r.matches)
        head = (f'<h2 id="identity">Listed under your Flickr account, not found among your photos '
                f'<span class="sub">{plural(n, "item")}: found by the account (the dataset lists the photo\'s Flickr id '
                "or owner), not by comparing pictures</span></h2>")
        return (f'<section class="card">{head}<ol class="copies">{"".join(self.copy(m, True) for m in r.matches)}'
                "</ol></section>")


def _summary(results: list[QueryResult], title: str, index_info: dict | None, generated: str,
             anchors: dict[int, str], page: _Page) -> Iterator[str]:
    photos = [r for r in results if r.query is not None]
    identity = [m for r in results if r.query is None for m in r.matches]
    s = summarise(photos)
    per_dataset = dataset_counts(photos)
    info = " · ".join(f"{_h(k)} {_h(v)}" for k, v in (index_info or {}).items() if v is not None)
    yield f"<h1>{_h(title)}</h1><div class=\"sub\">generated {_h(generated)}{' · ' + info if info else ''}</div>"
    yield '<section class="card">'
    not_found = s["photos"] - s["with_matches"] - s["errors"]
    yield (f'<p class="lead"><b>{s["with_matches"]:,} of {plural(s["photos"], "photo")}</b> found '
           f'({plural(s["matches"], "copy", "copies")}) in {plural(len(per_dataset), "dataset")}; '
           f'{not_found:,} not found; {s["errors"]:,} could not be read.'
           + (f" {plural(len(identity), 'more item')} listed under your Flickr account." if identity else "") + "</p>")
    if per_dataset:
        rows = "".join(f'<tr><td>{_h(ds)}</td><td class="n">{c["photos"]:,}</td><td class="n">{c["matches"]:,}</td></tr>'
                       for ds, c in per_dataset.items())
        yield f'<table class="datasets"><tr><th>dataset</th><th>your photos in it</th><th>copies</th></tr>{rows}</table>'
    if anchors:
        yield "<h2>Photos found</h2><ol class=\"toc\">"
        for n, r in enumerate(results):
            if n in anchors:
                yield f'<li><a href="#{anchors[n]}">{_h(page.name(r.query))}</a> ({len(r.matches)})</li>'
        yield "</ol>"
    yield f'<p class="note">{_h(SURE_EXPLAINED)}</p>'
    if any(_http_url(m.item.url) and not m.item.path for r in results for m in r.matches):
        yield ('<p class="note">Copies with no file on this machine are shown from the dataset\'s URL: opening this '
               "report contacts that server (without a referrer), and the image may no longer be online.</p>")
    yield "</section>"


def _lists(results: list[QueryResult], page: _Page) -> Iterator[str]:
    photos = [r for r in results if r.query is not None]
    unmatched = [r for r in photos if not r.matches and r.error is None]
    errors = [r for r in photos if r.error is not None]
    if unmatched:
        yield (f'<section class="card"><h2>Not found ({len(unmatched):,})</h2><p class="sub">No copy of these photos '
               f'is in the index.</p><ul class="names">'
               + "".join(f"<li>{_h(page.name(r.query))}</li>" for r in unmatched) + "</ul></section>")
    if errors:
        yield (f'<section class="card"><h2 class="err">Could not be read ({len(errors):,})</h2><ul class="names">'
               + "".join(f"<li>{_h(page.name(r.query))}: {_h(r.error)}</li>" for r in errors) + "</ul></section>")


def _chunks(results: list[QueryResult], title: str, index_info: dict | None, thumb_size: int,
            show_paths: bool) -> Iterator[str]:
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
    page = _Page(_Thumbs(thumb_size), show_paths)
    anchors = {n: f"photo-{n + 1}" for n, r in enumerate(results) if r.query is not None and r.matches}
    yield from _summary(results, title, index_info, generated, anchors, page)
    for n, r in enumerate(results):
        if r.query is None:
            yield page.identity(r) + "\n"
        elif n in anchors:
            yield page.photo(r, anchors[n]) + "\n"
    yield from _lists(results, page)
    yield "</main>\n</body>\n</html>\n"


def write_html(results: Iterable[QueryResult], path: str | os.PathLike, *, title: str = "matcher report",
               index_info: dict | None = None, thumb_size: int = 96, show_paths: bool = False) -> None:
    """Write the report (see the module) to ``path``, atomically: ``path`` is the old file or the whole new one.

    Every value is HTML-escaped; only http(s) URLs become links or image sources; the page carries a CSP that
    forbids scripts. ``index_info``: a few ``{label: value}`` shown under the title.
    """
    if not isinstance(thumb_size, int) or thumb_size < 16:
        raise ValueError(f"thumb_size must be an integer >= 16, not {thumb_size!r}")
    results = list(results)
    with replacing(path, "w", encoding="utf-8", newline="\n") as f:
        for chunk in _chunks(results, title, index_info, thumb_size, show_paths):
            f.write(chunk)
