"""The HTML report as a person meets it: written by `matcher search --html` (a subprocess), opened in Chromium.

Compact (a copy's row is a fraction of the old report's ~460 px), the evidence in words, printable (every
thumbnail loaded when printing: none is lazy), and usable at 1,000 photos (a list of the photos found at the
top, each linking to its section).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import ROOT, run_matcher
from matcher.report import write_html
from matcher.results import Item, Match, QueryResult

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
#: height of one copy in the report before this layout (measured in Chromium at 1,100 px on the sample: 462 px)
OLD_COPY_HEIGHT = 462

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test installs it)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


def test_sample_report_in_chromium(browser, sample_index, sample, tmp_path):
    report = tmp_path / "report.html"
    proc = run_matcher("search", "--index", str(sample_index), "--html", str(report), str(sample / "my-photos"))
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    assert str(sample) not in text and str(sample_index) not in text  # no local paths without --show-paths
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(report.as_uri())
    heights = page.eval_on_selector_all("li.copy", "els => els.map(e => e.getBoundingClientRect().height)")
    assert len(heights) == 12 and max(heights) <= OLD_COPY_HEIGHT / 3, heights
    words = page.eval_on_selector_all("li.copy .how", "els => els.map(e => e.textContent)")
    assert words.count("the same photo") == 7
    assert {"mirrored", "cropped (about 35% removed)", "your face, cut from this photo"} <= set(words)
    assert "7 of 10 photos found (12 copies) in 1 dataset; 3 not found; 0 could not be read." in page.inner_text(".lead")
    assert page.eval_on_selector_all("ol.toc a", "els => els.length") == 7
    assert page.inner_text("ul.names").split() == ["IMG_0007.jpg", "IMG_0008.jpg", "IMG_0010.jpg"]
    page.emulate_media(media="print")  # printing: every thumbnail is there
    assert page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0 && i.loading !== 'lazy')")
    assert len(page.pdf()) > 10_000
    # docs/report.png: MATCHER_SCREENSHOT_REPORT=docs/report.png scripts/test tests/test_report_page.py
    page.emulate_media(media="screen")
    page.screenshot(path=os.environ.get("MATCHER_SCREENSHOT_REPORT") or str(tmp_path / "report.png"), full_page=True)
    page.close()


def test_report_of_1000_photos(browser, tmp_path):
    """1,000 photos, 600 found: the top says how many per dataset and lists each photo found, linked."""
    results = []
    for n in range(1000):
        matches = [Match(Item(id=n, dataset=f"set-{n % 3}", key=f"k{n}", url=f"https://img.example.org/{n}.jpg"),
                         n % 11, {"variant": "mirror/full" if n % 2 else "id/full", "entry": "full", "score": 0.99})
                   ] if n % 5 < 3 else []
        results.append(QueryResult(f"/home/ada/Pictures/{n:04d}.jpg", matches, hash="00" * 8))
    path = tmp_path / "report.html"
    write_html(results, path)
    text = path.read_text()
    assert "/home/ada" not in text
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.route("https://img.example.org/**", lambda route: route.abort())  # nothing leaves 127.0.0.1
    page.goto(path.as_uri())
    assert "600 of 1,000 photos found (600 copies) in 3 datasets; 400 not found" in page.inner_text(".lead")
    assert page.eval_on_selector_all("table.datasets tr", "els => els.length") == 4
    links = page.eval_on_selector_all("ol.toc a", "els => els.map(a => a.getAttribute('href'))")
    assert len(links) == 600
    assert all(page.query_selector(f".photo {h}") for h in links[::50])
    assert re.search(r"<h2>Not found \(400\)</h2>", text)
    page.close()
