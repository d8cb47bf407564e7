"""aggregator.decide: the pure rules (item identity, content hash, next poll time)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from aggregator import decide
from aggregator.decide import PollPolicy, assign_keys, content_hash, item_key, next_poll
from aggregator.types import ParsedItem

MAX_TTL = decide.MAX_TTL_MINUTES

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = PollPolicy(
    interval=timedelta(minutes=30),
    minimum=timedelta(minutes=5),
    maximum=timedelta(hours=24),
    jitter=0.0,
)


def item(**kw: object) -> ParsedItem:
    base: dict[str, object] = dict(
        guid=None,
        url=None,
        title=None,
        author=None,
        published=None,
        updated=None,
        content=None,
        content_text=None,
    )
    base.update(kw)
    return ParsedItem(**base)  # type: ignore[arg-type]


# --- identity ------------------------------------------------------------------------


def test_key_is_the_guid_first() -> None:
    assert item_key(item(guid=" urn:a ", url="http://x/1", title="T")) == "urn:a"


def test_key_falls_back_to_the_link() -> None:
    assert item_key(item(guid="  ", url="http://x/1", title="T")) == "http://x/1"
    assert item_key(item(url="http://x/1")) == "http://x/1"


def test_key_without_guid_or_link_hashes_title_and_content() -> None:
    a = item(title="T", content="<p>c</p>")
    assert item_key(a).startswith("sha256:")
    assert item_key(a) == item_key(item(title="T", content="<p>c</p>"))
    assert item_key(a) != item_key(item(title="T", content="<p>other</p>"))
    assert item_key(a) != item_key(item(title="U", content="<p>c</p>"))
    # the boundary between title and content is part of the hash
    assert item_key(item(title="ab", content="c")) != item_key(item(title="a", content="bc"))


def test_repeated_guid_with_different_links_stays_two_stories() -> None:
    first = item(guid="urn:1", url="http://x/a", title="Story A")
    second = item(guid="urn:1", url="http://x/b", title="Story B")
    keys = assign_keys([first, second])
    assert [i for _, i in keys] == [first, second]
    plain = [k for k, _ in keys if k == "urn:1"]
    suffixed = [k for k, _ in keys if k.startswith("urn:1#")]
    assert len(plain) == 1 and len(suffixed) == 1
    # stable: the same document gives the same keys every time, and a feed that
    # reorders its items doesn't swap the stories' keys
    assert assign_keys([first, second]) == keys
    assert dict((i.url, k) for k, i in assign_keys([second, first])) == dict(
        (i.url, k) for k, i in keys)


def test_true_duplicate_is_dropped() -> None:
    a = item(guid="urn:1", url="http://x/a", title="Story A", content="x")
    keys = assign_keys([a, replace(a), item(guid="urn:2", title="Other")])
    assert [k for k, _ in keys] == ["urn:1", "urn:2"]


def test_third_copy_of_a_suffixed_story_is_dropped() -> None:
    a = item(guid="g", url="http://x/a", title="A")
    b = item(guid="g", url="http://x/b", title="B")
    keys = assign_keys([a, b, replace(b)])
    assert len(keys) == 2


def test_items_without_guid_or_link_that_are_the_same_collapse() -> None:
    a = item(title="Same", content="same")
    assert len(assign_keys([a, replace(a)])) == 1


def test_content_hash_changes_with_what_a_reader_sees() -> None:
    base = item(
        guid="g",
        url="http://x/a",
        title="T",
        author="Ann",
        content="<p>one</p>",
        categories=("a",),
        published=NOW,
        updated=None,
    )
    h = content_hash(base)
    assert content_hash(replace(base)) == h
    for change in (
        {"content": "<p>two</p>"},
        {"title": "T2"},
        {"url": "http://x/b"},
        {"author": "Bob"},
        {"categories": ("a", "b")},
        {"published": NOW - timedelta(hours=1)},
        {"updated": NOW},
    ):
        assert content_hash(replace(base, **change)) != h, change


# --- next poll time ----------------------------------------------------------------------


def poll(**kw: object) -> timedelta:
    return next_poll(NOW, POLICY, **kw) - NOW  # type: ignore[arg-type]


def test_plain_interval() -> None:
    assert poll() == timedelta(minutes=30)


def test_ttl_longer_than_interval_wins_shorter_does_not() -> None:
    assert poll(ttl_minutes=120) == timedelta(minutes=120)
    assert poll(ttl_minutes=10) == timedelta(minutes=30)
    assert poll(ttl_minutes=0) == timedelta(minutes=30)


def test_cache_control_max_age() -> None:
    assert poll(headers={"cache-control": "public, max-age=7200"}) == timedelta(hours=2)
    assert poll(headers={"cache-control": "max-age=60"}) == timedelta(minutes=30)
    assert poll(headers={"cache-control": 'max-age="5400", must-revalidate'}) == timedelta(
        minutes=90
    )
    assert poll(headers={"cache-control": "no-cache"}) == timedelta(minutes=30)


def test_expires_measured_against_the_servers_date() -> None:
    server_now = NOW - timedelta(minutes=10)  # the server's clock is 10 minutes behind
    headers = {
        "date": format_datetime(server_now, usegmt=True),
        "expires": format_datetime(server_now + timedelta(hours=3), usegmt=True),
    }
    assert poll(headers=headers) == timedelta(hours=3)
    # without a Date header, against ours
    assert poll(
        headers={"expires": format_datetime(NOW + timedelta(hours=2), usegmt=True)}
    ) == timedelta(hours=2)
    # an Expires in the past or unreadable is just the interval
    assert poll(
        headers={"expires": format_datetime(NOW - timedelta(days=1), usegmt=True)}
    ) == timedelta(minutes=30)
    assert poll(headers={"expires": "0"}) == timedelta(minutes=30)


def test_max_age_beats_expires() -> None:
    headers = {
        "cache-control": "max-age=3600",
        "expires": format_datetime(NOW + timedelta(hours=5), usegmt=True),
    }
    assert poll(headers=headers) == timedelta(hours=1)


def test_retry_after_seconds_and_date() -> None:
    assert poll(headers={"retry-after": "7200"}) == timedelta(hours=2)
    assert poll(headers={"retry-after": " 5400 "}) == timedelta(minutes=90)
    date = format_datetime(NOW + timedelta(hours=4), usegmt=True)
    assert poll(headers={"retry-after": date}) == timedelta(hours=4)
    assert poll(headers={"retry-after": "soon please"}) == timedelta(minutes=30)
    assert decide.retry_after("-5", NOW) is None


def test_retry_after_is_bounded_by_the_maximum_like_everything_else() -> None:
    # the README: "clamped to [min_interval, max_interval]", Retry-After included
    assert poll(headers={"retry-after": str(20 * 3600)}) == timedelta(hours=20)
    assert poll(headers={"retry-after": str(3 * 86400)}) == timedelta(hours=24)
    assert poll(headers={"retry-after": str(30 * 86400)}, error_count=3) == timedelta(hours=24)


def test_absurd_header_values_do_not_overflow() -> None:
    huge = "9" * 40
    assert poll(headers={"retry-after": huge}) == timedelta(hours=24)
    assert poll(headers={"cache-control": f"max-age={huge}"}) == timedelta(hours=24)
    # a header longer than any honest one is not read at all
    assert poll(headers={"cache-control": "max-age=" + "9" * 100_000}) == timedelta(minutes=30)
    far = "Fri, 31 Dec 9999 23:59:59 GMT"
    assert poll(headers={"expires": far}) == timedelta(hours=24)
    assert poll(headers={"retry-after": far}) == timedelta(hours=24)
    # an Expires at the end of time measured against a Date at its beginning
    assert poll(headers={"expires": far, "date": "Mon, 01 Jan 0001 00:00:00 GMT"}) == timedelta(
        hours=24)


# values that are no number of seconds: each leaves the plain interval
NOT_SECONDS = ["-5", "+7200", " +7200", "7200.0", "1e400", "1e3", "NaN", "nan", "inf",
               "Infinity", "0x1c20", "٣٦٠٠", "３６００", "7_200", "7 200", "", "   ", "\x00",
               "7200\x00", "max-age", "Fri, 30 Feb 2026 10:00:00 GMT",
               "Mon, 01 Jan 10000 00:00:00 GMT",
               "Mon, 01 Jan 0000 00:00:00 GMT", "Sun, 01 Mar 2026 12:00:00 +9999"]


@pytest.mark.parametrize("value", NOT_SECONDS)
def test_retry_after_that_is_no_number_or_date_is_ignored(value: str) -> None:
    assert poll(headers={"retry-after": value}) == timedelta(minutes=30)
    if value.strip() and not value.startswith(("Fri", "Mon", "Sun")):
        assert decide.retry_after(value, NOW) is None


@pytest.mark.parametrize("value", NOT_SECONDS)
def test_max_age_that_is_no_number_is_ignored(value: str) -> None:
    assert decide.max_age(f"max-age={value}") is None
    assert poll(headers={"cache-control": f"public, max-age={value}"}) == timedelta(minutes=30)


def test_unicode_digits_are_not_digits() -> None:
    assert "٣".isdigit()  # what str.isdigit would have let through
    assert decide.retry_after("٣٦٠٠٠", NOW) is None
    assert decide.max_age("max-age=٣٦٠٠٠") is None


def test_surrounding_whitespace_is_fine() -> None:
    assert decide.retry_after("  7200\t", NOW) == timedelta(hours=2)
    assert decide.max_age(" max-age = 7200 ") == timedelta(hours=2)


@pytest.mark.parametrize("date", ["Mon, 01 Jan 0001 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
                                  "Fri, 31 Dec 9999 23:59:59 -1200", "garbage", "0", "-1",
                                  "Sat, 30 Feb 2026 10:00:00 GMT", "9" * 30])
def test_date_header_of_any_kind_never_raises(date: str) -> None:
    expires = format_datetime(NOW + timedelta(hours=3), usegmt=True)
    delay = poll(headers={"expires": expires, "date": date})
    assert timedelta(minutes=30) <= delay <= timedelta(hours=24)


@pytest.mark.parametrize("ttl", [10**20, 2**63, 2**64 + 1, 10**400, MAX_TTL + 1, -1, -(10**20),
                                 0, None, True, 1.5, float("nan"), float("inf"), "60", "٣"])
def test_ttl_of_any_value_never_raises_and_is_bounded(ttl: object) -> None:
    delay = poll(ttl_minutes=ttl)
    assert timedelta(minutes=30) <= delay <= timedelta(hours=24)
    if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 10**6:
        assert delay == timedelta(hours=24)


def test_a_policy_whose_backoff_would_overflow_a_timedelta() -> None:
    # interval × 2**16 is past timedelta.max: the maximum, not an OverflowError
    wide = PollPolicy(timedelta(days=100_000), timedelta(minutes=5), timedelta(days=200_000), 0.0)
    assert wide.interval * 2 ** 4 < timedelta.max
    with pytest.raises(OverflowError):
        _ = wide.interval * 2**16
    delay = next_poll(NOW, wide, error_count=10**30) - NOW
    assert delay <= timedelta(days=3650)  # held to ten years, whatever the policy says
    assert next_poll(NOW, POLICY, error_count=10**30) - NOW == timedelta(hours=24)
    assert next_poll(NOW, POLICY, error_count=-(10**30)) - NOW == timedelta(minutes=30)


def test_a_clock_at_the_end_of_time_does_not_overflow() -> None:
    end = datetime.max.replace(tzinfo=UTC) - timedelta(minutes=1)
    assert next_poll(end, POLICY) == datetime.max.replace(tzinfo=UTC)
    assert decide.retry_after("Fri, 31 Dec 9999 23:59:59 GMT", end) is not None


@pytest.mark.parametrize("fraction", [float("nan"), float("inf"), -1.0, 5.0, -0.0])
def test_jitter_fraction_out_of_range_stays_in_bounds(fraction: float) -> None:
    jittery = replace(POLICY, jitter=0.2)
    delay = next_poll(NOW, jittery, random_fraction=fraction) - NOW
    assert timedelta(minutes=30) <= delay <= timedelta(minutes=36)
    wild = replace(POLICY, jitter=fraction)
    delay = next_poll(NOW, wild, random_fraction=0.5) - NOW
    assert timedelta(minutes=30) <= delay <= timedelta(minutes=45)


def _random_header(rng: random.Random) -> str:
    pieces = ["9" * rng.randint(1, 40), "-", "+", "٣", "1e400", "NaN", " ", ",", "max-age=",
              "s-max-age=", '"', "GMT", "Fri, 31 Dec 9999 23:59:59", "Mon, 01 Jan 0001",
              "\x00", "\u00a0", str(rng.randint(0, 10**6)), "no-cache", ";", "="]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))


def test_property_next_poll_is_always_within_min_and_max_with_jitter() -> None:
    rng = random.Random(20261101)
    for _ in range(3000):
        minimum = timedelta(minutes=rng.choice([0, 1, 5, 60]))
        policy = PollPolicy(
            interval=timedelta(minutes=rng.choice([0, 1, 30, 10**6])),
            minimum=minimum,
            maximum=minimum + timedelta(minutes=rng.choice([0, 1, 1440, 10**7])),
            jitter=rng.choice([0.0, 0.1, 1.0]),
        )
        names = rng.sample(["cache-control", "expires", "date", "retry-after"], rng.randint(0, 4))
        headers = {name: _random_header(rng) for name in names}
        when = next_poll(
            NOW, policy, headers=headers,
            ttl_minutes=rng.choice([None, 0, -1, 5, 10**20, rng.randint(-(10**9), 10**9)]),
            error_count=rng.choice([0, 1, 5, 17, 10**9, -3]),
            random_fraction=rng.random(),
        )
        low = NOW + min(policy.minimum, timedelta(days=3650))
        high = NOW + min(policy.maximum, timedelta(days=3650)) * (1 + policy.jitter)
        assert low <= when <= high, (policy, headers)


def test_error_backoff_grows_then_hits_the_maximum() -> None:
    delays = [poll(error_count=n) for n in range(1, 9)]
    assert delays[:4] == [timedelta(minutes=m) for m in (30, 60, 120, 240)]
    assert all(a <= b for a, b in zip(delays, delays[1:], strict=False))
    assert delays[-1] == timedelta(hours=24)
    assert poll(error_count=10_000) == timedelta(hours=24)


def test_clamped_to_minimum_and_maximum() -> None:
    short = PollPolicy(timedelta(minutes=1), timedelta(minutes=5), timedelta(hours=1), 0.0)
    assert next_poll(NOW, short) - NOW == timedelta(minutes=5)
    assert next_poll(NOW, short, ttl_minutes=600) - NOW == timedelta(hours=1)
    assert next_poll(NOW, short, headers={"cache-control": "max-age=86400"}) - NOW == timedelta(
        hours=1
    )


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.999])
def test_jitter_stays_within_its_fraction(fraction: float) -> None:
    jittery = replace(POLICY, jitter=0.2)
    delay = next_poll(NOW, jittery, random_fraction=fraction) - NOW
    assert timedelta(minutes=30) <= delay < timedelta(minutes=36)
    assert delay == timedelta(minutes=30) * (1 + 0.2 * fraction)


def test_jitter_applies_after_the_clamp() -> None:
    jittery = replace(POLICY, jitter=0.1)
    delay = next_poll(NOW, jittery, ttl_minutes=10_000, random_fraction=0.5) - NOW
    assert delay == timedelta(hours=24) * 1.05


def test_http_date_without_zone_is_utc() -> None:
    assert decide.http_date("Sun, 01 Mar 2026 12:00:00 -0000") == NOW
    assert decide.http_date("Sun, 01 Mar 2026 12:00:00 GMT") == NOW
    assert decide.http_date("yesterday") is None


def test_gone_disables() -> None:
    assert decide.disables_feed(410)
    assert not any(decide.disables_feed(s) for s in (404, 403, 429, 500, 503))
