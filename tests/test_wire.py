"""The values a poll travels as (aggregator/wire.py): a task and its result go
through JSON and come back equal, hostile values included (huge and odd strings,
None everywhere, non-ASCII, enclosures), and an error comes back as the error
class the writer stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from aggregator import errors
from aggregator.store import FeedRow
from aggregator.types import Enclosure, ParsedItem
from aggregator.wire import PollResult, PollTask, WireError, item_from_json, item_to_json

NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
ODD = "\x00\x01 \u202e\ufeff<script>alert(1)</script> \U0001f600 é ü 中文 \ud800 \\ \" '"
HUGE = "x" * 2_000_000 + ODD


def _through_json(data: dict[str, Any]) -> dict[str, Any]:
    """As a broker carries it: text, both ways."""
    return json.loads(json.dumps(data))  # type: ignore[no-any-return]


ITEMS = [
    ParsedItem(guid=None, url=None, title=None, author=None, published=None, updated=None,
               content=None, content_text=None),
    ParsedItem(guid=ODD, url="http://127.0.0.1/ü?a=1&b=<2>", title=HUGE, author=ODD,
               published=NOW, updated=NOW.astimezone(timezone(timedelta(hours=-5))),
               content=f"<p>{ODD}</p>", content_text=ODD, categories=(ODD, "", "Welt"),
               language="zh-Hant",
               enclosures=(Enclosure("http://127.0.0.1/a.mp3", "audio/mpeg", 2**62),
                           Enclosure("http://127.0.0.1/t.jpg", None, None, "thumbnail"),
                           Enclosure(f"http://127.0.0.1/{ODD}", ODD, 0, "content"))),
    ParsedItem(guid="g", url="", title="", author="", published=datetime(1, 1, 1, tzinfo=UTC),
               updated=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), content="",
               content_text="", categories=()),
]


@pytest.mark.parametrize("item", ITEMS, ids=["none", "hostile", "edges"])
def test_an_item_comes_back_equal(item: ParsedItem) -> None:
    assert item_from_json(_through_json(item_to_json(item))) == item


def _row(**kw: Any) -> FeedRow:
    base = dict(id=7, url="http://127.0.0.1:9/feed.xml", title=None, feed_title=ODD,
                site_url=None, category=None, language=None, active=True, state="ok",
                fetch_articles=None, etag='W/"é\\"x"', last_modified=None, body_hash="abc",
                ttl_minutes=60, last_fetch=None, last_status=None, last_success=None,
                next_fetch=None, error_count=3, last_error=ODD, poll_seq=41)
    base.update(kw)
    return FeedRow(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("known", [None, {}, {ODD: "h1", "k": HUGE}])
def test_a_task_comes_back_equal(known: dict[str, str] | None) -> None:
    task = PollTask.from_row(_row(), known)
    assert task.name == ODD and task.poll_seq == 41 and task.title is None
    assert PollTask.from_json(_through_json(task.to_json())) == task
    bare = PollTask(feed_id=1, url="u", poll_seq=None)
    assert PollTask.from_json(_through_json(bare.to_json())) == bare


def test_a_result_comes_back_equal() -> None:
    keyed = tuple((f"key-{i}-{ODD}", item, f"hash{i}") for i, item in enumerate(ITEMS))
    full = PollResult(
        feed_id=7, poll_seq=2**40, url="http://127.0.0.1:9/feed.xml", status=200,
        headers={"etag": ODD, "content-type": "application/rss+xml; charset=utf-8"},
        final_url="http://127.0.0.1:9/ü", permanent_url=None, body_hash="0" * 32,
        parsed_meta=(ODD, None, "en", 2**31, HUGE), items=keyed,
        document_keys=(*(k for k, _, _ in keyed), "left-out"), error=None,
        seconds=0.25, worker=f"poll@{ODD}", name=ODD, error_count=2, last_error=None,
        ttl_minutes=None)
    back = PollResult.from_json(_through_json(full.to_json()))
    assert back == full
    parsed = back.parsed()
    assert parsed is not None and parsed.title == ODD and parsed.warning == HUGE
    empty = PollResult(feed_id=1, poll_seq=None, url="u")
    assert PollResult.from_json(_through_json(empty.to_json())) == empty
    assert empty.not_modified and empty.parsed() is None


@pytest.mark.parametrize("error", [
    errors.HTTPStatusError(503, "HTTP 503 Service Unavailable", {"retry-after": "120"}),
    errors.HTTPStatusError(410),
    errors.NetworkError(f"connect failed: {ODD}"),
    errors.TooLargeError("body passed 10485760 bytes"),
    errors.ParseError("not a feed"),
    errors.BlockedAddressError("10.0.0.1 is internal"),
    errors.AggregatorError("internal error: ZeroDivisionError: boom"),
])
def test_an_error_comes_back_as_its_class(error: errors.AggregatorError) -> None:
    task = PollTask(feed_id=3, url="http://127.0.0.1:9/x", poll_seq=5, name="X",
                    error_count=1, last_error="before")
    result = PollResult.failed(task, error, seconds=1.5, worker="w1")
    back = PollResult.from_json(_through_json(result.to_json()))
    assert back == result and not back.not_modified
    assert back.error is not None
    again = back.error.to_error()
    assert type(again) is type(error) and str(again) == str(error)
    if isinstance(error, errors.HTTPStatusError):
        assert isinstance(again, errors.HTTPStatusError)
        assert (again.status, again.headers) == (error.status, error.headers)
    assert (back.error_count, back.last_error, back.name) == (1, "before", "X")


def test_an_error_class_that_does_not_travel_keeps_its_name() -> None:
    wire = WireError.from_error(errors.StorageError("disk full"))
    assert wire.kind == "AggregatorError" and wire.message == "StorageError: disk full"
    assert WireError("NoSuchError", "m").to_error().__class__ is errors.AggregatorError


@pytest.mark.parametrize("bad", [
    {}, {"v": 2}, [], "text", None,
    {"v": 1, "feed_id": "7", "url": "u", "poll_seq": 1},
    {"v": 1, "feed_id": 7, "url": None, "poll_seq": 1},
    {"v": 1, "feed_id": True, "url": "u", "poll_seq": 1},
    {"v": 1, "feed_id": 7, "url": "u", "poll_seq": 1, "known": {"k": 1}},
])
def test_a_task_that_is_not_what_we_wrote_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="wire: bad"):
        PollTask.from_json(bad)


@pytest.mark.parametrize("change", [
    {"items": [["k", {"published": "yesterday"}, "h"]]},
    {"items": [["k", {}, None]]},
    {"items": [["k", {"enclosures": [{"url": None}]}, "h"]]},
    {"items": [["k", {"categories": "a"}, "h"]]},
    {"parsed_meta": ["t", None, None, None]},
    {"headers": {"etag": 5}},
    {"error": {"kind": "NetworkError"}},
    {"document_keys": "abc"},
    {"seconds": "1"},
])
def test_a_result_that_is_not_what_we_wrote_is_refused(change: dict[str, Any]) -> None:
    data = PollResult(feed_id=1, poll_seq=1, url="u").to_json()
    data.update(change)
    with pytest.raises(ValueError, match="wire: bad"):
        PollResult.from_json(data)
