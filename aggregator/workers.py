"""A small pool of daemon threads for network work.

Unlike ThreadPoolExecutor, whose threads the interpreter joins at exit, these
threads never hold up a shutdown: they only fetch and parse, every write
happens on the caller's thread, so abandoning a fetch in flight loses nothing.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


def unordered(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    name: str = "worker",
) -> Iterator[R]:
    """Yield ``fn(item)`` for every item as each finishes, on up to ``workers``
    threads. ``fn`` should return errors as values; an exception (a bug) is
    re-raised here. When ``should_stop()``
    turns true, no new item starts and the iteration ends at once."""
    todo: queue.SimpleQueue[T | object] = queue.SimpleQueue()
    count = 0
    for item in items:
        todo.put(item)
        count += 1
    if not count:
        return
    results: queue.SimpleQueue[tuple[bool, object]] = queue.SimpleQueue()
    stop = threading.Event()
    # Results the caller hasn't taken yet are bounded: when it is slower than
    # the workers (it writes the database) they wait, instead of a thousand
    # parsed feeds piling up in memory.
    room = threading.Semaphore(2 * max(1, workers))

    def run() -> None:
        while not stop.is_set():
            while not room.acquire(timeout=0.2):
                if stop.is_set():
                    return
            item = todo.get()
            if item is _DONE:
                return
            try:
                results.put((True, fn(item)))  # type: ignore[arg-type]
            except BaseException as e:  # a bug: hand it to the caller, don't hang it
                results.put((False, e))

    n = max(1, min(workers, count))
    for _ in range(n):
        todo.put(_DONE)
    for i in range(n):
        threading.Thread(target=run, name=f"{name}-{i}", daemon=True).start()
    try:
        for _ in range(count):
            while True:
                if should_stop():
                    return
                try:
                    ok, value = results.get(timeout=0.2)
                except queue.Empty:
                    continue
                room.release()
                if not ok:
                    raise value  # type: ignore[misc]
                yield value  # type: ignore[misc]
                break
    finally:
        stop.set()


def exit_with_parent(pid: int, every: float = 1.0) -> None:
    """Process-pool initializer: end this worker once process ``pid`` is gone.

    A pool worker blocks on its task queue, whose other end it holds itself,
    so when the parent is killed (``kill -9``) it would wait for ever, and keep
    the forkserver alive with it. A daemon thread checks the parent instead."""

    def watch() -> None:
        while True:
            time.sleep(every)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass  # alive, under another user

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
