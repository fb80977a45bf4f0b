"""What the published-layout tests share: the sample's Flickr photos, local copies named as their URLs,
a loopback image server, and reading back an index (items, info, lookups) through the real CLI."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

from PIL import Image, ImageOps

from conftest import LoopbackHandler, catalog_sql, run_matcher


def flickr_rows(sample: Path) -> dict[str, dict]:
    """The sample manifest's rows whose URL is a Flickr static URL, by id (ds-0001...): url, path, owner, page_url."""
    rows = {}
    with open(sample / "manifest.csv", newline="") as f:
        for r in csv.DictReader(f):
            if "staticflickr.com" in r["url"]:
                rows[r["id"]] = {**r, "path": str(sample / r["path"])}
    return rows


def url_name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def local_copies(rows: list[dict], folder: Path) -> Path:
    """Copies of the rows' images named as their URLs' last part, as a download script leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        shutil.copy(r["path"], folder / url_name(r["url"]))
    return folder


def upright_size(path: str | Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).size


def jpeg(path: str | Path, width: int = 400) -> bytes:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        im = im.resize((width, round(im.height * width / im.width)))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=88)
        return buf.getvalue()


class ImageHandler(LoopbackHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path, _ = self.count_hit()
        status, body = self.server.routes.get(path, (404, b"<html>Not Found</html>"))
        self.reply(status, "image/jpeg" if status == 200 else "text/html", body)


def add(index: Path, *args: str, ok: bool = True):
    p = run_matcher("add", "--index", str(index), "--allow-private-urls", "--retries", "0", "--timeout", "10",
                    "--workers", "1", *args)
    if ok:
        assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    return p


def items(index: Path, dataset: str | None = None) -> dict[str, dict]:
    cols = ("dataset", "key", "url", "page_url", "path", "owner", "license", "title", "status", "error",
            "error_kind", "extra", "id")
    rows = catalog_sql(index, f"SELECT {', '.join(cols)} FROM items")
    out = {}
    for r in rows:
        d = dict(zip(cols, r))
        d["extra"] = json.loads(d["extra"]) if d["extra"] else {}
        if dataset is None or d["dataset"] == dataset:
            out[d["key"]] = d
    return out


def entry_kinds(index: Path, item_id: int) -> list[str]:
    return sorted(k for (k,) in catalog_sql(index, "SELECT kind FROM entries WHERE item_id = ?", item_id))


def info(index: Path) -> dict:
    p = run_matcher("info", "--index", str(index), "--json", check=True)
    return {d["dataset"]: d for d in json.loads(p.stdout)["datasets"]}


def info_text(index: Path) -> str:
    p = run_matcher("info", "--index", str(index), check=True)
    return p.stdout


def lookup(index: Path, *args: str) -> list[tuple[str, str]]:
    """(dataset, key) of the items `matcher lookup` lists for the selectors."""
    p = run_matcher("lookup", "--index", str(index), *args, "--json")
    assert p.returncode in (0, 1), p.stderr
    return sorted((it["dataset"], it["key"]) for it in json.loads(p.stdout)["items"])


def search_keys(index: Path, photo: Path) -> list[tuple[str, str]]:
    p = run_matcher("search", "--index", str(index), "--json", str(photo))
    assert p.returncode in (0, 1), p.stderr
    (res,) = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return sorted((m["dataset"], m["key"]) for m in res["matches"])
