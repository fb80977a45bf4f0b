"""``matcher duplicates`` end to end: a real index built with the CLI from the bundled sample dataset plus a
second dataset of copies made here, the real command in subprocesses.

Ground truth within the sample dataset comes from sample/expected.csv: the dataset items that are copies
of one of the person's photos are copies of each other (ds-0007 and ds-0011 are the same bridge photo, ...).
Hard negatives that must never be grouped: the right view of a stereo pair (ds-0004) and its left view
(added here, from sample/my-photos/IMG_0007.jpg), the two cabinets of a pair photographed alike
(ds-0019, ds-0023), and consecutive video frames (tests/data/frames) added as local files.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, SAMPLE, run_matcher
from matcher.imaging import transforms
from matcher.engine.duplicates import Link, components
from matcher.hashing.verify import DEFAULT_MIN_SCORE

FRAMES = Path(__file__).parent / "data" / "frames"
COLUMNS = ["group", "group_size", "item_id", "dataset", "key", "url", "page_url", "owner", "distance", "score",
           "motion", "kinds", "variant", "verified_by", "linked_to", "hops"]
MANIFEST = {r["id"]: r for r in csv.DictReader(open(SAMPLE / "manifest.csv"))}


def _sample_file(key: str) -> Path:
    return SAMPLE / MANIFEST[key]["path"]


#: The second dataset: key -> (sample dataset item or other file, how it is copied)
SECOND = {
    "ms-bridge": ("ds-0007", "resize_256"),  # a copy of a photo the sample holds twice (ds-0007, ds-0011)
    "ms-desk-crop": ("ds-0014", "crop_center_10"),
    "ms-desk-webp": ("ds-0014", "webp_q50"),  # ... and the same photo twice in this dataset
    "ms-still-crop": ("ds-0021", "crop_side_15"),
    "ms-hubble-q25": ("ds-0027", "jpeg_q25"),
    "ms-medusa-mirror": ("ds-0001", "mirror"),
    "ms-cat": ("ds-0026", "webp_q50"),  # removed in one test: a tombstone must never be reported
    "ms-moto-left": (SAMPLE / "my-photos" / "IMG_0007.jpg", None),  # stereo left view; ds-0004 is the right
    "ms-rocket": (SAMPLE / "my-photos" / "IMG_0008.jpg", None),  # in no dataset
    "ms-whale-a": (FRAMES / "rubberwhale-a.jpg", None),  # consecutive frames 1/30 s apart
    "ms-whale-b": (FRAMES / "rubberwhale-b.jpg", None),
    "ms-ball-a": (FRAMES / "basketball-a.jpg", None),
    "ms-ball-b": (FRAMES / "basketball-b.jpg", None),
}
FRAME_PAIRS = [{"ms-whale-a", "ms-whale-b"}, {"ms-ball-a", "ms-ball-b"}]


def _expected_within_sample() -> list[set[str]]:
    """Sample dataset items that are copies of the same photo (sample/expected.csv), as groups."""
    with open(SAMPLE / "expected.csv", newline="") as f:
        groups = [{k for k in r["expected_keys"].split(";") if k} for r in csv.DictReader(f)]
    return [g for g in groups if len(g) > 1]


#: The screenshot copy (ds-0032) of the coffee photo is 16 bits from ds-0018 as stored and 12 bits with the
#: crops searched: beyond the default threshold (10), found with --threshold 12.
SCREENSHOT_PAIR = {"ds-0018", "ds-0032"}

WITHIN = [g for g in _expected_within_sample() if g != SCREENSHOT_PAIR] + [{"ms-desk-crop", "ms-desk-webp"}]
ACROSS = [
    {"ds-0001", "ms-medusa-mirror"},
    {"ds-0005", "ds-0031"},
    {"ds-0006", "ds-0028"},
    {"ds-0007", "ds-0011", "ms-bridge"},
    {"ds-0014", "ms-desk-crop", "ms-desk-webp"},
    {"ds-0021", "ms-still-crop"},
    {"ds-0026", "ds-0030", "ms-cat"},
    {"ds-0027", "ms-hubble-q25"},
]


@pytest.fixture(scope="module")
def dup_index(tmp_path_factory) -> Path:
    """The sample dataset ("sample") and the second dataset ("mirror-site") in one index, built with the CLI."""
    root = tmp_path_factory.mktemp("duplicates")
    files = root / "mirror-site"
    files.mkdir()
    rows = []
    for n, (key, (src, how)) in enumerate(SECOND.items()):
        src = _sample_file(src) if isinstance(src, str) else src
        if how is None:
            name = f"{key}{src.suffix}"
            shutil.copy(src, files / name)
        else:
            name = f"{key}.{'webp' if how.startswith('webp') else 'jpg'}"
            img = Image.open(src).convert("RGB")
            (files / name).write_bytes(transforms.apply(how, img, np.random.default_rng(n)))
        rows.append({"id": key, "path": f"mirror-site/{name}", "url": f"https://mirror.example/{name}",
                     "owner": "mirror-bot"})
    with open(root / "mirror-site.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["id", "path", "url", "owner"])
        w.writeheader()
        w.writerows(rows)
    index = root / "index"
    run_matcher("add", "--index", str(index), "--dataset", "sample", "--workers", "0", str(SAMPLE / "manifest.csv"),
                check=True, cwd=ROOT)
    run_matcher("add", "--index", str(index), "--dataset", "mirror-site", "--workers", "0",
                str(root / "mirror-site.csv"), check=True, cwd=ROOT)
    return index


def _run(index: Path, *args: str):
    return run_matcher("duplicates", "--index", str(index), *args, cwd=ROOT)


def _rows(stdout: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(stdout))
    assert reader.fieldnames == COLUMNS
    return list(reader)


def _groups(rows: list[dict]) -> list[set[str]]:
    by: dict[str, set[str]] = {}
    for r in rows:
        by.setdefault(r["group"], set()).add(r["key"])
    return list(by.values())


def _same_groups(got: list[set[str]], want: list[set[str]]) -> None:
    assert sorted(map(sorted, got)) == sorted(map(sorted, want))


def _check_rows(rows: list[dict]) -> None:
    """Every group's rows: representative first (lowest item id, the group's id), items sorted, links inside."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    assert list(groups) == sorted(groups, key=int)  # groups in order of their id
    for gid, members in groups.items():
        ids = [int(r["item_id"]) for r in members]
        assert ids == sorted(ids) and str(ids[0]) == gid
        assert all(int(r["group_size"]) == len(members) for r in members)
        rep, *rest = members
        assert (rep["verified_by"], rep["hops"], rep["distance"], rep["score"], rep["linked_to"]) == (
            "representative", "0", "0", "", "")
        for r in rest:
            assert int(r["linked_to"]) in ids and int(r["hops"]) >= 1
            assert r["verified_by"] in ("thumbnails", "thumbnails+detail")
            assert float(r["score"]) >= DEFAULT_MIN_SCORE
            assert r["motion"] == "" or float(r["motion"]) <= 0.2
            assert r["verified_by"] == ("thumbnails+detail" if r["motion"] else "thumbnails")
            this, other = r["kinds"].split("~")
            assert this and other
            side, variant = r["variant"].split(":")
            assert side in ("this", "linked") and variant.split("/")[0] in ("id", "mirror")


def test_groups_within_datasets(dup_index):
    p = _run(dup_index, "--workers", "0")
    assert p.returncode == 0, p.stderr
    rows = _rows(p.stdout)
    _check_rows(rows)
    _same_groups(_groups(rows), WITHIN)
    for r in rows:  # no group mixes datasets
        assert {x["dataset"] for x in rows if x["group"] == r["group"]} == {r["dataset"]}
    # the provenance columns come from the catalog
    by_key = {r["key"]: r for r in rows}
    for key in ("ds-0007", "ds-0011", "ds-0030"):
        m = MANIFEST[key]
        assert (by_key[key]["url"], by_key[key]["page_url"], by_key[key]["owner"]) == (m["url"], m["page_url"], m["owner"])
    assert by_key["ms-desk-webp"]["owner"] == "mirror-bot"
    # how each copy was found: the mirrored cat by a mirrored thumbnail, the 80% crop of the dahlia by a crop
    assert by_key["ds-0030"]["variant"].endswith(":mirror/full")
    assert by_key["ds-0028"]["variant"] == "linked:id/c80" and by_key["ds-0028"]["linked_to"] == by_key["ds-0006"]["item_id"]
    assert by_key["ds-0031"]["kinds"] == "content~full"  # the captioned pagoda: its photo region matched
    # local files: the full-detail check ran on the plain copies
    assert by_key["ds-0011"]["verified_by"] == "thumbnails+detail"
    assert f"{len(WITHIN)} groups of near-duplicates within datasets" in p.stderr
    assert f"{sum(len(g) for g in WITHIN)} items in them" in p.stderr and "largest: 2 items" in p.stderr


def test_groups_across_datasets(dup_index):
    p = _run(dup_index, "--across-datasets")
    assert p.returncode == 0, p.stderr
    rows = _rows(p.stdout)
    _check_rows(rows)
    _same_groups(_groups(rows), ACROSS)
    assert "largest: 3 items" in p.stderr
    # deterministic: the same CSV in-process and with a pool of verification workers
    again = _run(dup_index, "--across-datasets", "--workers", "0")
    assert again.stdout == p.stdout


def test_hard_negatives_are_not_grouped(dup_index):
    p = _run(dup_index, "--across-datasets", "--json")
    assert p.returncode == 0, p.stderr
    groups = [set(i["key"] for i in json.loads(line)["items"]) for line in p.stdout.splitlines()]
    grouped = set().union(*groups)
    # stereo views, the twin cabinets and consecutive frames: candidates by hash, refused on pixels
    for key in ("ds-0004", "ms-moto-left", "ds-0019", "ds-0023", "ms-rocket", *set().union(*FRAME_PAIRS)):
        assert key not in grouped, key
    assert "rejected (2 by the full-detail check)" in p.stderr  # the two frame pairs
    # the frames pass the thumbnails (that is why the full-detail check exists) ...
    q = _run(dup_index, "--no-detail")
    assert q.returncode == 0
    got = _groups(_rows(q.stdout))
    for pair in FRAME_PAIRS:
        assert pair in got
    # ... the stereo pair and the cabinets do not
    assert not any(g & {"ds-0004", "ms-moto-left", "ds-0019", "ds-0023"} for g in got)
    _same_groups(got, WITHIN + FRAME_PAIRS)


def test_threshold_12_finds_the_screenshot_copy(dup_index):
    p = _run(dup_index, "--threshold", "12", "--dataset", "sample")
    assert p.returncode == 0, p.stderr
    rows = _rows(p.stdout)
    _same_groups(_groups(rows), _expected_within_sample())  # every copy pair of sample/expected.csv
    shot = next(r for r in rows if r["key"] == "ds-0032")
    assert shot["kinds"] == "content~full" and shot["distance"] == "12"


def test_scoped_to_one_dataset(dup_index):
    p = _run(dup_index, "--dataset", "mirror-site")
    assert p.returncode == 0, p.stderr
    _same_groups(_groups(_rows(p.stdout)), [{"ms-desk-crop", "ms-desk-webp"}])
    # across datasets: the mirror site's items and whatever they re-host, in any dataset
    p = _run(dup_index, "--dataset", "mirror-site", "--across-datasets")
    rows = _rows(p.stdout)
    _check_rows(rows)
    _same_groups(_groups(rows), [g for g in ACROSS if any(k.startswith("ms-") for k in g)])
    # ds-0007 and ds-0011 (both in the sample) are not compared: ds-0011 joins through the mirror's copy
    by_key = {r["key"]: r for r in rows}
    assert by_key["ds-0011"]["hops"] == "2" and by_key["ds-0011"]["linked_to"] == by_key["ms-bridge"]["item_id"]
    assert by_key["ms-bridge"]["hops"] == "1"


def test_json_lines_and_out_file(dup_index, tmp_path):
    out = tmp_path / "groups.jsonl"
    p = _run(dup_index, "--across-datasets", "--json", "--out", str(out))
    assert p.returncode == 0 and p.stdout == ""
    assert f"written to {out}" in " ".join(p.stderr.split())
    groups = [json.loads(line) for line in out.read_text().splitlines()]
    _same_groups([{i["key"] for i in g["items"]} for g in groups], ACROSS)
    for g in groups:
        assert g["size"] == len(g["items"]) and g["group"] == g["items"][0]["item_id"]
        assert g["datasets"] == sorted({i["dataset"] for i in g["items"]})
        ids = {i["item_id"] for i in g["items"]}
        assert len(g["links"]) >= g["size"] - 1
        for link in g["links"]:
            assert {link["a"], link["b"]} <= ids and link["a"] < link["b"] and link["score"] >= DEFAULT_MIN_SCORE
            assert link["verified_by"] in ("thumbnails", "thumbnails+detail")
    csv_out = tmp_path / "groups.csv"
    p = _run(dup_index, "--out", str(csv_out))
    assert p.returncode == 0 and p.stdout == ""
    _same_groups(_groups(_rows(csv_out.read_text())), WITHIN)


def test_no_variants_searches_stored_codes_only(dup_index):
    p = _run(dup_index, "--no-variants")
    assert p.returncode == 0, p.stderr
    got = _groups(_rows(p.stdout))
    # plain re-hosts and the captioned copy (its photo region is an entry) are still found ...
    assert {"ds-0007", "ds-0011"} in got and {"ds-0005", "ds-0031"} in got
    # ... the mirrored cat and the 80% crop of the dahlia are not
    assert not any(g & {"ds-0030", "ds-0028"} for g in got)
    n_entries = int(p.stderr.split(" entries searched (")[0].split()[-1])
    assert f"({n_entries} codes)" in p.stderr


def test_removed_items_are_never_reported(dup_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(dup_index, index)
    run_matcher("remove", "--index", str(index), "--dataset", "mirror-site", "--key", "ms-cat", check=True)
    info = json.loads(run_matcher("info", "--index", str(index), "--json", check=True).stdout)
    assert info["removed_entries"] >= 1  # still in FAISS, as a tombstone
    p = _run(index, "--across-datasets")
    assert p.returncode == 0, p.stderr
    rows = _rows(p.stdout)
    assert "ms-cat" not in {r["key"] for r in rows}
    _same_groups(_groups(rows), [g - {"ms-cat"} for g in ACROSS])
    # removing the only other copy leaves no group for that photo; a dataset with no duplicates left: exit 1
    run_matcher("remove", "--index", str(index), "--dataset", "mirror-site", "--key", "ms-desk-webp", check=True)
    p = _run(index, "--dataset", "mirror-site")
    assert p.returncode == 1 and _rows(p.stdout) == []
    assert "0 groups" in p.stderr


def test_no_duplicates_exit_1(tmp_path):
    index = tmp_path / "index"
    run_matcher("add", "--index", str(index), "--dataset", "mine", "--workers", "0", str(SAMPLE / "my-photos"),
                check=True)
    p = _run(index, "--across-datasets")
    assert p.returncode == 1, p.stderr
    assert p.stdout.splitlines() == [",".join(COLUMNS)]
    assert "0 groups of near-duplicates across datasets, 0 items in them" in p.stderr
    p = _run(index, "--json")
    assert p.returncode == 1 and p.stdout == ""


def test_errors_exit_2(dup_index, tmp_path):
    (tmp_path / "not-an-index").mkdir()
    (tmp_path / "not-an-index" / "notes.txt").write_text("hello")
    for args, says in [
        (("--index", str(tmp_path / "missing")), "no index at"),
        (("--index", str(tmp_path / "not-an-index")), "is not a matcher index"),
        (("--index", str(dup_index), "--dataset", "nope"), "no dataset 'nope'"),
        (("--index", str(dup_index), "--out", str(tmp_path / "no" / "such" / "dir.csv")), "cannot write"),
        (("--index", str(dup_index), "--out", str(tmp_path)), "is a directory"),
    ]:
        p = run_matcher("duplicates", *args)
        assert p.returncode == 2, (args, p.stderr)
        assert says in " ".join(p.stderr.split()), (args, p.stderr)
        assert "Traceback" not in p.stderr and p.stdout == ""


def _link(a: int, b: int, ok: bool = True) -> Link:
    return Link(a, b, 4, score=0.99 if ok else 0.5, verified_by="thumbnails" if ok else "")


def test_components_chain_and_representative():
    """A~B and B~C verified, A~C refused: one group (connected), C reached through B (hops 2)."""
    links = [_link(20, 30), _link(10, 20), _link(10, 30, ok=False), _link(5, 7), _link(40, 50, ok=False)]
    comps = components(links)
    assert [rep for rep, _, _ in comps] == [5, 10]  # groups by representative = lowest item id
    rep, reached, glinks = comps[1]
    assert list(reached) == [10, 20, 30]
    assert reached[10] == (0, None)
    assert reached[20][0] == 1 and reached[20][1].other(20) == 10
    assert reached[30][0] == 2 and reached[30][1].other(30) == 20
    assert [(lk.a, lk.b) for lk in glinks] == [(10, 20), (20, 30)]  # verified links only
    # the order links are found in changes nothing
    assert [(r, {k: (h, lk and (lk.a, lk.b)) for k, (h, lk) in m.items()}) for r, m, _ in components(links[::-1])] == \
           [(r, {k: (h, lk and (lk.a, lk.b)) for k, (h, lk) in m.items()}) for r, m, _ in comps]


def test_options_named_in_the_draft_exist():
    import re

    helps = run_matcher("duplicates", "--help", check=True).stdout
    draft = (ROOT / "docs" / "duplicates.md").read_text()
    named = {opt for line in draft.splitlines() if "bench_duplicates.py" not in line
             for opt in re.findall(r"(--[a-z][a-z-]+)", line)}
    assert {"--across-datasets", "--dataset", "--threshold", "--min-score", "--json", "--out"} <= named
    for opt in named:
        assert opt in helps, f"docs/duplicates.md names {opt}; `matcher duplicates --help` does not"


def test_index_without_thumbnails_pairs_by_distance(tmp_path):
    """An index built without regions keeps no thumbnails: pairs are grouped on the hash distance alone,
    and say so; the cabinets photographed alike (4 bits apart) are then grouped too."""
    from matcher.engine.api import add
    from matcher.ingest.open_source import open_source
    from matcher.index.store import IndexStore

    index = tmp_path / "index"
    IndexStore.open(index, create=True, regions=False).close()
    add(index, [open_source(str(SAMPLE / "manifest.csv"), "sample")], workers=0)
    p = _run(index, "--workers", "0")
    assert p.returncode == 0, p.stderr
    rows = _rows(p.stdout)
    got = _groups(rows)
    assert {"ds-0007", "ds-0011"} in got and {"ds-0019", "ds-0023"} in got
    assert {r["verified_by"] for r in rows} == {"representative", "distance"}
    assert all(r["score"] == "" for r in rows)
    assert "by distance only: no thumbnails" in p.stderr
    assert "(32 codes)" in p.stderr  # one code per entry: no thumbnail, no edits
