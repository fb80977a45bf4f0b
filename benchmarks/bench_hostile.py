"""Hostile files, measured: `matcher add` and `matcher search --json` over a corpus of broken and hostile files.

The corpus comes from scripts/make-hostile-corpus (seeded; >= 1000 files by default: truncated,
bit-flipped, zero-byte, wrong extensions, decompression bombs, absurd dimensions, every pixel mode,
animations, corrupt HEIC/AVIF, symlink loops, FIFOs, non-UTF-8 and over-long names, 100 MP images
at the pixel limit...). Each command runs as a user runs it, in a subprocess of its own session,
under a wall-clock bound; search results are read as they are printed, and a file whose result
takes longer than --file-timeout is a hang. The process tree's memory (every process of the
session: the CLI, the fork server, the hashing workers) is sampled from /proc every 50 ms.

What is checked and reported:

* files tried; hashed; reported with a reason, by kind (add: the catalog's failure kinds; search:
  the error's reason, classified); files neither hashed nor reported (must be 0: a file under a
  folder that cannot be listed counts as reported when the folder is);
* crashes (an exit status other than 0/1/2, a Python traceback on stderr) and hangs (timeouts);
* the fixed cases' expected outcomes (a valid image in an odd mode must hash; a bomb must be
  refused as too large);
* peak memory: the largest sum of RSS over the tree, and the largest single process (VmHWM);
* the slowest files: search's gap between consecutive results, and (--per-file) each file decoded
  and hashed in one process, timed alone;
* afterwards, `matcher info --index IDX --json` must open the index cleanly and agree with the catalog.

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_hostile.py [--count 1000] [--seed 0]
        [--workers 2] [--timeout 900] [--file-timeout 60] [--no-large] [--work DIR]

Exit status 1 if any crash, hang, unaccounted file or unexpected outcome was seen.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, header  # noqa: E402

MAKE = ROOT / "scripts" / "make-hostile-corpus"


def _load_maker():
    loader = importlib.machinery.SourceFileLoader("make_hostile_corpus", str(MAKE))
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(mod)
    return mod


maker = _load_maker()  # the corpus's own listing reader and path rules
OK_EXITS = (0, 1, 2)


# --------------------------------------------------------------------------- process tree


def _session_members(sid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # fields[3]: session id
            out.append(int(d))
    return out


def _mem_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB, (0, 0) if it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


class Run:
    """A matcher command in a session of its own: stdout lines timestamped, memory sampled, bounded in time."""

    def __init__(self, args: list[str], timeout: float, line_timeout: float | None = None):
        self.args = args
        self.cmd = [sys.executable, "-m", "matcher", *args]
        self.timeout = timeout
        self.line_timeout = line_timeout
        self.lines: list[tuple[float, str]] = []
        self.peak_tree_kb = 0
        self.peak_proc_kb = 0
        self.procs_seen: set[int] = set()
        self.hang: str | None = None

    def run(self) -> "Run":
        env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
        with tempfile.TemporaryFile() as err:
            self.t0 = time.monotonic()
            proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True,
                                    cwd=ROOT)
            reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
            reader.start()
            last = self.t0
            while proc.poll() is None:
                self._sample(proc.pid)
                now = time.monotonic()
                if self.lines:
                    last = max(last, self.lines[-1][0])
                if now - self.t0 > self.timeout:
                    self.hang = f"still running after {self.timeout:.0f} s"
                elif self.line_timeout and now - last > self.line_timeout:
                    self.hang = f"no result for {self.line_timeout:.0f} s after {len(self.lines)} results"
                if self.hang:
                    self._kill(proc)
                    break
                time.sleep(0.05)
            proc.wait()
            reader.join(10)
            self.elapsed = time.monotonic() - self.t0
            self.returncode = proc.returncode
            # orphans (workers of a killed CLI) must not outlive the run
            self._kill(proc)
            err.seek(0)
            self.stderr = err.read().decode("utf-8", "replace")
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            self.lines.append((time.monotonic(), raw.decode("utf-8", "surrogateescape")))

    def _sample(self, sid: int) -> None:
        tree = 0
        for pid in _session_members(sid):
            rss, hwm = _mem_kb(pid)
            tree += rss
            self.peak_proc_kb = max(self.peak_proc_kb, hwm)
            self.procs_seen.add(pid)
        self.peak_tree_kb = max(self.peak_tree_kb, tree)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    @property
    def crashed(self) -> list[str]:
        why = []
        if self.hang is None and self.returncode not in OK_EXITS:
            why.append(f"exit status {self.returncode}")
        if "Traceback (most recent call last)" in self.stderr:
            why.append("a Python traceback on stderr")
        return why


# --------------------------------------------------------------------------- accounting


def classify(reason: str) -> str:
    """A search error's reason -> the kind `matcher add` records for it."""
    low = reason.lower()
    if "nearly uniform" in low:
        return "uniform"
    if "limit" in low or "bomb" in low or "not enough memory" in low:
        return "too_large"
    if "crashed" in low:
        return "crash"
    return "unreadable"


def reason_family(reason: str) -> str:
    """The stable head of a reason (without file-specific details), for a histogram."""
    head = re.sub(r"\(.*", "", reason).strip()
    head = re.sub(r"\d[\d,x.]*", "N", head)
    return head[:60] or reason[:60]


def expected_ok(expect: str, outcome: tuple[str, str]) -> bool:
    status, kind = outcome
    if expect == "hashed":
        return status == "ok"
    if expect == "too_large":
        return status == "failed" and kind == "too_large"
    if expect == "refused":
        return status == "failed"
    return True


def tally(name: str, files: list[dict], outcomes: dict[str, tuple[str, str]], reasons: Counter) -> dict:
    hashed = failed = 0
    kinds: Counter = Counter()
    missing, unexpected = [], []
    for r in files:
        o = maker.outcome_of(r["path"], outcomes)
        if o is None:
            missing.append(r["path"])
            continue
        if o[0] == "ok":
            hashed += 1
        else:
            failed += 1
            kinds[o[1]] += 1
        if not expected_ok(r["expect"], o):
            unexpected.append(f"{r['path']}: expected {r['expect']}, got {o[0]} {o[1] or ''}".strip())
    listed = {r["path"] for r in files}
    extra = sorted(p for p in outcomes if p not in listed)
    return {"name": name, "tried": len(files), "hashed": hashed, "reported": failed, "kinds": kinds,
            "missing": missing, "unexpected": unexpected, "extra": extra, "reasons": reasons}


def catalog_outcomes(index: Path) -> tuple[dict[str, tuple[str, str]], Counter]:
    db = sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, status, error_kind, error FROM items").fetchall()
    finally:
        db.close()
    reasons = Counter(reason_family(e) for _, s, _, e in rows if s != "ok" and e)
    return {k: (s, ek or "") for k, s, ek, _ in rows}, reasons


def search_outcomes(run: Run, corpus: Path) -> tuple[dict[str, tuple[str, str]], Counter, list[tuple[float, str]], int]:
    """Outcome per relative path; reason histogram; (gap, path) per result; lines that are not JSON."""
    prefix = str(corpus) + "/"
    out: dict[str, tuple[str, str]] = {}
    reasons: Counter = Counter()
    gaps = []
    bad = 0
    prev = run.t0
    for t, line in run.lines:
        try:
            obj = json.loads(line)
        except ValueError:
            bad += 1
            continue
        q = obj.get("query") or ""
        rel = q[len(prefix):] if q.startswith(prefix) else q
        if obj.get("error"):
            out[rel] = ("failed", classify(obj["error"]))
            reasons[reason_family(obj["error"])] += 1
        elif obj.get("hash"):
            out[rel] = ("ok", "")
        gaps.append((t - prev, rel))
        prev = t
    return out, reasons, gaps, bad


# --------------------------------------------------------------------------- per-file timing

PER_FILE = r"""
import json, sys, time, resource
from matcher.hashing.hashers import get_hasher
from matcher.imaging.images import DEFAULT_LIMITS, iter_image_files
from matcher.pipeline.photo import index_one, query_one
h = get_hasher("phash")
root = sys.argv[1]
for p in iter_image_files(root):
    row = {"path": str(p)[len(root) + 1:]}
    for fn in (index_one, query_one):
        t = time.perf_counter()
        try:
            out = fn(h, True, str(p), DEFAULT_LIMITS)
            row[fn.__name__] = [time.perf_counter() - t, out[0] if out[0] == "ok" else out[2]]
        except BaseException as e:
            row[fn.__name__] = [time.perf_counter() - t, "EXCEPTION " + type(e).__name__ + ": " + str(e)[:200]]
    row["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(row, ensure_ascii=True), flush=True)
"""


def per_file(corpus: Path, timeout: float) -> tuple[list[dict], Run]:
    r = Run([], timeout, line_timeout=timeout)
    r.cmd = [sys.executable, "-c", PER_FILE, str(corpus)]
    r.run()
    rows = []
    for _, line in r.lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows, r


# --------------------------------------------------------------------------- main


def _mb(kb: int) -> str:
    return f"{kb / 1024:,.0f} MB"


def report_run(label: str, run: Run, t: dict) -> list[str]:
    problems = []
    print(f"\n## {label}: {' '.join(run.args)}")
    print(f"exit {run.returncode}, {run.elapsed:.1f} s wall; peak memory: process tree {_mb(run.peak_tree_kb)} "
          f"(sum of RSS, sampled), largest process {_mb(run.peak_proc_kb)} (VmHWM); {len(run.procs_seen)} processes")
    print(f"files tried {t['tried']}: hashed {t['hashed']}, reported with a reason {t['reported']} "
          f"({', '.join(f'{k} {v}' for k, v in t['kinds'].most_common())}), "
          f"neither {len(t['missing'])}")
    print("reasons: " + "; ".join(f"{k} x{v}" for k, v in t["reasons"].most_common(12)))
    if run.crashed:
        problems.append(f"{label}: CRASH ({', '.join(run.crashed)})")
    if run.hang:
        problems.append(f"{label}: HANG ({run.hang})")
    if t["missing"]:
        problems.append(f"{label}: {len(t['missing'])} file(s) neither hashed nor reported: {t['missing'][:5]}")
    if t["unexpected"]:
        problems.append(f"{label}: {len(t['unexpected'])} unexpected outcome(s): {t['unexpected'][:5]}")
    if t["extra"]:
        print(f"note: {len(t['extra'])} result(s) for paths not in the listing (folders that could not be listed): "
              f"{[p[:60] + '...' if len(p) > 60 else p for p in t['extra'][:3]]}")
    tb = run.stderr.count("Traceback (most recent call last)")
    print(f"stderr: {len(run.stderr.splitlines())} lines, {tb} tracebacks")
    if tb:
        i = run.stderr.index("Traceback (most recent call last)")
        print(run.stderr[i : i + 3000])
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900, help="wall-clock bound per command (s)")
    ap.add_argument("--file-timeout", type=float, default=60, help="search: bound between two results (s)")
    ap.add_argument("--no-large", dest="large", action="store_false", help="corpus without the 100 MP images")
    ap.add_argument("--no-per-file", dest="per_file", action="store_false", help="skip the per-file timing pass")
    ap.add_argument("--work", type=Path, help="keep the corpus and index here (default: a temporary folder)")
    a = ap.parse_args()
    header("bench_hostile", count=a.count, seed=a.seed, workers=a.workers, timeout=f"{a.timeout:.0f} s per command",
           file_timeout=f"{a.file_timeout:.0f} s per search result", large=a.large,
           command=" ".join([Path(sys.executable).name, *sys.argv]))
    tmp = None
    if a.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-hostile-")
        work = Path(tmp.name)
    else:
        work = a.work
        work.mkdir(parents=True, exist_ok=True)
    corpus, index = work / "corpus", work / "index"
    try:
        t0 = time.monotonic()
        make = subprocess.run([sys.executable, str(MAKE), "--out", str(corpus), "--count", str(a.count), "--seed",
                               str(a.seed), *([] if a.large else ["--no-large"])], capture_output=True, text=True)
        if make.returncode != 0:
            print(make.stdout, make.stderr)
            return 2
        print(make.stdout.rstrip())
        listing = maker.read_listing(corpus)
        files = [r for r in listing if r["expect"] != "not_a_file"]
        print(f"# corpus written in {time.monotonic() - t0:.1f} s: {len(files)} files "
              f"({len(listing) - len(files)} directory entries)")
        problems: list[str] = []

        add = Run(["add", "--index", str(index), "--workers", str(a.workers), str(corpus)], a.timeout).run()
        outcomes, reasons = catalog_outcomes(index) if (index / "catalog.sqlite").exists() else ({}, Counter())
        t_add = tally("add", files, outcomes, reasons)
        problems += report_run("add", add, t_add)
        print(f"add says: {add.stderr.strip().splitlines()[-2:] if add.stderr.strip() else '(nothing)'}")

        info = subprocess.run([sys.executable, "-m", "matcher", "info", "--index", str(index), "--json"],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        if info.returncode != 0 or "Traceback" in info.stderr:
            problems.append(f"info: exit {info.returncode}: {info.stderr[-500:]}")
        else:
            data = json.loads(info.stdout)
            (ds,) = data["datasets"]
            n_items = len(outcomes)
            ok = ds["items"] == n_items and ds["hashed"] == sum(1 for s, _ in outcomes.values() if s == "ok")
            print(f"\ninfo: opens cleanly; {ds['items']} items ({ds['hashed']} hashed, {ds['failed']} failed), "
                  f"{data['entries']} entries; agrees with the catalog: {ok}")
            if not ok:
                problems.append("info: disagrees with the catalog")

        search = Run(["search", "--index", str(index), "--workers", str(a.workers), "--json", str(corpus)], a.timeout,
                     line_timeout=a.file_timeout).run()
        s_out, s_reasons, gaps, bad_lines = search_outcomes(search, corpus)
        t_search = tally("search", files, s_out, s_reasons)
        problems += report_run("search", search, t_search)
        if bad_lines:
            problems.append(f"search: {bad_lines} stdout line(s) that are not JSON")
        if gaps:
            print(f"first result after {gaps[0][0]:.2f} s (starting the workers included)")
        rest = sorted(gaps[1:], reverse=True)
        print("slowest results (gap since the previous one): " + "; ".join(f"{g:.2f} s {p[:70]}" for g, p in rest[:5]))

        if a.per_file:
            rows, pf = per_file(corpus, a.file_timeout)
            exc = [r for r in rows if any(str(v[1]).startswith("EXCEPTION") for k, v in r.items()
                                          if k in ("index_one", "query_one"))]
            print(f"\n## per file, one process (index_one + query_one each, timed alone): {len(rows)} files, "
                  f"{pf.elapsed:.1f} s; peak RSS {_mb(max([r['maxrss_kb'] for r in rows] or [0]))}")
            slow = sorted(rows, key=lambda r: -(r["index_one"][0] + r["query_one"][0]))
            for r in slow[:8]:
                print(f"  {r['index_one'][0] + r['query_one'][0]:7.2f} s  {r['path'][:80]}  "
                      f"(add: {r['index_one'][1]}, search: {r['query_one'][1]})")
            # the memory each large file needs: ru_maxrss grows at the file that raised it
            prev = 0
            for r in rows:
                if r["maxrss_kb"] > prev + 50 * 1024:
                    print(f"  peak RSS -> {_mb(r['maxrss_kb'])} at {r['path'][:80]}")
                prev = max(prev, r["maxrss_kb"])
            if exc:
                problems.append(f"per-file: {len(exc)} exception(s) out of the workers: {exc[:3]}")
            if pf.hang or pf.crashed:
                problems.append(f"per-file: {pf.hang or pf.crashed}")

        print("\n## summary")
        for t, run in ((t_add, add), (t_search, search)):
            print(f"{t['name']:>6}: tried {t['tried']}, hashed {t['hashed']}, reported {t['reported']}, "
                  f"unaccounted {len(t['missing'])}, crashes {len(run.crashed)}, hangs {int(bool(run.hang))}, "
                  f"{run.elapsed:.1f} s, peak tree {_mb(run.peak_tree_kb)}, largest process {_mb(run.peak_proc_kb)}")
        for p in problems:
            print("PROBLEM:", p)
        print("result:", "FAIL" if problems else "PASS")
        return 1 if problems else 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
