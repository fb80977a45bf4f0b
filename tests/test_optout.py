"""The opt-out registry by hash: the file, `matcher optout`, `matcher filter`, `add --registry`, `remove --matching`
and `remove --registry`, on the bundled sample (real photos; a real HTTP server on 127.0.0.1 for URL manifests).

The registry is built from sample/my-photos; every expected copy of sample/expected.csv must be dropped
(re-hosts and edited copies: mirrored, cropped, captioned, a face crop) and nothing else, in particular not
ds-0004, the other view of IMG_0007's stereo pair (64-bit distance 4).
"""

from __future__ import annotations

import csv
import os
import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import LoopbackHandler, LoopbackServer, catalog_sql, run_matcher
from matcher.errors import RegistryError
from matcher.optout import CONFIRM, DEFAULT_CONFIRM_THRESHOLD, DEFAULT_THRESHOLD, FORMAT, LOG_COLUMNS, Registry, RegistryEntry, remove_registered

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample"
MANIFEST = SAMPLE / "manifest.csv"


def _manifest_rows() -> list[dict[str, str]]:
    with open(MANIFEST, newline="") as f:
        return list(csv.DictReader(f))


def _expected_by_key() -> dict[str, str]:
    """Manifest key of every expected copy -> the my-photos file it copies."""
    out = {}
    with open(SAMPLE / "expected.csv", newline="") as f:
        for r in csv.DictReader(f):
            for k in filter(None, r["expected_keys"].split(";")):
                out[k] = r["query"]
    return out


EXPECTED = _expected_by_key()


@pytest.fixture(scope="module")
def registry_file(tmp_path_factory) -> Path:
    """A registry of every photo in sample/my-photos (built once; tests copy it before changing it)."""
    path = tmp_path_factory.mktemp("optout") / "registry.json"
    p = run_matcher("optout", "add", "--registry", str(path), "--note", "write to me@example.org",
                    str(SAMPLE / "my-photos"), check=True)
    assert p.stdout.count("added o-") == 10, p.stdout
    return path


@pytest.fixture(scope="module")
def entry_of(registry_file) -> dict[str, str]:
    """my-photos file name -> registry entry id."""
    return {e.source_name: e.id for e in Registry.load(registry_file).entries}


def _copy(path: Path, tmp_path: Path, name: str = "registry.json") -> Path:
    out = tmp_path / name
    shutil.copy(path, out)
    return out


# --- the registry file ------------------------------------------------------------------------------
def test_registry_file_holds_hashes_only(registry_file):
    data = json.loads(registry_file.read_text())
    assert data["format"] == FORMAT and data["version"] == 1
    assert data["hasher"] == {"name": "phash", "bits": 64, "version": 1,
                              "params": {"hash_size": 8, "highfreq_factor": 4}}
    assert data["confirm"] == CONFIRM and CONFIRM["bits"] == 256
    assert data["threshold"] == DEFAULT_THRESHOLD and data["confirm_threshold"] == DEFAULT_CONFIRM_THRESHOLD
    assert len(data["entries"]) == 10
    for e in data["entries"]:
        assert set(e) <= {"id", "added_at", "note", "source_name", "codes"}
        assert e["note"] == "write to me@example.org" and e["source_name"].startswith("IMG_")
        assert e["codes"][0]["kind"] == "id/full"
        assert 140 <= len(e["codes"]) <= 200  # every query variant; IMG_0009 has a face: 20 more
        for c in e["codes"]:
            assert set(c) == {"kind", "hash", "confirm"}  # no thumbnail, no pixels
            assert len(c["hash"]) == 16 and len(c["confirm"]) == 64
            int(c["hash"], 16), int(c["confirm"], 16)
    assert not list(registry_file.parent.glob(".*.tmp-*"))  # written by a temporary file and a rename


def test_round_trip_list_remove_reload(registry_file, tmp_path):
    reg_path = _copy(registry_file, tmp_path)
    reg = Registry.load(reg_path)
    again = Registry.from_json(json.loads(reg.dumps()), path=reg_path)
    assert [(e.id, e.codes, e.note, e.source_name) for e in again.entries] == \
           [(e.id, e.codes, e.note, e.source_name) for e in reg.entries]
    assert again.digest() == reg.digest()

    p = run_matcher("optout", "list", "--registry", str(reg_path), "--json", check=True)
    listed = [json.loads(line) for line in p.stdout.splitlines()]
    assert [x["id"] for x in listed] == [e.id for e in reg.entries]
    assert sorted(x["source_name"] for x in listed) == sorted(p.name for p in (SAMPLE / "my-photos").iterdir())
    p = run_matcher("optout", "list", "--registry", str(reg_path), check=True)
    assert "IMG_0002.jpg" in p.stdout and "10 entries" in p.stderr

    gone = reg.entries[1].id
    p = run_matcher("optout", "remove", "--registry", str(reg_path), "--id", gone, check=True)
    assert gone in p.stderr and "9 entries left" in p.stderr
    after = Registry.load(reg_path)
    assert [e.id for e in after.entries] == [e.id for e in reg.entries if e.id != gone]

    # an unknown id: exit 2, the file untouched (not even rewritten)
    before = reg_path.read_bytes()
    p = run_matcher("optout", "remove", "--registry", str(reg_path), "--id", after.entries[0].id, "--id", "o-nope")
    assert p.returncode == 2 and "o-nope" in p.stderr
    assert reg_path.read_bytes() == before

    # removed, then added back: the same id (an id is a digest of the photo's codes)
    photo = SAMPLE / "my-photos" / reg.entries[1].source_name
    p = run_matcher("optout", "add", "--registry", str(reg_path), "--note", "write to me@example.org", str(photo),
                    check=True)
    assert p.stdout.startswith(f"added {gone}")
    assert {e.id for e in Registry.load(reg_path).entries} == {e.id for e in reg.entries}


def test_same_photo_twice_is_not_duplicated(registry_file, tmp_path):
    from PIL import Image

    reg_path = _copy(registry_file, tmp_path)
    before = Registry.load(reg_path)
    # the same file, and the same pixels saved again as PNG under another name
    with Image.open(SAMPLE / "my-photos" / "IMG_0002.jpg") as im:
        im.save(tmp_path / "again.png")
    p = run_matcher("optout", "add", "--registry", str(reg_path), str(SAMPLE / "my-photos" / "IMG_0002.jpg"),
                    str(tmp_path / "again.png"), check=True)
    assert p.stdout.count("already registered as") == 2, p.stdout
    assert "0 photos added, 2 already registered" in p.stderr
    after = Registry.load(reg_path)
    assert [e.id for e in after.entries] == [e.id for e in before.entries]


def test_add_reports_bad_photos_and_keeps_the_rest(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    reg_path = tmp_path / "sub" / "reg.json.gz"  # a .gz name is compressed; the folder is created
    p = run_matcher("optout", "add", "--registry", str(reg_path), "--no-source-name", str(bad),
                    str(SAMPLE / "my-photos" / "IMG_0005.jpg"), str(tmp_path / "missing.jpg"))
    assert p.returncode == 2
    assert "broken.jpg" in p.stderr and "missing.jpg" in p.stderr
    assert "1 photo added" in p.stderr and "2 could not be read" in p.stderr  # grammar
    assert reg_path.read_bytes()[:2] == b"\x1f\x8b"
    (e,) = Registry.load(reg_path).entries
    assert e.source_name is None and json.loads(gzip.decompress(reg_path.read_bytes()))["entries"][0]["id"] == e.id
    p = run_matcher("optout", "add", "--registry", str(tmp_path / "none.json"), str(tmp_path / "nothing-here"))
    assert p.returncode == 2 and not (tmp_path / "none.json").exists()


DAMAGES = {
    "truncated": (lambda s: s[: len(s) // 2], "invalid JSON"),
    "newer version": (lambda s: s.replace('"version": 1', '"version": 2', 1), "version 2"),
    "not a registry": (lambda s: s.replace(FORMAT, "something-else", 1), "not a matcher opt-out registry"),
    "other hasher": (lambda s: s.replace('"hash_size": 8', '"hash_size": 16', 1), "hasher"),
    "bad hex": (lambda s: s.replace('"hash": "', '"hash": "zz', 1), "hash"),
    "codes not a list": (lambda s: s.replace('"codes": [', '"codes": 7, "x": [', 1), "codes"),
    "bad threshold": (lambda s: s.replace(f'"threshold": {DEFAULT_THRESHOLD}', '"threshold": 99', 1), "threshold"),
    "not UTF-8": (lambda s: s.replace('"note": "', '"note": "\udcff', 1), "UTF-8"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_file_is_refused(registry_file, tmp_path, damage):
    fn, message = DAMAGES[damage]
    reg_path = tmp_path / "registry.json"
    reg_path.write_bytes(fn(registry_file.read_text()).encode("utf-8", "surrogateescape"))
    with pytest.raises(RegistryError, match=message):
        Registry.load(reg_path)


@pytest.mark.parametrize("damage", ["truncated", "newer version"])
def test_a_damaged_file_is_left_alone(registry_file, tmp_path, damage):
    fn, message = DAMAGES[damage]
    reg_path = tmp_path / "registry.json"
    reg_path.write_text(fn(registry_file.read_text()))
    before = reg_path.read_bytes()
    p = run_matcher("optout", "add", "--registry", str(reg_path), str(SAMPLE / "my-photos" / "IMG_0008.jpg"))
    assert p.returncode == 2 and str(reg_path) in p.stderr and message in p.stderr and "Traceback" not in p.stderr
    p2 = run_matcher("filter", str(MANIFEST), "--registry", str(reg_path), "--out", str(tmp_path / "clean.csv"))
    assert p2.returncode == 2 and not (tmp_path / "clean.csv").exists()
    assert reg_path.read_bytes() == before  # nothing lost


def test_newer_version_says_upgrade(registry_file, tmp_path):
    reg_path = tmp_path / "registry.json"
    reg_path.write_text(registry_file.read_text().replace('"version": 1', '"version": 7', 1))
    p = run_matcher("optout", "list", "--registry", str(reg_path))
    assert p.returncode == 2 and "version 7" in p.stderr and "upgrade matcher" in p.stderr


def test_entry_ids_are_content_digests():
    from matcher.optout import RegistryCode

    a = RegistryEntry.make([RegistryCode("id/full", b"\x01" * 8, b"\x02" * 32)])
    b = RegistryEntry.make([RegistryCode("id/full", b"\x01" * 8, b"\x02" * 32)], note="x")
    assert a.id == b.id and a.id.startswith("o-")
    reg = Registry([a])
    assert reg.add(b) == (a, False) and len(reg) == 1


# --- matcher filter -------------------------------------------------------------------------------------
def _check_log(log: Path, entry_of: dict[str, str], dropped: set[str], manifest_rows: list[dict] | None = None,
               first_row: int = 2) -> list[dict]:
    """The log's rows, checked: the dropped ones name the right registry entry and their manifest row
    (numbered as matcher numbers rows: CSV/TSV records with the header as 1, JSONL lines, Parquet rows from 1)."""
    with open(log, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == LOG_COLUMNS
        rows = list(reader)
    line_of = {r["id"]: n for n, r in enumerate(manifest_rows or _manifest_rows(), first_row)}
    opted = [r for r in rows if r["reason"] == "opted out"]
    assert {r["key"] for r in opted} == dropped
    for r in opted:
        assert r["action"] == "dropped" and r["error_kind"] == ""
        assert r["registry_entry"] == entry_of[EXPECTED[r["key"]]], r  # the right photo's entry
        assert int(r["row"]) == line_of[r["key"]]
        assert r["variant"] and r["entry_kind"] in ("full", "trim", "content", "content2", "content3")
        assert 0 <= int(r["distance"]) <= DEFAULT_THRESHOLD and 0 <= int(r["confirm_distance"]) <= DEFAULT_CONFIRM_THRESHOLD
    return rows


def test_filter_local_manifest_drops_every_copy_and_nothing_else(registry_file, entry_of, tmp_path):
    out, log = tmp_path / "clean.csv", tmp_path / "log.csv"
    p = run_matcher("filter", str(MANIFEST), "--registry", str(registry_file), "--out", str(out), "--log", str(log),
                    check=True)
    assert "32 rows: 20 kept, 12 dropped as opted out (7 registry entries), 0 could not be read" in p.stderr
    rows = _manifest_rows()
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(rows[0])  # the same columns, in the same order
        clean = list(reader)
    # every other row, in order, unchanged but for its relative path, now relative to the clean manifest's folder
    for r in clean:
        r["path"] = os.path.relpath((out.parent / r["path"]).resolve(), MANIFEST.parent)
    assert clean == [r for r in rows if r["id"] not in EXPECTED]
    assert "ds-0004" in {r["id"] for r in clean}  # the stereo view of IMG_0007 is a different photo
    logged = _check_log(log, entry_of, set(EXPECTED))
    assert len(logged) == 12


def test_filter_refuses_to_overwrite_its_input(registry_file, tmp_path):
    m = tmp_path / "m.csv"
    shutil.copy(MANIFEST, m)
    p = run_matcher("filter", str(m), "--registry", str(registry_file), "--out", str(m))
    assert p.returncode == 2 and "one of this command's inputs" in p.stderr
    assert m.read_bytes() == MANIFEST.read_bytes()


class _Handler(LoopbackHandler):
    def do_GET(self) -> None:  # noqa: N802
        path, _ = self.count_hit()
        route = self.server.routes.get(path)
        if route is None:
            body, status, ctype = b"<html>Not Found</html>", 404, "text/html"
        else:
            (ctype, body), status = route, 200
        self.reply(status, ctype, body)


@pytest.fixture(scope="module")
def server():
    routes = {}
    for r in _manifest_rows():
        routes[f"/img/{r['id']}"] = ("image/jpeg", (SAMPLE / r["path"]).read_bytes())
    routes["/img/error-page"] = ("image/jpeg", b"<!DOCTYPE html><html><body>Photo not found</body></html>")
    with LoopbackServer(_Handler, routes).running() as srv:
        yield srv


def _url_rows(server) -> list[dict]:
    """The sample manifest with URLs on the loopback server (no paths), plus a 404 and an HTML error page."""
    rows = [{"id": r["id"], "url": server.url(f"/img/{r['id']}"), "owner": r["owner"], "license": r["license"],
             "title": r["title"], "page_url": r["page_url"]} for r in _manifest_rows()]
    rows.insert(3, {**rows[0], "id": "gone-1", "url": server.url("/img/missing")})
    rows.append({**rows[0], "id": "html-2", "url": server.url("/img/error-page"), "title": 'An "error", quoted'})
    return rows


def _write(rows: list[dict], path: Path) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)


def _read(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_filter_url_manifest_over_http(registry_file, entry_of, server, tmp_path, suffix):
    rows = _url_rows(server)
    manifest = tmp_path / f"served{suffix}"
    _write(rows, manifest)
    out, log = tmp_path / f"clean{suffix}", tmp_path / "log.csv"
    p = run_matcher("filter", str(manifest), "--registry", str(registry_file), "--out", str(out), "--log", str(log),
                    "--allow-private-urls", "--timeout", "10", "--workers", "2", check=True)
    assert "34 rows: 20 kept, 12 dropped as opted out" in p.stderr and "2 could not be read" in p.stderr
    assert "dropped)" in p.stderr  # unreadable images are dropped by default
    clean = _read(out)
    assert clean == [r for r in rows if r["id"] not in EXPECTED and r["id"] not in ("gone-1", "html-2")]
    if suffix == ".parquet":
        assert pq.read_schema(out) == pq.read_schema(manifest)
    first = 2 if suffix in (".csv", ".tsv") else 1
    logged = _check_log(log, entry_of, set(EXPECTED), rows, first)
    errors = {r["key"]: r for r in logged if r["reason"] != "opted out"}
    assert set(errors) == {"gone-1", "html-2"}
    assert errors["gone-1"]["error_kind"] == "http" and "404" in errors["gone-1"]["reason"]
    assert errors["html-2"]["error_kind"] == "not_image"
    assert all(r["action"] == "dropped" for r in errors.values())

    if suffix not in (".csv", ".jsonl"):
        return
    # --on-error keep: the unreadable rows stay in the clean manifest (and the log says so)
    out2, log2 = tmp_path / f"kept{suffix}", tmp_path / "log2.csv"
    p = run_matcher("filter", str(manifest), "--registry", str(registry_file), "--out", str(out2), "--log", str(log2),
                    "--allow-private-urls", "--timeout", "10", "--on-error", "keep", check=True)
    assert "22 kept, 12 dropped as opted out" in p.stderr
    assert _read(out2) == [r for r in rows if r["id"] not in EXPECTED]
    kept = [r for r in _check_log(log2, entry_of, set(EXPECTED), rows, first) if r["reason"] != "opted out"]
    assert {r["key"]: r["action"] for r in kept} == {"gone-1": "kept", "html-2": "kept"}


def test_filter_format_option_and_gz_output(registry_file, tmp_path):
    manifest = tmp_path / "manifest.txt"  # a name that says nothing: --format does
    manifest.write_text(MANIFEST.read_text().replace("dataset/", str(SAMPLE / "dataset") + "/"))
    p = run_matcher("filter", str(manifest), "--registry", str(registry_file), "--out", str(tmp_path / "c.csv.gz"),
                    "--format", "csv", "--workers", "0", "--allow-paths", str(SAMPLE), check=True)
    assert "12 dropped" in p.stderr
    with gzip.open(tmp_path / "c.csv.gz", "rt", newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == [r["id"] for r in _manifest_rows() if r["id"] not in EXPECTED]
    p = run_matcher("filter", str(manifest), "--registry", str(registry_file), "--out", str(tmp_path / "x.csv"))
    assert p.returncode == 2 and "unknown manifest format" in p.stderr


# --- against an index -------------------------------------------------------------------------------------
def _keys(index: Path) -> set[str]:
    return {k for (k,) in catalog_sql(index, "SELECT key FROM items WHERE status = 'ok'")}


def test_remove_matching_removes_what_search_finds(sample_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(sample_index, index)
    before = _keys(index)
    photos = SAMPLE / "my-photos"
    p = run_matcher("remove", "--index", str(index), "--matching", str(photos / "IMG_0002.jpg"),
                    str(photos / "IMG_0007.jpg"), str(photos / "IMG_0003.jpg"))
    assert p.returncode == 0, p.stderr
    removed = {line.split()[1].split("/", 1)[1] for line in p.stdout.splitlines() if line.startswith("removed ")}
    assert removed == {"ds-0007", "ds-0011", "ds-0026", "ds-0030"}  # not ds-0004 (IMG_0007's stereo partner)
    assert "IMG_0002.jpg" in p.stdout and "score" in p.stdout
    assert _keys(index) == before - removed
    assert len(catalog_sql(index, "SELECT * FROM tombstones")) >= 4
    p = run_matcher("search", "--index", str(index), "--json", str(photos / "IMG_0002.jpg"))
    assert p.returncode == 1 and json.loads(p.stdout)["matches"] == []
    # nothing left to match: exit 1, nothing removed
    p = run_matcher("remove", "--index", str(index), "--matching", str(photos / "IMG_0002.jpg"))
    assert p.returncode == 1 and "nothing removed" in p.stderr
    assert _keys(index) == before - removed
    # usage errors
    assert run_matcher("remove", "--index", str(index), "--matching").returncode == 2
    assert run_matcher("remove", "--index", str(index), str(photos / "IMG_0002.jpg")).returncode == 2
    assert run_matcher("remove", "--index", str(index), "--key", "ds-0001", "--matching",
                       str(photos / "IMG_0005.jpg")).returncode == 2
    assert _keys(index) == before - removed


def test_remove_registry(registry_file, sample_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(sample_index, index)
    before = _keys(index)
    p = run_matcher("remove", "--index", str(index), "--registry", str(registry_file))
    assert p.returncode == 0, p.stderr
    removed = {line.split()[1].split("/", 1)[1] for line in p.stdout.splitlines() if line.startswith("removed ")}
    assert removed == set(EXPECTED)
    assert _keys(index) == before - set(EXPECTED)
    assert run_matcher("remove", "--index", str(index), "--registry", str(registry_file)).returncode == 1


def test_remove_registry_on_thumbnails_only(registry_file, sample_index, tmp_path):
    """An index built from URLs has no local files: candidates are confirmed on its 64x64 thumbnails."""
    index = tmp_path / "index"
    shutil.copytree(sample_index, index)
    removed, unconfirmed = remove_registered(index, Registry.load(registry_file), local_files=False)
    assert {item.key for item, _ in removed} == set(EXPECTED)
    assert "ds-0004" in {item.key for item, _ in unconfirmed}  # a candidate, refused by the confirmation
    assert all(hit.confirm_distance is not None for _, hit in unconfirmed)


def test_add_with_registry_skips_opted_out_images(registry_file, entry_of, tmp_path):
    index = tmp_path / "index"
    for run in (1, 2):  # a later add cannot bring them back
        p = run_matcher("add", "--index", str(index), "--dataset", "sample", "--registry", str(registry_file),
                        str(MANIFEST), check=True)
        if run == 1:
            assert "20 added, 12 failed (opted_out: 12)" in p.stderr
        else:
            assert "0 added, 12 failed (opted_out: 12), 20 already in the index" in p.stderr
    failed = {k: (kind, err) for k, kind, err in
              catalog_sql(index, "SELECT key, error_kind, error FROM items WHERE status = 'failed'")}
    assert set(failed) == set(EXPECTED)
    for key, (kind, err) in failed.items():
        assert kind == "opted_out"
        assert err.startswith(f"opted out (registry entry {entry_of[EXPECTED[key]]}")
    assert _keys(index) == {r["id"] for r in _manifest_rows()} - set(EXPECTED)
    p = run_matcher("search", "--index", str(index), "--json", str(SAMPLE / "my-photos" / "IMG_0002.jpg"),
                    str(SAMPLE / "my-photos" / "IMG_0009.jpg"))
    assert p.returncode == 1 and all(json.loads(line)["matches"] == [] for line in p.stdout.splitlines())
    p = run_matcher("info", "--index", str(index), "--failures")
    assert "opted out (registry entry" in p.stdout.replace("\n", " ").replace("│", " ")


def test_add_registry_refused_with_dask(registry_file, tmp_path):
    p = run_matcher("add", "--index", str(tmp_path / "i"), "--registry", str(registry_file), "--engine", "dask",
                    "--scheduler", "tcp://127.0.0.1:1", str(MANIFEST))
    assert p.returncode == 2


def test_screened_hashing_with_manifest_face_boxes(registry_file, entry_of):
    """`add --registry` on a manifest with face boxes: the payload carries the boxes, face entries are
    screened too (their regions cut from the boxes, as index_one cuts them)."""
    from matcher.hashing.hashers import get_hasher
    from matcher.imaging.images import DEFAULT_LIMITS
    from matcher.optout import Screen, screened_index_batch
    from matcher.pipeline.photo import HashSpec, index_batch

    spec = HashSpec.of(get_hasher("phash"), True, DEFAULT_LIMITS)
    astronaut = str(SAMPLE / "my-photos" / "IMG_0009.jpg")  # registered: dropped whatever its entries
    other = str(SAMPLE / next(r["path"] for r in _manifest_rows() if r["id"] == "ds-0001"))
    faces = (((0.3, 0.1, 0.7, 0.5, False),), None)
    payloads = [(astronaut, faces), (other, faces)]
    plain = index_batch(spec, payloads)
    assert plain[0][0] == "ok" and any(e[0].startswith("face") for e in plain[0][2])
    out = screened_index_batch(spec, Screen(Registry.load(registry_file)), payloads)
    assert out[0][0] == "err" and out[0][2] == "opted_out" and entry_of["IMG_0009.jpg"] in out[0][1]
    assert out[1] == plain[1]  # not opted out: the same outcome as plain hashing
