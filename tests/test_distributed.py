"""Distributed mode with the real parts: our own redis-server (append-only file
on), real `aggregator coordinator` and `aggregator worker` processes (Celery
prefork), the local farm on 127.0.0.1, and the SQLite file read afterwards.

What a user relies on, asserted on the database and on the farm's request
counters: every item stored exactly once (no two rows with one feed and key),
as many items as the farm serves, one request per feed per poll, and the same
items and published files as the embedded mode. Then the faults: a whole worker
killed mid-fetch, an extract worker's child killed, the coordinator killed
between a commit and its acknowledgement, Redis killed and restarted with and
without its queue, a task slower than the visibility timeout, a feed whose task
kills its worker every time, and a 1,000-feed pass that loses a worker midway.

The coordinator's kill between commit and acknowledgement uses its one test
hook, ``AGGREGATOR_FAULT=exit-after-commit`` (aggregator/distributed/coordinator.py).
The waits have deadlines (generous: the machine is shared); nothing is timed.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.redis_harness import REDIS_SERVER, Cluster, Parts, Proc, TestFarm, parts, wait_until

pytestmark = pytest.mark.usefixtures("clean_env")

if REDIS_SERVER is None:
    pytest.skip("redis-server is not installed (.ci/run installs Debian's redis-server)",
                allow_module_level=True)
pytest.importorskip("celery", reason="the distributed extra: pip install 'aggregator[distributed]'")

PASS = 120.0  # s: deadline for a pass of a small farm to complete


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Parts]:
    yield from parts(tmp_path)


@pytest.fixture
def farm_factory() -> Iterator[Any]:
    farms: list[TestFarm] = []

    def make(feeds: int, items: int, hosts: int = 1) -> TestFarm:
        f = TestFarm(feeds, items, hosts=hosts).serve()
        farms.append(f)
        return f

    yield make
    for f in farms:
        f.stop()


# --- what every test checks ----------------------------------------------------------------


def pass_done(c: Cluster, feeds: int) -> bool:
    """Every feed polled and no claim open."""
    return c.scalar("SELECT count(*) FROM feeds WHERE last_fetch IS NOT NULL "
                    "AND lease_until IS NULL") == feeds


def summaries_done(c: Cluster) -> bool:
    n = c.item_count()
    return n > 0 and c.scalar("SELECT count(*) FROM items WHERE summary_hash IS NULL") == 0


def wait_pass(c: Cluster, farm: TestFarm, timeout: float = PASS, *, items: int | None = None,
              feeds: int | None = None) -> None:
    want = farm.total_items if items is None else items
    n_feeds = len(farm.urls()) if feeds is None else feeds
    wait_until(lambda: c.item_count() >= want and pass_done(c, n_feeds), timeout,
               f"{want} items and {n_feeds} feeds polled (have {c.item_count()})",
               logs=c.logs())


def assert_exactly_once(c: Cluster, farm: TestFarm) -> None:
    assert c.duplicates() == [], "an item stored twice"
    assert c.keys_by_url() == farm.expected_keys(), "items lost or extra"
    assert c.item_count() == farm.total_items


def assert_clean_logs(*procs: Proc) -> None:
    for p in procs:
        text = p.text()
        assert "Traceback" not in text, p.tail(8000)


# the coordinator's line for a result whose claim is no longer open (update.apply_poll)
FENCED = re.compile(r"result not recorded: its claim \(poll \d+\) was taken again")


def fenced_lines(p: Proc) -> list[str]:
    return [ln for ln in p.text().splitlines() if FENCED.search(ln)]


# --- 1. the same farm through both modes ------------------------------------------------------

ITEM_COLUMNS = ("key", "guid", "url", "title", "author", "published", "content", "content_text",
                "categories", "language", "sort_date", "content_hash", "article_status",
                "article_text", "summary_context", "summary_points", "summary_method",
                "summary_hash", "summary_source")


def items_by_url(c: Cluster) -> dict[tuple[str, str], dict[str, Any]]:
    cols = ", ".join(f"i.{k}" for k in ITEM_COLUMNS)
    return {(r["feed_url"], r["key"]): r for r in
            c.rows(f"SELECT f.url AS feed_url, {cols} FROM items i JOIN feeds f "
                   "ON f.id = i.feed_id")}


def published(out: Path) -> dict[str, str]:
    """rss.xml, atom.xml, feed.json without their build dates (there are none
    beyond the items' own today: the dates are taken from the newest item)."""
    files = {}
    for name in ("rss.xml", "atom.xml", "feed.json"):
        p = out / name
        text = p.read_text(encoding="utf-8") if p.exists() else ""
        text = re.sub(r"<lastBuildDate>[^<]*</lastBuildDate>", "", text)
        files[name] = text
    return files


def test_embedded_and_distributed_modes_store_and_publish_the_same(
        real: Parts, farm_factory: Any, tmp_path: Path) -> None:
    farm = farm_factory(6, 4)
    on = {"fetch_articles": True, "summaries": True}
    embedded = real.cluster(tmp_path / "embedded", **on)
    embedded.write_opml(farm.urls())
    embedded.run("update", "--all")
    assert_exactly_once(embedded, farm)
    assert summaries_done(embedded)
    want_files = published(embedded.output)
    assert all(want_files.values()) and "Context" in want_files["rss.xml"]

    dist = real.cluster(tmp_path / "distributed", **on)
    dist.write_opml(farm.urls())
    workers = [dist.worker("poll"), dist.worker("extract")]
    coordinator = dist.coordinator()
    wait_pass(dist, farm)
    wait_until(lambda: summaries_done(dist), PASS, "every item summarised", logs=dist.logs())
    assert_exactly_once(dist, farm)

    got, want = items_by_url(dist), items_by_url(embedded)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == want[k], k
    # the coordinator publishes after its last summaries: the same files in the end
    wait_until(lambda: published(dist.output) == want_files, 60,
               "the distributed mode's published files to equal the embedded ones",
               logs=dist.logs())
    # one request per feed and per article page in each mode
    for i in range(6):
        assert farm.count(farm.feed_path(i)) == 2
        for path in farm.article_paths(i):
            assert farm.count(path) == 2, path
    assert coordinator.alive() and all(w.alive() for w in workers)
    assert coordinator.stop() == 0
    assert_clean_logs(coordinator, *workers)


# --- 2. kill -9 of a whole poll worker mid-fetch; of an extract worker's child ------------------


def test_kill9_of_a_whole_poll_worker_mid_fetch_the_work_comes_back(
        real: Parts, farm_factory: Any, tmp_path: Path) -> None:
    farm = farm_factory(8, 3)
    held = farm.feed_path(3)
    farm.hold(held)
    c = real.cluster(tmp_path / "c")
    c.write_opml(farm.urls())
    first = c.worker("poll", concurrency=1)
    coordinator = c.coordinator()
    farm.wait_arrived(held, logs=c.logs())
    child = farm.client_pids[held][0]
    assert child in {p.pid for p in first.children()}, "the held request comes from a child"
    # the claim names the worker process that holds it (what `aggregator feeds` shows)
    url = farm.urls()[3]
    wait_until(lambda: c.scalar("SELECT lease_holder FROM feeds WHERE url = ?", (url,)), 30,
               "the worker's started message", logs=c.logs())
    holder = c.scalar("SELECT lease_holder FROM feeds WHERE url = ?", (url,))
    assert holder.startswith("poll@") and holder.endswith(f":{child}"), holder
    first.kill9()
    farm.release(held)
    assert not first.alive() and not first.children()
    second = c.worker("poll", concurrency=1)
    wait_pass(c, farm)
    assert_exactly_once(c, farm)
    # the held feed was fetched again (the first fetch died with its worker), the
    # others once: concurrency 1 and prefetch 1 mean the dead worker held one task
    assert farm.feed_requests() == {i: 2 if i == 3 else 1 for i in range(8)}
    assert coordinator.alive() and second.alive()
    assert_clean_logs(coordinator, second)


def test_kill9_of_an_extract_workers_child_the_summary_is_still_written_once(
        real: Parts, farm_factory: Any, tmp_path: Path) -> None:
    farm = farm_factory(3, 2)
    held = farm.article_paths(1)[0]
    farm.hold(held)
    c = real.cluster(tmp_path / "c", fetch_articles=True, summaries=True)
    c.write_opml(farm.urls())
    poll, extract = c.worker("poll"), c.worker("extract", concurrency=2)
    coordinator = c.coordinator()
    farm.wait_arrived(held, logs=c.logs())
    child = farm.client_pids[held][0]
    assert child in {p.pid for p in extract.children()}, "the article fetch runs in a child"
    os.kill(child, signal.SIGKILL)
    farm.release(held)
    wait_pass(c, farm)
    wait_until(lambda: summaries_done(c), PASS, "every item summarised", logs=c.logs())
    assert_exactly_once(c, farm)
    assert farm.count(held) == 2, "the killed child's task came back"
    (item,) = c.rows("SELECT * FROM items WHERE url LIKE ?", (f"%{held}",))
    assert item["article_status"] == "ok" and item["summary_context"]
    assert item["summary_source"] == "article"
    # every other article page was fetched once: nothing else was redone
    for i in range(3):
        for path in farm.article_paths(i):
            assert farm.count(path) == (2 if path == held else 1), path
    assert extract.alive(), "the worker replaced its child"
    assert_clean_logs(coordinator, poll)


# --- 3. the coordinator killed after a commit, before the acknowledgement -------------------------


def test_coordinator_killed_between_commit_and_ack_the_redelivery_changes_nothing(
        real: Parts, farm_factory: Any, tmp_path: Path) -> None:
    farm = farm_factory(5, 3)
    c = real.cluster(tmp_path / "c")
    c.write_opml(farm.urls())
    worker = c.worker("poll")
    crashing = c.coordinator(AGGREGATOR_FAULT="exit-after-commit")
    wait_until(lambda: not crashing.alive(), PASS, "the coordinator to exit after its commit",
               logs=c.logs())
    assert crashing.proc.returncode != 0
    committed = c.item_count()
    assert committed > 0, "one result was committed before the exit"
    before = {r["url"]: r for r in c.rows("SELECT * FROM feeds WHERE last_fetch IS NOT NULL")}
    assert len(before) >= 1
    snapshot = c.rows("SELECT * FROM items ORDER BY id")

    coordinator = c.coordinator()
    wait_pass(c, farm)
    # the unacknowledged result comes back after the visibility timeout: fenced off
    wait_until(lambda: fenced_lines(coordinator), 90, "the redelivered result to be fenced off",
               logs=c.logs())
    assert_exactly_once(c, farm)
    # the committed rows are untouched by the redelivery
    after = {r["id"]: r for r in c.rows("SELECT * FROM items")}
    for row in snapshot:
        assert after[row["id"]] == row
    for url, row in before.items():
        (now,) = c.rows("SELECT * FROM feeds WHERE url = ?", (url,))
        assert now["last_fetch"] == row["last_fetch"] and now["etag"] == row["etag"]
    assert farm.feed_requests() == dict.fromkeys(range(5), 1), "no feed polled twice"
    assert coordinator.stop() == 0
    assert_clean_logs(coordinator, worker)


# --- 4. Redis killed and restarted: with its queue, and empty ------------------------------------


def test_redis_killed_and_restarted_with_work_queued_nothing_lost(
        real: Parts, farm_factory: Any, tmp_path: Path) -> None:
    farm = farm_factory(10, 3)
    c = real.cluster(tmp_path / "c")
    c.write_opml(farm.urls())
    coordinator = c.coordinator()  # no worker yet: the tasks wait in Redis
    wait_until(lambda: real.redis.queued().get("aggregator.poll", 0) == 10, 60,
               "10 poll tasks queued", logs=c.logs())
    real.redis.kill9()
    real.redis.restart()
    assert real.redis.queued().get("aggregator.poll") == 10, "the append-only file kept them"
    worker = c.worker("poll")
    wait_pass(c, farm)
    assert_exactly_once(c, farm)
    assert farm.feed_requests() == dict.fromkeys(range(10), 1)
    assert coordinator.alive() and worker.alive()
    assert coordinator.stop() == 0


def test_redis_killed_with_a_task_mid_fetch_and_more_queued_nothing_lost_or_doubled(
        real: Parts, farm_factory: Any, tmp_path: Path) -> None:
    farm = farm_factory(6, 3)
    held = farm.feed_path(0)
    c = real.cluster(tmp_path / "c")
    c.write_opml(farm.urls())
    coordinator = c.coordinator()
    wait_until(lambda: real.redis.queued().get("aggregator.poll", 0) == 6, 60,
               "6 poll tasks queued", logs=c.logs())
    farm.hold(held)
    for i in range(1, 6):  # whichever feed comes first is the one held
        farm.hold(farm.feed_path(i))
    worker = c.worker("poll", concurrency=1)
    wait_until(lambda: sum(farm.arrived.values()) >= 1, 60, "a fetch under way", logs=c.logs())
    real.redis.kill9()  # the task mid-fetch, its result not yet sent; 5 tasks queued
    for path in list(farm.rules):
        farm.release(path)
    real.redis.restart()
    wait_pass(c, farm)
    assert_exactly_once(c, farm)
    counts = farm.feed_requests()
    assert all(1 <= v <= 2 for v in counts.values()), counts
    assert sum(counts.values()) <= 6 + 1, "only the fetch under way may be done again"
    assert coordinator.alive() and worker.alive()
    assert coordinator.stop() == 0


def test_redis_restarted_empty_leases_expire_and_the_work_is_dispatched_again(
        real: Parts, farm_factory: Any, tmp_path: Path) -> None:
    farm = farm_factory(10, 3)
    c = real.cluster(tmp_path / "c", lease_seconds=8, visibility_timeout=4, timeout=5.0,
                     connect_timeout=2.0)
    c.write_opml(farm.urls())
    coordinator = c.coordinator()
    wait_until(lambda: real.redis.queued().get("aggregator.poll", 0) == 10, 60,
               "10 poll tasks queued", logs=c.logs())
    leased = c.rows("SELECT id, poll_seq FROM feeds WHERE lease_until IS NOT NULL")
    assert len(leased) == 10
    real.redis.kill9()
    real.redis.restart(empty=True)
    assert real.redis.queued().get("aggregator.poll", 0) == 0, "the queue is gone"
    worker = c.worker("poll")
    wait_pass(c, farm)
    assert_exactly_once(c, farm)
    # the lost tasks were never run: each feed fetched once, under a new claim
    assert farm.feed_requests() == dict.fromkeys(range(10), 1)
    seqs = {r["id"]: r["poll_seq"] for r in c.rows("SELECT id, poll_seq FROM feeds")}
    assert all(seqs[r["id"]] > r["poll_seq"] for r in leased), "re-dispatched under new claims"
    assert coordinator.alive() and worker.alive()
    assert coordinator.stop() == 0


# --- 5. a task slower than the visibility timeout ---------------------------------------------


def test_a_task_slower_than_the_visibility_timeout_runs_twice_and_one_result_is_fenced(
        real: Parts, farm_factory: Any, tmp_path: Path) -> None:
    farm = farm_factory(4, 3)
    slow = farm.feed_path(2)
    farm.delay(slow, 12.0, times=1)  # 3 s visibility timeout: the broker gives it again
    c = real.cluster(tmp_path / "c", visibility_timeout=3, lease_seconds=60)
    c.write_opml(farm.urls())
    worker = c.worker("poll", concurrency=2)
    c.wait_workers_ready(worker)
    coordinator = c.coordinator()
    wait_pass(c, farm)
    url = farm.urls()[2]

    def slow_fenced() -> list[str]:
        return [ln for ln in fenced_lines(coordinator) if url in ln]

    wait_until(slow_fenced, 60, "the second result to be fenced off", logs=c.logs())
    assert farm.count(slow) == 2, "delivered twice"
    assert len(slow_fenced()) == 1, "one result applied, the other fenced off"
    assert_exactly_once(c, farm)
    (row,) = c.rows("SELECT * FROM feeds WHERE url = ?", (url,))
    assert row["state"] == "ok" and row["lease_until"] is None and row["error_count"] == 0
    # the fast feeds (far quicker than 3 s) ran once, unless the machine is so
    # loaded that one too outlived the visibility timeout: then it is fenced too
    for i in (0, 1, 3):
        fenced = [ln for ln in fenced_lines(coordinator) if farm.urls()[i] in ln]
        assert farm.count(farm.feed_path(i)) == 1 + len(fenced)
    assert worker.alive()
    assert coordinator.stop() == 0


# --- 6. a feed whose task kills its worker's child every time ------------------------------------


def test_a_feed_that_kills_its_worker_every_time_is_marked_failed_after_3_attempts(
        real: Parts, farm_factory: Any, tmp_path: Path) -> None:
    farm = farm_factory(4, 2)
    killer = farm.feed_path(1)
    farm.kill_client(killer)  # the request's sender dies (SIGKILL) every time
    c = real.cluster(tmp_path / "c")
    c.write_opml(farm.urls())
    worker = c.worker("poll", concurrency=2)
    coordinator = c.coordinator()
    wait_pass(c, farm, items=farm.total_items - 2)
    url = farm.urls()[1]
    (row,) = c.rows("SELECT * FROM feeds WHERE url = ?", (url,))
    assert row["state"] == "error" and row["error_count"] >= 1, row
    assert "3" in (row["last_error"] or ""), row["last_error"]
    assert row["next_fetch"] > datetime.now(UTC).isoformat(), "backs off, no loop"
    assert farm.count(killer) == 3 and len(farm.killed) == 3, farm.killed
    assert {pid for _, pid in farm.killed}.isdisjoint({worker.pid}), "children, not the worker"
    assert c.duplicates() == []
    got = c.keys_by_url()
    assert url not in got
    assert {u: k for u, k in farm.expected_keys().items() if u != url} == got
    assert worker.alive() and coordinator.alive()
    assert coordinator.stop() == 0


# --- 7. the 1,000-feed farm: two workers, then one lost mid-pass ----------------------------------


def test_a_thousand_feeds_two_workers_then_a_worker_killed_mid_pass(
        real: Parts, farm_factory: Any, tmp_path: Path) -> None:
    n = 1000
    farm = farm_factory(n, 2, hosts=50)
    # 50 tasks in flight: a claim waits in the queue a few seconds, far from its lease
    c = real.cluster(tmp_path / "c", visibility_timeout=5, lease_seconds=30, timeout=8.0,
                     max_in_flight=50)
    c.write_opml(farm.urls())
    workers = [c.worker("poll", concurrency=2), c.worker("poll", concurrency=2)]
    coordinator = c.coordinator()
    started = time.monotonic()
    wait_pass(c, farm, timeout=300)
    first_pass = time.monotonic() - started
    assert_exactly_once(c, farm)
    assert farm.feed_requests() == dict.fromkeys(range(n), 1), "one request per feed"

    # a second pass, with one new item in every feed: make every feed due now
    # (the coordinator stopped, so the file has no writer)
    assert coordinator.stop() == 0
    farm.data.add_item()
    time.sleep(1.1)  # the first pass's last_fetch (whole seconds) is before the mark
    mark = datetime.now(UTC).isoformat(timespec="seconds")
    with sqlite3.connect(c.db) as conn:
        conn.execute("UPDATE feeds SET next_fetch = ?", (mark,))
    # four feeds answer only when released: four worker processes in all (2 x 2),
    # so the worker to be killed is sure to be mid-fetch on one of them
    held = [farm.feed_path(i) for i in (100, 350, 600, 850)]
    for path in held:
        farm.hold(path)
    base = farm.feed_requests()
    coordinator = c.coordinator()
    started = time.monotonic()

    def victim_mid_fetch() -> list[str]:
        kids = {p.pid for p in workers[0].children()}
        return [path for path in held if set(farm.client_pids.get(path, ())) & kids]

    wait_until(lambda: sum(farm.feed_requests().values()) - sum(base.values()) >= n // 3
               and victim_mid_fetch(), 300,
               "a third of the second pass, and the first worker holding a held feed",
               logs=c.logs())
    cut = victim_mid_fetch()
    workers[0].kill9()
    killed_at = time.monotonic() - started
    for path in held:
        farm.release(path)
    wait_until(lambda: c.item_count() >= farm.total_items and c.scalar(
        "SELECT count(*) FROM feeds WHERE last_fetch >= ? AND lease_until IS NULL", (mark,)) == n,
        300, "the second pass to complete", logs=c.logs())
    second_pass = time.monotonic() - started
    assert_exactly_once(c, farm)
    second = {i: v - base[i] for i, v in farm.feed_requests().items()}
    assert min(second.values()) == 1
    redone = [i for i, v in second.items() if v > 1]
    # the fetches the kill cut short were done again; besides them, only what the
    # dead worker held (concurrency 2, prefetch 1) can have been fetched twice
    assert {farm.feed_path(i) for i in redone} >= set(cut)
    assert len(redone) <= 4 and max(second.values()) <= 2, redone
    cpu = sum(psutil.Process(coordinator.pid).cpu_times()[:2])
    print(f"\n1,000 feeds: first pass {first_pass:.1f} s; second pass killed a worker at "
          f"{killed_at:.1f} s, complete at {second_pass:.1f} s, {len(redone)} feeds fetched "
          f"again; coordinator CPU in the second pass {cpu:.1f} s")
    assert workers[1].alive() and coordinator.alive()
    assert coordinator.stop() == 0
    assert_clean_logs(coordinator, workers[1])
