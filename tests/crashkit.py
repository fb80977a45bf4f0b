"""kill -9 harness for ``matcher add`` (local and Dask engines), ``matcher remove`` and ``matcher compact``.

Shared by tests/test_kill9.py (a handful of kills, fast) and benchmarks/bench_crash.py (the full
campaign). Each command runs as a real subprocess in a session of its own and is SIGKILLed either
after a random delay (seeded) or at a named point of :mod:`matcher.testpoints` (the process stops
itself there with SIGSTOP, ``MATCHER_TEST_PAUSE_AT``; the harness waits for the stop, then kills).
A kill hits the whole process group (as a terminal's ``kill -9 -PGID`` or a container dying does) or
only the main process (``kill -9 PID``, the OOM killer).

After every kill, :func:`check` looks at the index the way the next user would:

* ``matcher info`` opens it (exit 0) and counts what the catalog holds;
* the catalog: SQLite integrity, no duplicate (dataset, key), unique entry ids, one ``full`` entry per
  hashed item and none for a failed one, ``entries_count`` and ``entry_id_max`` right, tombstones
  disjoint from live entries;
* FAISS and the catalog agree: opened by the library (read-only), FAISS holds every live entry id,
  once, and nothing else but tombstones; a FAISS file whose trailer says it is in step must really
  be (else nothing would repair it); a writable open (on a copy) leaves a file with exactly the live
  entries (+ tombstones) that the next open trusts;
* searches: hashed items are found by their own code, removed ones never;
* nothing lost: every item hashed before the kill is still there with the same entry ids.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from conftest import LoopbackHandler, LoopbackServer  # noqa: E402

from matcher.index.catalog import Catalog  # noqa: E402
from matcher.index.binary import BinaryIndex, read_trailer  # noqa: E402
from matcher.index.store import IndexStore  # noqa: E402

WEB, DISK = "web", "disk"  # the two datasets: a manifest of URLs (loopback server), a folder of files


# ---------------------------------------------------------------------------
# the corpus: real photos, re-encoded into distinct files


class _Handler(LoopbackHandler):
    server: "Server"

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if self.server.delay:
            time.sleep(self.server.delay)
        status, ctype, body = (404, "text/html", b"<html>Not Found</html>") if route is None else (200, *route)
        self.reply(status, ctype, body)


class Server(LoopbackServer):
    def __init__(self, routes: dict[str, tuple[str, bytes]], delay: float = 0.0):
        super().__init__(_Handler, routes)
        self.delay = delay  # seconds before each response: a slower network spreads an add over more commits


@dataclass
class Corpus:
    manifest: Path  # web.csv: URL rows (dataset "web"), three of which fail (404, HTML page, no URL)
    folder: Path  # disk/: image files (dataset "disk")
    server: Server
    keys: set[tuple[str, str]]  # every (dataset, key) of the two sources
    failing: set[tuple[str, str]]

    def sources(self) -> list[str]:
        return [str(self.manifest), str(self.folder)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_corpus(root: Path, n_web: int, n_disk: int, seed: int = 0, delay: float = 0.0) -> Corpus:
    """``n_web`` URL rows and ``n_disk`` files, each a distinct re-encoding (size, crop, quality, format)
    of one of the bundled sample's real photos; served on 127.0.0.1 by a threaded server (started), which
    waits ``delay`` seconds before each response."""
    import io

    from PIL import Image, ImageOps

    originals = []
    for p in sorted((ROOT / "sample" / "dataset").iterdir()) + sorted((ROOT / "sample" / "my-photos").iterdir()):
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
        if min(im.size) >= 200:
            im.thumbnail((480, 480))
            originals.append(im)
    rng = random.Random(seed)

    def variant(i: int) -> tuple[str, bytes]:
        im = originals[i % len(originals)]
        k = i // len(originals)
        w = (400, 360, 320, 280)[k % 4]
        im = im.resize((w, max(8, round(im.height * w / im.width))), Image.Resampling.BILINEAR)
        im = im.crop((k % 5 * 3, k % 3 * 4, im.width - k % 4 * 3, im.height - k % 2 * 5))
        buf = io.BytesIO()
        if rng.random() < 0.3:
            im.save(buf, "WEBP", quality=60 + k % 30, method=0)
            return "webp", buf.getvalue()
        im.save(buf, "JPEG", quality=70 + k % 25)
        return "jpg", buf.getvalue()

    root.mkdir(parents=True, exist_ok=True)
    routes: dict[str, tuple[str, bytes]] = {"/bad/page.jpg": ("text/html", b"<!DOCTYPE html><html>removed</html>")}
    rows = []
    for i in range(n_web):
        ext, body = variant(i)
        routes[f"/img/{i}.{ext}"] = ("image/webp" if ext == "webp" else "image/jpeg", body)
        rows.append((f"w{i:04d}", f"/img/{i}.{ext}"))
    server = Server(routes, delay)
    server.thread.start()
    failing = [("w-missing", "/bad/missing.jpg"), ("w-html", "/bad/page.jpg"), ("w-nourl", None)]
    manifest = root / f"{WEB}.csv"
    with open(manifest, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "url", "owner", "license"])
        for j, (key, path) in enumerate(rows + failing):
            out.writerow([key, server.url(path) if path else "", f"owner-{j % 7}", "CC BY 2.0"])
    folder = root / DISK
    folder.mkdir(exist_ok=True)
    disk_keys = []
    for i in range(n_disk):
        ext, body = variant(n_web + i)
        name = f"d{i:04d}.{ext}"
        (folder / name).write_bytes(body)
        disk_keys.append(name)
    keys = {(WEB, k) for k, _ in rows + failing} | {(DISK, k) for k in disk_keys}
    return Corpus(manifest, folder, server, keys, {(WEB, k) for k, _ in failing})


# ---------------------------------------------------------------------------
# processes


def proc_state(pid: int) -> str | None:
    """The Linux state letter of a process (R, S, T = stopped, Z, ...), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def group_members(pgid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] not in "ZX":
                out.append(int(d.name))
    return out


def matcher_env(pause: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    env.pop("MATCHER_TEST_PAUSE_AT", None)
    if pause:
        env["MATCHER_TEST_PAUSE_AT"] = pause
    return env


def start(args: list[str], log: Path, pause: str | None = None) -> subprocess.Popen:
    """``python -m matcher ARGS`` in a session of its own (its workers in its process group)."""
    with open(log, "ab") as out:  # a file, not a pipe: orphaned children must not block us
        return subprocess.Popen(
            [sys.executable, "-m", "matcher", *args], stdout=out, stderr=subprocess.STDOUT, env=matcher_env(pause),
            cwd=ROOT, start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run(args: list[str], log: Path, timeout: float = 600) -> int:
    """Run to completion; the exit status."""
    proc = start(args, log)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Kill:
    """When to kill: at a named point (``point``, ``"name"`` or ``"name:N"``) or after ``delay`` seconds."""

    point: str | None = None
    delay: float | None = None
    group: bool = True  # SIGKILL the process group, or only the main process

    def label(self) -> str:
        where = f"at {self.point}" if self.point else f"after {self.delay:.2f} s"
        return f"{where} ({'group' if self.group else 'pid only'})"


@dataclass
class Outcome:
    killed: bool  # False: the command finished (or the point was never reached) before the kill
    elapsed: float
    rc: int | None = None  # its exit status when it finished first
    lingering: int = 0  # processes of the group still alive 10 s after a pid-only kill


def execute(args: list[str], kill: Kill, log: Path, timeout: float = 300) -> Outcome:
    """Run ``matcher ARGS`` and SIGKILL it as ``kill`` says."""
    t0 = time.monotonic()
    proc = start(args, log, pause=kill.point)
    killed = False
    try:
        deadline = t0 + (kill.delay if kill.point is None else timeout)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if kill.point is not None and proc_state(proc.pid) == "T":
                break
            time.sleep(0.005)
        else:
            if kill.point is not None:
                raise AssertionError(f"matcher {args[0]} never reached {kill.point} in {timeout} s")
        if proc.poll() is None:
            if kill.group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
            killed = True
        elapsed = time.monotonic() - t0
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lingering = 0
    drain = time.monotonic() + 10
    while group_members(proc.pid) and time.monotonic() < drain:  # a pid-only kill: its workers must go by themselves
        time.sleep(0.05)
    if group_members(proc.pid):
        lingering = len(group_members(proc.pid))
        os.killpg(proc.pid, signal.SIGKILL)
    return Outcome(killed, elapsed, None if killed else proc.returncode, lingering)


# ---------------------------------------------------------------------------
# checking an index after a kill


Snapshot = dict[tuple[str, str], tuple[str, tuple[int, ...]]]  # (dataset, key) -> (status, entry ids)


def _ro(index: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True, isolation_level=None, timeout=10)


def snapshot(index: Path) -> Snapshot:
    if not (index / "catalog.sqlite").exists():
        return {}
    db = _ro(index)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'items'").fetchone():
            return {}
        entries: dict[int, list[int]] = {}
        for eid, item in db.execute("SELECT id, item_id FROM entries ORDER BY id"):
            entries.setdefault(item, []).append(eid)
        return {(ds, key): (status, tuple(entries.get(item, ())))
                for item, ds, key, status in db.execute("SELECT id, dataset, key, status FROM items")}
    finally:
        db.close()


def full_codes(index: Path, keys) -> dict[tuple[str, str], bytes]:
    """The code of each item's ``full`` entry (what a search by its own image finds at distance 0)."""
    db = _ro(index)
    try:
        return {(ds, key): code for ds, key, code in db.execute(
            "SELECT items.dataset, items.key, entries.code FROM entries JOIN items ON items.id = entries.item_id"
            " WHERE entries.kind = 'full'") if (ds, key) in keys}
    finally:
        db.close()


def returned(index: Path, codes: dict[tuple[str, str], bytes]) -> set[tuple[str, str]]:
    """Which of these items a search (read-only store, threshold 0) by their codes returns."""
    if not codes:
        return set()
    keys = list(codes)
    with IndexStore.open(index) as store:
        hits = store.search_codes(np.frombuffer(b"".join(codes[k] for k in keys), np.uint8).reshape(len(keys), -1), 0)
    return {k for k, row in zip(keys, hits) if any((item.dataset, item.key) == k for item, *_ in row)}


def cli_info_inprocess(index: Path) -> tuple[int, str]:
    """``matcher info --json`` through click's runner: the CLI's own code, without a process start."""
    from click.testing import CliRunner

    from matcher.cli import main

    r = CliRunner().invoke(main, ["info", "--index", str(index), "--json"])
    return r.exit_code, r.stdout if r.exit_code == 0 else (r.output + (repr(r.exception) if r.exception else ""))


def cli_info_subprocess(index: Path) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "matcher", "info", "--index", str(index), "--json"], capture_output=True,
                       text=True, env=matcher_env(), cwd=ROOT, timeout=120)
    return p.returncode, p.stdout if p.returncode == 0 else p.stderr


@dataclass
class Check:
    created: bool = True
    problems: list[str] = field(default_factory=list)
    items: int = 0
    ok: int = 0
    failed: int = 0
    entries: int = 0
    tombstones: int = 0
    duplicates: int = 0  # duplicated (dataset, key) or entry ids, or an item with several 'full' entries
    lost: int = 0  # items hashed before (or expected) that are gone or were re-hashed under other ids
    faiss_file: str = ""  # "absent", "in step" or "stale" (repaired by the next open)
    snap: Snapshot = field(default_factory=dict, repr=False)

    @property
    def consistent(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if not self.created:
            return "no index yet (killed before it was created); " + ("ok" if self.consistent else "; ".join(self.problems))
        s = (f"{'consistent' if self.consistent else 'INCONSISTENT'}: {self.items} items ({self.ok} ok, {self.failed} "
             f"failed), {self.entries} entries, {self.tombstones} tombstones, FAISS file {self.faiss_file}, "
             f"{self.duplicates} duplicated, {self.lost} lost")
        return s + ("" if self.consistent else " -- " + "; ".join(self.problems))


def check(index: Path, *, info: Callable[[Path], tuple[int, str]] = cli_info_inprocess, before: Snapshot | None = None,
          may_go: set[tuple[str, str]] = frozenset(), gone_codes: dict[tuple[str, str], bytes] | None = None,
          probe: int = 6, rng: random.Random | None = None, scratch: Path | None = None) -> Check:
    """What the next user of ``index`` finds (see the module doc). ``before``: a snapshot from before the
    command; its hashed items must still be there with the same entry ids, except ``may_go`` (being removed).
    ``gone_codes``: codes of removed items, which searches must not return. ``scratch``: where a copy is
    opened for writing (default: next to the index)."""
    rng = rng or random.Random(0)
    c = Check()
    p = c.problems
    if not (index / "meta.json").exists():
        c.created = False
        rc, out = info(index)
        if rc != 2 or "Traceback" in out:
            p.append(f"matcher info on a never-created index: exit {rc}: {out[-300:]}")
        for key, (status, _) in (before or {}).items():
            if status == "ok":
                c.lost += 1
        return c

    rc, out = info(index)
    data = None
    if rc != 0:
        p.append(f"matcher info exited {rc}: {out.strip()[-300:]}")
    else:
        try:
            data = json.loads(out)
        except ValueError:
            p.append(f"matcher info printed no JSON: {out[-200:]}")
    if Catalog.unfinished(index / "catalog.sqlite"):  # killed after meta.json, before the catalog: empty
        c.faiss_file = "absent (catalog not created yet)"
        if data is not None and (data["entries"], data["datasets"]) != (0, []):
            p.append(f"matcher info on an index without a catalog: {data}")
        c.lost = sum(1 for st, _ in (before or {}).values() if st == "ok")
        if c.lost:
            p.append(f"{c.lost} items hashed before the kill are gone")
        return c
    db = _ro(index)
    try:
        if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            p.append("SQLite integrity_check failed")
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'items'").fetchone():
            p.append("catalog has no items table")
            return c
        rows = db.execute("SELECT id, dataset, key, status FROM items").fetchall()
        entries = db.execute("SELECT id, item_id, kind FROM entries").fetchall()
        tombs = [r[0] for r in db.execute("SELECT entry_id FROM tombstones")]
        meta = dict(db.execute("SELECT key, value FROM meta"))
    finally:
        db.close()
    c.items, c.entries, c.tombstones = len(rows), len(entries), len(tombs)
    c.ok = sum(r[3] == "ok" for r in rows)
    c.failed = c.items - c.ok
    c.duplicates += len(rows) - len({(r[1], r[2]) for r in rows})
    c.duplicates += len(entries) - len({e[0] for e in entries})
    status = {r[0]: r[3] for r in rows}
    kinds: dict[int, list[str]] = {}
    for eid, item, kind in entries:
        kinds.setdefault(item, []).append(kind)
    orphans = [e for e in entries if e[1] not in status]
    if orphans:
        p.append(f"{len(orphans)} entries of no item")
    for item, st in status.items():
        k = kinds.get(item, [])
        if st == "ok" and k.count("full") != 1:
            c.duplicates += max(0, k.count("full") - 1)
            p.append(f"item {item}: entries {k}")
        if st != "ok" and k:
            p.append(f"failed item {item} has entries {k}")
    live = np.array(sorted(e[0] for e in entries), dtype=np.int64)
    dead = np.array(sorted(tombs), dtype=np.int64)
    if np.intersect1d(live, dead).size:
        p.append("tombstoned ids are live entries")
    if int(meta.get("entries_count", -1)) != len(entries):
        p.append(f"meta entries_count {meta.get('entries_count')} != {len(entries)} entries")
    top = max([0, *live.tolist(), *dead.tolist()])
    if live.size and int(meta.get("entry_id_max") or 0) < top:
        p.append(f"meta entry_id_max {meta.get('entry_id_max')} < highest id {top}")
    if c.duplicates:
        p.append(f"{c.duplicates} duplicated")
    if data is not None:
        if data["entries"] != len(entries):
            p.append(f"matcher info says {data['entries']} entries, the catalog has {len(entries)}")
        if sum(d["items"] for d in data["datasets"]) != c.items:
            p.append("matcher info's item counts differ from the catalog")

    # the FAISS file as the crash left it: a trailer that says "in step" must be true
    want = np.union1d(live, dead)
    index_meta = json.loads((index / "meta.json").read_text())
    index_id, bits = index_meta.get("index_id"), int(index_meta["hasher"]["bits"])
    faiss_path = index / "index.faiss"
    if not faiss_path.exists():
        c.faiss_file = "absent"
    else:
        t = read_trailer(faiss_path) or {}
        disk = BinaryIndex.load(faiss_path, bits).ids()
        in_step = (t.get("index_id") == index_id and t.get("seq") == int(meta.get("entries_seq", -1))
                   and t.get("count") == len(disk) and len(disk) == len(entries) + len(tombs))
        c.faiss_file = "in step" if in_step else "stale"
        if in_step and not np.array_equal(np.sort(disk), want):
            p.append("the FAISS file's trailer says it is in step with the catalog, but its ids differ")

    # opened by the library as a searcher would (read-only: repairs in memory)
    try:
        store = IndexStore.open(index)
    except Exception as e:  # noqa: BLE001 - reported as a finding
        p.append(f"IndexStore.open failed: {type(e).__name__}: {e}")
        return c
    with store:
        ids = store.faiss.ids()
        if len(np.unique(ids)) != len(ids):
            p.append("FAISS holds an id twice")
        missing = np.setdiff1d(live, ids)
        extra = np.setdiff1d(np.setdiff1d(ids, live), store.dead)
        if missing.size:
            p.append(f"{missing.size} live entries missing from FAISS")
        if extra.size:
            p.append(f"FAISS holds {extra.size} ids that are neither live nor tombstones")
        ok_keys = sorted(k for k, (st, e) in snapshot(index).items() if st == "ok")
        picks = rng.sample(ok_keys, min(probe, len(ok_keys)))
        codes = full_codes(index, set(picks) | set(gone_codes or ()))
        queries = [(k, codes[k], True) for k in picks if k in codes]
        queries += [(k, code, False) for k, code in (gone_codes or {}).items()]
        if queries:
            hits = store.search_codes(np.frombuffer(b"".join(q[1] for q in queries), np.uint8).reshape(len(queries), -1), 0)
            for (k, _, present), row in zip(queries, hits):
                found = any((item.dataset, item.key) == k for item, *_ in row)
                if present and not found:
                    p.append(f"{k} is not found by its own code")
                if not present and found:
                    p.append(f"removed item {k} is still returned by a search")

    # what the next writer makes of it (on a copy: the real index is left for the command's rerun)
    copy = (scratch or index.parent) / f"{index.name}.writable-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(index, copy)
    try:
        with IndexStore.open(copy, writable=True) as store:
            pass
        left = sorted(f.name for f in copy.glob(".*.tmp-*"))  # a killed save's temporary file (FAISS-sized)
        if left:
            p.append(f"a writable open leaves the killed save's temporary files behind: {left}")
        live2 = IndexStore.open(copy)
        with live2 as store:
            if store.reconciled != {"added": 0, "removed": 0}:
                p.append(f"after a writable open, the next open still repairs {store.reconciled}")
            cat_live, cat_dead = store.catalog.entry_ids(), store.dead
        disk = np.sort(BinaryIndex.load(copy / "index.faiss", bits).ids()) if (copy / "index.faiss").exists() else None
        if disk is not None and not np.array_equal(disk, np.union1d(cat_live, cat_dead)):
            p.append("after a writable open the FAISS file does not hold exactly the live entries (+ tombstones)")
        if not np.array_equal(cat_live, live):
            p.append("a writable open changed the live entries")
    finally:
        shutil.rmtree(copy, ignore_errors=True)

    # nothing lost
    c.snap = snapshot(index)
    for key, (st, eids) in (before or {}).items():
        if st != "ok" or key in may_go:
            continue
        now = c.snap.get(key)
        if now is None or now[0] != "ok" or now[1] != eids:
            c.lost += 1
    if c.lost:
        p.append(f"{c.lost} items hashed before the kill are gone or were hashed again")
    return c


def final_check(c: Check, reference: Snapshot, *, hashes: dict | None = None, index: Path | None = None) -> None:
    """After a completed rerun: every item of the manifest exactly once, with the reference's status (and hash)."""
    ref_status = {k: v[0] for k, v in reference.items()}
    got = {k: v[0] for k, v in c.snap.items()}
    lost = set(ref_status) - set(got)
    extra = set(got) - set(ref_status)
    if lost:
        c.lost += len(lost)
        c.problems.append(f"{len(lost)} manifest items missing after the rerun, e.g. {sorted(lost)[:3]}")
    if extra:
        c.problems.append(f"{len(extra)} unexpected items, e.g. {sorted(extra)[:3]}")
    changed = [k for k in set(ref_status) & set(got) if ref_status[k] != got[k]]
    if changed:
        c.problems.append(f"{len(changed)} items with another status than a clean run, e.g. {sorted(changed)[:3]}")
    if hashes is not None and index is not None:
        db = _ro(index)
        try:
            now = {(ds, k): h for ds, k, h in db.execute("SELECT dataset, key, hash FROM items WHERE status = 'ok'")}
        finally:
            db.close()
        bad = [k for k, h in hashes.items() if now.get(k) not in (None, h)]
        if bad:
            c.problems.append(f"{len(bad)} items hashed differently from a clean run, e.g. {sorted(bad)[:3]}")
    if c.faiss_file != "in step":
        c.problems.append(f"after a completed rerun the FAISS file is {c.faiss_file}")


def item_hashes(index: Path) -> dict[tuple[str, str], str]:
    db = _ro(index)
    try:
        return {(ds, k): h for ds, k, h in db.execute("SELECT dataset, key, hash FROM items WHERE status = 'ok'")}
    finally:
        db.close()


# ---------------------------------------------------------------------------
# campaigns


@dataclass
class Record:
    op: str  # "add local", "add dask", "remove", "compact"
    kill: Kill
    outcome: Outcome
    check: Check
    note: str = ""

    def line(self) -> str:
        hit = f"killed at {self.outcome.elapsed:.2f} s" if self.outcome.killed else f"finished first (exit {self.outcome.rc})"
        extra = f"; {self.note}" if self.note else ""
        linger = f"; {self.outcome.lingering} processes lingered" if self.outcome.lingering else ""
        return f"[{self.op}] kill {self.kill.label()}: {hit}{linger} -> {self.check.summary()}{extra}"


Log = Callable[[str], None]


def add_args(index: Path, corpus: Corpus, engine: str, scheduler: str | None = None, shard_size: int = 20,
             workers: int = 2) -> list[str]:
    args = ["add", "--index", str(index), "--allow-private-urls", "--timeout", "10", "--retries", "1"]
    if engine == "dask":
        args += ["--engine", "dask", "--scheduler", scheduler or "", "--shard-size", str(shard_size)]
    else:
        args += ["--workers", str(workers)]
    return args + corpus.sources()


def add_campaign(op: str, args_for: Callable[[Path], list[str]], kills: list[Kill], work: Path, reference: Snapshot,
                 hashes: dict, *, episode: int = 3, info=cli_info_inprocess, log: Log = print, rng: random.Random,
                 need: int | None = None, more: Callable[[int], Kill] | None = None,
                 prepare: Callable[[int, Path], str] | None = None) -> list[Record]:
    """Kill ``matcher add`` as ``kills`` say, in episodes of up to ``episode`` kills on a fresh index, each
    followed by a check; a completed rerun ends each episode (checked against ``reference``). When a kill
    misses (the run finished first) and ``need`` kills are wanted, ``more(i)`` supplies another.
    ``prepare(episode, index)`` may create the episode's index first (returns what it made, for the log)."""
    records: list[Record] = []
    queue = list(kills)
    ep = 0
    landed = 0
    while queue:
        ep += 1
        index = work / f"{op.replace(' ', '-')}-{ep}" / "index"
        shutil.rmtree(index.parent, ignore_errors=True)
        index.parent.mkdir(parents=True)
        made = prepare(ep, index) if prepare else ""
        if made:
            log(f"[{op}] episode {ep} starts from {made}")
        before: Snapshot = snapshot(index)
        n = 0
        while queue and n < episode:
            kill = queue.pop(0)
            if (kill.point or "").startswith("create.") and (index / "meta.json").exists():
                queue.insert(0, kill)  # only a run that creates the index gets there: next episode
                break
            out = execute(args_for(index), kill, index.parent / "add.log")
            chk = check(index, info=info, before=before, rng=rng)
            note = ""
            if not out.killed and out.rc != 0:
                chk.problems.append(f"add exited {out.rc} before the kill")
            if chk.created:
                before = chk.snap
                done = sum(1 for k in reference if k in chk.snap)
                note = f"{done}/{len(reference)} manifest items in"
            rec = Record(op, kill, out, chk, note)
            records.append(rec)
            log(rec.line())
            n += 1
            if out.killed:
                landed += 1
            elif need is not None and more is not None and landed + len(queue) < need:
                queue.append(more(len(records)))
        rc = run(args_for(index), index.parent / "add.log")
        chk = check(index, info=info, before=before, rng=rng)
        if rc != 0:
            chk.problems.append(f"the rerun exited {rc}: {(index.parent / 'add.log').read_text()[-500:]}")
        final_check(chk, reference, hashes=hashes, index=index)
        if (index / "shards").exists():
            chk.problems.append("INDEX/shards/ left after a completed rerun")
        rec = Record(op, Kill(), Outcome(False, 0.0, rc), chk, "episode end: completed rerun")
        records.append(rec)
        log(f"[{op}] episode {ep}: rerun to completion (exit {rc}) -> {chk.summary()}")
        if chk.consistent:
            shutil.rmtree(index.parent, ignore_errors=True)
    return records


def with_tombstones(base: Path, dst: Path, n: int, rng: random.Random) -> dict[tuple[str, str], bytes]:
    """A copy of ``base`` with ``n`` random hashed items removed (through the library): their full codes."""
    from matcher.engine.api import remove

    shutil.copytree(base, dst)
    ok = sorted(k for k, (st, _) in snapshot(dst).items() if st == "ok" and k[0] == DISK)
    picks = rng.sample(ok, n)
    codes = full_codes(dst, set(picks))
    remove(dst, dataset=DISK, keys=[k for _, k in picks])
    return codes


def remove_campaign(kills: list[Kill], base: Path, work: Path, *, info=cli_info_inprocess, log: Log = print,
                    rng: random.Random, stale_every: int = 2) -> list[Record]:
    """Kill ``matcher remove`` on copies of ``base``; every other one (and those killed at a ``faiss.`` point)
    with its FAISS file deleted first (the remove's open then rebuilds and saves it). Afterwards the
    removal happened entirely or not at all (entirely if the command had reported success); a rerun of
    the same remove then completes it."""
    records = []
    for i, kill in enumerate(kills):
        index = work / f"remove-{i}" / "index"
        shutil.rmtree(index.parent, ignore_errors=True)
        index.parent.mkdir(parents=True)
        shutil.copytree(base, index)
        stale = (kill.point or "").startswith("faiss.") or (stale_every and i % stale_every == 1)
        if stale:
            (index / "index.faiss").unlink()
        snap = snapshot(index)
        ok = sorted(k for k, (st, _) in snap.items() if st == "ok")
        how = rng.choice(["keys", "url", "dataset"])
        if how == "keys":
            ds = rng.choice([WEB, DISK])
            sel = set(rng.sample([k for k in ok if k[0] == ds], rng.randint(1, 5)))
            args = ["remove", "--index", str(index), "--dataset", ds] + [a for k in sorted(sel) for a in ("--key", k[1])]
        elif how == "url":
            db = _ro(index)
            try:
                key, url = rng.choice(db.execute("SELECT key, url FROM items WHERE dataset = ? AND status = 'ok'",
                                                 (WEB,)).fetchall())
            finally:
                db.close()
            sel = {(WEB, key)}
            args = ["remove", "--index", str(index), "--url", url]
        else:
            sel = {k for k in snap if k[0] == DISK}
            args = ["remove", "--index", str(index), "--dataset", DISK]
        codes = full_codes(index, sel)
        out = execute(args, kill, index.parent / "remove.log")
        chk = check(index, info=info, before=snap, may_go=sel, rng=rng)
        present = {k for k in sel if k in chk.snap}
        if present and present != sel:
            what = "PARTIAL"
            chk.problems.append(f"removal partial: {len(sel) - len(present)} of {len(sel)} items gone")
        else:
            what = "not at all" if present else "entirely"
        if what == "entirely" and returned(index, codes):
            chk.problems.append(f"removed items still returned by a search: {sorted(returned(index, codes))[:3]}")
        if out.rc == 0 and what != "entirely":
            chk.problems.append("remove reported success but the items are still there")
        # the user reruns the remove if it did not report success
        rerun = ""
        if what == "not at all":
            rc = run(args, index.parent / "remove.log")
            after = check(index, info=info, before=snap, may_go=sel, gone_codes=codes, rng=rng)
            if rc != 0 or any(k in after.snap for k in sel):
                chk.problems.append(f"the rerun of the remove (exit {rc}) did not remove them: {after.summary()}")
            chk.problems += after.problems
            rerun = f"; rerun (exit {rc}) removed them: {after.summary()}"
        rec = Record("remove", kill, out, chk,
                     f"{how} ({len(sel)} items{', FAISS file deleted first' if stale else ''}): removed {what}{rerun}")
        records.append(rec)
        log(rec.line())
        if chk.consistent:
            shutil.rmtree(index.parent, ignore_errors=True)
    return records


def compact_campaign(kills: list[Kill], base: Path, work: Path, *, info=cli_info_inprocess, log: Log = print,
                     rng: random.Random, removed: int = 8) -> list[Record]:
    """Kill ``matcher compact`` on copies of ``base`` with ``removed`` items removed; afterwards searches never
    return them, and a rerun of compact leaves FAISS holding exactly the live entries."""
    records = []
    for i, kill in enumerate(kills):
        index = work / f"compact-{i}" / "index"
        shutil.rmtree(index.parent, ignore_errors=True)
        index.parent.mkdir(parents=True)
        codes = with_tombstones(base, index, removed, rng)
        snap = snapshot(index)
        args = ["compact", "--index", str(index)]
        out = execute(args, kill, index.parent / "compact.log")
        chk = check(index, info=info, before=snap, gone_codes=codes, rng=rng)
        state = f"{chk.tombstones} tombstones left, FAISS file {chk.faiss_file}"
        rc = run(args, index.parent / "compact.log")
        after = check(index, info=info, before=snap, gone_codes=codes, rng=rng)
        if rc != 0:
            chk.problems.append(f"the rerun of compact exited {rc}")
        disk = np.sort(IndexStore.open(index).faiss.ids())
        live = np.array(sorted(e for st, ids in after.snap.values() for e in ids), dtype=np.int64)
        if after.tombstones or not np.array_equal(disk, live):
            chk.problems.append(f"after the rerun of compact FAISS != live entries ({len(disk)} vs {len(live)}, "
                                f"{after.tombstones} tombstones)")
        chk.problems += after.problems
        rec = Record("compact", kill, out, chk, f"{state}; rerun (exit {rc}): FAISS {len(disk)} = live {len(live)}")
        records.append(rec)
        log(rec.line())
        if chk.consistent:
            shutil.rmtree(index.parent, ignore_errors=True)
    return records


def summarize(records: list[Record]) -> dict[str, dict[str, int]]:
    """Per operation: kills (that landed), survived (consistent afterwards), inconsistencies, lost, duplicated."""
    out: dict[str, dict[str, int]] = {}
    for r in records:
        s = out.setdefault(r.op, {"kills": 0, "missed": 0, "survived": 0, "inconsistent": 0, "lost": 0,
                                  "duplicated": 0, "checks": 0})
        s["checks"] += 1
        if r.kill.point or r.kill.delay is not None:
            if r.outcome.killed:
                s["kills"] += 1
                s["survived"] += r.check.consistent
            else:
                s["missed"] += 1
        s["inconsistent"] += not r.check.consistent
        s["lost"] += r.check.lost
        s["duplicated"] += r.check.duplicates
    return out


def draw_kills(rng: random.Random, n: int, points: list[str], duration: float, *, named_share: float = 0.5) -> list[Kill]:
    """``n`` kills in a seeded order: the named ``points`` in turn for ``named_share`` of them, random delays
    in (0, duration] for the rest; each kills the group or only the main process (a seeded coin)."""
    n_named = round(n * named_share) if points else 0
    kinds = ["named"] * n_named + ["random"] * (n - n_named)
    rng.shuffle(kinds)
    out, named = [], 0
    for kind in kinds:
        if kind == "named":
            out.append(Kill(point=points[named % len(points)], group=rng.random() < 0.5))
            named += 1
        else:
            out.append(Kill(delay=rng.uniform(0.05, duration), group=rng.random() < 0.5))
    return out
