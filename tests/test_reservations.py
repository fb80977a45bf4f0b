"""Machine-readable reservations (matcher.provenance.reservations, matcher.ingest.reservations): read from real files written here (IPTC XMP by
Pillow, C2PA manifests signed by the C2PA SDK), from a loopback site's response headers and its
tdmrep.json / robots.txt / ai.txt; respected by `matcher filter`, recorded by `matcher add`, counted by
`info`, shown by `search --json` and quoted by the letters."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import SAMPLE, run_matcher
from matcher.provenance.reservations.cawg import cbor_loads, read_c2pa
from matcher.ingest.reservations import embedded_of, parse_respect
from matcher.provenance.reservations.web import RobotsFile, TdmRep, from_headers, robots_reservations
from matcher.provenance.reservations.xmp import read_xmp
from reservations_kit import PHOTOS, REGISTERED, embedded_files, save_jpeg, site, site_images, write_manifest


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return embedded_files(tmp_path_factory.mktemp("marked"))


# --- embedded ------------------------------------------------------------------------------------------
def test_iptc_data_mining_read_from_pillow_written_jpeg_and_png(files):
    aiml = read_xmp(files["iptc-aiml"].read_bytes())
    assert [(r.source, r.rule, r.value) for r in aiml.reservations] == [
        ("embedded", "iptc:DataMining", "DMI-PROHIBITED-AIMLTRAINING")]
    genai = read_xmp(files["iptc-genai-png"].read_bytes())
    assert [r.value for r in genai.reservations] == ["DMI-PROHIBITED-GENAIMLTRAINING"]
    allowed = read_xmp(files["iptc-allowed"].read_bytes())
    assert not allowed.reservations and not allowed.notes


def test_iptc_element_form_and_other_constraints(tmp_path):
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/">'
           b'<plus:DataMining rdf:resource="http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-SEECONSTRAINT"/>'
           b'<plus:OtherConstraints><rdf:Alt><rdf:li xml:lang="x-default">No AI training; licences: ask@example.org'
           b'</rdf:li></rdf:Alt></plus:OtherConstraints></rdf:Description></rdf:RDF></x:xmpmeta>')
    f = save_jpeg(PHOTOS[0], tmp_path / "seeconstraint.jpg", xmp)
    found = read_xmp(f.read_bytes())
    assert [(r.value, r.detail) for r in found.reservations] == [
        ("DMI-PROHIBITED-SEECONSTRAINT", "No AI training; licences: ask@example.org")]


@pytest.mark.parametrize("packet, says", [
    (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><broken</x:xmpmeta>', "malformed XMP"),
    (b'<x:xmpmeta xmlns:x="adobe:ns:meta/">', "malformed XMP"),  # cut short
    (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&a;</x:xmpmeta>',
     "undefined entity"),  # the packet is cut from <x:xmpmeta: a DOCTYPE before it never reaches the parser
    (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
     b'<rdf:Description xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/" plus:DataMining="DMI-MAYBE"/></rdf:RDF>'
     b'</x:xmpmeta>', "unknown plus:DataMining value"),
])
def test_malformed_xmp_is_a_note_never_a_crash(tmp_path, packet, says):
    f = save_jpeg(PHOTOS[0], tmp_path / "bad.jpg", packet)
    found = embedded_of(f.read_bytes())
    assert not found.reservations
    assert len(found.notes) == 1 and says in found.notes[0] and found.notes[0].startswith("embedded:")


def test_cawg_assertion_signed_by_the_c2pa_sdk_is_read_and_verified(files):
    found = read_c2pa(files["cawg"].read_bytes())
    got = {(r.rule, r.value) for r in found.reservations}
    assert got == {("c2pa:cawg.ai_training", "notAllowed"), ("c2pa:cawg.ai_generative_training", "notAllowed"),
                   ("c2pa:cawg.data_mining", "constrained")}
    assert all("C2PA signature valid; signer not in a trust list" in r.detail for r in found.reservations)
    assert any("constraint: ask" in r.detail for r in found.reservations)
    old = read_c2pa(files["c2pa-old"].read_bytes())
    assert [(r.rule, r.value) for r in old.reservations] == [("c2pa:c2pa.ai_training", "notAllowed")]


def test_c2pa_store_read_without_the_sdk_is_present_not_verified(files):
    found = read_c2pa(files["cawg"].read_bytes(), use_binding=False)
    assert {(r.rule, r.value) for r in found.reservations} == {
        ("c2pa:cawg.ai_training", "notAllowed"), ("c2pa:cawg.ai_generative_training", "notAllowed"),
        ("c2pa:cawg.data_mining", "constrained")}
    assert all(r.detail.startswith("cawg.training-mining; present, not verified") for r in found.reservations)


def test_c2pa_tampered_pixels_fail_validation(files, tmp_path):
    data = bytearray(files["cawg"].read_bytes())
    data[-200] ^= 0xFF  # inside the entropy-coded image: the hard binding no longer matches
    found = read_c2pa(bytes(data))
    assert found.reservations and all("C2PA validation failed" in r.detail for r in found.reservations)


def test_damaged_c2pa_store_is_a_note(files):
    found = embedded_of(files["c2pa-damaged"].read_bytes())
    assert not found.reservations
    assert found.notes and all(n.startswith("embedded:") for n in found.notes)
    assert any("damaged C2PA manifest store" in n for n in found.notes), found.notes


def test_cbor_subset():
    # {"entries": {"cawg.ai_training": {"use": "notAllowed"}}, "n": [1, -2, 3.5, true, null]}
    raw = bytes.fromhex("a2" "67656e7472696573" "a1" "70636177672e61695f747261696e696e67" "a1" "63757365"
                        "6a6e6f74416c6c6f776564" "616e" "85" "01" "21" "f94300" "f5" "f6")
    assert cbor_loads(raw) == {"entries": {"cawg.ai_training": {"use": "notAllowed"}}, "n": [1, -2, 3.5, True, None]}
    with pytest.raises(ValueError):
        cbor_loads(raw[:20])


# --- response headers and site files (parsing) -------------------------------------------------------------
def test_x_robots_tag_and_tdm_headers():
    f = from_headers({"x-robots-tag": ["noindex, NoAI", "GPTBot: noimageai", "unavailable_after: 2030-01-01"],
                      "tdm-reservation": ["1"], "tdm-policy": ["https://example.org/p"]})
    assert [(r.rule, r.value, r.detail) for r in f.reservations] == [
        ("x-robots-tag", "noai", ""), ("x-robots-tag", "noimageai", "for GPTBot"),
        ("tdm-reservation", "1", "policy https://example.org/p")]
    assert not from_headers({"x-robots-tag": ["googlebot: noindex"], "tdm-reservation": ["0"]})
    assert from_headers({"tdm-reservation": ["yes"]}).notes == ["headers: tdm-reservation 'yes' is neither 0 nor 1"]


def test_robots_rules_longest_match_and_agents():
    robots = RobotsFile.parse("User-agent: GPTBot\nUser-agent: ccbot\nDisallow: /photos/\nAllow: /photos/public/\n\n"
                              "User-agent: *\nDisallow: /tmp/\nDisallow: /*.gif$\n")
    got = robots_reservations(robots, "/photos/a.jpg", "r")
    assert [r.value for r in got] == ["Disallow: /photos/ (GPTBot)", "Disallow: /photos/ (CCBot)"]
    assert robots_reservations(robots, "/photos/public/a.jpg", "r") == []
    assert [r.value for r in robots_reservations(robots, "/x/y.gif", "r")] == ["Disallow: /*.gif$ (every crawler)"]
    assert robots_reservations(robots, "/x/y.gifs", "r") == []


def test_tdmrep_first_match_and_errors():
    rep = TdmRep.parse('[{"location": "/a/*", "tdm-reservation": 0}, {"location": "/*", "tdm-reservation": 1}]')
    assert rep.decide("/a/x.jpg")[1] is False and rep.decide("/b.jpg")[1] is True
    for bad in ("{", '{"location": "/"}', '[{"location": "/", "tdm-reservation": 2}]'):
        with pytest.raises(ValueError):
            TdmRep.parse(bad)


def test_parse_respect():
    assert parse_respect(["all"]) == ("embedded", "headers", "site", "registry")
    assert parse_respect(["site,headers"]) == ("headers", "site")
    with pytest.raises(ValueError):
        parse_respect(["robots"])


# --- a curator's run: matcher filter over a manifest mixing every kind -------------------------------------
@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    reg = tmp_path_factory.mktemp("reg") / "optout.json"
    run_matcher("optout", "add", "--registry", str(reg), "--workers", "0", str(SAMPLE / "my-photos" / "IMG_0002.jpg"),
                check=True)
    return reg


#: key -> (source, rule, value) that drops it under --respect all; None: kept
EXPECTED = {
    "iptc-aiml": ("embedded", "iptc:DataMining", "DMI-PROHIBITED-AIMLTRAINING"),
    "iptc-genai-png": ("embedded", "iptc:DataMining", "DMI-PROHIBITED-GENAIMLTRAINING"),
    "iptc-allowed": None,
    "iptc-malformed": None,
    "cawg": ("embedded", "c2pa:cawg.ai_training", "notAllowed"),
    "c2pa-old": ("embedded", "c2pa:c2pa.ai_training", "notAllowed"),
    "c2pa-damaged": None,
    "registered": ("registry", "registry", None),
    "/img/plain.jpg": None,
    "/img/noai.jpg": ("headers", "x-robots-tag", "noai"),
    "/img/agent.jpg": ("headers", "x-robots-tag", "noml"),
    "/img/googlebot.jpg": None,
    "/img/tdm.jpg": ("headers", "tdm-reservation", "1"),
    "/private/p.jpg": ("site", "robots.txt", "Disallow: /private/ (GPTBot)"),
    "/tdm/t.jpg": ("site", "tdmrep.json", "tdm-reservation 1"),
    "/img/a.png": ("site", "ai.txt", "Disallow: *.png (every agent)"),
    "other-site": None,
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, files):
    """A manifest mixing every reservation kind: local files, two loopback sites (one with broken files)."""
    d = tmp_path_factory.mktemp("mixed")
    main = site(site_images())
    other = site({"/x.jpg": site_images()["/img/plain.jpg"]},
                 files={"/.well-known/tdmrep.json": b"{not json", "/robots.txt": b"User-agent: *\nDisallow:\n"},
                 errors={"/ai.txt": 500})
    with main.running(), other.running():
        rows = [(k, "", str(p)) for k, p in files.items()]
        rows.append(("registered", "", str(REGISTERED)))
        rows += [(p, main.url(p), "") for p in site_images()]
        rows.append(("other-site", other.url("/x.jpg"), ""))
        yield write_manifest(d / "manifest.csv", rows), d, main, other


def _allowed(manifest: Path) -> list[str]:
    """The manifest names a sample photo and the marked files (another temporary folder) by path."""
    return ["--allow-paths", str(SAMPLE), "--allow-paths", str(manifest.parent.parent)]


def _filter(mixed, registry, *respect, extra=()):
    manifest, d, _, _ = mixed
    name = "-".join(respect) + f"-{len(list(d.glob('clean-*')))}"
    out, log = d / f"clean-{name}.csv", d / f"log-{name}.csv"
    args = ["filter", str(manifest), "--out", str(out), "--log", str(log), "--allow-private-urls", "--retries", "0",
            "--workers", "1", *_allowed(manifest), *extra]
    if registry is not None:
        args += ["--registry", str(registry)]
    for r in respect:
        args += ["--respect", r]
    p = run_matcher(*args)
    assert p.returncode == 0, p.stderr
    with open(out, newline="") as f:
        kept = [r["key"] for r in csv.DictReader(f)]
    with open(log, newline="") as f:
        logged = {r["key"]: r for r in csv.DictReader(f)}
    return kept, logged, p.stderr


def test_filter_respect_all_drops_each_with_its_rule(mixed, registry):
    kept, logged, stderr = _filter(mixed, registry, "all")
    assert sorted(kept) == sorted(k for k, v in EXPECTED.items() if v is None)
    for key, want in EXPECTED.items():
        if want is None:
            continue
        row = logged[key]
        assert row["action"] == "dropped", key
        assert (row["source"], row["rule"]) == want[:2], (key, row)
        if want[2] is not None:
            assert row["value"] == want[2], (key, row)
    assert logged["registered"]["registry_entry"].startswith("o-")
    assert logged["cawg"]["detail"] == "cawg.training-mining; C2PA signature valid; signer not in a trust list"
    assert logged["/img/agent.jpg"]["detail"] == "for GPTBot"
    assert logged["/private/p.jpg"]["detail"].endswith("/robots.txt")
    # every reservation of an item is listed, not only the one that dropped it
    assert "c2pa:cawg.data_mining=constrained" in logged["cawg"]["reservations"]
    # notes: malformed XMP, a damaged C2PA store, the broken site's files (kept, and logged as kept)
    assert "malformed XMP" in logged["iptc-malformed"]["notes"] and logged["iptc-malformed"]["action"] == "kept"
    assert "C2PA" in logged["c2pa-damaged"]["notes"]
    notes = logged["other-site"]["notes"]
    assert "tdmrep.json is malformed" in notes and "ai.txt could not be read (HTTP 500" in notes
    said = " ".join(stderr.split())
    assert "17 rows: 6 kept, 11 dropped as opted out or reserved (1 registry entry)" in said  # grammar
    assert ("reservations found (images): embedded 4, headers 3, site 3; dropped for: embedded 4, headers 3, site 3, "
            "registry 1 (respected: embedded, headers, site, registry)") in said


def test_filter_site_files_fetched_once_per_host(mixed, registry):
    _, _, main, other = mixed
    before = dict(main.hits)
    _filter(mixed, None, "site")
    for f in ("/robots.txt", "/ai.txt", "/.well-known/tdmrep.json"):
        assert main.hits[f] - before.get(f, 0) == 1, f


@pytest.mark.parametrize("respect", ["embedded", "headers", "site", "registry"])
def test_filter_respects_only_what_is_asked(mixed, registry, respect):
    kept, logged, _ = _filter(mixed, registry, respect)
    dropped = {k for k, v in EXPECTED.items() if v is not None and v[0] == respect}
    assert set(EXPECTED) - set(kept) == dropped
    # reservations not respected are logged as kept, with their source
    others = {k for k, v in EXPECTED.items() if v is not None and v[0] not in (respect, "registry", "site")}
    for k in others:
        assert logged[k]["action"] == "kept" and logged[k]["reservations"], k


def test_filter_needs_something_to_respect(mixed):
    manifest, d, _, _ = mixed
    p = run_matcher("filter", str(manifest), "--out", str(d / "x.csv"))
    assert p.returncode == 2 and "nothing to respect" in p.stderr
    p = run_matcher("filter", str(manifest), "--out", str(d / "x.csv"), "--respect", "registry")
    assert p.returncode == 2 and "--respect registry needs --registry FILE" in p.stderr


# --- matcher add records them; info counts; search shows; letters quote ------------------------------------
def test_add_records_reservations_info_counts_search_and_letters_quote(mixed, tmp_path):
    manifest, _, _, _ = mixed
    index = tmp_path / "index"
    p = run_matcher("add", "--index", str(index), "--dataset", "mixed", "--allow-private-urls", "--retries", "0",
                    *_allowed(manifest), "--workers", "1", "--check-sites", str(manifest))
    assert p.returncode == 0, p.stderr
    info = json.loads(run_matcher("info", "--index", str(index), "--json", check=True).stdout)
    counts = info["reservations"]["mixed"]
    assert counts["by_source"] == {"embedded": 4, "headers": 3, "site": 3}
    assert counts["items"] == 10 and counts["with_notes"] == 3  # malformed XMP, damaged C2PA, broken site
    assert counts["by_rule"]["iptc:DataMining=DMI-PROHIBITED-AIMLTRAINING"] == 1
    text = run_matcher("info", "--index", str(index), check=True).stdout
    assert "reservations in mixed: 10 items (embedded 4, headers 3, site 3)" in text
    # the person's photo (the original of iptc-aiml.jpg) is found; the match carries the file's reservation
    letters = tmp_path / "letters"
    p = run_matcher("search", "--index", str(index), "--json", "--letters", str(letters), str(PHOTOS[0]))
    assert p.returncode == 0, p.stderr
    match = json.loads(p.stdout.splitlines()[0])["matches"][0]
    assert match["key"] == "iptc-aiml"
    assert match["evidence"]["reservations"] == [{"source": "embedded", "rule": "iptc:DataMining",
                                                  "value": "DMI-PROHIBITED-AIMLTRAINING"}]
    assert "_reservations" not in match.get("extra", {})
    letter = " ".join((letters / "mixed-list.txt").read_text().split())
    assert "the file says DMI-PROHIBITED-AIMLTRAINING (iptc:DataMining)" in letter
    assert "Directive (EU) 2019/790" in letter


def test_add_without_reservations(mixed, tmp_path):
    manifest, _, _, _ = mixed
    index = tmp_path / "index"
    run_matcher("add", "--index", str(index), "--no-reservations", "--allow-private-urls", "--retries", "0",
                *_allowed(manifest), "--workers", "1", str(manifest), check=True)
    info = json.loads(run_matcher("info", "--index", str(index), "--json", check=True).stdout)
    assert info["reservations"] == {}


# --- a person marks their own photos (optout add --mark-copies / --mark-in-place) and their site -----------
def _pixels(path: Path) -> tuple:
    from PIL import Image

    with Image.open(path) as im:
        return im.size, im.mode, im.tobytes(), im.info.get("exif")


def test_optout_add_marks_copies_losslessly_and_never_overwrites(tmp_path):
    import hashlib
    import shutil

    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    for name in ("IMG_0001.jpg", "IMG_0004.png"):
        shutil.copy(SAMPLE / "my-photos" / name, photos / "trip" / name)
    # a photo with XMP already (a creator): the creator is kept beside the new property
    creator = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
               b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator><rdf:Seq>'
               b'<rdf:li>Ada Example</rdf:li></rdf:Seq></dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>')
    save_jpeg(SAMPLE / "my-photos" / "IMG_0002.jpg", photos / "with-xmp.jpg", creator)
    from PIL import Image

    with Image.open(SAMPLE / "my-photos" / "IMG_0003.jpg") as im:
        im.save(photos / "other.webp", "WEBP")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in photos.rglob("*") if p.is_file()}
    marked = tmp_path / "marked"
    p = run_matcher("optout", "add", "--registry", str(tmp_path / "r.json"), "--workers", "0", "--mark-copies",
                    str(marked), "--data-mining", "DMI-PROHIBITED-GENAIMLTRAINING", str(photos))
    assert p.returncode == 2, p.stderr  # the WebP cannot be marked without re-encoding: reported, the rest written
    assert "other.webp: only JPEG and PNG" in " ".join(p.stderr.split())
    assert {q: hashlib.sha256(q.read_bytes()).hexdigest() for q in before} == before  # originals untouched
    copies = {q.relative_to(marked).as_posix(): q for q in marked.rglob("*") if q.is_file()}
    assert set(copies) == {"photos/trip/IMG_0001.jpg", "photos/trip/IMG_0004.png", "photos/with-xmp.jpg"}
    for rel, q in copies.items():
        assert [r.value for r in read_xmp(q.read_bytes()).reservations] == ["DMI-PROHIBITED-GENAIMLTRAINING"], rel
        assert _pixels(q) == _pixels(photos / rel.split("/", 1)[1]), rel  # same pixels, same EXIF
    assert _pixels(copies["photos/trip/IMG_0001.jpg"])[3]  # that one has EXIF, and kept it
    assert b"Ada Example" in copies["photos/with-xmp.jpg"].read_bytes()
    # the registry took the photos too, and a second run never overwrites a copy
    p = run_matcher("optout", "add", "--registry", str(tmp_path / "r.json"), "--workers", "0", "--mark-copies",
                    str(marked), str(photos))
    assert p.returncode == 2 and p.stderr.count("exists: not overwritten") == 3
    assert [r.value for r in read_xmp(copies["photos/with-xmp.jpg"].read_bytes()).reservations] == [
        "DMI-PROHIBITED-GENAIMLTRAINING"]


def test_optout_add_marks_in_place_only_when_asked(tmp_path):
    import shutil

    photo = tmp_path / "IMG_0002.jpg"
    shutil.copy(SAMPLE / "my-photos" / "IMG_0002.jpg", photo)
    pixels = _pixels(photo)
    p = run_matcher("optout", "add", "--registry", str(tmp_path / "r.json"), "--workers", "0", "--mark-in-place",
                    str(photo))
    assert p.returncode == 0, p.stderr
    assert [r.value for r in read_xmp(photo.read_bytes()).reservations] == ["DMI-PROHIBITED-AIMLTRAINING"]
    assert _pixels(photo) == pixels
    assert not list(tmp_path.glob(".*tmp*"))
    p = run_matcher("optout", "add", "--registry", str(tmp_path / "r.json"), "--mark-in-place", "--mark-copies",
                    str(tmp_path / "c"), str(photo))
    assert p.returncode == 2 and "not both" in p.stderr
    p = run_matcher("optout", "add", "--registry", str(tmp_path / "r.json"), "--mark-copies", str(tmp_path / "c"),
                    str(tmp_path))
    assert p.returncode == 2 and "is inside" in p.stderr and not (tmp_path / "c").exists()


def test_optout_add_prints_site_lines_that_our_own_reader_honours(tmp_path):
    p = run_matcher("optout", "add", "--registry", str(tmp_path / "r.json"), "--workers", "0", "--site-lines",
                    "/photos/", str(SAMPLE / "my-photos" / "IMG_0002.jpg"))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    tdm = TdmRep.parse(lines[lines.index(next(x for x in lines if x.startswith("# TDMRep"))) + 1])
    assert tdm.decide("/photos/2024/a.jpg")[1] is True and tdm.decide("/blog/a.jpg") is None
    start = lines.index(next(x for x in lines if x.startswith("# robots.txt")))
    robots = RobotsFile.parse("\n".join(lines[start + 1:]).split("\n\n")[0])
    got = robots_reservations(robots, "/photos/a.jpg", "r")
    assert {"Disallow: /photos/ (GPTBot)", "Disallow: /photos/ (CCBot)", "Disallow: /photos/ (ClaudeBot)"} <= {
        r.value for r in got}
    assert "X-Robots-Tag: noai, noimageai" in lines and "tdm-reservation: 1" in lines
