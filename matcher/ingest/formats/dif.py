"""``--format dif``: IBM's Diversity in Faces annotations file, ``DiF_v1.csv``, as released.

No header, comma-separated, one row per face (about 1M rows), 191 columns: the face id, the image URL
(a Flickr static URL: the images are YFCC100M's), the image width and height, the face box as x1, y1,
x2, y2 in image pixels, 68 landmark points as x, y pairs (136 columns, iBUG 68 order), then the 47
values of the coding schemes. Numbers may be written as floats (``1024.0``); quoted fields, a BOM, CRLF
line ends, blank lines, ``.gz``/``.bz2`` are read.

Rows of the same URL are the faces of one item: the item's key is the photo id its URL names (the URL
itself when it names none); each face's box becomes a face entry; the face ids, the image size the boxes
were measured on and each face's 47 coding values are kept. The landmarks are not kept (136 numbers a
face: the box is what the index uses).
"""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path
from typing import Iterator

from matcher.errors import ManifestError
from matcher.provenance.flickr import parse_url
from matcher.ingest.sources import Source, SourceItem, dataset_name, guarded, open_text

from matcher.ingest.formats.values import integer, number

__all__ = ["DIF_COLUMNS", "DifSource", "looks_dif"]

#: Columns of a DiF_v1.csv row: id, url, width, height, box (4), landmarks (136), coding values (47).
DIF_COLUMNS = 191
_LANDMARKS = 136
_CODING = DIF_COLUMNS - 8 - _LANDMARKS
_NUM = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*")


def looks_dif(row: list[str]) -> bool:
    """A DiF_v1.csv row: 191 fields, a numeric face id, an http(s) URL, then numbers (size and box)."""
    return (len(row) == DIF_COLUMNS and integer(row[0]) is not None
            and row[1].strip().lower().startswith(("http://", "https://"))
            and all(_NUM.fullmatch(c) for c in row[2:8]))


class DifSource(Source):
    """The rows of ``DiF_v1.csv`` (see the module docstring), one item per image URL.

    Fields: url (the URL names no owner: ``--join yfcc100m_dataset`` adds owner, page and licence). Extra: ``photo_id``, ``face_ids`` (in file order), ``width``/``height`` (the size the
    boxes are in), ``coding`` (per face, its 47 values, as numbers). A row with another number of fields
    is a failed item of kind ``bad_row`` naming its line; a face whose box is not 4 numbers is named in
    ``face_errors``. Two readings of the file: one counts the rows of each URL (a dict of the URLs,
    about 100 MB for the whole release), the other yields each item once its last row is read.
    """

    preset = "dif"
    counts_rows = True

    def __init__(self, path: str | Path, dataset: str | None = None):
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise ManifestError(f"{path}: no such manifest file")
        self.dataset = dataset or dataset_name(self.path)
        self.location = str(self.path)

    def check(self) -> None:
        """Refuse a file whose first rows are not DiF_v1.csv's (191 fields, a face id, a URL, numbers)."""
        first = next((row for _, row, _ in itertools.islice(self._rows(), 5) if row is not None), None)
        if first is None:
            with open_text(self.path) as f:
                line = next((ln for ln in f if ln.strip()), "")
            if line:
                n = len(next(csv.reader([line.rstrip("\r\n")])))
                raise ManifestError(f"{self.path.name}: not DiF_v1.csv's layout (its first row has {n} comma-separated "
                                    f"fields; DiF's rows have {DIF_COLUMNS}: face id, URL, width, height, box, "
                                    "landmarks, coding values)")

    def _rows(self) -> Iterator[tuple[int, list[str] | None, str | None]]:
        """(line number, the row's fields or None, why not); blank lines and a header line are left out."""
        return guarded(self.path.name, self._read())

    def _read(self) -> Iterator[tuple[int, list[str] | None, str | None]]:
        with open_text(self.path) as f:
            reader = csv.reader(f)
            first = True
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    yield reader.line_num, None, f"line {reader.line_num}: unreadable CSV ({e})"
                    continue
                if not any(c.strip() for c in row):
                    continue
                if first and len(row) > 1 and integer(row[0]) is None and not row[1].strip().lower().startswith("http"):
                    first = False
                    self.counts.skipped["header line"] += 1
                    continue  # a header someone added
                first = False
                if len(row) != DIF_COLUMNS:
                    yield reader.line_num, None, (f"line {reader.line_num}: {len(row)} comma-separated fields; "
                                                  f"a DiF_v1.csv row has {DIF_COLUMNS}")
                    continue
                if not row[1].strip():
                    yield reader.line_num, None, f"line {reader.line_num} has no image URL"
                    continue
                yield reader.line_num, row, None

    def _items(self) -> Iterator[SourceItem]:
        remaining: dict[str, int] = {}
        for _, row, _ in self._rows():
            if row is not None:
                url = row[1].strip()
                remaining[url] = remaining.get(url, 0) + 1
        self.counts.skipped.clear()
        pending: dict[str, list[tuple[int, list[str]]]] = {}
        for n, row, err in self._rows():
            self.counts.rows += 1
            if row is None:
                yield SourceItem(self.dataset, f"line:{n}", error=err)
                continue
            url = row[1].strip()
            rows = pending.setdefault(url, [])
            rows.append((n, row))
            remaining[url] -= 1
            if remaining[url] == 0:
                del remaining[url], pending[url]
                yield self._item(url, rows)

    def _item(self, url: str, rows: list[tuple[int, list[str]]]) -> SourceItem:
        ref = parse_url(url)
        photo_id = ref.photo_id if ref is not None else None
        width, height = integer(rows[0][1][2]), integer(rows[0][1][3])
        size = (width, height) if width and height and width > 0 and height > 0 else None
        boxes, errors, face_ids, coding = [], [], [], []
        for i, (n, row) in enumerate(rows):
            fid = integer(row[0])
            face_ids.append(fid if fid is not None else row[0].strip())
            coding.append([number(v) for v in row[8 + _LANDMARKS:]])
            box = [number(v) for v in row[4:8]]
            if not all(isinstance(v, (int, float)) for v in box):
                errors.append(f"face {i} (line {n}): the box is not 4 numbers ({', '.join(row[4:8])})"[:200])
            elif not (box[2] > box[0] and box[3] > box[1]):
                errors.append(f"face {i} (line {n}): empty box ({', '.join(row[4:8])})")
            else:
                boxes.append((float(box[0]), float(box[1]), float(box[2]), float(box[3]), True))
        extra = {"photo_id": photo_id, "face_ids": face_ids, "width": width, "height": height, "coding": coding,
                 "lines": [n for n, _ in rows]}
        extra = {k: v for k, v in extra.items() if v is not None}
        if errors:
            extra["face_errors"] = errors[:20]
        fields = {"url": url, "page_url": None, "path": None, "owner": None, "license": None, "title": None}
        error = None
        if "\ufffd" in url:
            error = f"line {rows[0][0]}: the image URL is not valid UTF-8"
        return SourceItem(self.dataset, photo_id or url, url=url, fields=fields, extra=extra, error=error,
                          faces=(tuple(boxes), size) if boxes else None)
