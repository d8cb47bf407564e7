"""Issue 12 attacked from outside: hostile messages on the results queue of a real
redis-server (anyone who can write to Redis), a coordinator's real results consumer
on a real SQLite file, hostile numbers in claims and settings, broker URLs with
passwords, the coordinator and worker commands against a broker that is not there."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator.store import Store
from aggregator.types import Subscription
from tests.hostile_servers import assert_no_script, settings_for, write_opml
from tests.redis_harness import REDIS_SERVER, free_port, redis_server

ROOT = Path(__file__).resolve().parents[1]
needs_redis = pytest.mark.skipif(REDIS_SERVER is None,
                                 reason="redis-server is not installed (.ci/run installs it)")
URLS = ["http://127.0.0.1:9/a.xml", "http://127.0.0.1:9/b.xml"]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    yield from redis_server(tmp_path)


class Consumer:
    """A Coordinator's results thread on a real Redis and a real database with two
    claimed feeds (poll_seq 1), without the rest of the daemon."""

    def __init__(self, tmp_path: Path, url: str, **settings: Any) -> None:
        from aggregator.distributed.coordinator import Coordinator
        from aggregator.update import sync_subscriptions, utcnow

        self.url = url
        self.settings = settings_for(tmp_path, broker=url, visibility_timeout=2.0,
                                     lease_seconds=60.0, **settings)
        write_opml(self.settings, URLS)
        self.coordinator = Coordinator(self.settings, broker=url)
        with Store(self.settings.db) as store:
            sync_subscriptions(self.settings, store, utcnow())
            claimed = store.claim_due(utcnow(), holder="queued", lease=timedelta(seconds=60))
            assert [(f.id, f.poll_seq) for f in claimed] == [(1, 1), (2, 1)]
        self.thread = threading.Thread(target=self.coordinator._consume, daemon=True)
        self.thread.start()

    def publish(self, body: Any, *, raw: bytes | None = None,
                content_type: str = "application/json") -> None:
        from kombu import Connection

        from aggregator.distributed.tasks import RESULTS, RESULTS_EXCHANGE, RESULTS_QUEUE

        with Connection(self.url) as conn:
            producer = conn.Producer()
            if raw is not None:
                producer.publish(raw, exchange=RESULTS_EXCHANGE, routing_key=RESULTS_QUEUE,
                                 declare=[RESULTS], content_type=content_type,
                                 content_encoding="binary")
            else:
                producer.publish(body, exchange=RESULTS_EXCHANGE, routing_key=RESULTS_QUEUE,
                                 declare=[RESULTS], serializer="json")

    def feed(self, feed_id: int) -> dict[str, Any]:
        with sqlite3.connect(self.settings.db) as c:
            c.row_factory = sqlite3.Row
            return dict(c.execute("SELECT * FROM feeds WHERE id = ?", (feed_id,)).fetchone())

    def items(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.settings.db) as c:
            c.row_factory = sqlite3.Row
            return [dict(r) for r in c.execute("SELECT * FROM items ORDER BY id")]

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self.thread.is_alive(), "the results thread died"
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def queue_empty(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            return (client.llen("aggregator.results") == 0
                    and client.hlen("unacked") == 0)
        finally:
            client.close()

    def stop(self) -> None:
        self.coordinator._results_stop.set()
        self.thread.join(10)
        self.coordinator.store.close()


@pytest.fixture
def consumer(tmp_path: Path, redis_url: str) -> Iterator[Consumer]:
    c = Consumer(tmp_path, redis_url)
    yield c
    c.stop()


def result(feed_id: int = 1, poll_seq: Any = 1, **changes: Any) -> dict[str, Any]:
    """A poll result as a worker publishes it (200, one parsed item)."""
    url = URLS[1] if feed_id == 2 else URLS[0]
    data = {
        "v": 1, "feed_id": feed_id, "poll_seq": poll_seq, "url": url,
        "status": 200, "headers": {}, "final_url": url, "permanent_url": None,
        "body_hash": "b" * 32, "parsed_meta": ["Feed", None, "en", None, None],
        "items": [["k1", {"guid": "g1", "url": "http://127.0.0.1:9/1", "title": "One",
                          "content": "<p>one</p>", "content_text": "one"}, "h1"]],
        "document_keys": None, "error": None, "seconds": 0.1, "worker": "poll@x:1",
    }
    data.update(changes)
    return {"kind": "poll", "result": data}


def _nested(depth: int) -> str:
    return '{"kind": "poll", "result": ' + "[" * depth + "]" * depth + "}"


@needs_redis
def test_poison_messages_are_dropped_once_and_the_results_behind_them_applied(
        consumer: Consumer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aggregator")
    consumer.publish(None, raw=b'{"kind": "poll", "result": {')  # not JSON
    consumer.publish(None, raw=b"\x80\x04K\x01.", content_type="application/x-python-serialize")
    consumer.publish(None, raw=_nested(100_000).encode())  # deeper than json can go
    consumer.publish(None, raw=b'{"kind": "poll", "result": {"v": 1, "seconds": NaN}}')
    for body in ([1, 2], "poll", {"kind": ["poll"]}, {"kind": "poll", "result": None},
                 {"kind": "x" * 100_000},
                 result(v=2), result(poll_seq=True), result(poll_seq=-1), result(poll_seq=1.0),
                 result(poll_seq=2**63), result(feed_id=-1), result(feed_id=2**70),
                 result(seconds=1e400), result(items={"k": 1}),
                 {"kind": "started", "feed_id": "1", "poll_seq": 1, "worker": "w"},
                 {"kind": "started", "feed_id": 1, "poll_seq": 2**64, "worker": "w"},
                 {"kind": "extract", "dispatch": "d", "result": {"v": 1, "item_id": 1,
                  "content_hash": "h", "summary": {"context": [1, {}], "points": "abc",
                                                   "method": "x"}}}):
        consumer.publish(body)
    consumer.publish(result(feed_id=1))  # an honest result, behind all of them
    consumer.wait("the honest result", lambda: consumer.feed(1)["last_status"] == 200)
    consumer.wait("every message acknowledged", consumer.queue_empty)
    feed = consumer.feed(1)
    assert feed["lease_until"] is None and feed["poll_seq"] == 1 and feed["error_count"] == 0
    assert [i["key"] for i in consumer.items()] == ["k1"]
    assert consumer.feed(2)["lease_until"] is not None  # nothing touched the other claim
    dropped = [r.getMessage() for r in caplog.records
               if r.name == "aggregator.coordinator" and r.levelno >= logging.ERROR]
    assert sum("cannot be decoded" in m for m in dropped) == 3, dropped  # once each
    assert len(dropped) == 3 + 18, dropped
    assert all(len(m) < 600 for m in dropped)  # a huge message is not logged whole


@needs_redis
def test_a_result_without_a_claim_or_for_no_feed_changes_nothing(consumer: Consumer) -> None:
    consumer.publish(result(feed_id=2, poll_seq=None))  # unfenced: would overwrite the feed
    nowhere = result(poll_seq=None)
    nowhere["result"]["feed_id"] = 999  # no such feed: its items broke a foreign key
    consumer.publish(nowhere)
    consumer.publish(result(feed_id=1))
    consumer.wait("the honest result", lambda: consumer.feed(1)["last_status"] == 200)
    consumer.wait("every message acknowledged", consumer.queue_empty, timeout=10)
    assert consumer.feed(2)["last_status"] is None and consumer.feed(2)["lease_until"]
    assert [i["feed_id"] for i in consumer.items()] == [1]


@needs_redis
def test_a_write_the_database_refuses_is_dropped_after_a_few_tries(
        consumer: Consumer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aggregator")
    with sqlite3.connect(consumer.settings.db) as c:  # feed 1's rows cannot be written
        c.execute("CREATE TRIGGER no_write BEFORE UPDATE ON feeds WHEN OLD.id = 1 "
                  "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    consumer.publish(result(feed_id=1))
    consumer.publish(result(feed_id=2))
    consumer.wait("feed 2's result", lambda: consumer.feed(2)["last_status"] == 200)
    consumer.wait("every message acknowledged", consumer.queue_empty, timeout=10)
    lines = [r.getMessage() for r in caplog.records if "refused by the test" in r.getMessage()]
    assert len(lines) == 3 and "dropped" in lines[-1], lines


@needs_redis
def test_hostile_content_from_the_broker_is_cleaned_before_it_is_stored_or_published(
        consumer: Consumer) -> None:
    from aggregator.update import publish_now

    evil = {"guid": "g\x00", "url": "javascript:alert(1)",
            "title": "<script>alert(2)</script><b>Title</b>",
            "author": "<img src=x onerror=alert(3)>Ann",
            "published": "2999-01-01T00:00:00+00:00",
            "content": "<script>alert(4)</script><a href='javascript:x' onclick='y'>l</a>"
                       "<iframe src='http://127.0.0.1:9/'></iframe><img src='data:image/png,x'>",
            "content_text": "text", "categories": ["<script>c</script>ok"],
            "language": "en\"><script>",
            "enclosures": [{"url": "data:text/html,<script>alert(5)</script>",
                            "type": "text/html", "length": -5, "kind": "enclosure"},
                           {"url": "http://127.0.0.1:9/a.mp3", "type": "audio/mpeg",
                            "length": 10, "kind": "enclosure"}]}
    consumer.publish(result(feed_id=1, items=[["k1", evil, "h1"]],
                            parsed_meta=["<script>t</script>Feed", "javascript:x",
                                         "en", 10, None]))
    consumer.wait("the result", lambda: consumer.feed(1)["last_status"] == 200)
    items = consumer.items()
    assert_no_script(items)
    (item,) = items
    assert item["title"] == "Title" and item["url"] is None and item["published"] is None
    assert "<" not in (item["author"] or "") and "<" not in (item["categories"] or "")
    assert item["language"] is None and item["guid"] == "g"
    feed = consumer.feed(1)
    assert feed["feed_title"] == "Feed" and feed["site_url"] is None
    with sqlite3.connect(consumer.settings.db) as c:
        media = [r[0] for r in c.execute("SELECT url FROM media")] \
            if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'media'").fetchone() else []
    assert all(u.startswith("http://") for u in media)
    settings = consumer.settings.replace(publish=True)
    with Store(settings.db) as store:
        publish_now(settings, store)
    for path in settings.output.rglob("*"):
        if path.is_file():
            text = path.read_text("utf-8", errors="replace").lower()
            assert "<script>alert" not in text and "javascript:" not in text, path
            assert "&lt;script&gt;alert" not in text, path
            assert "data:text/html" not in text, path


@needs_redis
def test_a_move_in_a_result_for_another_feed_is_ignored(consumer: Consumer) -> None:
    # a valid claim of feed 1, a result naming feed 2's URL and a move: feeds.opml unchanged
    body = result(feed_id=1)
    body["result"]["url"] = URLS[1]
    body["result"]["permanent_url"] = "http://127.0.0.1:9/elsewhere.xml"
    body["result"]["status"] = 301
    before = consumer.settings.feeds.read_text("utf-8")
    consumer.publish(body)
    consumer.wait("the result", lambda: consumer.feed(1)["lease_until"] is None)
    consumer.wait("every message acknowledged", consumer.queue_empty, timeout=10)
    assert consumer.settings.feeds.read_text("utf-8") == before
    with sqlite3.connect(consumer.settings.db) as c:
        assert sorted(r[0] for r in c.execute("SELECT url FROM feeds")) == sorted(URLS)


@needs_redis
def test_a_worker_name_cannot_write_to_the_operators_terminal(consumer: Consumer) -> None:
    consumer.publish({"kind": "started", "feed_id": 1, "poll_seq": 1,
                      "worker": "\x1b]0;owned\x07poll@\u202ehost\n:1" + "x" * 1000})
    consumer.wait("the holder", lambda: consumer.feed(1)["lease_holder"] != "queued")
    holder = consumer.feed(1)["lease_holder"]
    assert holder.isascii() and holder.isprintable() and len(holder) <= 200
    assert holder.startswith("]0;ownedpoll@host:1")


# --- claims, leases and settings --------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_claim_due_takes_any_number_of_ids(tmp_path: Path) -> None:
    urls = [f"http://127.0.0.1:9/{i}.xml" for i in range(40_010)]
    with Store(tmp_path / "x.db") as store:
        store.sync_subscriptions([Subscription(url=u) for u in urls], NOW)
        ids = [f.id for f in store.feeds()]
        got = store.claim_due(NOW, holder="queued", lease=timedelta(minutes=15),
                              ids=ids + ids[:5])  # repeated ids count once
        assert len(got) == len(urls) and len({f.id for f in got}) == len(urls)
        assert store.claim_due(NOW, holder="q", lease=timedelta(minutes=15), ids=ids) == []
        store.release_leases("queued")
        some = store.claim_due(NOW, holder="q", lease=timedelta(minutes=15), ids=ids,
                               limit=25_000)
        assert len(some) == 25_000


def test_a_lease_taken_before_the_clock_went_back_does_not_hold_the_feed(
        tmp_path: Path) -> None:
    lease = timedelta(minutes=15)
    with Store(tmp_path / "x.db") as store:
        store.sync_subscriptions([Subscription(url=URLS[0])], NOW)
        (claimed,) = store.claim_due(NOW, holder="queued", lease=lease)
        back = NOW - timedelta(days=365)  # the clock went back a year
        assert store.sweep_leases(back, lease) == 0
        (held,) = store.leased(back)
        assert held.lease_until == back + lease  # cut to one lease from now, still open
        store.rewind_schedule(back)  # as the coordinator's dispatch does first
        assert store.claim_due(back + lease, holder="q", lease=lease) != []
        # the first claim's result is fenced off by the new claim, as after any sweep
        assert not store.record_error(claimed.id, back, status=None, error="x",
                                      next_fetch=None, poll_seq=claimed.poll_seq)


@pytest.mark.parametrize("env, message", [
    ({"AGGREGATOR_LEASE_SECONDS": "1e13"}, "at most 604800"),
    ({"AGGREGATOR_VISIBILITY_TIMEOUT": "1e300"}, "at most 604800"),
    ({"AGGREGATOR_VISIBILITY_TIMEOUT": "0"}, "visibility_timeout must be a positive"),
    ({"AGGREGATOR_VISIBILITY_TIMEOUT": "nan"}, "visibility_timeout must be a positive"),
    ({"AGGREGATOR_LEASE_SECONDS": "-5"}, "lease_seconds must be longer than timeout"),
    ({"AGGREGATOR_MAX_IN_FLIGHT": "0"}, "max_in_flight must be at least 1"),
])
def test_odd_lease_settings_are_one_line_errors(tmp_path: Path, env: dict[str, str],
                                                message: str) -> None:
    proc = _cli(tmp_path, "coordinator", "--broker", "redis://127.0.0.1:1/0", env=env)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- broker URLs and the commands -------------------------------------------------------

def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    drop = ("AGGREGATOR_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM", "LISTEN_")
    full = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    full["PYTHONPATH"] = str(ROOT)
    full.update(env or {})
    (tmp_path / "feeds.opml").write_text('<opml version="2.0"><body/></opml>', "utf-8")
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--feeds", str(tmp_path / "feeds.opml"),
         "--db", str(tmp_path / "x.db"), "--output", str(tmp_path / "out"), *args],
        cwd=tmp_path, env=full, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", [["coordinator", "--no-serve"],
                                     ["worker", "--role", "poll"]])
def test_a_broker_password_never_shows_and_a_wrong_scheme_is_refused(
        tmp_path: Path, command: list[str]) -> None:
    proc = _cli(tmp_path, *command, "--broker", "amqp://user:s3cret@127.0.0.1:5672//")
    assert proc.returncode == 1 and "must be a redis:// URL" in proc.stderr, proc.stderr
    assert "s3cret" not in proc.stderr and "user:***@" in proc.stderr


@pytest.mark.parametrize("command", [["coordinator", "--no-serve"],
                                     ["worker", "--role", "poll", "--concurrency", "1"]])
def test_an_unreachable_broker_is_a_clear_error_at_start(tmp_path: Path,
                                                         command: list[str]) -> None:
    pytest.importorskip("celery", reason="the distributed extra is not installed")
    port = free_port()  # nothing listens there
    proc = _cli(tmp_path, *command, "--broker", f"redis://:s3cret@127.0.0.1:{port}/0",
                timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "cannot reach the broker" in proc.stderr and "s3cret" not in proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"redis://:***@127.0.0.1:{port}/0" in proc.stderr


def test_a_bad_broker_url_is_a_one_line_error(tmp_path: Path) -> None:
    pytest.importorskip("celery", reason="the distributed extra is not installed")
    proc = _cli(tmp_path, "worker", "--role", "poll", "--broker", "redis://:s3cret@h:port/0")
    assert proc.returncode == 1 and "s3cret" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_wire_numbers_past_sqlite_and_non_finite_floats_are_refused() -> None:
    from aggregator.wire import PollResult

    base = result()["result"]
    for change in ({"poll_seq": 2**63}, {"feed_id": -3}, {"feed_id": True},
                   {"status": 10**30}, {"seconds": float("nan")}, {"seconds": float("inf")},
                   {"error_count": -1}):
        with pytest.raises(ValueError):
            PollResult.from_json({**base, **change})
    assert PollResult.from_json(json.loads(json.dumps(base))).poll_seq == 1
