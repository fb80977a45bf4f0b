"""The web check in a real browser (Debian's Chromium driven by Playwright) against a real `matcher serve`.

A person picks a folder of photos; the page hashes them in the browser, sends only hashes, verifies
the candidates and shows the matches: the same matches the CLI finds for the same photos. Then the
CSV download, the removal letter, and a HEIC the browser cannot open, checked by explicit upload.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import MatcherServer, run_matcher

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test installs it)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def photos_dir(sample, tmp_path_factory) -> Path:
    """The sample 'my photos' folder plus a HEIC copy of one photo (Chromium cannot decode HEIC)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    d = tmp_path_factory.mktemp("picked") / "my-photos"
    shutil.copytree(sample / "my-photos", d)
    Image.open(sample / "my-photos" / "IMG_0006.jpg").save(d / "IMG_0011.heic", "HEIF", quality=92)
    (d / "notes.jpg").write_text("not a photo, whatever its name says")  # looks like an image by name only
    return d


def cli_matches(index: Path, folder: Path) -> dict[str, list[dict]]:
    proc = run_matcher("search", "--index", str(index), "--json", str(folder))
    assert proc.returncode in (0, 1, 2), proc.stderr  # 2: notes.jpg is not a photo
    out = {}
    for line in proc.stdout.splitlines():
        r = json.loads(line)
        out[Path(r["query"]).name] = r
    return out


def test_folder_check_in_the_browser(browser, sample_index, photos_dir, tmp_path):
    cli = cli_matches(sample_index, photos_dir)
    with MatcherServer(sample_index) as server:
        page = browser.new_page(accept_downloads=True)
        requests = []
        page.on("request", lambda r: requests.append((r.method, r.url, r.post_data_buffer)))
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "404" not in m.text else None)
        page.goto(server.url("/"))
        page.wait_for_selector("body[data-ready='1']", timeout=30000)
        assert "photos are not uploaded" in page.inner_text("#privacy").lower()
        assert page.is_hidden("#progress-box")  # no progress bar before there is work
        page.set_input_files("#pick-folder", str(photos_dir))
        page.wait_for_selector("body[data-done='12']", timeout=120000)
        assert page.inner_text("#progress-text") == "Done: 12 photos."
        counts = json.loads(page.get_attribute("#summary", "data-counts"))
        assert counts == {"total": 12, "found": 7, "copies": 12, "notFound": 3, "problems": 2, "waiting": 0, "skipped": 0}
        assert counts["found"] + counts["notFound"] + counts["problems"] == counts["total"]  # counts that agree
        assert page.inner_text("#summary").startswith("7 of 12 photos found in the datasets (12 copies) · 3 not found")

        state = page.evaluate("""() => window.matcherState.photos.map(p => ({
            name: p.name, status: p.status, error: p.error, keys: p.matches.map(m => m.key),
            distances: p.matches.map(m => m.distance), scores: p.matches.map(m => m.score),
            how: p.matches.map(m => m.how)}))""")
        by_name = {Path(p["name"]).name: p for p in state}
        assert set(by_name) == set(cli)
        assert by_name["notes.jpg"]["status"] == "undecodable" and cli.pop("notes.jpg")["error"]
        # every photo the browser could decode: the same matches as the CLI, in the same order
        for name, r in cli.items():
            if name.endswith(".heic"):
                continue
            got = by_name[name]
            assert got["status"] == "done", got
            assert got["keys"] == [m["key"] for m in r["matches"]], (name, got, r["matches"])
            assert got["how"] == [m["how"] for m in r["matches"]], (name, got["how"])  # the server's words
            for s, m in zip(got["scores"], r["matches"]):
                assert s is not None and abs(s - m["evidence"]["score"]) < 0.02, (name, s, m["evidence"])
        assert sum(1 for p in state if p["keys"]) == 7  # sample/expected.csv: 7 of the 10 photos have copies

        # the HEIC: not decodable here; the page offers an explicit upload, whose result equals the CLI's
        heic = by_name["IMG_0011.heic"]
        assert heic["status"] == "undecodable" and not heic["keys"]
        uploads_before = [r for r in requests if "search-upload" in r[1]]
        assert not uploads_before  # nothing is uploaded without the person asking
        assert page.query_selector("li[data-photo='notes.jpg'] button.upload") is None  # not an image inside
        page.click("li[data-photo$='IMG_0011.heic'] button.upload")
        page.wait_for_function("() => window.matcherState.photos.find(p => p.name.endsWith('.heic')).status === 'done'",
                               timeout=60000)
        keys = page.evaluate("() => window.matcherState.photos.find(p => p.name.endsWith('.heic')).matches.map(m => m.key)")
        assert keys == [m["key"] for m in cli["IMG_0011.heic"]["matches"]] and keys

        # the results page: each matched photo beside its dataset copies, with the evidence fields
        articles = page.query_selector_all("article.photo")
        assert len(articles) == 8
        first = page.inner_text("article.photo >> nth=0")
        for words in ("the same photo", "very sure", "sample-dataset", "ds-0014", "owner", "distance", "score",
                      "https://farm9.staticflickr.com/"):
            assert words in first
        assert "How sure:" in page.inner_text("#sure-explained")
        page.wait_for_function("() => [...document.querySelectorAll('img.theirs, img.mine')].every(i => i.complete && i.naturalWidth > 0)",
                               timeout=20000)
        # README's screenshot: MATCHER_SCREENSHOT=docs/web-results.png scripts/test tests/test_web_page.py
        shot = os.environ.get("MATCHER_SCREENSHOT")
        page.set_viewport_size({"width": 1100, "height": 900})
        page.evaluate("window.scrollTo(0, document.getElementById('results').offsetTop - 120)")
        page.screenshot(path=shot or str(tmp_path / "results.png"), full_page=not shot)

        # filter by dataset (one dataset here: all stay), then CSV export
        page.select_option("#filter-dataset", "sample-dataset")
        with page.expect_download() as dl:
            page.click("#export-csv")
        exported_csv = Path(dl.value.path()).read_text()
        rows = list(csv.DictReader(io.StringIO(exported_csv)))
        want = sorted((name, m["key"]) for name, r in cli.items() for m in r["matches"])
        assert sorted((Path(r["query"]).name, r["key"]) for r in rows) == want
        # one CSV layout: the page's columns are `matcher search --csv`'s, in the same order, with the same words
        cli_csv = run_matcher("search", "--index", str(sample_index), "--csv", str(photos_dir)).stdout
        assert exported_csv.splitlines()[0] == cli_csv.splitlines()[0]
        cli_rows = {(Path(r["query"]).name, r["key"]): r for r in csv.DictReader(io.StringIO(cli_csv))}
        for r in rows:
            mine = cli_rows[(Path(r["query"]).name, r["key"])]
            assert (r["how"], r["sure"], r["distance"]) == (mine["how"], mine["sure"], mine["distance"])
        with page.expect_download() as dl:
            page.click("#export-json")
        exported = json.loads(Path(dl.value.path()).read_text())
        assert sum(len(p["matches"]) for p in exported) == len(want)

        # the removal letter: every matched URL, one per line
        page.click("#prepare-letters")
        page.select_option("#letter-template", "list")
        page.fill("#letter-name", "Alex Example")
        page.click("#make-letters")
        page.wait_for_selector("textarea.letter-text", timeout=20000)
        text = page.eval_on_selector("textarea.letter-text", "t => t.value")
        lines = set(text.splitlines())
        urls = {m["url"] for r in cli.values() for m in r["matches"]}
        assert urls and urls <= lines and "Alex Example" in text
        page.select_option("#letter-template", "gdpr")
        page.click("#make-letters")
        page.wait_for_function("() => (document.querySelector('textarea.letter-text') || {value: ''}).value.includes('Article 17')",
                               timeout=20000)
        assert not errors, errors
        page.close()

    # privacy: every request went to this server, and only the explicit upload carried a photo
    photo_bytes = [b for b in (p.read_bytes() for p in photos_dir.iterdir()) if len(b) > 2064]
    for method, url, body in requests:
        assert url.startswith(server.url("/")) or url.startswith("blob:") or url.startswith("data:"), url
        if body and "search-upload" not in url:
            assert not any(b[2000:2064] in body for b in photo_bytes), url
            if url.endswith("/api/v1/search"):
                sent = json.loads(body)
                assert set(sent) <= {"photos", "thumbnails", "threshold"}
                assert all(set(h) == {"kind", "hash"} and len(h["hash"]) == 16 for p in sent["photos"] for h in p["hashes"])


def test_api_docs_page_renders(browser, sample_index):
    """/docs renders the OpenAPI document with the page's own script (no CDN, CSP holds)."""
    with MatcherServer(sample_index) as server:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(server.url("/docs"))
        page.wait_for_selector("text=POST /api/v1/search", timeout=20000)
        text = page.inner_text("main")
        for endpoint in ("GET /api/v1/health", "GET /api/v1/datasets", "GET /api/v1/recipe",
                         "POST /api/v1/search-upload", "POST /api/v1/letters"):
            assert endpoint in text
        assert "photos" in text and not errors, errors
        page.close()


def test_flickr_account_lookup_on_the_page(browser, sample_index, sample):
    """A person adds their Flickr account: the page lists what the datasets hold under it (as `matcher lookup`
    does), marks content matches that are listed there too, and exports and writes letters for both."""
    def cli_keys(nsid: str) -> list[str]:
        proc = run_matcher("lookup", "--index", str(sample_index), "--nsid", nsid, "--json")
        return [it["key"] for it in json.loads(proc.stdout)["items"]]

    with MatcherServer(sample_index) as server:
        page = browser.new_page(accept_downloads=True)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # the browser logs the refused lookup's 400 (and a failed item's missing image) itself: not page errors
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "404" not in m.text
                and "status of 400" not in m.text else None)
        page.goto(server.url("/"))
        page.wait_for_selector("body[data-ready='1']", timeout=30000)
        page.set_input_files("#pick-folder", str(sample / "my-photos"))
        page.wait_for_selector("body[data-done='10']", timeout=120000)
        # the same photo picked on its own: the same label as when it came in a folder
        folder_names = page.evaluate("() => window.matcherState.photos.map(p => p.name)")
        page.set_input_files("#pick-files", str(sample / "my-photos" / "IMG_0001.jpg"))
        page.wait_for_selector("body[data-done='11']", timeout=60000)
        names = page.evaluate("() => window.matcherState.photos.map(p => p.name)")
        assert names[-1] == "IMG_0001.jpg" and names[-1] in folder_names

        # ds-0014's owner: IMG_0001.jpg matched it by content, so it is found by both
        page.fill("#who", "90018885@N03")
        page.click("#who-go")
        page.wait_for_selector("body[data-lookup='1']", timeout=20000)
        listed = page.evaluate("() => window.matcherState.identity.items.map(it => it.key)")
        assert listed == cli_keys("90018885@N03") == ["ds-0014"]
        assert page.get_attribute("#identity-list .listed", "data-found-by") == "both"
        assert "IMG_0001.jpg" in page.inner_text("#identity-list .listed")
        assert "your photo and your Flickr account" in page.inner_text("article.photo[data-photo$='IMG_0001.jpg']")

        # an account (given as its profile URL) whose photo none of these matched: found by identity only
        page.fill("#who", "https://www.flickr.com/photos/16577737@N01/")
        page.click("#who-go")
        page.wait_for_selector("body[data-lookup='2']", timeout=20000)
        assert page.evaluate("() => window.matcherState.identity.items.map(it => it.key)") == cli_keys("16577737@N01")
        card = page.inner_text("#identity-list .listed")
        assert page.get_attribute("#identity-list .listed", "data-found-by") == "identity"
        assert "not among the photos checked here" in card and "ds-0001" in card
        with page.expect_download() as dl:
            page.click("#export-csv")
        rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
        assert [(r["query"], r["found_by"]) for r in rows if r["key"] == "ds-0001"] == [("(identity)", "identity")]
        assert {r["found_by"] for r in rows if r["query"] != "(identity)"} == {"content"}
        with page.expect_download() as dl:
            page.click("#export-json")
        exported = json.loads(Path(dl.value.path()).read_text())
        assert [it["key"] for it in exported["identity"]["not_found_by_content"]] == ["ds-0001"]
        page.click("#prepare-letters")
        page.click("#make-letters")
        page.wait_for_selector("textarea.letter-text", timeout=20000)
        text = page.eval_on_selector("textarea.letter-text", "t => t.value")
        assert "https://farm3.staticflickr.com/2564/2005397842_dc4d3a10e6_z.jpg" in text.splitlines()

        # not an account: said so, nothing listed
        page.fill("#who", "a/b")
        page.click("#who-go")
        page.wait_for_selector("body[data-lookup='3']", timeout=20000)
        assert "not a Flickr user name" in page.inner_text("#who-status")
        assert page.evaluate("() => window.matcherState.identity") is None
        assert page.is_hidden("#identity")
        assert not errors, errors
        page.close()
