"""Datasette as a reader (issue 13, item 5): `aggregator datasette` opens the
file read-only while it is written, with the shipped metadata (every
documented column, canned queries) and the search box; a real Datasette on a
free 127.0.0.1 port, asked through its JSON API."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from aggregator import browse, decide
from aggregator.cli import main
from aggregator.stages.cluster import cluster_pending
from aggregator.store import Store
from aggregator.types import ParsedFeed, ParsedItem, Subscription

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("clean_env")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def store_items(store: Store, feed: str, items: list[ParsedItem], now: datetime) -> None:
    store.record_feed(store.feed(feed).id, now, status=200, headers={}, body_hash=str(now),
                      parsed=ParsedFeed(None, None, "en", None, tuple(items)),
                      items=[(decide.item_key(i), i, decide.content_hash(i)) for i in items],
                      next_fetch=now + timedelta(hours=1))


def item(guid: str, title: str, text: str, when: datetime) -> ParsedItem:
    return ParsedItem(guid=guid, url=f"http://news.example/{guid}", title=title, author=None,
                      published=when, updated=None, content=f"<p>{text}</p>", content_text=text)


FEEDS = ["http://one.example/rss", "http://two.example/rss", "http://broken.example/rss"]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "news.db"  # not "aggregator": the metadata follows the file's name
    now = datetime.now(UTC)
    with Store(path) as store:
        store.sync_subscriptions([Subscription(u, f"Feed {k}") for k, u in enumerate(FEEDS)],
                                 now)
        for k, feed in enumerate(FEEDS[:2]):
            store_items(store, feed, [
                item(f"{k}-1", "Glacier collapse blocks alpine valley",
                     "A glacier collapsed onto the valley village.", now - timedelta(minutes=5)),
                item(f"{k}-2", ["Cycling team wins the relay", "Orchestra plays in Lima"][k],
                     ["Riders crossed the line first.", "Violins filled the hall."][k],
                     now - timedelta(minutes=1 + k)),
            ], now)
        cluster_pending(store)
        store.record_error(store.feed(FEEDS[2]).id, now, status=500, error="HTTP 500",
                           next_fetch=now + timedelta(hours=1))
    return path


def wait_for(url: str, proc: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"Datasette did not answer at {url}")


def test_datasette_reads_the_file_while_it_is_written(db, tmp_path):
    pytest.importorskip("datasette", reason="datasette not installed "
                        "(pip install 'aggregator[datasette]')")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "aggregator", "--db", str(db), "datasette",
                             "--port", str(port)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:  # the daemon's part: one feed's write after another
        with Store(db) as store:
            n = 0
            while not stop.is_set():
                n += 1
                now = datetime.now(UTC)
                word = f"quokka{chr(97 + n % 26)}{n}"
                store_items(store, FEEDS[0], [item(f"live-{n}", f"Live story {n}",
                                                   f"The {word} was seen.", now)], now)
                written.append(word)
                time.sleep(0.05)

    thread = threading.Thread(target=writer)
    try:
        wait_for(f"{base}/-/versions.json", proc)
        thread.start()
        with httpx.Client(base_url=base, timeout=10) as client:
            def get(path: str) -> object:
                r = client.get(path)
                assert r.status_code == 200, (path, r.text[:500])
                return r.json()

            stories = get("/news/todays_stories.json?_shape=array")
            assert [(s["title"], s["source_count"]) for s in stories] == [
                ("Glacier collapse blocks alpine valley", 2), ("Cycling team wins the relay", 1),
                ("Orchestra plays in Lima", 1)]
            assert stories[0]["sources"].split(", ") == ["Feed 0", "Feed 1"]
            failing = get("/news/failing_feeds.json?_shape=array")
            assert [(f["url"], f["state"], f["last_status"]) for f in failing] == [
                (FEEDS[2], "error", 500)]
            backlog = get("/news/summaries_backlog.json?_shape=array")
            assert {b["feed"] for b in backlog} == {"Feed 0", "Feed 1"}
            # the search box, over what was written after Datasette started
            while len(written) < 20:
                time.sleep(0.05)
            word = written[15]
            found = get(f"/news/items.json?_search={word}&_shape=array")
            assert [r["guid"] for r in found] == ["live-16"]
            assert 'name="_search"' in client.get("/news/items").text
            # the documented columns
            meta = get("/-/metadata.json")
            columns = meta["databases"]["news"]["tables"]["items"]["columns"]
            assert columns["summary_context"] == "the Context paragraph"
            page = client.get("/news/items").text
            assert "the Context paragraph" in page  # shown as the column's description
            # read-only: Datasette refuses to write, whatever it is asked
            r = client.get("/news.json", params={"sql": "DELETE FROM items", "_shape": "array"})
            assert r.status_code >= 400
        stop.set()
        thread.join()
        assert sqlite3.connect(db).execute("SELECT count(*) FROM items").fetchone()[0] \
            == 4 + len(written)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        proc.send_signal(signal.SIGTERM)  # aggregator stops Datasette with it
        proc.communicate(timeout=30)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/-/versions.json", timeout=2)


def test_every_column_of_the_schema_is_described(tmp_path):
    meta = browse.metadata(tmp_path / "aggregator.db")
    tables = meta["databases"]["aggregator"]["tables"]
    with Store(tmp_path / "aggregator.db") as store:
        for table in ("feeds", "items", "stories", "enclosures"):
            columns = {r[1] for r in store.conn.execute(f"PRAGMA table_info({table})")}
            described = set(tables[table]["columns"])
            assert columns == described, (table, columns ^ described)
    for name, query in meta["databases"]["aggregator"]["queries"].items():
        assert query["title"] and query["sql"].lstrip().upper().startswith("SELECT"), name
    # keyed by the file's name, as Datasette names a database
    assert set(browse.metadata(Path("x/news.db"))["databases"]) == {"news"}


def test_without_datasette_the_command_says_how_to_get_it(db, capsys, monkeypatch):
    monkeypatch.setattr(browse, "is_available", lambda: False)
    assert main(["--db", str(db), "datasette"]) == 1
    err = capsys.readouterr().err
    assert "datasette is not installed (pip install 'aggregator[datasette]')" in err
    assert main(["--db", str(db.parent / "none.db"), "datasette"]) == 1
    assert "no database at" in capsys.readouterr().err


def test_the_command_line_is_the_mutable_read_only_mode(tmp_path):
    argv = browse.command(tmp_path / "a.db", tmp_path / "m.json", host="127.0.0.1", port=8001)
    assert "-i" not in argv and "--immutable" not in argv
    assert argv[argv.index("--metadata") + 1] == str(tmp_path / "m.json")
    assert json.loads(json.dumps(browse.metadata(tmp_path / "a.db")))["title"] == "aggregator"


def _has_items_table(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'items'").fetchone())
    except sqlite3.OperationalError:
        return False


def test_datasette_reads_while_the_real_daemon_writes(tmp_path):
    """`aggregator run` polls a local farm of 40 feeds (and clusters them) while
    `aggregator datasette` answers over the same file: every answer is a 200 (no
    "database is locked"), the count only grows, and it reaches what the daemon stored."""
    pytest.importorskip("datasette", reason="datasette not installed "
                        "(pip install 'aggregator[datasette]')")
    from xml.sax.saxutils import quoteattr

    from bench.farm import Farm

    db = tmp_path / "news.db"
    with Farm(40, 10).serve() as farm:
        urls = [f"{farm.base}/feed/{i}.xml" for i in range(40)]
        opml = tmp_path / "feeds.opml"
        opml.write_text('<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head>'
                        "<body>" + "".join(f"<outline text={quoteattr(u)} xmlUrl={quoteattr(u)}/>"
                                           for u in urls) + "</body></opml>", encoding="utf-8")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AGGREGATOR_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        env.update(PYTHONPATH=str(ROOT), AGGREGATOR_FETCH_ARTICLES="false",
                   AGGREGATOR_SUMMARIES="false", AGGREGATOR_SERVE="false")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "--feeds", str(opml), "--db", str(db),
             "--output", str(tmp_path / "public"), "run"],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        browser = None
        try:
            deadline = time.monotonic() + 60
            while not _has_items_table(db):  # Datasette opens a file, it makes none
                assert daemon.poll() is None, daemon.communicate()[1]
                assert time.monotonic() < deadline, "the daemon made no database"
                time.sleep(0.05)
            browser = subprocess.Popen(
                [sys.executable, "-m", "aggregator", "--db", str(db), "datasette",
                 "--port", str(port)], cwd=tmp_path, text=True,
                stdout=subprocess.DEVNULL,  # its access log would fill an unread pipe
                stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            wait_for(f"{base}/-/versions.json", browser)
            counts: list[int] = []
            with httpx.Client(base_url=base, timeout=10) as client:
                while time.monotonic() < deadline:
                    r = client.get("/news.json", params={
                        "sql": "SELECT count(*) AS n FROM items", "_shape": "array"})
                    assert r.status_code == 200, r.text[:500]
                    counts.append(r.json()[0]["n"])
                    stories = client.get("/news/todays_stories.json?_shape=array")
                    assert stories.status_code == 200, stories.text[:500]
                    if counts[-1] == 400 and stories.json():
                        break
                    time.sleep(0.05)
            assert counts[-1] == 400, counts[-10:]
            assert counts == sorted(counts)  # never a torn view
            assert sqlite3.connect(db).execute("SELECT count(*) FROM items").fetchone()[0] == 400
        finally:
            for proc in (browser, daemon):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.communicate(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.communicate()
