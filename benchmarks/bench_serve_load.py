"""Load test of the web check's JSON API (`matcher serve`): many concurrent clients on loopback, bounded in time.

1. **The index** (built once, cached under ``--work``): a real matcher index directory of ``--items``
   synthetic items, one ``full`` entry each, written through the library (``IndexStore.record``, then
   ``IndexStore.save``: the meta file, the SQLite catalog and the FAISS file ``matcher add`` writes,
   laid out as IVF above 125,000 entries). The codes are seeded random 64-bit codes
   (``bench_search_scale.make_codes``) with near-copies of every query photo's code planted at Hamming
   distance 0..10, so that searches return real matches. ``--thumb-fraction`` of the items (seeded
   random, planted copies included at the same rate) carry a 64x64 verification thumbnail; the others
   have none, and the server returns their candidates with ``thumbs`` null (a client then accepts
   them on distance alone).
2. **The server**: ``matcher serve --index DIR --host 127.0.0.1 --port <free> --rate-limit 0`` as a
   subprocess; ready when ``GET /api/v1/health`` answers 200 (at most ``--startup-timeout`` s).
3. **The load**: ``--clients`` concurrent clients (aiohttp, one keep-alive connection each), each
   sending ``POST /api/v1/search`` requests back to back for ``--duration`` s: ``--photos-per-request``
   photos of ``--hashes-per-photo`` hashes each, named like the recipe's variants (``id/full`` first).
   Like a real photo that is in the dataset, a few hashes (``--near-hashes``: the photo's code, then
   that code with 1, 2, ... bits flipped) lie near the planted copies and the rest are random codes.
   At the same time a second client sends ``--malformed-rate`` malformed requests per second (bad
   JSON, bad hex, wrong hash length, an oversized body, too many photos, a wrong content type, a
   schema violation) and counts the status codes: every one must be 4xx.

Bounded: every request has a timeout (``--request-timeout``), the load phase an overall deadline
(duration + request timeout + 5 s), the server is stopped (SIGTERM, then SIGKILL) whatever happens.

Exit status 1 if any request got a 5xx, any load request failed to connect, timed out or got
anything but 200 or 429, any malformed request got anything but a 4xx, or the server did not come up.
A 429 (the server's search queue is full) is counted and reported; the client then waits the
Retry-After it was given, as the page does.

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_serve_load.py            # 1M items, 100 clients, 60 s
    .venv/bin/python benchmarks/bench_serve_load.py --quick                                 # 20K items, 10 clients, 5 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as matcher/index.py does; before FAISS loads

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search_scale import MAX_PLANT_DISTANCE, make_codes, pct  # noqa: E402
from common import header  # noqa: E402

from matcher.index.catalog import ItemRecord  # noqa: E402
from matcher.engine.api import DEFAULT_THRESHOLD  # noqa: E402
from matcher.engine.recipe import recipe  # noqa: E402
from matcher.index.store import IndexStore  # noqa: E402
from matcher.hashing.verify import THUMB, encode_thumb  # noqa: E402

DATASET = "synthetic"
QUICK = {"items": 20_000, "clients": 10, "duration": 5.0, "query_photos": 50, "request_timeout": 10.0,
         "startup_timeout": 20.0}
FULL = {"items": 1_000_000, "clients": 100, "duration": 60.0, "query_photos": 200, "request_timeout": 30.0,
        "startup_timeout": 120.0}


# the index ---------------------------------------------------------------------------------------
def item_key(pos: int) -> str:
    """The catalog key of the item whose code is ``codes[pos]`` (items are stored in code order)."""
    return f"{pos + 1:010d}"


def _thumb(rng: np.random.Generator) -> bytes:
    """A smooth random 64x64 grey thumbnail, PNG (what verification thumbnails look like, roughly)."""
    from PIL import Image

    small = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")
    return encode_thumb(np.asarray(small.resize((THUMB, THUMB), Image.Resampling.BILINEAR)))


def index_name(args) -> str:
    return f"index-n{args.items}-q{args.query_photos}-s{args.seed}-t{args.thumb_fraction:g}"


def build_index(root: Path, codes: np.ndarray, where: np.ndarray, args, batch: int = 50_000) -> dict:
    """Write ``codes`` as an index at ``root`` through IndexStore (one ``full`` entry per item)."""
    n = len(codes)
    rng = np.random.default_rng(args.seed + 1)
    with_thumb = np.zeros(n, bool)
    with_thumb[rng.choice(n, int(round(args.thumb_fraction * n)), replace=False)] = True
    planted = np.zeros(n, bool)
    planted[where.ravel()] = True
    distance = np.full(n, -1, np.int16)
    distance[where.ravel()] = np.tile(np.arange(where.shape[1]), where.shape[0])
    t0 = time.perf_counter()
    with IndexStore.open(root, create=True, writable=True) as store:
        for start in range(0, n, batch):
            records = []
            for pos in range(start, min(n, start + batch)):
                code = codes[pos].tobytes()
                thumb = _thumb(rng) if with_thumb[pos] else None
                title = f"synthetic photo {pos + 1}"
                if planted[pos]:
                    title += f" (near-copy of a query photo, distance {distance[pos]})"
                records.append(ItemRecord(
                    DATASET, item_key(pos),
                    fields={"url": f"https://img.example.org/{pos + 1:010d}.jpg",
                            "page_url": f"https://photos.example.org/p/{pos + 1}",
                            "owner": f"user{pos % 100_003}", "license": "CC BY 2.0", "title": title},
                    width=640, height=480, hash_hex=code.hex(), codes=[("full", code, thumb)]))
            store.record(records, save_every=1e9)  # one FAISS save at the end (laid out for the final size)
        records_s = time.perf_counter() - t0
        store.save()
        layout, nlist = store.faiss.layout, store.faiss.nlist
    total_s = time.perf_counter() - t0
    return {"items": n, "thumbs": int(with_thumb.sum()), "planted_thumbs": int(with_thumb[planted].sum()),
            "planted": int(planted.sum()), "build_s": round(total_s, 1), "catalog_s": round(records_s, 1),
            "layout": layout, "nlist": nlist}


def ensure_index(args, codes: np.ndarray, where: np.ndarray) -> tuple[Path, dict, bool]:
    """The cached index for these parameters, built if missing or incomplete. (path, build info, built now)"""
    work = Path(args.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    root = work / index_name(args)
    done = root.with_name(root.name + ".done.json")
    if done.exists() and (root / "meta.json").exists():
        info = json.loads(done.read_text())
        with IndexStore.open(root) as store:  # read-only: a sanity check of the cached files
            if len(store.faiss) == args.items and store.catalog.entries_count == args.items:
                return root, info, False
        print(f"# cached index {root} does not hold {args.items} entries: rebuilding", flush=True)
    if root.exists():
        shutil.rmtree(root)
    done.unlink(missing_ok=True)
    print(f"# building the index: {args.items:,} items at {root} ...", flush=True)
    info = build_index(root, codes, where, args)
    done.write_text(json.dumps(info, indent=2) + "\n")
    return root, info, True


# the server --------------------------------------------------------------------------------------
def matcher_command() -> list[str]:
    exe = Path(sys.executable).with_name("matcher")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "matcher"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def tree_rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes of ``pid`` and its descendants (0, 0 once gone)."""
    rss = hwm = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return rss, hwm


def _die_with_parent() -> None:
    """In the server's process: SIGTERM when this script dies (even by SIGKILL, e.g. a test's timeout)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


class Server:
    """``matcher serve`` on a free loopback port, as a subprocess in a session of its own."""

    def __init__(self, index: Path, extra: list[str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [*matcher_command(), "serve", "--index", str(index), "--host", "127.0.0.1",
                    "--port", str(self.port), "--rate-limit", "0", *extra]
        self.log_path = log
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=_die_with_parent,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM to the server's process group, SIGKILL after 10 s. Returns its exit status."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                print("# the server did not stop within 10 s of SIGTERM: SIGKILL", flush=True)
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode


async def wait_healthy(server: Server, timeout: float) -> dict:
    import aiohttp

    deadline = time.monotonic() + timeout
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {server.proc.returncode} before it was ready")
            try:
                async with s.get(server.url + "/api/v1/health") as r:
                    if r.status == 200:
                        return await r.json()
                    last = f"status {r.status}"
                    if r.status >= 500 and r.status != 503:  # a server error, not "starting up"
                        raise RuntimeError(f"GET /api/v1/health answered {r.status}: {(await r.read())[:300]!r}")
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                last = f"{type(e).__name__}: {e}"
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the server was not healthy within {timeout:.0f} s ({last})")


# the requests ------------------------------------------------------------------------------------
def variant_names(n: int) -> list[str]:
    """``n`` hash kinds as a photo search names them: the recipe's variants, then face crops."""
    names = [v["name"] for v in recipe()["variants"]]
    faces = recipe()["faces"]
    k = 0
    while len(names) < n:
        for scale in faces["scales"]:
            for dx, dy in faces["shifts"]:
                names.append(f"face{k}/x{scale:g}@{dx:+d}{dy:+d}")
        k += 1
    return names[:n]


def flip(code: np.ndarray, nbits: int, rng: np.random.Generator) -> np.ndarray:
    bits = np.unpackbits(code)
    bits[rng.choice(len(bits), nbits, replace=False)] ^= 1
    return np.packbits(bits)


def make_photos(q: np.ndarray, args) -> list[dict]:
    """One request photo per query code: near hashes (the code, then with 1, 2, ... bits flipped), then random."""
    rng = np.random.default_rng(args.seed + 2)
    names = variant_names(args.hashes_per_photo)
    near = min(args.near_hashes, args.hashes_per_photo)
    photos = []
    for i, code in enumerate(q):
        codes = [code if j == 0 else flip(code, j, rng) for j in range(near)]
        codes += list(np.frombuffer(rng.bytes(8 * (args.hashes_per_photo - near)), np.uint8).reshape(-1, 8))
        photos.append({"id": f"photo-{i}", "hashes": [{"kind": k, "hash": c.tobytes().hex()}
                                                      for k, c in zip(names, codes)]})
    return photos


def make_bodies(photos: list[dict], args) -> list[tuple[bytes, list[int]]]:
    """Pre-encoded request bodies (so the clients spend no CPU on JSON), with the photo indexes in each."""
    out = []
    p = args.photos_per_request
    for start in range(0, len(photos), p):
        idx = [(start + j) % len(photos) for j in range(p)]
        body = {"photos": [photos[i] for i in idx], "thumbnails": args.request_thumbnails}
        out.append((json.dumps(body, separators=(",", ":")).encode(), idx))
    return out


def malformed_requests(args, photo: dict) -> list[tuple[str, bytes, str]]:
    """(kind, body, content type): every one must be answered 4xx."""
    def js(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    one = {"id": "x", "hashes": [{"kind": "id/full", "hash": photo["hashes"][0]["hash"]}]}
    big = js({"photos": [photo], "thumbnails": False, "pad": "x" * args.oversized_bytes})
    return [
        ("bad_json", b'{"photos": [{"id": "x", "hashes": [', "application/json"),
        ("bad_hex", js({"photos": [{"id": "x", "hashes": [{"kind": "id/full", "hash": "zz" * 8}]}]}), "application/json"),
        ("wrong_length", js({"photos": [{"id": "x", "hashes": [{"kind": "id/full", "hash": "abc" * 5}]}]}),
         "application/json"),
        ("oversized", big, "application/json"),
        ("too_many_photos", js({"photos": [dict(one, id=f"p{i}") for i in range(args.max_photos + 1)],
                                "thumbnails": False}), "application/json"),
        ("wrong_content_type", js({"photos": [one], "thumbnails": False}), "text/plain"),
        ("schema", js({"photos": "not a list"}), "application/json"),
    ]


class Stats:
    def __init__(self):
        self.lat: list[float] = []
        self.lat_status: list[int] = []
        self.status: Counter = Counter()
        self.errors: Counter = Counter()  # connection errors and timeouts, by exception type
        self.error_examples: list[str] = []
        self.bad_bodies = 0  # 200 answers whose JSON was not as expected
        self.busy = 0  # 429 answers (the server's search queue was full); the client waited Retry-After
        self.photos = 0
        self.candidates = 0
        self.planted_expected = 0
        self.planted_found = 0
        self.thumbs = 0


async def load_client(url: str, bodies, planted_keys: list[set[str]], stop_at: float, offset: int, args,
                      st: Stats) -> None:
    import aiohttp

    conn = aiohttp.TCPConnector(limit=1, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        k = offset
        while time.monotonic() < stop_at:
            body, idx = bodies[k % len(bodies)]
            k += 1
            t0 = time.perf_counter()
            try:
                async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    data = await r.read()
                    status = r.status
                    retry_after = r.headers.get("Retry-After")
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                st.errors[type(e).__name__] += 1
                if len(st.error_examples) < 5:
                    st.error_examples.append(f"{type(e).__name__}: {e}")
                continue
            st.lat.append(time.perf_counter() - t0)
            st.lat_status.append(status)
            st.status[status] += 1
            if status == 429:  # the server is busy (its search queue is full): wait as told, as a browser does
                st.busy += 1
                try:
                    wait = float(retry_after or 1)
                except ValueError:
                    wait = 1.0
                await asyncio.sleep(max(0.0, min(wait, stop_at - time.monotonic())))
                continue
            if status != 200:
                if len(st.error_examples) < 5:
                    st.error_examples.append(f"status {status}: {data[:300]!r}")
                continue
            try:
                results = json.loads(data)["results"]
                by_id = {res["id"]: res for res in results}
                for i in idx:
                    cands = by_id[f"photo-{i}"]["candidates"]
                    keys = {c["item"]["key"] for c in cands}
                    st.photos += 1
                    st.candidates += len(cands)
                    st.planted_expected += len(planted_keys[i])
                    st.planted_found += len(planted_keys[i] & keys)
                    st.thumbs += sum(1 for c in cands for t in (c.get("thumbs") or {}).values() if t)
            except (ValueError, KeyError, TypeError) as e:
                st.bad_bodies += 1
                if len(st.error_examples) < 5:
                    st.error_examples.append(f"unexpected 200 body ({type(e).__name__}: {e}): {data[:300]!r}")


async def malformed_client(url: str, reqs, stop_at: float, args, out: dict) -> None:
    """``--malformed-rate`` requests per second, cycling through the kinds; one keep-alive connection."""
    import aiohttp

    conn = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    period = 1.0 / args.malformed_rate
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        k = 0
        next_at = time.monotonic()
        while time.monotonic() < stop_at:
            kind, body, ctype = reqs[k % len(reqs)]
            k += 1
            try:
                async with s.post(url, data=body, headers={"Content-Type": ctype}) as r:
                    await r.read()
                    out.setdefault(kind, Counter())[r.status] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                out.setdefault(kind, Counter())[type(e).__name__] += 1
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def sample_rss(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], tree_rss(pid)[0])
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


async def run_load(server: Server, bodies, planted_keys, malformed, args) -> dict:
    url = server.url + "/api/v1/search"
    st = Stats()
    mal: dict[str, Counter] = {}
    peak = [tree_rss(server.proc.pid)[0]]
    cpu0 = tree_cpu(server.proc.pid)
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server.proc.pid, stop, peak))
    t0 = time.monotonic()
    stop_at = t0 + args.duration
    tasks = [asyncio.create_task(load_client(url, bodies, planted_keys, stop_at, c * 7, args, st))
             for c in range(args.clients)]
    if args.malformed_rate > 0:
        tasks.append(asyncio.create_task(malformed_client(url, malformed, stop_at, args, mal)))
    deadline = args.duration + args.request_timeout + 5
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    elapsed = time.monotonic() - t0
    for t in pending:  # only if the per-request timeouts failed to bound a client
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    for t in done:
        if t.exception() is not None:
            st.errors[f"client crashed: {type(t.exception()).__name__}"] += 1
            st.error_examples.append(repr(t.exception()))
    stop.set()
    await sampler
    return {"stats": st, "malformed": mal, "elapsed": elapsed, "stuck_clients": len(pending), "peak_rss": peak[0],
            "server_cpu": tree_cpu(server.proc.pid) - cpu0}


# the report --------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"small and short (for the tests): {QUICK['items']:,} items, {QUICK['clients']} clients, "
                         f"{QUICK['duration']:g} s (explicit options still win)")
    ap.add_argument("--items", type=lambda s: int(float(s)), default=None, help="index size (default 1,000,000)")
    ap.add_argument("--clients", type=int, default=None, help="concurrent load clients (default 100)")
    ap.add_argument("--duration", type=float, default=None, help="seconds of load (default 60)")
    ap.add_argument("--query-photos", type=int, default=None,
                    help="distinct query photos, each with 11 planted near-copies in the index (default 200)")
    ap.add_argument("--hashes-per-photo", type=int, default=150, help="hashes per photo (a real photo: ~150)")
    ap.add_argument("--near-hashes", type=int, default=4,
                    help="of them, near the photo's planted copies (the code, then with 1, 2, ... bits flipped)")
    ap.add_argument("--photos-per-request", type=int, default=1)
    ap.add_argument("--request-thumbnails", action="store_true", help='ask for thumbnails ("thumbnails": true)')
    ap.add_argument("--thumb-fraction", type=float, default=0.01,
                    help="share of items with a verification thumbnail (0: none; the rest are accepted on distance)")
    ap.add_argument("--malformed-rate", type=float, default=20.0, help="malformed requests per second (0: none)")
    ap.add_argument("--oversized-bytes", type=int, default=4 << 20, help="size of the oversized request body")
    ap.add_argument("--max-photos", type=int, default=64, help="the server's --max-photos (too_many sends one more)")
    ap.add_argument("--request-timeout", type=float, default=None, help="per request, seconds (default 30)")
    ap.add_argument("--startup-timeout", type=float, default=None,
                    help="seconds for the server to become healthy (default 120)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(Path.home() / ".cache/matcher/serve-load"),
                    help="where the index is built and cached (never the repository)")
    args = ap.parse_args()
    for k, default in FULL.items():
        if getattr(args, k) is None:
            setattr(args, k, QUICK[k] if args.quick else default)

    header("bench_serve_load", items=f"{args.items:,}", clients=args.clients, duration=f"{args.duration:g} s",
           query_photos=f"{args.query_photos} (each with near-copies planted at distance 0..{MAX_PLANT_DISTANCE})",
           request=f"{args.photos_per_request} photo(s) x {args.hashes_per_photo} hashes "
                   f"({args.near_hashes} near the planted copies, the rest random), "
                   f"thumbnails {'true' if args.request_thumbnails else 'false'}",
           malformed_rate=f"{args.malformed_rate:g} req/s", request_timeout=f"{args.request_timeout:g} s",
           threshold=f"{DEFAULT_THRESHOLD} (server default)", seed=args.seed, work=args.work,
           load_average=" ".join(f"{x:.2f}" for x in os.getloadavg()))

    t0 = time.perf_counter()
    codes, _ids, q, where = make_codes(args.items, args.query_photos, args.seed)
    gen_s = time.perf_counter() - t0
    root, info, built = ensure_index(args, codes, where)
    planted_keys = [{item_key(int(p)) for p in where[i]} for i in range(len(q))]
    del codes, _ids
    thumbs = (f"{info['thumbs']:,} items ({args.thumb_fraction:.1%}) have a verification thumbnail, "
              f"{info['planted_thumbs']} of the {info['planted']:,} planted copies; the others have none "
              "(the server returns them with thumbs null: accepted on distance alone)"
              if info["thumbs"] else "no item has a verification thumbnail: every candidate is accepted on distance alone")
    print(f"# index: {root} ({'built now' if built else 'cached'}: {info['items']:,} items, FAISS {info['layout']}"
          f"{' ' + str(info['nlist']) + ' lists' if info['nlist'] else ''}, built in {info['build_s']:.1f} s, "
          f"of which catalog + FAISS adds {info['catalog_s']:.1f} s; codes generated in {gen_s:.1f} s)")
    print(f"# thumbnails: {thumbs}")
    size = sum(p.stat().st_size for p in root.iterdir() if p.is_file())
    print(f"# index size on disk: {size / 1e6:,.0f} MB", flush=True)
    if built:
        info_out = subprocess.run([*matcher_command(), "info", "--index", str(root)], capture_output=True,
                                  text=True, timeout=300)
        print(f"# matcher info --index {root}: exit {info_out.returncode}")
        for line in (info_out.stdout + info_out.stderr).splitlines():
            print(f"#   {line}")
        if info_out.returncode != 0:
            return 1

    photos = make_photos(q, args)
    bodies = make_bodies(photos, args)
    malformed = malformed_requests(args, photos[0])

    log = Path(tempfile.mkstemp(prefix="serve-load-", suffix=".log")[1])
    server = Server(root, ["--max-photos", str(args.max_photos)], log)
    print(f"# server: {' '.join(server.cmd)} (log {log})", flush=True)
    failures: list[str] = []
    try:
        t0 = time.monotonic()
        try:
            health = asyncio.run(wait_healthy(server, args.startup_timeout))
        except RuntimeError as e:
            print(f"FAIL: {e}\n# server log:\n{server.log_tail()}")
            return 1
        startup_s = time.monotonic() - t0
        idle_rss = tree_rss(server.proc.pid)[0]
        print(f"# server ready in {startup_s:.1f} s: {health}; RSS {idle_rss / 1e6:,.0f} MB", flush=True)
        res = asyncio.run(run_load(server, bodies, planted_keys, malformed, args))
        end_rss, hwm = tree_rss(server.proc.pid)
        alive = server.proc.poll() is None
    finally:
        rc = server.stop()
    st: Stats = res["stats"]
    n = len(st.lat)
    ok = st.status.get(200, 0)
    elapsed = res["elapsed"]
    five = sum(v for k, v in st.status.items() if k >= 500)
    hashes = ok * args.photos_per_request * args.hashes_per_photo

    print()
    print(f"requests completed: {n:,} in {elapsed:.1f} s ({ok:,} answered 200)")
    print(f"throughput: {ok / elapsed:,.1f} requests/s, {hashes / elapsed:,.0f} hashes/s "
          f"({ok * args.photos_per_request / elapsed:,.1f} photos/s; over the {elapsed:.1f} s from the first "
          "request to the last answer)")
    if st.busy:
        print(f"busy: {st.busy:,} searches answered 429 (the server's search queue was full); "
              "each client then waited Retry-After")
    ms = [x * 1e3 for x, s in zip(st.lat, st.lat_status) if s == 200]
    if ms:
        print(f"latency ms (200 answers): p50 {pct(ms, 50):,.1f}  p90 {pct(ms, 90):,.1f}  p99 {pct(ms, 99):,.1f}  max {max(ms):,.1f}")
    print(f"status codes: {dict(sorted(st.status.items()))}; 5xx: {five}")
    print(f"connection errors / timeouts: {sum(st.errors.values())} {dict(st.errors) or ''}")
    if st.photos:
        print(f"matches: {st.candidates / st.photos:.1f} candidates per photo; planted near-copies found "
              f"{st.planted_found:,} / {st.planted_expected:,} ({st.planted_found / st.planted_expected:.4f}); "
              f"thumbnails returned {st.thumbs}; unexpected 200 bodies {st.bad_bodies}")
    if st.error_examples:
        print("examples: " + " | ".join(st.error_examples[:5]))
    mal_total = Counter()
    for c in res["malformed"].values():
        mal_total.update(c)
    mal_bad = {kind: {k: v for k, v in c.items() if not (isinstance(k, int) and 400 <= k < 500)}
               for kind, c in res["malformed"].items()}
    mal_bad = {k: v for k, v in mal_bad.items() if v}
    if args.malformed_rate > 0:
        print(f"malformed requests: {sum(mal_total.values()):,}; "
              + "; ".join(f"{kind} {dict(sorted(c.items(), key=str))}" for kind, c in res["malformed"].items()))
        print(f"malformed requests not answered 4xx: {sum(sum(v.values()) for v in mal_bad.values())} {mal_bad or ''}")
    print(f"server RSS: {idle_rss / 1e6:,.0f} MB idle after start, {res['peak_rss'] / 1e6:,.0f} MB peak sampled "
          f"under load, {end_rss / 1e6:,.0f} MB at the end (VmHWM {hwm / 1e6:,.0f} MB)")
    print(f"server CPU: {res['server_cpu']:.1f} s over the {elapsed:.1f} s of load ({res['server_cpu'] / elapsed:.2f} of "
          f"{os.cpu_count()} cores; load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print(f"server: {'alive' if alive else 'DEAD'} at the end of the load; exit status after SIGTERM: {rc}")

    if five:
        failures.append(f"{five} responses were 5xx")
    if st.errors:
        failures.append(f"{sum(st.errors.values())} load requests failed (connection error / timeout)")
    if n - ok - st.busy:
        failures.append(f"{n - ok - st.busy} load requests were answered with a status other than 200 or 429")
    if st.bad_bodies:
        failures.append(f"{st.bad_bodies} 200 answers did not have the expected JSON")
    if res["stuck_clients"]:
        failures.append(f"{res['stuck_clients']} clients did not finish by the deadline")
    if mal_bad:
        failures.append(f"malformed requests not answered 4xx: {mal_bad}")
    if not alive:
        failures.append("the server died during the load")
    if not ok:
        failures.append("no request was answered 200")
    if failures:
        print("FAIL: " + "; ".join(failures))
        print(f"# server log (last lines):\n{server.log_tail()}")
        return 1
    print("OK: no 5xx, no connection errors, every malformed request answered 4xx")
    log.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
