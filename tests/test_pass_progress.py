"""A whole `update` pass as a person watches it: a progress line through polling,
article pages and summaries, one DEBUG line per fetch with -v, and a dead host
looked up once per pass instead of once per article linking to it.

DNS is faked by replacing ``aggregator.fetch.getaddrinfo`` (as in test_guard.py);
every other request goes to a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hostile_servers import Clock, local_httpserver, settings_for, write_opml

from aggregator import fetch
from aggregator.cli.output import _Progress
from aggregator.errors import NetworkError
from aggregator.fetch import DNSFailures
from aggregator.stages.summaries import SummaryProgress, summarize_pending
from aggregator.store import Store
from aggregator.update import FeedOutcome, make_fetcher, run_pass

ROOT = Path(__file__).resolve().parents[1]
DEAD = "dead.test"


def _feed(*links: str, words: int = 3) -> bytes:
    text = " ".join(["word"] * words)
    items = "".join(f"<item><title>Story {n}</title><link>{link}</link><guid>{link}</guid>"
                    f"<description>{text} {n}.</description></item>"
                    for n, link in enumerate(links))
    return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Progress</title><link>http://127.0.0.1/</link>{items}"
            "</channel></rss>").encode()


def fake_dns(monkeypatch: pytest.MonkeyPatch, errno: int) -> list[str]:
    """Names under DEAD fail with ``errno``; the others resolve to 127.0.0.1.
    Returns every host asked."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kw: Any) -> list[Any]:
        asked.append(host)
        if host.lower().rstrip(".") == DEAD:
            raise socket.gaierror(errno, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(fetch, "getaddrinfo", getaddrinfo)
    return asked


# --- the negative DNS cache ------------------------------------------------------------


def test_a_dead_host_is_looked_up_once_per_pass(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """79 articles on a dead host cost 79 lookups before; now one (spelt any way)."""
    asked = fake_dns(monkeypatch, socket.EAI_NONAME)
    spellings = [DEAD, "Dead.Test", "dead.test.", "DEAD.TEST."]
    links = [f"http://{spellings[n % 4]}/story/{n}" for n in range(12)]
    s = settings_for(tmp_path, fetch_articles=True, summaries=True, workers=4)
    with local_httpserver() as server:
        server.expect_request("/feed.xml").respond_with_data(
            _feed(*links), content_type="application/rss+xml")
        write_opml(s, [server.url_for("/feed.xml")])
        clock = Clock()
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            assert run_pass(s, store, fetcher, clock=clock).new == 12
            assert summarize_pending(s, store, fetcher, clock=clock) == 12
            assert len([h for h in asked if h.lower().rstrip(".") == DEAD]) == 1
            statuses = [r[0] for r in store.conn.execute("SELECT article_status FROM items")]
            assert len(statuses) == 12
            assert all(st.startswith("failed: NetworkError: cannot resolve ") for st in statuses)

            # the next pass starts afresh: the host may have come back
            assert len(fetcher.dns_failures) == 1
            run_pass(s, store, fetcher, clock=clock)
            assert len(fetcher.dns_failures) == 0
            with pytest.raises(NetworkError):
                fetcher.get(links[0])
            assert len([h for h in asked if h.lower().rstrip(".") == DEAD]) == 2


@pytest.mark.parametrize("errno", [socket.EAI_AGAIN, socket.EAI_FAIL])
def test_a_resolver_in_trouble_is_asked_again(monkeypatch: pytest.MonkeyPatch,
                                              errno: int) -> None:
    """EAI_AGAIN (try again) and EAI_FAIL say nothing for sure about the name."""
    asked = fake_dns(monkeypatch, errno)
    failures = DNSFailures()
    for _ in range(3):
        with pytest.raises(NetworkError, match="cannot resolve dead.test"):
            fetch.resolve(DEAD, 80, 2.0, failures)
    assert asked == [DEAD] * 3
    assert len(failures) == 0


def test_no_such_name_and_no_address_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    codes = [socket.EAI_NONAME] + ([socket.EAI_NODATA] if hasattr(socket, "EAI_NODATA")
                                   else [])
    for errno in codes:
        asked = fake_dns(monkeypatch, errno)
        failures = DNSFailures()
        for _ in range(3):
            with pytest.raises(NetworkError, match="cannot resolve dead.test"):
                fetch.resolve(DEAD, 80, 2.0, failures)
        assert asked == [DEAD]
        assert fetch.resolve("alive.test", 80, 2.0, failures) == ["127.0.0.1"]
        # without a cache (check_url called on its own) every call asks
        with pytest.raises(NetworkError):
            fetch.resolve(DEAD, 80, 2.0)
        assert asked == [DEAD, "alive.test", DEAD]


def test_a_kept_failure_expires_and_the_cache_is_bounded() -> None:
    now = [100.0]
    failures = DNSFailures(ttl=300.0, size=3, clock=lambda: now[0])
    failures.add("Dead.Test.", "cannot resolve dead.test: gone")
    assert failures.get("dead.test") == "cannot resolve dead.test: gone"
    now[0] += 299.0
    assert failures.get("DEAD.test") is not None
    now[0] += 1.0
    assert failures.get("dead.test") is None  # asked again after the TTL
    for n in range(10):
        failures.add(f"h{n}.test", "x")
    assert len(failures) == 3
    assert failures.get("h9.test") == "x" and failures.get("h0.test") is None


# --- -v: one DEBUG line per fetch --------------------------------------------------------


def test_each_fetch_is_logged_at_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, socket.EAI_NONAME)
    s = settings_for(tmp_path, fetch_articles=True, summaries=True)
    with local_httpserver() as server:
        server.expect_request("/feed.xml").respond_with_data(
            _feed(server.url_for("/page"), f"http://{DEAD}/x"),
            content_type="application/rss+xml")
        server.expect_request("/page").respond_with_data("<html><body><p>short</p></body>"
                                                         "</html>", content_type="text/html")
        feed_url = server.url_for("/feed.xml")
        write_opml(s, [feed_url])
        caplog.set_level(logging.DEBUG, logger="aggregator.fetch")
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            run_pass(s, store, fetcher)
            summarize_pending(s, store, fetcher)
    lines = [r.getMessage() for r in caplog.records if r.name == "aggregator.fetch"]
    feed_line = next(line for line in lines if feed_url in line)
    assert feed_line.startswith(f"GET {feed_url}: HTTP 200, ")
    assert f"{len(_feed(server.url_for('/page'), f'http://{DEAD}/x'))} bytes" in feed_line
    assert feed_line.endswith(" s")
    assert any(line.startswith(f"GET {server.url_for('/page')}: HTTP 200, ") for line in lines)
    assert any(line.startswith(f"GET http://{DEAD}/x: cannot resolve {DEAD}") for line in lines)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "aggregator.fetch")


# --- the progress line ---------------------------------------------------------------------


def test_the_progress_line_covers_polling_articles_and_summaries() -> None:
    out = io.StringIO()
    show = _Progress(out, width=100)
    show.due(3)
    for n in range(3):
        show.step(FeedOutcome(f"http://127.0.0.1/{n}.xml", "x", "new"))
    assert "\r  polled 3/3 feeds  http://127.0.0.1/2.xml" in out.getvalue()
    show.clear()
    show.summaries(SummaryProgress(120, 274, 80, 257))
    assert show.line() == "polled 3/3 feeds, articles 120/274, summarised 80/257"
    assert out.getvalue().endswith("\r  polled 3/3 feeds, articles 120/274, summarised 80/257"
                                   .ljust(101))
    show.clear()
    assert out.getvalue().endswith("\r" + " " * 100 + "\r")


def test_summarize_pending_counts_against_the_backlog(tmp_path: Path) -> None:
    s = settings_for(tmp_path, fetch_articles=True, summaries=True)
    with local_httpserver() as server:
        pages = [server.url_for(f"/page/{n}") for n in range(4)]
        long_text = " ".join(["plenty"] * 200)
        server.expect_request("/feed.xml").respond_with_data(
            _feed(*pages[:3]).replace(b"</channel>", (
                f"<item><title>Long</title><link>{pages[3]}</link><guid>{pages[3]}</guid>"
                f"<description>{long_text}.</description></item></channel>").encode()),
            content_type="application/rss+xml")
        for n in range(4):
            server.expect_request(f"/page/{n}").respond_with_data(
                "<html><body><p>" + "An article sentence here. " * 40 + "</p></body></html>",
                content_type="text/html")
        write_opml(s, [server.url_for("/feed.xml")])
        seen: list[SummaryProgress] = []
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            run_pass(s, store, fetcher)
            assert summarize_pending(s, store, fetcher, counts=seen.append) == 4
    assert seen[0] == SummaryProgress(0, 3, 0, 4)  # the long item needs no article page
    assert seen[-1] == SummaryProgress(3, 3, 4, 4)
    assert [c.articles for c in seen] == sorted(c.articles for c in seen)


def _run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """The CLI with stdout and stderr on a pseudo-terminal, as a person runs it."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    proc = subprocess.Popen([sys.executable, "-m", "aggregator", *args], stdout=slave,
                            stderr=slave, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    rc = proc.wait(60)
    return rc, b"".join(chunks).decode("utf-8", "replace")


def test_update_on_a_terminal_shows_the_whole_pass(tmp_path: Path) -> None:
    with local_httpserver() as server:
        pages = [server.url_for(f"/page/{n}") for n in range(3)]
        server.expect_request("/feed.xml").respond_with_data(
            _feed(*pages), content_type="application/rss+xml")
        for n in range(3):
            server.expect_request(f"/page/{n}").respond_with_data(
                "<html><body><p>" + "An article sentence here. " * 40 + "</p></body></html>",
                content_type="text/html")
        (tmp_path / "aggregator.toml").write_text('db = "x.db"\nfeeds = "feeds.opml"\n'
                                                  'output = "out"\n')
        # nothing listens on port 1: two warnings, the second while a progress line shows
        refused = ["http://127.0.0.1:1/a.xml", "http://127.0.0.1:1/b.xml"]
        write_opml(settings_for(tmp_path), [server.url_for("/feed.xml"), *refused])
        rc, out = _run_on_a_terminal(["update"], tmp_path)
        assert rc == 0, out
        assert "\r  polled 1/3 feeds  http://127.0.0.1:" in out
        assert "\r  polled 3/3 feeds  http://127.0.0.1:" in out
        assert "polled 3/3 feeds, articles 3/3, summarised 3/3" in out
        for url in refused:
            assert f"WARNING aggregator.update: feed {url} failing" in out
        assert out.rstrip().endswith("3 feeds polled: 3 new items, 0 changed, 2 failed; "
                                     "3 summarised; published to out")
        # a log line never lands inside the progress line: it starts on a cleared line
        starts = [m.start() for m in re.finditer(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", out)]
        assert len(starts) >= 4  # subscriptions added, the refused feeds, published
        assert all(i == 0 or out[i - 1] in "\r\n" for i in starts), out

        # -v: the log lines tell the story; no progress line among them
        server.clear_log()
        rc, out = _run_on_a_terminal(["-v", "update", "--all"], tmp_path)
        assert rc == 0, out
        assert "\r  polled" not in out
        assert f"GET {server.url_for('/feed.xml')}: HTTP 200, " in out
