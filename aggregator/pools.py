"""Worker processes for a big pass: parsing feeds, and extracting article pages and
making summaries, on the other cores while the main process fetches and writes.
Started by the first piece of work only, so a pass that needs none starts no process."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator import offload, workers

if TYPE_CHECKING:
    pass


PARSE_POOL_MIN_FEEDS = 40  # below this, starting processes costs more than it saves


def _pool_size(processes: int) -> int:
    """How many worker processes ``processes`` (the ``parse_processes`` setting)
    means here: below 0, one per core (4 at most); 0 on a single core."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    if processes < 0:
        processes = min(cpus, 4)
    return processes if cpus >= 2 else 0


@contextmanager
def _parse_pool(due: int, processes: int,
                preload: Sequence[str] = ("aggregator.parse",)) -> Iterator[Executor | None]:
    """Processes that parse feeds on the other cores during a big pass (the
    first one, a cold start): parsing is most of a pass's CPU and holds the
    GIL. They live for this pass only, so an idle daemon keeps no memory.
    ``processes`` 0 parses on the fetch threads; below 0, one per core (4 at most)."""
    processes = _pool_size(processes)
    if due < PARSE_POOL_MIN_FEEDS or processes < 1:
        yield None
        return
    pool = _LazyPool(processes, preload)
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def parse_preload(summaries: bool) -> tuple[str, ...]:
    """What the forkserver imports for a pass (run_pass's choice): the parser, and
    the summaries' modules when summaries follow (their pool shares the server)."""
    return ("aggregator.parse", *(offload.PRELOAD if summaries else ()))


def prestart_parsers(feeds_file: Path, fetched: int, processes: int,
                     preload: Sequence[str]) -> bool:
    """Start the parse pool's forkserver now, while this process still opens the
    database and syncs the subscriptions, when the pass is sure to parse: at
    least PARSE_POOL_MIN_FEEDS subscriptions more than the feeds fetched before
    (``fetched``), i.e. new ones, whose first answer is a body. Booting the
    server (an interpreter importing the parser, ~0.2 s) otherwise waits for
    the first body, with every fetch thread waiting behind it. A pass of
    known feeds (a poll of 304s) starts nothing. The pool the pass makes later
    uses this server (multiprocessing keeps one per process)."""
    if _pool_size(processes) < 1:
        return False
    try:  # a cheap count, not a parse: only a guess of how many are new
        outlines = feeds_file.read_bytes().lower().count(b"xmlurl")
    except OSError:
        return False
    if outlines - fetched < PARSE_POOL_MIN_FEEDS:
        return False
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
    forkserver.ensure_running()
    return True


SUMMARY_POOL_MIN_ITEMS = 50  # a first batch this full: summaries made on the other cores


@contextmanager
def _summary_pool(processes: int) -> Iterator[Executor | None]:
    """Processes that make summaries (pure Python, most of the pipeline's CPU)
    on the other cores while this one fetches pages and writes, for a big
    backlog; the same ``parse_processes`` setting (none in the daemon). Started
    by the first submit only."""
    processes = _pool_size(processes)
    if processes < 1:
        yield None
        return
    pool = _LazyPool(processes, offload.PRELOAD)
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class _LazyPool(Executor):
    """The parse pool, started by the first feed that has a body to parse: a
    pass whose every feed answers 304 (or the same bytes) starts no process
    (not even multiprocessing's resource tracker) and imports none of it."""

    def __init__(self, processes: int, preload: Sequence[str] = ("aggregator.parse",)) -> None:
        self.processes = processes
        self.preload = list(preload)  # imported once, by the forkserver, if it starts it
        self._pool: Executor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._closed:  # as ProcessPoolExecutor says it
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload(self.preload)
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes, mp_context=ctx,
                    initializer=workers.exit_with_parent, initargs=(os.getpid(),))
            pool = self._pool
        return pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


