#!/usr/bin/env python3
"""Crash safety, measured: kill -9 ``matcher add`` (local engine and Dask), ``matcher remove`` and ``matcher
compact`` at --kills points each, and check after every kill that nothing was lost, duplicated or left
inconsistent.

The corpus: --web URL rows (distinct re-encodings of the bundled sample's real photos, served on
127.0.0.1 by a threaded server in this process, each response after --delay s, so that an add spans
several of its once-a-second commits; `--allow-private-urls`) plus three rows that fail (404, an HTML
page, no URL), and a folder of --disk image files: two datasets, ``web`` and ``disk``.

Kills (seeded): half at named points of matcher/testpoints.py (the process stops itself there with
SIGSTOP, ``MATCHER_TEST_PAUSE_AT``, and is then SIGKILLed: in the catalog transaction, before and after the
FAISS file's rename, during index creation, after the remove/compact commits, after a Dask shard was
applied and before its files were deleted), half after a random delay
drawn over the command's measured duration; each kills the whole process group or only the main process
(a seeded coin). A kill that misses (the command finished first) is replaced by another random one.

* add (local, Dask): episodes of up to 3 kills on one index, each run resuming the last; every 3rd episode
  starts from a complete index whose ``disk`` dataset was removed (tombstones: the add brings it back and
  its final save compacts). Each episode ends with a rerun to completion, compared with a clean run:
  every manifest item exactly once, same statuses, same hashes, FAISS file in step.
* remove: on copies of a complete index (every other one, and those killed at a FAISS point, with its FAISS
  file deleted first so the remove's open rebuilds it), a random selection (keys, a URL, the ``disk``
  dataset). Afterwards it happened entirely or not at all (entirely if it had reported success); a
  rerun completes it; searches never return removed items.
* compact: on copies with 8 items removed. Afterwards searches never return them; a rerun leaves FAISS
  holding exactly the live entries.

After every kill (tests/crashkit.py ``check``): ``matcher info`` (a real process) exits 0; SQLite integrity;
no duplicate (dataset, key), unique entry ids, one full entry per hashed item; FAISS (read-only open)
holds every live entry id once and nothing but tombstones besides; a FAISS file whose trailer says "in
step" really is; a writable open (on a copy) leaves a file the next open trusts; sampled items are found
by their own code; every item hashed before the kill is still there with the same entry ids.

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_crash.py [--kills 20] [--seed 7]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import header  # noqa: E402

import crashkit as ck  # noqa: E402

ADD_POINTS = ["create.meta-written", "catalog.record:1", "catalog.record:3", "faiss.before-rename",
              "faiss.after-rename"]
DASK_POINTS = ADD_POINTS + ["shards.applied:2"]
REMOVE_POINTS = ["catalog.remove", "remove.committed", "faiss.before-rename", "faiss.after-rename"]
COMPACT_POINTS = ["catalog.clear-tombstones", "compact.committed", "faiss.before-rename", "faiss.after-rename"]


def timed(args: list[str], log: Path) -> float:
    t = time.monotonic()
    rc = ck.run(args, log)
    if rc != 0:
        raise SystemExit(f"matcher {args[0]} failed ({rc}): {log.read_text()[-2000:]}")
    return time.monotonic() - t


def topped_up(run_batch, kills: list[ck.Kill], need: int, rng: random.Random, duration: float,
              work: Path) -> list[ck.Record]:
    """Run ``kills`` (``run_batch(kills, work dir)``); while fewer than ``need`` landed, run more random ones."""
    records = run_batch(kills, work / "batch-0")
    while sum(r.outcome.killed for r in records if r.kill.point or r.kill.delay is not None) < need:
        extra = [ck.Kill(delay=rng.uniform(0.05, duration), group=rng.random() < 0.5)]
        records += run_batch(extra, work / f"batch-{len(records)}")
    return records


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20, help="kills that land, per operation")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--web", type=int, default=480, help="URL rows served on 127.0.0.1 (+3 failing rows)")
    ap.add_argument("--disk", type=int, default=160, help="image files in the folder source")
    ap.add_argument("--delay", type=float, default=0.05,
                    help="seconds the server waits before each response (8 downloads in flight per host)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=25)
    ap.add_argument("--ops", default="add-local,add-dask,remove,compact")
    ap.add_argument("--info", choices=["process", "inprocess"], default="process",
                    help="run `matcher info` as a process after each kill (default) or through click's runner")
    ap.add_argument("--work", type=Path, default=None, help="work directory (default: a temporary one)")
    a = ap.parse_args()
    ops = a.ops.split(",")
    header("bench_crash", kills_per_operation=a.kills, seed=a.seed, web_rows=f"{a.web} + 3 failing", disk_files=a.disk,
           server_delay=f"{a.delay} s per response", load_average=" ".join(f"{x:.1f}" for x in os.getloadavg()),
           workers=a.workers, dask=f"LocalCluster 2 workers x 1 thread, --shard-size {a.shard_size}", operations=ops,
           named_points={"add": ADD_POINTS, "add dask": DASK_POINTS, "remove": REMOVE_POINTS, "compact": COMPACT_POINTS},
           info=f"`matcher info --json` {'as a process' if a.info == 'process' else 'in-process (click runner)'}")
    info = ck.cli_info_subprocess if a.info == "process" else ck.cli_info_inprocess
    rng = random.Random(a.seed)
    t_start = time.monotonic()
    tmp = None
    if a.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-crash-")
        a.work = Path(tmp.name)
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    corpus = ck.make_corpus(work / "corpus", a.web, a.disk, seed=a.seed, delay=a.delay)
    records: list[ck.Record] = []
    try:
        ref = work / "reference" / "index"
        shutil.rmtree(ref.parent, ignore_errors=True)
        ref.parent.mkdir(parents=True)
        t_local = timed(ck.add_args(ref, corpus, "local", workers=a.workers), ref.parent / "add.log")
        chk = ck.check(ref, info=info)
        assert chk.consistent and set(chk.snap) == corpus.keys, chk.summary()
        reference, hashes = chk.snap, ck.item_hashes(ref)
        print(f"# reference: a clean local add of {len(reference)} items ({chk.ok} ok, {chk.failed} failed, "
              f"{chk.entries} entries) took {t_local:.1f} s", flush=True)

        def prepare(ep: int, index: Path) -> str:
            if ep % 3:
                return ""
            from matcher.engine.api import remove

            shutil.copytree(ref, index)
            n = remove(index, dataset=ck.DISK)["items"]
            return f"a complete index with dataset {ck.DISK!r} removed ({n} items tombstoned)"

        if "add-local" in ops:
            kills = ck.draw_kills(rng, a.kills, ADD_POINTS, t_local)
            records += ck.add_campaign(
                "add local", lambda index: ck.add_args(index, corpus, "local", workers=a.workers), kills, work,
                reference, hashes, info=info, rng=rng, need=a.kills, prepare=prepare,
                more=lambda i: ck.Kill(delay=rng.uniform(0.05, t_local), group=rng.random() < 0.5))

        if "add-dask" in ops:
            import dask
            from distributed import LocalCluster

            with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
                    LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                 memory_limit="2GiB") as lc:
                def args_for(index: Path) -> list[str]:
                    return ck.add_args(index, corpus, "dask", lc.scheduler_address, shard_size=a.shard_size)

                dref = work / "reference-dask" / "index"
                shutil.rmtree(dref.parent, ignore_errors=True)
                dref.parent.mkdir(parents=True)
                t_dask = timed(args_for(dref), dref.parent / "add.log")
                dchk = ck.check(dref, info=info)
                ck.final_check(dchk, reference, hashes=hashes, index=dref)
                assert dchk.consistent, dchk.summary()
                print(f"# reference: a clean Dask add took {t_dask:.1f} s (same items, statuses and hashes as local)",
                      flush=True)
                kills = ck.draw_kills(rng, a.kills, DASK_POINTS, t_dask)
                records += ck.add_campaign(
                    "add dask", args_for, kills, work, reference, hashes, info=info, rng=rng, need=a.kills,
                    prepare=prepare, more=lambda i: ck.Kill(delay=rng.uniform(0.05, t_dask), group=rng.random() < 0.5))

        if "remove" in ops:
            probe = work / "remove-timing"
            shutil.rmtree(probe, ignore_errors=True)
            shutil.copytree(ref, probe / "index")
            t_remove = timed(["remove", "--index", str(probe / "index"), "--dataset", ck.DISK], probe / "log")
            print(f"# a clean `matcher remove --dataset {ck.DISK}` took {t_remove:.1f} s", flush=True)
            kills = ck.draw_kills(rng, a.kills, REMOVE_POINTS, t_remove)
            records += topped_up(lambda ks, w: ck.remove_campaign(ks, ref, w, info=info, rng=rng), kills, a.kills, rng,
                                 t_remove, work / "remove")

        if "compact" in ops:
            probe = work / "compact-timing"
            shutil.rmtree(probe, ignore_errors=True)
            probe.mkdir()
            ck.with_tombstones(ref, probe / "index", 8, rng)
            t_compact = timed(["compact", "--index", str(probe / "index")], probe / "log")
            print(f"# a clean `matcher compact` (8 items removed) took {t_compact:.1f} s", flush=True)
            kills = ck.draw_kills(rng, a.kills, COMPACT_POINTS, t_compact)
            records += topped_up(lambda ks, w: ck.compact_campaign(ks, ref, w, info=info, rng=rng), kills, a.kills,
                                 rng, t_compact, work / "compact")
    finally:
        corpus.close()
        if tmp is not None:
            tmp.cleanup()

    print()
    print(f"# summary ({(time.monotonic() - t_start) / 60:.1f} min)")
    print(f"{'operation':10s} {'kills':>5s} {'survived':>8s} {'missed':>6s} {'checks':>6s} {'inconsistent':>12s} "
          f"{'lost':>4s} {'duplicated':>10s}  named points hit")
    summary = ck.summarize(records)
    bad = 0
    for op, s in summary.items():
        hit: dict[str, int] = {}
        for r in records:
            if r.op == op and r.kill.point and r.outcome.killed:
                hit[r.kill.point] = hit.get(r.kill.point, 0) + 1
        print(f"{op:10s} {s['kills']:5d} {s['survived']:8d} {s['missed']:6d} {s['checks']:6d} {s['inconsistent']:12d} "
              f"{s['lost']:4d} {s['duplicated']:10d}  {', '.join(f'{k} x{v}' for k, v in hit.items())}")
        bad += s["inconsistent"] + s["lost"] + s["duplicated"]
    total = {k: sum(s[k] for s in summary.values()) for k in ("kills", "survived", "inconsistent", "lost", "duplicated")}
    print(f"# load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"total: {total['kills']} kills, {total['survived']} survived, {total['inconsistent']} inconsistencies, "
          f"{total['lost']} items lost, {total['duplicated']} duplicated")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
