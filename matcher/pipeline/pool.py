"""Worker processes that run the per-image pipeline (:mod:`matcher.pipeline.photo`): a pool started by a
fork server, tasks that survive a worker's death (the photos in flight rerun one at a time), batches of files.

The pool knows nothing of images: it runs picklable calls and tells which input killed a worker.
"""

from __future__ import annotations

import os
import threading
import sys
from typing import Any


__all__ = ["Batches", "Workers", "Task", "CRASH_REASON", "make_pool"]


def make_pool(workers: int):
    """A process pool whose workers are started by a fork server, not forked from us.

    Forked workers would inherit the index's write lock and the downloader's threads: a
    killed ``add`` would leave its orphaned workers holding the lock. Fork-server workers
    inherit neither, and exit when their parent dies.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _quiet_resource_tracker()
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def _quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker with its stderr on /dev/null (once per process).

    The pool's semaphores are registered with that helper process. When it is killed along with the
    workers (``kill -9`` of every child, the OOM killer), multiprocessing starts another one, warns "process
    died unexpectedly", and the new one prints a KeyError traceback for each semaphore its predecessor knew,
    on our stderr, after a search that answered for every photo. Its only other output is a warning about
    semaphores leaked by killed processes, which it then cleans up: nothing a user can act on.
    """
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    if getattr(tracker, "_matcher_quiet", False):
        return
    launch = tracker.ensure_running
    # One at a time: the pool's threads may relaunch the tracker together, and two overlapping swaps would
    # leave fd 2 on /dev/null for good (the second saves the first's /dev/null and restores it last).
    swapping = threading.Lock()

    def ensure_running() -> None:
        with swapping:
            sys.stderr.flush()
            saved = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, 2)  # what a (re)launched tracker inherits as its stderr
                launch()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(null)

    tracker.ensure_running = ensure_running
    tracker._matcher_quiet = True


#: Jobs of at most this many files run in the calling process (:class:`Batches`), as a search of a few photos does.
SMALL_JOB = 4

#: Why a file has no result when the worker process handling it died twice (the OOM killer, a decoder crash).
CRASH_REASON = "a worker process died on this file twice (out of memory, or a crashing decoder)"


class Task:
    """A call submitted to :class:`Workers`: a future (or, without worker processes, the value at once)."""

    __slots__ = ("fn", "args", "future", "generation", "value")

    def __init__(self, fn, args: tuple, future, generation: int, value: Any = None):
        self.fn, self.args, self.future, self.generation, self.value = fn, args, future, generation, value

    def done(self) -> bool:
        return self.future is None or self.future.done()

    def result(self) -> Any:
        """The call's value; BrokenProcessPool if a worker died before it was computed."""
        return self.value if self.future is None else self.future.result()


class Workers:
    """Worker processes (``n`` = 0: everything in this process) that outlive a dead worker.

    A worker killed mid-task (the OOM killer, a decoder that crashes) breaks the whole process pool: every
    task in flight fails with BrokenProcessPool. :meth:`rerun` replaces the pool once per breakage and runs
    a failed call again on its own; a call that kills its worker a second time gets the caller's ``crashed``
    value instead (a per-file error), and the work goes on. A search uses it directly; ``add`` and
    ``filter`` through :class:`Batches`.
    """

    def __init__(self, n: int):
        self.n = n
        self.pool = make_pool(n) if n > 0 else None
        self.generation = 0
        self.retired: list = []  # replaced pools, joined at shutdown (left running, Python's exit hook trips on them)

    def submit(self, fn, *args) -> Task:
        from concurrent.futures.process import BrokenProcessPool

        if self.pool is None:
            return Task(fn, args, None, self.generation, fn(*args))
        try:
            fut = self.pool.submit(fn, *args)
        except BrokenProcessPool:  # a worker died since the last task we looked at: replace the pool now
            self.renew()
            fut = self.pool.submit(fn, *args)
        return Task(fn, args, fut, self.generation)

    def renew(self) -> None:
        """A new pool; the tasks in flight on the old one are cancelled or fail."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.retired.append(self.pool)
        self.pool = make_pool(self.n)
        self.generation += 1

    def rerun(self, task: Task, crashed: Any, args: tuple | None = None) -> Any:
        """``task`` failed with BrokenProcessPool: run its call (or the same function on ``args``) alone on
        a fresh pool; its value, or ``crashed`` if the worker dies again."""
        from concurrent.futures.process import BrokenProcessPool

        if task.generation == self.generation:
            self.renew()  # else replaced already since that task was submitted
        again = self.submit(task.fn, *(task.args if args is None else args))
        try:
            return again.result()
        except BrokenProcessPool:
            if again.generation == self.generation:
                self.renew()
            return crashed

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        for old in self.retired:
            old.shutdown()


class Batches:
    """Batches of files for one worker function, run on :class:`Workers` (in this process if ``workers`` is
    0), at most ``3 x workers`` in flight; ``done(item, outcome)`` receives each file's outcome as batches
    finish.

    ``task`` is ``(fn, *leading)``: ``fn(*leading, payloads)`` returns one outcome per payload. A worker that
    dies fails every batch in flight: their files run again one at a time, each alone on a new pool
    (:meth:`Workers.rerun`), so that only a file that kills its worker a second time gets ``("err",
    CRASH_REASON, "crash")``. Used by ``add`` and ``filter``.
    """

    def __init__(self, workers: int, task: tuple, done):
        self.workers, self.task, self.done = workers, task, done
        self.pool: Workers | None = None if workers > 0 else Workers(0)
        self.held: list[tuple[list, list]] = []  # batches kept back until the job is known not to be tiny
        self.inflight: dict = {}  # future -> (Task, items, payloads)
        self.max_inflight = max(2, 3 * workers)

    def idle_workers(self) -> bool:
        """Fewer batches in flight than workers: a caller may hand over a small batch now."""
        return self.pool is None or (self.pool.pool is not None and len(self.inflight) < self.workers)

    def submit(self, items: list, payloads: list) -> None:
        if self.pool is None:
            # Worker processes take ~0.3 s to start and import the pipeline: a job of a few files (an `add`
            # of one photo) is done sooner here. The pool starts once more than SMALL_JOB files came.
            self.held.append((items, payloads))
            if sum(len(i) for i, _ in self.held) <= SMALL_JOB:
                return
            self.pool = Workers(self.workers)
            held, self.held = self.held, []
            for i, p in held:
                self._submit(i, p)
            return
        self._submit(items, payloads)

    def _submit(self, items: list, payloads: list) -> None:
        while len(self.inflight) >= self.max_inflight:
            self.harvest(block=True)
        t = self.pool.submit(*self.task, payloads)
        if t.future is None:  # computed in this process
            for item, out in zip(items, t.result()):
                self.done(item, out)
        else:
            self.inflight[t.future] = (t, items, payloads)

    def harvest(self, block: bool = False) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        if not self.inflight:
            return
        finished, _ = wait(list(self.inflight), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        broken = []
        for fut in finished:
            job = self.inflight.pop(fut)
            try:
                outs = job[0].result()
            except BrokenProcessPool:
                broken.append(job)
                continue
            for item, out in zip(job[1], outs):
                self.done(item, out)
        if broken:
            self._recover(broken)

    def _recover(self, broken: list) -> None:
        """Every batch in flight failed or is dropped: their files run one at a time, each alone on the
        pool, so that the file that kills its worker is the one reported (its batch-mates are hashed)."""
        broken += list(self.inflight.values())
        self.inflight.clear()
        self.pool.renew()  # nothing else runs beside the files run alone
        for t, items, payloads in broken:
            for item, payload in zip(items, payloads):
                (out,) = self.pool.rerun(t, [("err", CRASH_REASON, "crash")], (*self.task[1:], [payload]))
                self.done(item, out)

    def drain(self) -> None:
        if self.held:  # a job of at most SMALL_JOB files: in this process
            self.pool = Workers(0)
            held, self.held = self.held, []
            for i, p in held:
                self._submit(i, p)
            self.pool = None  # more files may come (another source): still undecided
        while self.inflight:
            self.harvest(block=True)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: leave as soon as the process that made the pool is gone (even if kill -9'ed).

    Ctrl-C in a terminal sends SIGINT to the whole process group: the parent handles it (stops,
    keeps what is done, shuts the pool down). A worker that died of it instead would look like a
    crashed decoder, and its batch would be retried file by file on a new pool.
    """
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(3)
            except PermissionError:  # alive, owned by someone else (cannot happen for our own parent)
                pass

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
