"""Fuzzing parse, decide and publish.

Corpus: every file of feedparser's test suite and of the W3C Feed Validation
Service's test cases (read from $AGGREGATOR_FUZZ_CORPUS, default
../shared/data/fuzz; skipped when absent, a failure under CI=true) goes through
``parse`` with and without headers; each gives a ParsedFeed with sane values or
a ParseError, never another exception. A sample of what parsed is published;
the files must be well-formed and the HTML inert. bench/fuzz.py holds the
checks and prints the counts.

Properties (hypothesis, derandomized so CI sees the same examples every run;
AGGREGATOR_FUZZ_SCALE=N runs N times as many, new ones each run):
random bytes and mutations of tests/data/feed-good.xml through ``parse``;
hostile HTTP headers through ``decide.next_poll``; generated items through
``assign_keys``/``content_hash``; generated entries through ``publish``. Each
gives a value or one of our own errors (AggregatorError), never another
exception.

Regression tests at the end: the bugs this fuzzing found, each on a small
input written here.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import decide
from aggregator.decide import PollPolicy, assign_keys, content_hash, item_key, next_poll
from aggregator.errors import AggregatorError, ParseError
from aggregator.parse import parse
from aggregator.publish import entry_id, publish
from aggregator.types import Entry, ParsedFeed, ParsedItem, Subscription
from bench.fuzz import (
    CORPUS_ENV,
    MAX_TTL_MINUTES,
    NOW,
    active_content,
    feed_problems,
    output_problems,
    publish_sample,
    run_corpus,
)

DATA = Path(__file__).parent / "data"
CORPUS = Path(os.environ.get(CORPUS_ENV) or Path(__file__).resolve().parents[2] / "shared"
              / "data" / "fuzz")  # fmt: skip
GOOD = (DATA / "feed-good.xml").read_bytes()
URL = "http://127.0.0.1/feed.xml"

# Every property test: no example database, the same examples on every run (CI stable),
# no deadline (a shared CI core is slow), and health checks that only say "slow input"
# suppressed explicitly (pytest runs with filterwarnings=error).
FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])  # fmt: skip


# AGGREGATOR_FUZZ_SCALE=20: twenty times the examples, new ones on every run (a hunt for
# bugs by hand; CI keeps the default, the same examples every time)
SCALE = max(1, int(os.environ.get("AGGREGATOR_FUZZ_SCALE") or 1))


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples * SCALE, derandomize=SCALE == 1)


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


# ----------------------------------------------------------------------------- corpus


@pytest.fixture(scope="module")
def corpus_run():  # type: ignore[no-untyped-def]
    if not (CORPUS / "feedparser-tests").is_dir() or not (
        CORPUS / "w3c-feedvalidator-testcases"
    ).is_dir():
        _missing(f"fuzz corpus absent at {CORPUS} (set {CORPUS_ENV}; "
                 "shared/data/SOURCES.md section F)")  # fmt: skip
    return run_corpus(CORPUS, NOW)


def test_every_corpus_file_gives_a_sane_feed_or_a_parse_error(corpus_run) -> None:  # type: ignore[no-untyped-def]
    run = corpus_run
    assert run.files > 4000  # both corpora were read, not an empty folder
    assert run.runs > 2 * run.files - 100  # with and without headers
    assert run.parsed + run.refused + run.crashed == run.runs
    assert run.crashed == 0, "\n".join(run.failures)
    if run.failures:
        pytest.fail(f"{len(run.failures)} failures:\n" + "\n".join(run.failures))
    # both outcomes occur: the corpora hold feeds and non-feeds
    assert run.parsed > 5000 and run.refused > 100


def test_corpus_feeds_publish_well_formed_inert_files(corpus_run) -> None:  # type: ignore[no-untyped-def]
    published, failures = publish_sample(corpus_run.feeds, CORPUS, every=5)
    assert published > 300
    if failures:
        pytest.fail(f"{len(failures)} failures:\n" + "\n".join(failures))


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """The corpus and property tests pass only if these checks can fail."""
    for bad in ('<p onclick="x()">a</p>', '<a href=" javascript:alert(1)">x</a>',
                "<SCRIPT>x</SCRIPT>", '<img src="data:text/html,x">', "<iframe></iframe>",
                '<p style="background:url(javascript:x)">a</p>'):  # fmt: skip
        assert active_content(bad), bad
    assert not active_content('<p>a <a href="https://a.example/">b</a> &lt;script&gt;</p>')
    assert active_content("<p><b>x</b></p>", allowed_tags=frozenset({"p"}))
    item = ParsedItem(guid=None, url="ftp://a.example/", title="a\x1b[2J", author="<script>",
                      published=datetime(1969, 12, 31, tzinfo=UTC),
                      updated=NOW + timedelta(days=2), content='<a href="javascript:x">x</a>',
                      content_text="\ud800", categories=("a\nb",))  # fmt: skip
    feed = ParsedFeed(title="x\x00", site_url="javascript:x", language="x" * 21,
                      ttl_minutes=-1, items=(item,))  # fmt: skip
    problems = feed_problems(feed, NOW)
    for word in ("feed title", "site_url", "language", "ttl", "item 0 url", "item 0 title",
                 "item 0 author", "published", "updated", "content:", "surrogate",
                 "item 0 category"):  # fmt: skip
        assert any(word in p for p in problems), (word, problems)
    assert len(problems) == 12
    (tmp_path / "rss.xml").write_bytes(b"<rss><channel></rss>")
    (tmp_path / "feed.json").write_bytes(b'{"items": [')
    (tmp_path / "index.html").write_bytes(b"<!DOCTYPE html><p onmouseover=x>hi</p>")
    found = output_problems(tmp_path)
    assert [p.split(":")[0] for p in found] == [
        "feed.json", "index.html", "index.html", "index.html", "rss.xml"]
    assert MAX_TTL_MINUTES == 3650 * 24 * 60


# ----------------------------------------------------------------------------- parse


SNIPPETS = [
    b"<!DOCTYPE rss [", b']>', b'<!DOCTYPE rss [<!ENTITY e "x">]>',
    b'<!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>', b"&x;", b"&e;",
    b'<!ENTITY a "&b;&b;">', b"<![CDATA[", b"]]>", b"<![CDATA[<script>alert(1)</script>]]>",
    b"\x00", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"&#xd800;", b"&#57343;", b"&#1114112;",
    b"&#x110000;", b"&#99999999999999999999;", b"&#0;", b"&#x1b;[2J", b"\x1b]0;title\x07",
    b"&#x9b;", "\u009b31m".encode(), b"<ttl>99999999999999999999999999</ttl>",
    b"<ttl>" + b"9" * 5000 + b"</ttl>", b"<ttl>-5</ttl>", b"<ttl>0</ttl>",
    "<ttl>\u0661\u0662\u0663</ttl>".encode(), "<ttl>\u00b2</ttl>".encode(),
    b"<pubDate>Mon, 31 Feb 99999 25:61:61 +9999</pubDate>",
    b"<pubDate>0001-01-01T00:00:00Z</pubDate>", b"<pubDate>9999-12-31T23:59:59-23:59</pubDate>",
    b"<pubDate>Thu, 01 Jan 1970 00:00:00 -2359</pubDate>", b"<pubDate>-1</pubDate>",
    b"<dc:date>2026-13-45T99:99:99+99:99</dc:date>", b"<pubDate>" + b"9" * 400 + b"</pubDate>",
    b"<script>alert(1)</script>", b"&lt;script&gt;alert(1)&lt;/script&gt;",
    b'<a href="javascript:alert(1)">x</a>', b"&lt;img src=x onerror=alert(1)&gt;",
    b'&lt;a href="jav&amp;#x09;ascript:alert(1)"&gt;x&lt;/a&gt;',
    b"<item><title>", b"</item>", b"</channel>", b"<link>javascript:alert(1)</link>",
    b"<link>data:text/html,x</link>", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf",
    b"<?xml version='1.0' encoding='utf-16'?>", b"<?xml version='1.0' encoding='x-bogus'?>",
    b"<?xml version='1.0' encoding='utf-32'?>", b"<feed xmlns='http://www.w3.org/2005/Atom'>",
    b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>", b"<html><body>",
    b'{"version": "https://jsonfeed.org/version/1.1", "items": [{"id": 1}]}',
    b"<!-- -->", b"<!--", b"<?pi x?>", b"&amp;", b"&", b"<", b">", b"\r\n", b"\t",
]
TAGS = [b"ttl", b"pubDate", b"title", b"link", b"guid", b"description", b"channel", b"item"]
hostile_bytes = st.one_of(st.sampled_from(SNIPPETS), st.binary(max_size=24),
                          st.text(max_size=24).map(lambda t: t.encode("utf-8")))  # fmt: skip


@st.composite
def mutated_feed(draw: st.DrawFn) -> bytes:
    """tests/data/feed-good.xml with a few byte flips, cuts and hostile insertions."""
    body = bytearray(GOOD)
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "insert", "delete", "value"]))
        pos = draw(st.integers(0, len(body)))
        if op == "flip" and body:
            body[min(pos, len(body) - 1)] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del body[pos:]
        elif op == "insert":
            body[pos:pos] = draw(hostile_bytes)
        elif op == "delete":
            del body[pos:pos + draw(st.integers(1, 60))]
        else:  # replace the text of one element
            tag = draw(st.sampled_from(TAGS))
            start = body.find(b"<" + tag + b">")
            end = body.find(b"</" + tag + b">", start)
            if 0 <= start < end:
                body[start + len(tag) + 2:end] = draw(hostile_bytes)
    return bytes(body)


parse_headers = st.sampled_from([
    {}, {"Content-Type": "application/rss+xml"}, {"Content-Type": "text/html"},
    {"Content-Type": "application/xml; charset=utf-16"},
    {"content-type": "text/xml; charset=bogus"},
    {"Content-Type": "application/feed+json"}, {"Content-Location": "javascript:alert(1)"},
    {"Content-Location": "http://[::1"}, {"Content-Language": "\x00" * 30},
    {"Content-Type": "application/xml; charset=\"utf-8\u0000\""},
])  # fmt: skip
parse_now = st.datetimes(datetime(1990, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC))


def check_parse(body: bytes, headers: dict[str, str], now: datetime) -> None:
    try:
        feed = parse(body, headers, URL, now)
    except ParseError:
        return
    problems = feed_problems(feed, now, titles_may_mention_script=True)
    assert not problems, problems


@fuzz(250)
@given(body=st.binary(max_size=2048), headers=parse_headers)
def test_random_bytes_give_a_feed_or_a_parse_error(body: bytes, headers: dict[str, str]) -> None:
    check_parse(body, headers, NOW)


@fuzz(500)
@given(body=mutated_feed(), headers=parse_headers, now=parse_now)
def test_mutated_feeds_give_a_sane_feed_or_a_parse_error(body: bytes, headers: dict[str, str],
                                                         now: datetime) -> None:  # fmt: skip
    check_parse(body, headers, now)


# ----------------------------------------------------------------------------- decide


def _http_date(d: datetime) -> str:
    from email.utils import format_datetime

    return format_datetime(d, usegmt=True)


header_value = st.one_of(
    st.text(max_size=40),
    st.integers(-(10**30), 10**30).map(str),
    st.integers(-(10**40), 10**40).map(lambda n: f"max-age={n}"),
    st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31), timezones=st.just(UTC)).map(_http_date),
    st.sampled_from([
        "max-age=" + "9" * 5000, "9" * 5000, "s-maxage=" + "9" * 5000,
        "max-age=\u0661\u0662\u0663", "\u0661\u0662\u0663", "\u00b2", "max-age=\u00b2",
        "max-age=-1", "s-maxage=99999999999999999999", 'no-cache, max-age="5"', "max-age=",
        "Mon, 31 Feb 2026 25:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
        "Thu, 01 Jan 0001 00:00:00 GMT", "Sun, 06 Nov 1994 08:49:37 -0000",
        "Sun, 06 Nov 1994 08:49:37 +9999", "Sun, 06 Nov 99999999999999 08:49:37 GMT",
        "", " ", "\x00", "0", "-0", "1e9", "0x10", "inf", "NaN", "\ud800",
    ]),
)  # fmt: skip
hostile_headers = st.dictionaries(
    st.sampled_from(["cache-control", "expires", "retry-after", "date", "x-junk"]),
    header_value, max_size=5,
)  # fmt: skip


@st.composite
def policies(draw: st.DrawFn) -> PollPolicy:
    minimum = draw(st.timedeltas(timedelta(seconds=1), timedelta(hours=2)))
    maximum = draw(st.timedeltas(minimum, timedelta(days=60)))
    interval = draw(st.timedeltas(minimum, maximum))
    return PollPolicy(interval=interval, minimum=minimum, maximum=maximum,
                      jitter=draw(st.floats(0, 1)))  # fmt: skip


poll_now = st.datetimes(datetime(1970, 1, 2), datetime(2200, 1, 1), timezones=st.just(UTC))


@fuzz(400)
@given(now=poll_now, policy=policies(), headers=hostile_headers,
       ttl=st.none() | st.integers(-(10**30), 10**30), errors=st.integers(0, 10**9),
       fraction=st.floats(0, 1, exclude_max=True))  # fmt: skip
def test_next_poll_stays_within_the_policy_clamp(now: datetime, policy: PollPolicy,
                                                 headers: dict[str, str], ttl: int | None,
                                                 errors: int, fraction: float) -> None:  # fmt: skip
    when = next_poll(now, policy, headers=headers, ttl_minutes=ttl, error_count=errors,
                     random_fraction=fraction)  # fmt: skip
    assert isinstance(when, datetime) and when.tzinfo is not None
    ceiling = max(policy.maximum, timedelta(days=7))  # Retry-After may ask up to a week
    assert now + policy.minimum <= when <= now + ceiling * (1 + policy.jitter) + timedelta(
        microseconds=1
    )


@fuzz(300)
@given(value=header_value, date=header_value, now=poll_now)
def test_header_rules_give_none_or_a_bounded_delay(value: str, date: str, now: datetime) -> None:
    longest = timedelta(days=3650)
    for delay in (decide.max_age(value), decide.retry_after(value, now),
                  decide.expires_in(value, date, now)):  # fmt: skip
        assert delay is None or timedelta(0) <= delay <= longest, (value, delay)
    when = decide.http_date(value)
    assert when is None or when.tzinfo is not None


any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=30)
hostile_text = st.one_of(
    st.none(), any_text,
    st.sampled_from(["", " ", "]]>", "<script>alert(1)</script>", "\x00", "\ud800x", "\udfff",
                     "a" * 3000, "&lt;script&gt;", "\x1b[2J", "\u202e", "\ufeff", "\ufffe"]),
)  # fmt: skip
aware = st.datetimes(datetime(1900, 1, 2), datetime(2200, 1, 1), timezones=st.builds(
    timezone, st.timedeltas(timedelta(hours=-23, minutes=-59), timedelta(hours=23, minutes=59))))
parsed_items = st.builds(
    ParsedItem, guid=hostile_text, url=hostile_text, title=hostile_text, author=hostile_text,
    published=st.none() | aware, updated=st.none() | aware, content=hostile_text,
    content_text=hostile_text, categories=st.lists(any_text, max_size=3).map(tuple),
    language=hostile_text,
)  # fmt: skip


@st.composite
def item_lists(draw: st.DrawFn) -> list[ParsedItem]:
    """Items with repeats: the same item twice, or another story under the same guid."""
    items = draw(st.lists(parsed_items, max_size=8))
    for _ in range(draw(st.integers(0, 4)) if items else 0):
        twin = draw(st.sampled_from(items))
        if draw(st.booleans()):
            twin = ParsedItem(**{**twin.__dict__, "title": draw(hostile_text)})
        items.insert(draw(st.integers(0, len(items))), twin)
    return items


@fuzz(300)
@given(items=item_lists())
def test_assign_keys_gives_each_story_one_unique_key(items: list[ParsedItem]) -> None:
    out = assign_keys(items)
    keys = [k for k, _ in out]
    assert all(isinstance(k, str) and k for k in keys)
    assert len(keys) == len(set(keys))
    assert all(any(i is item for item in items) for _, i in out)
    # a story is its key, link and title (an empty title is no title: parse never gives "")
    stories = {(item_key(i), i.url or None, i.title or None) for i in items}
    assert {(item_key(i), i.url or None, i.title or None) for _, i in out} == stories
    assert assign_keys(list(reversed(items))) is not None  # any order is fine too
    for _, item in out:
        h = content_hash(item)
        assert len(h) == 32 and int(h, 16) >= 0
        assert content_hash(ParsedItem(**item.__dict__)) == h
        changed = ParsedItem(**{**item.__dict__, "title": (item.title or "") + "!"})
        assert content_hash(changed) != h


# ----------------------------------------------------------------------------- publish


hostile_url = st.one_of(
    st.none(), any_text,
    st.sampled_from(["javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,<script>",
                     "vbscript:x", "//evil.example/", "http://[::1", "http://h:99999/",
                     "http://user:pw@h.example/", "http://ex ample/", "http://127.0.0.1/\ud800",
                     "http://xn--/", "http://\u00e9xample.org/p?q=<script>#]]>",
                     "https://example.org/a\"onmouseover=\"alert(1)", "http://h/\x00",
                     "HTTPS://EXAMPLE.ORG/%zz", "file:///etc/passwd", "http://", "http:///x"]),
)  # fmt: skip
entries = st.builds(
    Entry, item_id=st.integers(0, 2**40), key=any_text, feed_url=hostile_url.map(lambda u: u or ""),
    feed_title=hostile_text.map(lambda t: t or ""), feed_site_url=hostile_url,
    category=hostile_text, title=hostile_text, url=hostile_url, author=hostile_text,
    published=st.none() | aware, updated=st.none() | aware, first_seen=aware,
    language=hostile_text, categories=st.lists(any_text, max_size=3).map(tuple),
    summary_context=st.lists(hostile_text.map(lambda t: t or ""), max_size=2).map(tuple),
    summary_points=st.lists(hostile_text.map(lambda t: t or ""), max_size=3).map(tuple),
    summary_method=hostile_text, content_text=hostile_text, feed_origin=st.none() | hostile_url,
)  # fmt: skip
subscriptions = st.builds(Subscription, url=hostile_url.map(lambda u: u or ""),
                          title=hostile_text, category=hostile_text, html_url=hostile_url)


@fuzz(100)
@given(es=st.lists(entries, max_size=6), subs=st.lists(subscriptions, max_size=3),
       title=hostile_text, base=hostile_url, now=aware)  # fmt: skip
def test_publish_writes_well_formed_inert_files(es: list[Entry], subs: list[Subscription],
                                                title: str | None, base: str | None,
                                                now: datetime) -> None:  # fmt: skip
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fuzz-publish-") as tmp:
        out = Path(tmp)
        try:
            publish(es, out, subscriptions=subs, base_url=base or "", title=title or "",
                    now=now)  # fmt: skip
        except AggregatorError:
            return
        names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
        assert {"rss.xml", "atom.xml", "feed.json", "feeds.opml", "index.html"} <= names
        problems = output_problems(out)
        assert not problems, problems
        doc = json.loads((out / "feed.json").read_text(encoding="utf-8"))
        ids = [i["id"] for i in doc["items"]]
        assert len(ids) == len(set(ids))


# ----------------------------------------------------------------------------- regressions


def rss(channel: str, item: str = "<item><title>Story</title><link>http://a.example/1</link>"
        "</item>") -> bytes:  # fmt: skip
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>{channel}'
            f"{item}</channel></rss>").encode()  # fmt: skip


def test_control_characters_never_reach_titles_or_text() -> None:
    """Found by the W3C case rss20/data-types-characterdata/amp-hex-name.xml (``&#26;`` in a
    title) and by a mutation putting a raw \\x01 before a title: a terminal escape in a title
    would reach whoever lists the items."""
    body = rss("<title>\x01Clear&#27;[2J screen&#127;</title>",
               "<item><title>Bell&#7;&#x1b;]0;owned&#7; here</title>"
               "<author>Ann\x08 Lee</author><category>c&#x1f;at</category>"
               "<link>http://a.example/1</link>"
               "<description>&lt;p&gt;One\x1b[31m red\x0bword&lt;/p&gt;</description></item>")
    feed = parse(body, {}, URL, NOW)
    assert feed.title == "Clear[2J screen"
    (item,) = feed.items
    assert item.title == "Bell]0;owned here"
    assert item.author == "Ann Lee"
    assert item.categories == ("cat",)
    assert item.content_text == "One[31m red word"
    assert item.content is not None and item.content.startswith("<p>One[31m red")
    assert "\x0b" not in item.content and "\x1b" not in item.content
    assert not feed_problems(feed, NOW)


@pytest.mark.parametrize("ttl", ["-1", "0", "99999999999999999999999", "9" * 5000, "5256001"])
def test_a_ttl_out_of_range_is_no_ttl(ttl: str) -> None:
    """Found by the W3C case rss20/element-channel-ttl/invalid_ttl_negative.xml (ttl -1) and a
    mutation putting twenty-odd nines in <ttl>: the number went to SQLite (OverflowError on
    an INTEGER column) and to next_poll (OverflowError in timedelta)."""
    feed = parse(rss(f"<title>T</title><ttl>{ttl}</ttl>"), {}, URL, NOW)
    if ttl in ("-1", "0"):
        assert feed.ttl_minutes is None
    else:  # no advice, or the longest we take (a year or ten: a bound, not the number)
        assert feed.ttl_minutes is None or 366 * 24 * 60 <= feed.ttl_minutes <= MAX_TTL_MINUTES
    policy = PollPolicy(timedelta(minutes=30), timedelta(minutes=5), timedelta(days=1), 0.0)
    assert next_poll(NOW, policy, ttl_minutes=feed.ttl_minutes) <= NOW + timedelta(days=1)
    assert parse(rss("<title>T</title><ttl> 60 </ttl>"), {}, URL, NOW).ttl_minutes == 60


@pytest.mark.parametrize("ref", ["&#xd800;", "&#55296;", "&#x0000DFFF;", "&#x110000;",
                                 "&#1114112;", "&#99999999999999999999;", "&#x" + "f" * 5000 + ";"])
def test_a_reference_to_no_character_costs_one_character_not_the_feed(ref: str) -> None:
    """Found by a mutation inserting "&#xd800;" into feed-good.xml: feedparser's loose parser
    raised (UnicodeEncodeError; ValueError for "&#x110000;"), so one bad reference made the
    whole feed a ParseError."""
    feed = parse(rss("<title>T</title>", f"<item><title>a{ref}b</title>"
                     f"<description>x{ref}y &amp;#xd800;</description></item>"), {}, URL, NOW)
    (item,) = feed.items
    assert item.title == "a\ufffdb"
    assert item.content_text is not None and item.content_text.startswith("x\ufffdy")
    assert not feed_problems(feed, NOW)
    # references to real characters are left alone
    ok = parse(rss("<title>&#x10FFFF;&#xD7FF;&#57344;&#1114111;&#20013;</title>"), {}, URL, NOW)
    assert ok.title == "\U0010ffff\ud7ff\ue000\U0010ffff\u4e2d"


@pytest.mark.parametrize("headers", [
    {"cache-control": "max-age=" + "9" * 5000}, {"cache-control": "max-age=" + "0" * 4999 + "7"},
    {"retry-after": "9" * 5000},
])  # fmt: skip
def test_a_header_number_of_thousands_of_digits_is_a_long_delay(headers: dict[str, str]) -> None:
    """Found by hypothesis on next_poll's headers: "Cache-Control: max-age=" with 5000 nines
    raised ValueError (int() refuses over 4300 digits) and the poll of that feed crashed."""
    policy = PollPolicy(timedelta(minutes=30), timedelta(minutes=5), timedelta(days=1), 0.0)
    when = next_poll(NOW, policy, headers=headers)
    if headers.get("cache-control", "").endswith("7"):
        assert when == NOW + timedelta(minutes=30)  # 7 seconds, written with 4999 zeros
    else:  # the longest delay, or the header ignored: either way a datetime in the clamp
        assert NOW + timedelta(minutes=30) <= when <= NOW + timedelta(days=7)
    assert decide.max_age("max-age=" + "9" * 5000) in (None, timedelta(days=3650))


def test_a_huge_ttl_is_the_longest_delay() -> None:
    """Found by hypothesis on next_poll: ttl_minutes=1_440_000_000_000 (a <ttl> stored before
    parse refused such numbers, or any caller's) raised OverflowError in timedelta."""
    policy = PollPolicy(timedelta(minutes=30), timedelta(minutes=5), timedelta(days=2), 0.5)
    for ttl in (1_440_000_000_000, 10**30):
        assert next_poll(NOW, policy, ttl_minutes=ttl, random_fraction=0.5) == NOW + timedelta(
            days=2, hours=12
        )
    assert next_poll(NOW, policy, ttl_minutes=120) == NOW + timedelta(hours=2)


def test_an_entry_key_with_a_lone_surrogate_publishes() -> None:
    """Found by hypothesis on publish: an Entry whose key (or feed URL) held "\\ud800" made
    uuid5 raise UnicodeEncodeError, so no file was written for anyone."""
    import tempfile

    entry = Entry(item_id=1, key="guid-\ud800", feed_url="http://127.0.0.1/f\udfff.xml",
                  feed_title="F\ud800", feed_site_url=None, category=None, title="T\ud800itle",
                  url="http://127.0.0.1/a", author=None, published=NOW, updated=None,
                  first_seen=NOW, language=None)  # fmt: skip
    plain = Entry(**{**entry.__dict__, "key": "guid-1", "feed_url": "http://127.0.0.1/f.xml"})
    # ids of valid text are what they were before the fix (readers would show repeats)
    assert entry_id(plain) == "urn:uuid:7e842b09-46e3-5815-bd33-3254554759bf"
    other = Entry(**{**plain.__dict__, "key": "gu\u00efd-\u4e2d"})
    assert entry_id(other) == "urn:uuid:42c9360b-ae40-5f87-abc8-4b9767f0455e"
    assert entry_id(entry) != entry_id(plain)
    with tempfile.TemporaryDirectory() as tmp:
        publish([entry, plain], Path(tmp), now=NOW)
        assert not output_problems(Path(tmp))
        items = json.loads((Path(tmp) / "feed.json").read_text(encoding="utf-8"))["items"]
        assert [i["title"] for i in items] == ["Title", "Title"]


@pytest.mark.parametrize("name", ["expires", "retry-after", "date"])
def test_an_http_date_in_year_three_billion_is_no_date(name: str) -> None:
    """Found by hypothesis on the header rules: "Sun, 06 Nov 3000000000 08:49:37 GMT" made
    parsedate_to_datetime raise OverflowError (not ValueError), crashing next_poll."""
    far = "Sun, 06 Nov 3000000000 08:49:37 GMT"
    assert decide.http_date(far) is None
    policy = PollPolicy(timedelta(minutes=30), timedelta(minutes=5), timedelta(days=1), 0.0)
    headers = {"expires": "Sun, 06 Nov 1994 08:49:37 GMT", name: far}
    assert next_poll(NOW, policy, headers=headers) == NOW + timedelta(minutes=30)
