"""Property tests (hypothesis): the image loader and the manifest readers on arbitrary and mutated input.

* :func:`matcher.imaging.images.load_image` on arbitrary bytes (bare, or behind the magic bytes of a format, so
  that every parser is reached) and on real photos mutated (bits flipped, bytes set, truncated, bytes
  inserted, deleted or repeated) in every format matcher reads: it returns an 8-bit upright image or
  raises a :class:`~matcher.errors.MatcherError` subclass, never anything else, within a time bound;
  the workers' hashing of what it returns (dataset and query side) never raises either.
* :func:`matcher.ingest.open_source.open_source` on CSV, TSV, JSONL, Parquet (and .gz) files of arbitrary or
  mutated content, or generated rows and tables of any column type: it yields items (a bad row as an
  item with its reason) or raises :class:`~matcher.errors.ManifestError`, and every item can be stored.

CI runs a few hundred examples, derandomized (the same every run; ~30 s on a busy 2-core machine).
``MATCHER_FUZZ_EXAMPLES=20000`` runs that many per property, randomly, for a long hunt.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import faulthandler
import gzip
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from matcher.errors import ManifestError, MatcherError
from matcher.hashing.hashers import get_hasher
from matcher.imaging.images import DEFAULT_LIMITS, LoadedImage, _load_jpeg_gray, load_image
from matcher.ingest.sources import FIELD_ALIASES
from matcher.ingest.open_source import open_source
from matcher.pipeline.photo import index_one, query_one

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parent.parent
LONG = int(os.environ.get("MATCHER_FUZZ_EXAMPLES", "0"))
#: Seconds one example may take (a busy CI machine; a hostile file that hangs takes minutes).
BOUND = 10.0
#: A hang in C code cannot be interrupted: past this, the test process dumps its stacks and exits.
HARD_BOUND = 120


def fuzz(ci_examples: int):
    return settings(max_examples=LONG or ci_examples, deadline=None, derandomize=not LONG, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


@contextlib.contextmanager
def bounded(what):
    faulthandler.dump_traceback_later(HARD_BOUND, exit=True)
    t0 = time.monotonic()
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
    elapsed = time.monotonic() - t0
    assert elapsed < BOUND, f"{elapsed:.1f} s on {what!r}"


# --------------------------------------------------------------------------- images

HASHER = get_hasher("phash")


def _encodings() -> dict[str, bytes]:
    """Small real photos in every format and mode matcher reads."""
    ims = []
    for name in ("IMG_0003.jpg", "IMG_0006.jpg"):
        with Image.open(ROOT / "sample" / "my-photos" / name) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((96, 96))
        ims.append(im)
    a, b = ims

    def enc(im, fmt, **kw):
        out = io.BytesIO()
        im.save(out, fmt, **kw)
        return out.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6
    out = {
        "jpeg": enc(a, "JPEG", quality=80),
        "jpeg-progressive": enc(b, "JPEG", quality=80, progressive=True),
        "jpeg-exif": enc(a, "JPEG", quality=80, exif=exif.tobytes()),
        "jpeg-cmyk": enc(b.convert("CMYK"), "JPEG"),
        "png": enc(a, "PNG"),
        "png-16bit": enc(Image.fromarray(np.asarray(b.convert("L"), np.uint16) * 257), "PNG"),
        "png-palette-alpha": enc(a.quantize(64), "PNG", transparency=0),
        "png-la": enc(b.convert("LA"), "PNG"),
        "apng": enc(a, "PNG", save_all=True, append_images=[b.resize(a.size)], duration=50),
        "gif": enc(a.quantize(64), "GIF", save_all=True, append_images=[b.resize(a.size).quantize(64)]),
        "webp": enc(b, "WEBP", quality=70),
        "webp-lossless": enc(a, "WEBP", lossless=True),
        "webp-animated": enc(a, "WEBP", save_all=True, append_images=[b.resize(a.size)], quality=50),
        "tiff": enc(b, "TIFF", compression="tiff_deflate"),
        "tiff-float": enc(b.convert("F"), "TIFF"),
        "bmp": enc(a, "BMP"),
        "heic": enc(a, "HEIF", quality=50),
        "avif": enc(b, "AVIF", quality=50, speed=10),
    }
    return out


ENCODED = _encodings()
MAGICS = [b"", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xc2", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a",
          b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"RIFF\x00\x10\x00\x00WEBPVP8L", b"RIFF\x00\x10\x00\x00WEBPVP8X",
          b"II*\x00\x08\x00\x00\x00", b"MM\x00*\x00\x00\x00\x08", b"BM", b"\x00\x00\x00\x18ftypheic",
          b"\x00\x00\x00\x1cftypavif", b"\x00\x00\x01\x00", b"8BPS", b"P6\n", b"\x0a\x05\x01\x08"]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 64)),
    st.tuples(st.just("repeat"), st.integers(0, 1 << 20), st.integers(1, 256), st.integers(2, 50)),
)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op in ops:
        if not b:
            break
        i = op[1] % len(b)
        if op[0] == "flip":
            b[i] ^= 1 << op[2]
        elif op[0] == "set":
            b[i] = op[2]
        elif op[0] == "truncate":
            del b[max(1, i):]
        elif op[0] == "insert":
            b[i:i] = op[2]
        elif op[0] == "delete":
            del b[i : i + op[2]]
        else:  # repeat a span (a chunk, a scan, a frame header) several times
            b[i:i] = bytes(b[i : i + op[2]]) * (op[3] - 1)
    return bytes(b)


def check_image(data: bytes, hash_it: bool = True) -> None:
    with bounded(data[:32]):
        try:
            li = load_image(data)
        except MatcherError:
            return
        assert isinstance(li, LoadedImage)
        assert li.image.mode in ("L", "RGB") and li.image.width > 0 and li.image.height > 0
        assert li.width > 0 and li.height > 0
        if hash_it:  # what the workers do next never raises either
            for fn in (index_one, query_one):
                out = fn(HASHER, True, data, DEFAULT_LIMITS)
                assert out[0] in ("ok", "err"), out


@fuzz(400)
@given(st.sampled_from(MAGICS), st.binary(max_size=2048))
@example(b"\x89PNG\r\n\x1a\n", b"")
@example(b"", b"\xff\xd8\xff")
def test_load_image_on_arbitrary_bytes(magic, body):
    check_image(magic + body)


@fuzz(600)
@given(st.sampled_from(sorted(ENCODED)), st.lists(mutation, min_size=1, max_size=6))
def test_load_image_on_mutated_photos(fmt, ops):
    check_image(mutate(ENCODED[fmt], ops))


JPEGS = sorted(k for k in ENCODED if k.startswith("jpeg"))


@fuzz(300)
@given(st.sampled_from(JPEGS), st.lists(mutation, min_size=1, max_size=6), st.sampled_from([32, 256]))
def test_the_jpeg_fast_path_decodes_as_pillow_or_steps_aside(fmt, ops, n):
    """matcher.imaging.jpeg on broken JPEGs: the same pixels as the Pillow path, or None (Pillow then decides)."""
    data = mutate(ENCODED[fmt], ops)
    with bounded(data[:32]):
        fast = _load_jpeg_gray(data, DEFAULT_LIMITS, n)
        if fast is None:
            return
        slow = load_image(data, draft=("L", n), fast=False)  # a MatcherError here fails the test
        assert (fast.width, fast.height, fast.format) == (slow.width, slow.height, slow.format)
        assert np.array_equal(np.asarray(fast.image), np.asarray(slow.image))


def test_every_base_encoding_loads():
    for fmt, data in ENCODED.items():
        assert load_image(data).image.size[0] > 0, fmt


# --------------------------------------------------------------------------- manifests

def _sample_rows() -> list[dict]:
    import csv

    with open(ROOT / "sample" / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


ROWS = _sample_rows()


def _csv(rows: list[dict], delim: str = ",") -> bytes:
    import csv

    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter=delim)
    w.writeheader()
    w.writerows(rows)
    return out.getvalue().encode()


def _parquet(table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


MANIFESTS = {
    "csv": _csv(ROWS),
    "tsv": _csv(ROWS, "\t"),
    "jsonl": "".join(json.dumps(r) + "\n" for r in ROWS).encode(),
    "parquet": _parquet(pa.Table.from_pylist(ROWS)),
}
SUFFIX = {"csv": ".csv", "tsv": ".tsv", "jsonl": ".jsonl", "parquet": ".parquet"}


def read_manifest(name: str, data: bytes) -> None:
    """open_source + every item; the items must be storable (text, and extra metadata JSON can hold)."""
    with tempfile.TemporaryDirectory() as d, bounded(name):
        p = Path(d) / name
        p.write_bytes(data)
        try:
            items = list(open_source(p, dataset="fuzz").items())
        except ManifestError:
            return
        for it in items:
            assert isinstance(it.key, str) and it.key
            it.key.encode("utf-8")
            assert it.error is None or (isinstance(it.error, str) and it.error)
            assert it.url or it.path or it.error
            json.dumps(it.extra, sort_keys=True)
            json.dumps(it.fields)


@fuzz(150)
@given(st.sampled_from(sorted(MANIFESTS)), st.booleans(), st.lists(mutation, min_size=1, max_size=6))
def test_manifests_mutated(fmt, gz, ops):
    data = MANIFESTS[fmt]
    if gz and fmt != "parquet":  # mutate the compressed stream
        read_manifest("m" + SUFFIX[fmt] + ".gz", mutate(gzip.compress(data), ops))
    else:
        read_manifest("m" + SUFFIX[fmt], mutate(data, ops))


@fuzz(100)
@given(st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet", ".csv.gz", ".jsonl.gz"]), st.binary(max_size=1024))
def test_manifests_arbitrary_bytes(suffix, data):
    read_manifest("x" + suffix, data)


HEADERS = st.one_of(st.sampled_from([a for aliases in FIELD_ALIASES.values() for a in aliases[:3]]),
                    st.text(max_size=12))
CELL = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["http://example.com/a.jpg", "a.jpg",
                                                                    "../../etc/passwd", "/dev/zero", "a\x00b.jpg"]))


@fuzz(100)
@given(st.lists(HEADERS, min_size=1, max_size=6), st.lists(st.lists(CELL, max_size=7), max_size=8),
       st.sampled_from([",", "\t"]))
def test_manifests_generated_text_rows(headers, rows, delim):
    import csv

    out = io.StringIO()
    w = csv.writer(out, delimiter=delim)
    w.writerow(headers)
    w.writerows([[c or "" for c in r] for r in rows])
    read_manifest("g.csv" if delim == "," else "g.tsv", out.getvalue().encode("utf-8", "surrogatepass"))
    jsonl = "".join(json.dumps(dict(zip(headers, r))) + "\n" for r in rows)
    read_manifest("g.jsonl", jsonl.encode("utf-8", "surrogatepass"))


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
                    max_leaves=10)


@fuzz(100)
@given(st.lists(st.dictionaries(HEADERS, JSON, max_size=5), max_size=6))
def test_manifests_generated_json_values(objs):
    read_manifest("j.jsonl", "".join(json.dumps(o) + "\n" for o in objs).encode("utf-8", "surrogatepass"))


ARROW_COLUMNS = {
    "string": (pa.string(), st.text(max_size=20)),
    "url": (pa.string(), st.sampled_from(["http://example.com/a.jpg", "", "nan", "a.jpg"])),
    "binary": (pa.binary(), st.binary(max_size=20)),
    "int": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "float": (pa.float64(), st.floats()),
    "bool": (pa.bool_(), st.booleans()),
    "timestamp": (pa.timestamp("us"), st.datetimes(min_value=datetime.datetime(1900, 1, 1))),
    "date": (pa.date32(), st.dates(min_value=datetime.date(1900, 1, 1))),
    "decimal": (pa.decimal128(10, 3), st.decimals(min_value=-10**6, max_value=10**6, places=3, allow_nan=False)),
    "list": (pa.list_(pa.int32()), st.lists(st.integers(-1000, 1000), max_size=3)),
    "struct": (pa.struct([("x", pa.float32()), ("tag", pa.string())]),
               st.fixed_dictionaries({"x": st.floats(width=32), "tag": st.text(max_size=5)})),
}


@st.composite
def arrow_tables(draw):
    names = draw(st.lists(HEADERS, min_size=1, max_size=5, unique=True))
    n = draw(st.integers(0, 5))
    cols = {}
    for name in names:
        typ, values = ARROW_COLUMNS[draw(st.sampled_from(sorted(ARROW_COLUMNS)))]
        cols[name] = pa.array(draw(st.lists(st.none() | values, min_size=n, max_size=n)), type=typ)
    return pa.table(cols)


@fuzz(80)
@given(arrow_tables())
def test_manifests_generated_parquet_columns(table):
    read_manifest("p.parquet", _parquet(table))


# --------------------------------------------------------------------------- regressions the fuzzing found


def test_a_damaged_gz_manifest_is_a_manifest_error(tmp_path):
    data = gzip.compress(MANIFESTS["csv"])
    for name, body in [("cut.csv.gz", data[: len(data) // 2]), ("plain.csv.gz", MANIFESTS["csv"]),
                       ("junk.jsonl.gz", b"\x1f\x8bjunk")]:
        (tmp_path / name).write_bytes(body)
        with pytest.raises(ManifestError, match="cannot read the file"):
            list(open_source(tmp_path / name).items())  # was EOFError / gzip.BadGzipFile


def test_deeply_nested_json_is_a_bad_row(tmp_path):
    p = tmp_path / "deep.jsonl"
    p.write_text('{"url": "http://example.com/a.jpg"}\n' + "[" * 100_000 + "\n")
    items = list(open_source(p).items())  # was RecursionError
    assert [i.error for i in items] == [None, "line 2: invalid JSON (nested too deeply)"]


def test_unusable_paths_are_bad_rows(tmp_path):
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    p = tmp_path / "paths.csv"
    p.write_bytes(b'path,url\n"a\x00b.jpg",\nloop1,\n"c\x00d.jpg",http://example.com/c.jpg\n')
    items = list(open_source(p).items())  # was ValueError: embedded null byte / RuntimeError: Symlink loop
    assert items[0].error == "row 2: unusable path (a NUL byte in it)"
    assert items[1].error.startswith("row 3: unusable path")
    assert items[2].error is None and items[2].url == "http://example.com/c.jpg"  # the URL is still there
    with pytest.raises(MatcherError, match="cannot read file"):
        load_image("/tmp/a\x00b.jpg")


def test_parquet_values_json_cannot_hold_become_text(tmp_path, sample):
    """A Parquet manifest with a date, timestamp, decimal or binary column made `matcher add` crash
    (TypeError: Object of type date is not JSON serializable) when it stored the extra columns."""
    photo = str(sample / "my-photos" / "IMG_0003.jpg")
    table = pa.table({"path": [photo], "taken": [datetime.datetime(2020, 1, 1, 12)], "day": [datetime.date(2020, 1, 2)],
                      "price": pa.array([decimal.Decimal("1.50")], pa.decimal128(5, 2)), "raw": [b"\xff\x00a"],
                      "tags": [["a", "b"]]})
    p = tmp_path / "m.parquet"
    pq.write_table(table, p)
    (item,) = open_source(p).items()
    assert item.extra == {"taken": "2020-01-01T12:00:00", "day": "2020-01-02", "price": "1.50", "raw": "\\xff\x00a",
                          "tags": ["a", "b"]}
    from conftest import catalog_sql, run_matcher

    index = tmp_path / "index"
    add = run_matcher("add", "--index", str(index), "--workers", "0", "--allow-paths", os.path.dirname(photo), str(p),
                      timeout=120)
    assert add.returncode == 0 and "Traceback" not in add.stderr, add.stderr
    (extra,) = catalog_sql(index, "SELECT extra FROM items")[0]
    assert json.loads(extra)["day"] == "2020-01-02"
