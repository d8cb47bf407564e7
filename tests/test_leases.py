"""Claims on due feeds (store ``claim_due``): a lease per polled feed and a fencing
counter (``poll_seq``), on a real SQLite file shared by two connections. A claim is
exclusive, an expired one is swept and claimed again, and a result written for an
old or closed claim changes nothing."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.store import Store
from aggregator.types import ParsedFeed, ParsedItem, Subscription

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=15)
URLS = [f"http://127.0.0.1:9/feed{i}.xml" for i in range(6)]


def _item(guid: str, title: str = "A title") -> ParsedItem:
    return ParsedItem(guid=guid, url=f"http://127.0.0.1:9/{guid}", title=title, author=None,
                      published=NOW - timedelta(hours=1), updated=None, content="<p>x</p>",
                      content_text="x")


PARSED = ParsedFeed(title="Feed", site_url=None, language="en", ttl_minutes=None,
                    items=(_item("a"), _item("b")))


def _items(*guids: str, title: str = "A title") -> list[tuple[str, ParsedItem, str]]:
    return [(g, _item(g, title), f"hash-{g}-{title}") for g in guids]


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "x.db"
    with Store(path) as store:
        store.sync_subscriptions([Subscription(url=u) for u in URLS], NOW)
    return path


def _row(db: Path, url: str) -> tuple[object, ...]:
    with sqlite3.connect(db) as c:
        return tuple(c.execute(
            "SELECT poll_seq, lease_until, lease_holder, last_status, error_count, etag, "
            "(SELECT count(*) FROM items i WHERE i.feed_id = f.id) FROM feeds f WHERE url = ?",
            (url,)).fetchone())


def test_a_claim_is_exclusive_between_two_connections(db: Path) -> None:
    with Store(db) as one, Store(db) as two:
        first = one.claim_due(NOW, holder="embedded:1", lease=LEASE, limit=4)
        second = two.claim_due(NOW, holder="embedded:2", lease=LEASE)
        assert len(first) == 4 and len(second) == 2
        assert not {f.id for f in first} & {f.id for f in second}
        assert {f.lease_holder for f in first} == {"embedded:1"}
        assert {f.poll_seq for f in first + second} == {1}
        assert all(f.lease_until == NOW + LEASE for f in first + second)
        # everything is held: nobody gets anything until a lease ends
        assert one.claim_due(NOW, holder="embedded:1", lease=LEASE) == []
        assert two.claim_due(NOW + timedelta(minutes=5), holder="x", lease=LEASE) == []
        assert {f.id for f in one.leased(NOW)} == {f.id for f in first + second}


def test_claims_racing_on_threads_never_share_a_feed(db: Path) -> None:
    got: list[list[int]] = []
    start = threading.Barrier(4)

    def claim(n: int) -> None:
        with Store(db) as store:
            start.wait()
            got.append([f.id for f in store.claim_due(NOW, holder=f"t{n}", lease=LEASE,
                                                      limit=2)])

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for ids in got for i in ids]
    assert len(ids) == len(set(ids)) == len(URLS)


def test_claim_follows_the_due_rule_and_the_ids_given(db: Path) -> None:
    with Store(db) as store:
        feeds = {f.url: f for f in store.feeds()}
        # polled just now: not due for an hour
        store.record_not_modified_many([(feeds[URLS[0]].id, NOW, 304, NOW + timedelta(hours=1),
                                         {})])
        claimed = store.claim_due(NOW, holder="h", lease=LEASE,
                                  ids=[feeds[URLS[0]].id, feeds[URLS[1]].id])
        assert [f.url for f in claimed] == [URLS[1]]  # the other one is not due
        assert store.claim_due(NOW, holder="h", lease=LEASE, ids=[]) == []
        everything = store.claim_due(NOW, holder="h", lease=LEASE, all_feeds=True)
        assert {f.url for f in everything} == set(URLS) - {URLS[1]}  # that one is held
        assert store.due_feeds(NOW) != []  # due_feeds does not look at leases


def test_an_expired_lease_is_swept_and_claimed_again_with_a_higher_poll_seq(db: Path) -> None:
    with Store(db) as store:
        first = store.claim_due(NOW, holder="worker-a", lease=LEASE, limit=1)[0]
        assert store.sweep_leases(NOW + LEASE - timedelta(seconds=1)) == 0
        assert store.sweep_leases(NOW + LEASE) == 1
        assert store.leased(NOW) == []
        later = NOW + LEASE + timedelta(seconds=1)
        again = [f for f in store.claim_due(later, holder="worker-b", lease=LEASE)
                 if f.id == first.id][0]
        assert again.poll_seq == first.poll_seq + 1 and again.lease_holder == "worker-b"
        # the first claim's result comes in late: fenced off, nothing written
        counts = store.record_feed(first.id, later, status=200, headers={"etag": '"old"'},
                                   body_hash="old", parsed=PARSED, items=_items("a", "b"),
                                   next_fetch=later + timedelta(hours=1),
                                   poll_seq=first.poll_seq)
        assert counts.fenced and counts.new == 0
        assert _row(db, first.url) == (2, (later + LEASE).isoformat(), "worker-b", None, 0,
                                       None, 0)
        assert not store.record_error(first.id, later, status=500, error="HTTP 500",
                                      next_fetch=later, poll_seq=first.poll_seq)
        assert store.record_not_modified_many(
            [(first.id, later, 304, later, {"etag": '"old"'}, first.poll_seq)]) == 0
        assert _row(db, first.url)[3:] == (None, 0, None, 0)
        # the current claim's result is written, and closes the claim
        counts = store.record_feed(first.id, later, status=200, headers={"etag": '"new"'},
                                   body_hash="new", parsed=PARSED, items=_items("a", "b"),
                                   next_fetch=later + timedelta(hours=1),
                                   poll_seq=again.poll_seq)
        assert not counts.fenced and counts.new == 2
        assert _row(db, first.url) == (2, None, None, 200, 0, '"new"', 2)


def test_a_lease_that_is_expired_but_not_swept_can_be_claimed(db: Path) -> None:
    with Store(db) as store:
        first = store.claim_due(NOW, holder="a", lease=LEASE)
        again = store.claim_due(NOW + LEASE, holder="b", lease=LEASE)
        assert {f.id for f in again} == {f.id for f in first}
        assert {f.poll_seq for f in again} == {2}


def test_a_second_application_of_the_same_result_changes_nothing(db: Path) -> None:
    with Store(db) as store:
        feeds = store.claim_due(NOW, holder="embedded:1", lease=LEASE)
        a, b, c = feeds[:3]
        args = dict(status=200, headers={}, body_hash="1", parsed=PARSED,
                    next_fetch=NOW + timedelta(hours=1), poll_seq=a.poll_seq)
        assert store.record_feed(a.id, NOW, items=_items("a", "b"), **args).new == 2
        again = store.record_feed(a.id, NOW, items=_items("a", "b", title="Changed"), **args)
        assert again.fenced and again.changed == 0
        with sqlite3.connect(db) as conn:
            assert {r[0] for r in conn.execute(
                "SELECT title FROM items WHERE feed_id = ?", (a.id,))} == {"A title"}
        # an error, twice: counted once
        assert store.record_error(b.id, NOW, status=500, error="HTTP 500", next_fetch=NOW,
                                  poll_seq=b.poll_seq)
        assert not store.record_error(b.id, NOW, status=500, error="HTTP 500",
                                      next_fetch=NOW, poll_seq=b.poll_seq)
        assert _row(db, b.url)[3:5] == (500, 1)
        # a 304, twice: written once
        row = (c.id, NOW, 304, NOW + timedelta(hours=1), {"etag": '"e"'}, c.poll_seq)
        assert store.record_not_modified_many([row]) == 1
        assert store.record_not_modified_many([row]) == 0
        assert _row(db, c.url)[:3] == (1, None, None)


def test_unfenced_writes_still_work_and_close_the_lease(db: Path) -> None:
    with Store(db) as store:
        a, b, c = store.claim_due(NOW, holder="embedded:1", lease=LEASE, limit=3)
        counts = store.record_feed(a.id, NOW, status=200, headers={}, body_hash="1",
                                   parsed=PARSED, items=_items("a"),
                                   next_fetch=NOW + timedelta(hours=1))
        assert counts.new == 1 and not counts.fenced
        assert store.record_error(b.id, NOW, status=None, error="boom", next_fetch=NOW)
        # the 5-tuple of before: unfenced
        assert store.record_not_modified_many([(c.id, NOW, 304, NOW, {})]) == 1
        for f in (a, b, c):
            assert _row(db, f.url)[1:3] == (None, None)
        # and on a feed nobody claimed
        free = store.feed(URLS[5])
        assert free is not None and free.lease_until is None
        assert store.record_error(free.id, NOW, status=404, error="HTTP 404", next_fetch=NOW)


def test_document_keys_name_the_items_that_did_not_travel(db: Path) -> None:
    with Store(db) as store:
        feed = store.claim_due(NOW, holder="h", lease=LEASE, limit=1)[0]
        store.record_feed(feed.id, NOW, status=200, headers={}, body_hash="1", parsed=PARSED,
                          items=_items("a", "b", "c"), next_fetch=NOW, poll_seq=feed.poll_seq)
        assert store.known_items(feed.id) == {g: f"hash-{g}-A title" for g in "abc"}
        assert store.known_items(feed.id, limit=1).keys() <= {"a", "b", "c"}
        feed = store.claim_due(NOW, holder="h", lease=LEASE, ids=[feed.id])[0]
        # only "d" is new; the document also holds a and b (c left it)
        store.record_feed(feed.id, NOW, status=200, headers={}, body_hash="2", parsed=PARSED,
                          items=_items("d"), next_fetch=NOW, poll_seq=feed.poll_seq,
                          document_keys=["a", "b", "d"])
        with sqlite3.connect(db) as conn:
            latest = conn.execute("SELECT latest_items FROM feeds WHERE id = ?",
                                  (feed.id,)).fetchone()[0]
            ids = dict(conn.execute("SELECT key, id FROM items WHERE feed_id = ?", (feed.id,)))
        assert latest == f"[{', '.join(str(ids[k]) for k in sorted('abd', key=ids.get))}]"
        # nothing travelled at all: the document is still remembered
        feed = store.claim_due(NOW, holder="h", lease=LEASE, ids=[feed.id])[0]
        store.record_feed(feed.id, NOW, status=200, headers={}, body_hash="3", parsed=PARSED,
                          items=[], next_fetch=NOW, poll_seq=feed.poll_seq,
                          document_keys=["c"])
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT latest_items FROM feeds WHERE id = ?",
                                (feed.id,)).fetchone()[0] == f"[{ids['c']}]"


def test_release_by_holder_and_by_claim(db: Path) -> None:
    with Store(db) as store:
        mine = store.claim_due(NOW, holder="embedded:41", lease=LEASE, limit=2)
        theirs = store.claim_due(NOW, holder="worker@host", lease=LEASE, limit=2)
        assert store.set_lease_holder(theirs[0].id, theirs[0].poll_seq, "poll@host-2")
        assert not store.set_lease_holder(theirs[0].id, theirs[0].poll_seq + 1, "x")
        assert store.release_leases("embedded") == 2
        assert store.release_leases("embedded") == 0
        assert {f.id: f.lease_holder for f in store.leased(NOW)} == {
            theirs[0].id: "poll@host-2", theirs[1].id: "worker@host"}
        rest = store.claim_due(NOW, holder="embedded:42", lease=LEASE)
        assert {f.id for f in rest} == {f.id for f in mine} | (
            set(f.id for f in store.feeds()) - {f.id for f in mine + theirs})
        # a claim given back only if it is still the one open
        assert store.release_claims([(theirs[0].id, theirs[0].poll_seq + 1)]) == 0
        assert store.release_claims([(f.id, f.poll_seq) for f in theirs]) == 2
        assert store.release_claims([(f.id, f.poll_seq) for f in theirs]) == 0
        assert len(store.leased(NOW)) == len(rest)


def test_feed_rows_carry_the_lease(db: Path) -> None:
    with Store(db) as store:
        claimed = store.claim_due(NOW, holder="embedded:7", lease=LEASE, limit=1)[0]
        row = store.feed(claimed.url)
        assert row is not None
        assert (row.poll_seq, row.lease_until, row.lease_holder) == (1, NOW + LEASE,
                                                                     "embedded:7")
        listed = {f.url: f for f in store.feeds()}
        assert listed[claimed.url].lease_holder == "embedded:7"
        assert listed[URLS[5]].lease_until is None and listed[URLS[5]].poll_seq in (0, 1)


@pytest.mark.usefixtures("clean_env")
def test_feeds_shows_a_lease_and_its_holder(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from aggregator.cli import main

    now = datetime.now(UTC).replace(microsecond=0)
    with Store(db) as store:
        held = store.claim_due(now, holder="poll@worker-3", lease=LEASE, limit=1)[0]
        old = store.claim_due(now - 2 * LEASE, holder="embedded:1", lease=LEASE, limit=1)[0]
    capsys.readouterr()
    assert main(["--db", str(db), "feeds"]) == 0
    out = capsys.readouterr().out
    until = (now + LEASE).strftime("%Y-%m-%d %H:%M")
    assert f"<{held.url}>\n    leased until {until} by poll@worker-3" in out
    expired = (now - LEASE).strftime("%Y-%m-%d %H:%M")
    assert f"<{old.url}>\n    lease expired {expired} (held by embedded:1)" in out
    assert out.count("lease") == 2  # the other feeds are not leased
    assert main(["--db", str(db), "feeds", "--json"]) == 0
    rows = {r["url"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert (rows[held.url]["poll_seq"], rows[held.url]["lease_until"],
            rows[held.url]["lease_holder"]) == (1, (now + LEASE).isoformat(), "poll@worker-3")
    free = rows[URLS[5]] if URLS[5] not in (held.url, old.url) else rows[URLS[4]]
    assert (free["poll_seq"], free["lease_until"], free["lease_holder"]) == (0, None, None)


# --- the embedded pass claims, polls and closes its claims ------------------------------

def _settings(tmp_path: Path, farm: object, **kw: object) -> object:
    from aggregator.config import Settings

    opml = farm.write_opml(tmp_path / "farm.opml")  # type: ignore[attr-defined]
    base = dict(db=tmp_path / "p.db", feeds=opml, output=tmp_path / "out",
                fetch_articles=False, summaries=False, publish=False, workers=4)
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def test_a_pass_skips_the_feeds_another_process_holds_and_leaves_no_claim(
        tmp_path: Path) -> None:
    import os

    from aggregator.update import make_fetcher, run_pass
    from bench.farm import Farm

    with Farm(4, 2).serve() as farm:
        s = _settings(tmp_path, farm)
        with Store(s.db) as store, make_fetcher(s) as fetcher:  # type: ignore[attr-defined]
            store.sync_subscriptions([Subscription(url=u) for u in farm.urls()], NOW)
            now = datetime.now(UTC)
            held = store.claim_due(now, holder=f"embedded:{os.getppid()}", lease=LEASE,
                                   limit=1)[0]  # a running process: pytest's parent
            result = run_pass(s, store, fetcher, all_feeds=True)  # type: ignore[arg-type]
            assert {o.url for o in result.outcomes} == set(farm.urls()) - {held.url}
            assert sum(farm.requests.values()) == 3  # the held feed was not asked
            assert [f.url for f in store.leased(datetime.now(UTC))] == [held.url]
            polled = {f.url: f for f in store.feeds()}
            assert all(polled[u].poll_seq == 1 and polled[u].state == "ok"
                       for u in farm.urls() if u != held.url)
            assert polled[held.url].state == "new"


def test_the_claims_of_a_dead_process_are_given_back(tmp_path: Path) -> None:
    import subprocess
    import sys

    from aggregator.update import make_fetcher, run_pass
    from bench.farm import Farm

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with Farm(3, 2).serve() as farm:
        s = _settings(tmp_path, farm)
        with Store(s.db) as store, make_fetcher(s) as fetcher:  # type: ignore[attr-defined]
            store.sync_subscriptions([Subscription(url=u) for u in farm.urls()], NOW)
            store.claim_due(datetime.now(UTC), holder=f"embedded:{dead}", lease=LEASE)
            store.claim_due(datetime.now(UTC) - LEASE, holder="worker@elsewhere",
                            lease=LEASE)  # nothing left to claim: all held
            result = run_pass(s, store, fetcher, all_feeds=True)  # type: ignore[arg-type]
            assert sorted(o.url for o in result.outcomes) == sorted(farm.urls())
            assert {o.result for o in result.outcomes} == {"new"}
            assert store.leased(datetime.now(UTC) - 10 * LEASE) == []
            assert {f.poll_seq for f in store.feeds()} == {2}


def test_a_result_applied_twice_or_late_is_fenced_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import random

    from aggregator.config import Settings
    from aggregator.update import apply_poll, make_fetcher, policy, poll_feed
    from aggregator.wire import PollResult, PollTask
    from bench.farm import Farm

    with Farm(1, 3).serve() as farm:
        s = Settings(db=tmp_path / "f.db", feeds=tmp_path / "none.opml")
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            store.sync_subscriptions([Subscription(url=u) for u in farm.urls()], NOW)
            feed = store.claim_due(datetime.now(UTC), holder="w", lease=LEASE)[0]
            task = PollTask.from_row(feed)
            result = poll_feed(fetcher, task, datetime.now(UTC))
            assert result.error is None and len(result.items) == 3
            assert result.document_keys is None  # known=None: everything travels
            back = PollResult.from_json(result.to_json())
            pol, rng = policy(s), random.Random(1)
            first = apply_poll(store, back, pol, datetime.now(UTC), rng, None)
            assert (first.result, first.new) == ("new", 3)
            with caplog.at_level(logging.INFO, logger="aggregator.update"):
                again = apply_poll(store, back, pol, datetime.now(UTC), rng, None)
            assert again.result == "fenced" and again.new == 0
            assert "result not recorded" in caplog.text and feed.url in caplog.text
            assert store.count_items() == 3
            # a task that knows the stored items: only what changed travels back
            feed = store.claim_due(datetime.now(UTC), holder="w", lease=LEASE,
                                   all_feeds=True)[0]
            farm.add_item()
            known = PollTask.from_row(feed, store.known_items(feed.id))
            fresh = poll_feed(fetcher, replace_body_hash(known), datetime.now(UTC))
            assert len(fresh.items) == 1 and fresh.document_keys is not None
            assert len(fresh.document_keys) >= 3
            done = apply_poll(store, fresh, pol, datetime.now(UTC), rng, [])
            assert (done.result, done.new) == ("new", 1)
            assert store.count_items() == 4


def replace_body_hash(task: object) -> object:
    """Forget the validators, so the farm sends the whole document again."""
    import dataclasses

    return dataclasses.replace(task, etag=None, last_modified=None,  # type: ignore[type-var]
                               body_hash=None)


def test_a_started_task_renews_its_lease(db: Path) -> None:
    """The lease runs from the moment a worker starts the task, not from the claim:
    a task that waited in the queue keeps the whole lease for its fetch."""
    with Store(db) as store:
        feed = store.claim_due(NOW, holder="queued", lease=LEASE, limit=1)[0]
        later = NOW + LEASE - timedelta(seconds=1)
        assert store.set_lease_holder(feed.id, feed.poll_seq, "poll@host:7",
                                      until=later + LEASE)
        assert store.sweep_leases(NOW + LEASE) == 0  # the claim's own lease would have run out
        (held,) = store.leased(NOW + LEASE)
        assert (held.lease_holder, held.lease_until) == ("poll@host:7", later + LEASE)
        # a closed claim is not reopened by a late "started"
        store.record_error(feed.id, NOW, status=None, error="x", next_fetch=NOW,
                           poll_seq=feed.poll_seq)
        assert not store.set_lease_holder(feed.id, feed.poll_seq, "poll@host:8",
                                          until=later + LEASE)
        assert store.leased(NOW) == []
