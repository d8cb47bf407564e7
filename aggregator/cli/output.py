"""What the commands print: the pass progress line, tables, ages and sizes, and the check
that a read-only command has a database to read."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator import config
from aggregator.errors import StorageError

log = logging.getLogger("aggregator")


class _Progress:
    """One line on a terminal, rewritten in place, through the whole pass:
    ``polled 12/80 feeds  <url>``, then ``polled 80/80 feeds, articles 120/274,
    summarised 80/257``."""

    def __init__(self, stream: Any, width: int | None = None) -> None:
        import shutil

        self.stream = stream
        self.width = width or max(40, min(shutil.get_terminal_size().columns, 120) - 1)
        self.polled = 0
        self.due_count: int | None = None
        self.counts: Any = None
        self.shown = False
        self._lock = threading.RLock()  # log lines come from worker threads too

    def due(self, count: int) -> None:
        self.due_count = count

    def step(self, outcome: Any) -> None:
        self.polled += 1
        self._draw(outcome.url)

    def summaries(self, counts: Any) -> None:
        self.counts = counts
        self._draw()

    def line(self) -> str:
        total = self.due_count if self.due_count is not None else "?"
        parts = [f"polled {self.polled}/{total} feeds"]
        c = self.counts
        if c is not None:
            parts.append(f"articles {c.articles}/{c.articles_total}, "
                         f"summarised {c.summarised}/{c.summaries_total}")
        return ", ".join(parts)

    def _draw(self, tail: str = "") -> None:
        text = f"  {self.line()}" + (f"  {tail}" if tail else "")
        with self._lock:
            self.stream.write("\r" + text[:self.width].ljust(self.width))
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        with self._lock:
            if self.shown:
                self.stream.write("\r" + " " * self.width + "\r")
                self.stream.flush()
                self.shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        """A log line on the same terminal: the progress line makes room first
        (it is drawn again at the next step)."""
        self.clear()
        return True


class _ProgressBeforeLogs:
    """While a progress line is shown, the ``aggregator`` log handlers clear it
    before each line they write."""

    def __init__(self, show: _Progress | None) -> None:
        self.show = show
        self.handlers = list(logging.getLogger("aggregator").handlers)

    def __enter__(self) -> None:
        if self.show:
            for h in self.handlers:
                h.addFilter(self.show)

    def __exit__(self, *exc: object) -> None:
        if self.show:
            for h in self.handlers:
                h.removeFilter(self.show)


def _print_outcomes(outcomes: Sequence[Any]) -> None:
    rows = [("RESULT", "HTTP", "NEW", "CHG", "FEED")]
    for o in sorted(outcomes, key=lambda o: (o.result != "error", o.url)):
        rows.append((o.result, str(o.status or "-"), str(o.new), str(o.changed),
                     o.url + (f"  ({o.error})" if o.error else "")
                     + (f"  -> moved to {o.moved_to}" if o.moved_to else "")))
    _print_table(rows)


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1])


def _when(d: datetime | None) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if d else "-"


def _existing_db(settings: config.Settings) -> Path:
    """The database a read-only command looks at: it must exist (a mistyped
    --db would otherwise create an empty one and show nothing)."""
    if not settings.db.is_file():
        raise StorageError(f"no database at {settings.db} (check --db, or run "
                           "`aggregator update` to create it)")
    return settings.db


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _age(text: str) -> timedelta:
    """``30m``, ``12h``, ``2d``, ``1w`` as a duration (argparse type)."""
    from aggregator.errors import SearchError
    from aggregator.search import parse_since

    try:
        return parse_since(text.strip())
    except SearchError as e:
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (e.g. 30m, 12h, 2d)") from e
