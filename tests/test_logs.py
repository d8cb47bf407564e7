"""Log lines as the journal or a terminal sees them; the once-per-change rule for feed errors."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.errors import ConfigError
from aggregator.logs import (
    feed_transition,
    is_journal_stream,
    log_feed_result,
    setup_logging,
    syslog_priority,
)

PROJECT = Path(__file__).resolve().parents[1]
HUMAN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (\w+) +(\S+): (.*)$")


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    """setup_logging changes process-wide loggers; put them back after each test."""
    names = ["aggregator", "apscheduler"]
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names}
    yield
    for n, (level, handlers) in saved.items():
        logger = logging.getLogger(n)
        logger.setLevel(level)
        logger.handlers[:] = handlers


def journal_id(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_syslog_priorities() -> None:
    assert [syslog_priority(lv) for lv in (50, 40, 30, 20, 10, 25, 5)] == [2, 3, 4, 6, 7, 6, 7]


def test_journal_stream_gets_priority_prefixes_and_no_timestamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal"
    with path.open("w") as stream:
        monkeypatch.setenv("JOURNAL_STREAM", journal_id(path))
        assert is_journal_stream(stream)
        setup_logging("DEBUG", stream)
        log = logging.getLogger("aggregator.fetch")
        log.debug("GET %s", "https://example.org/feed")
        log.info("42 feeds updated")
        log.warning("feed %s failing: %s", "https://example.org/feed", "HTTP 404")
        log.error("database is locked")
        log.critical("cannot start")
    assert path.read_text().splitlines() == [
        "<7>aggregator.fetch: GET https://example.org/feed",
        "<6>aggregator.fetch: 42 feeds updated",
        "<4>aggregator.fetch: feed https://example.org/feed failing: HTTP 404",
        "<3>aggregator.fetch: database is locked",
        "<2>aggregator.fetch: cannot start",
    ]


def test_other_stream_gets_time_and_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.touch()
    monkeypatch.setenv(
        "JOURNAL_STREAM", journal_id(other)
    )  # systemd's stream, but we write elsewhere
    path = tmp_path / "log"
    with path.open("w") as stream:
        assert not is_journal_stream(stream)
        setup_logging("INFO", stream)
        logging.getLogger("aggregator").warning("slow feed")
        logging.getLogger("aggregator").debug("not shown at INFO")
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    m = HUMAN_LINE.match(lines[0])
    assert m, lines[0]
    assert m.groups() == ("WARNING", "aggregator", "slow feed")


def test_no_journal_variable_and_no_fileno(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = io.StringIO()
    assert not is_journal_stream(stream)
    assert not is_journal_stream(stream, "1:2")
    setup_logging("INFO", stream)
    logging.getLogger("aggregator.store").info("migrated to v3")
    assert HUMAN_LINE.match(stream.getvalue().rstrip("\n"))
    assert "INFO    aggregator.store: migrated to v3" in stream.getvalue()


def test_real_stderr_under_journal_stream(tmp_path: Path) -> None:
    """The way systemd runs us: fd 2 is the journal's socket and JOURNAL_STREAM names it."""
    path = tmp_path / "stderr"
    path.touch()
    code = (
        "import logging\n"
        "from aggregator.logs import setup_logging\n"
        "setup_logging()\n"
        "logging.getLogger('aggregator').warning('feed failing')\n"
        "logging.getLogger('aggregator').info('pass done')\n"
        "logging.getLogger('apscheduler.scheduler').info('Added job')\n"
        "logging.getLogger('apscheduler.scheduler').warning('Run time of job was missed')\n"
    )
    env = {**os.environ, "JOURNAL_STREAM": journal_id(path), "PYTHONPATH": str(PROJECT)}
    with path.open("w") as err:
        subprocess.run([sys.executable, "-c", code], stderr=err, env=env, check=True, timeout=60)
    assert path.read_text().splitlines() == [
        "<4>aggregator: feed failing",
        "<6>aggregator: pass done",
        "<4>apscheduler.scheduler: Run time of job was missed",
    ]


def test_one_line_per_event_even_with_newlines_in_the_message() -> None:
    stream = io.StringIO()
    setup_logging("INFO", stream, journal=True)
    logging.getLogger("aggregator").warning(
        "feed %s failing: %s", "x", "bad\n<3>aggregator: forged"
    )
    assert stream.getvalue() == "<4>aggregator: feed x failing: bad\\n<3>aggregator: forged\n"


def test_traceback_lines_keep_the_priority_in_the_journal() -> None:
    stream = io.StringIO()
    setup_logging("INFO", stream, journal=True)
    try:
        raise RuntimeError("bug")
    except RuntimeError:
        logging.getLogger("aggregator").exception("update pass crashed")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "<3>aggregator: update pass crashed"
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>    RuntimeError: bug"


def test_setup_twice_does_not_double_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("INFO", first, journal=True)
    setup_logging("INFO", second, journal=True)
    logging.getLogger("aggregator").info("once")
    assert first.getvalue() == ""
    assert second.getvalue() == "<6>aggregator: once\n"


def test_level_filter_and_bad_level() -> None:
    stream = io.StringIO()
    setup_logging("warning", stream, journal=True)
    logging.getLogger("aggregator").info("hidden")
    logging.getLogger("aggregator").warning("shown")
    assert stream.getvalue() == "<4>aggregator: shown\n"
    with pytest.raises(ConfigError, match="unknown log level 'loud'"):
        setup_logging("loud", stream)


@pytest.mark.parametrize(
    ("prev", "new", "expected"),
    [
        (None, None, None),
        ("", None, None),
        ("HTTP 404", "HTTP 404", None),
        (None, "HTTP 404", (logging.WARNING, "failing: HTTP 404")),
        (
            "HTTP 404",
            "HTTP 410",
            (logging.WARNING, "failing differently: HTTP 410 (was: HTTP 404)"),
        ),
        ("HTTP 404", None, (logging.INFO, "recovered (was failing: HTTP 404)")),
        ("HTTP 404", "", (logging.INFO, "recovered (was failing: HTTP 404)")),
    ],
)
def test_feed_transition(
    prev: str | None, new: str | None, expected: tuple[int, str] | None
) -> None:
    assert feed_transition(prev, new) == expected


def test_a_week_of_the_same_failure_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    url = "https://example.org/feed.xml"
    passes = [None, None, "timed out"] + ["HTTP 503"] * 336 + [None, None]
    logger = logging.getLogger("aggregator.update")
    written = []
    with caplog.at_level(logging.INFO, logger="aggregator"):
        for prev, new in zip(passes, passes[1:], strict=False):
            written.append(log_feed_result(logger, url, prev, new))
    assert sum(written) == 3
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"feed {url} failing: timed out"),
        ("WARNING", f"feed {url} failing differently: HTTP 503 (was: timed out)"),
        ("INFO", f"feed {url} recovered (was failing: HTTP 503)"),
    ]
