"""Log output for the CLI and the daemon, and the "once per change" rule for feed errors.

The library only logs to the ``aggregator`` logger; ``setup_logging`` is what
the CLI and daemon call to make those records visible, one line each on stderr.

Under systemd, stderr goes to the journal, which adds its own timestamp and
unit name. systemd tells us so through $JOURNAL_STREAM ("device:inode" of the
stream it connected); when it matches our stream we drop our timestamp and
start each line with a syslog priority, ``<4>`` for a warning, so
``journalctl -u aggregator -p warning`` shows exactly the warnings and errors.
Anywhere else lines carry a local time and the level name.

A feed that fails every 30 minutes for a week must not write 336 identical
warnings: ``feed_transition`` decides from the error stored at the previous
pass and the new one whether anything is worth a line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TextIO

from aggregator.errors import ConfigError

__all__ = [
    "JournalFormatter",
    "feed_transition",
    "is_journal_stream",
    "log_feed_result",
    "setup_logging",
    "syslog_priority",
]

LOGGER_NAME = "aggregator"
HUMAN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
HUMAN_DATEFMT = "%Y-%m-%d %H:%M:%S"


def syslog_priority(levelno: int) -> int:
    """Python level -> syslog priority (what `journalctl -p` filters on)."""
    if levelno >= logging.CRITICAL:
        return 2  # crit
    if levelno >= logging.ERROR:
        return 3  # err
    if levelno >= logging.WARNING:
        return 4  # warning
    if levelno >= logging.INFO:
        return 6  # info
    return 7  # debug


def is_journal_stream(stream: TextIO, journal_stream: str | None = None) -> bool:
    """True when `stream` is the very file systemd connected to the journal.

    Comparing device and inode (not just checking the variable is set) keeps a
    child whose stderr was redirected from writing priority prefixes to a file.
    """
    value = os.environ.get("JOURNAL_STREAM", "") if journal_stream is None else journal_stream
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (AttributeError, OSError, ValueError):  # no fileno (StringIO), closed, bad variable
        return False


def _one_line(text: str) -> str:
    """Feed titles and errors come from outside: a newline in them must not forge a log line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class _OneLineFormatter(logging.Formatter):
    """The message on one line; a traceback (only for bugs) follows indented."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        original = record.message  # other handlers (pytest's caplog) share the record
        record.message = _one_line(original)
        try:
            return super().formatMessage(record)
        finally:
            record.message = original

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        first, _, rest = text.partition("\n")
        if not rest:
            return first
        return first + "\n" + "\n".join("    " + line for line in rest.splitlines())


class JournalFormatter(_OneLineFormatter):
    """``<priority>logger: message``; every traceback line gets the same priority."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class HumanFormatter(_OneLineFormatter):
    def __init__(self) -> None:
        super().__init__(HUMAN_FORMAT, HUMAN_DATEFMT)


def _parse_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.strip().upper())
    if not isinstance(value, int):
        raise ConfigError(f"unknown log level {level!r} (use DEBUG, INFO, WARNING or ERROR)")
    return value


def setup_logging(
    level: str | int = "INFO",
    stream: TextIO | None = None,
    *,
    journal: bool | None = None,
    others: Iterable[str] = ("apscheduler",),
) -> logging.Handler:
    """Send the ``aggregator`` logger to `stream` (stderr), one line per record.

    `journal` forces the journal format on or off; None detects it. Loggers in
    `others` (libraries the daemon drives) get the same handler at WARNING or
    above, so their problems show up with the right priority too; without it
    Python's last-resort handler would print them with no prefix. Calling it
    again replaces the handler instead of doubling every line. Returns the handler.
    """
    stream = sys.stderr if stream is None else stream
    levelno = _parse_level(level)
    use_journal = is_journal_stream(stream) if journal is None else journal
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if use_journal else HumanFormatter())
    handler._aggregator = True  # type: ignore[attr-defined]  # marks ours for replacement

    for name, lvl in [
        (LOGGER_NAME, levelno),
        *((n, max(levelno, logging.WARNING)) for n in others),
    ]:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_aggregator", False)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(lvl)
    return handler


def feed_transition(prev_error: str | None, new_error: str | None) -> tuple[int, str] | None:
    """What to log after a feed's update, given its stored error before and after.

    Returns (level, message) or None for "nothing new": a warning when a feed
    starts failing or fails differently, an info line when it recovers, nothing
    while it stays healthy or keeps failing the same way. An empty string counts
    as no error.
    """
    prev = (prev_error or "").strip() or None
    new = (new_error or "").strip() or None
    if prev == new:
        return None
    if new is None:
        return logging.INFO, f"recovered (was failing: {prev})"
    if prev is None:
        return logging.WARNING, f"failing: {new}"
    return logging.WARNING, f"failing differently: {new} (was: {prev})"


def log_feed_result(
    logger: logging.Logger, url: str, prev_error: str | None, new_error: str | None
) -> bool:
    """Log `feed_transition` as one line naming the feed URL; True if a line was written."""
    outcome = feed_transition(prev_error, new_error)
    if outcome is None:
        return False
    level, message = outcome
    logger.log(level, "feed %s %s", url, message)
    return True
