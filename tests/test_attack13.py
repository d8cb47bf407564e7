"""Attacks on the media, metrics, retention, WebSub and Datasette code (attack13).

Every server is a real one on 127.0.0.1; host names go through the fake resolver."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpcore
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator import browse, config, retention
from aggregator.cli import main
from aggregator.config import Settings
from aggregator.errors import ConfigError
from aggregator.metrics import Metrics, status_label
from aggregator.stages.prune import prune
from aggregator.store import Store
from aggregator.types import Subscription
from aggregator.update import publish_now
from bench.retention import START, fill_day
from tests.hostile_servers import (
    RawServer,
    answers,
    fake_dns,
    local_httpserver,
    one_pass,
    rows,
    rss,
    settings_for,
    write_opml,
)
from tests.test_operator import FIRST, page

MEDIA_NS = "http://search.yahoo.com/mrss/"


def _podcast(base: str, title: str, enclosure: str, thumbnail: str,
             link: str | None = None) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<rss version="2.0" xmlns:media="{MEDIA_NS}"><channel><title>Members</title>'
        "<link>http://127.0.0.1/</link><description>d</description>"
        f"<item><title>{title}</title><link>{link or f'{base}/episodes/{title}'}</link>"
        f"<guid>{title}</guid><description>The first episode.</description>"
        f'<enclosure url="{enclosure}" length="1234" type="audio/mpeg"/>'
        f'<media:thumbnail url="{thumbnail}"/></item></channel></rss>\n').encode()


def _published(out: Path) -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file()}


def test_a_private_feeds_enclosures_never_publish_its_token(tmp_path: Path) -> None:
    """Attack: a private podcast (token in its URL, or marked private) whose
    enclosure and thumbnail URLs carry the same token, as member podcasts do;
    the token must reach no output file. A public feed's enclosures still go out."""
    with local_httpserver() as server:
        base = server.url_for("/").rstrip("/")
        server.expect_request("/members.xml").respond_with_data(
            _podcast(base, "one", f"{base}/media/one.mp3?token=SECRETTOKEN1",
                     f"{base}/art/SECRETTOKEN1/one.jpg"), content_type="application/rss+xml")
        server.expect_request("/club-9f8e7d6c5b4a/rss").respond_with_data(
            _podcast(base, "two", f"{base}/club-9f8e7d6c5b4a/two.mp3",
                     f"{base}/thumbs/two.jpg?sig=a8F3kQ9zLm2Xw7Rt"),
            content_type="application/rss+xml")
        server.expect_request("/public.xml").respond_with_data(
            _podcast(base, "three", f"{base}/public/three.mp3", f"{base}/public/three.jpg"),
            content_type="application/rss+xml")
        s = settings_for(tmp_path, publish=True, base_url="http://127.0.0.1:8080/")
        write_opml(s, [f"{base}/members.xml?token=SECRETTOKEN1",
                       Subscription(f"{base}/club-9f8e7d6c5b4a/rss", private=True),
                       f"{base}/public.xml"])
        result = one_pass(s)
        assert result.failed == 0, result.outcomes
        with Store(s.db) as store:
            publish_now(s, store)
    files = _published(s.output)
    for secret in ("SECRETTOKEN1", "9f8e7d6c5b4a", "a8F3kQ9zLm2Xw7Rt", "token=", "sig="):
        leaks = sorted(str(p.relative_to(s.output)) for p, t in files.items() if secret in t)
        assert leaks == [], f"{secret!r} published in {leaks}"
    feed = json.loads(files[s.output / "feed.json"])
    by_title = {i["title"]: i for i in feed["items"]}
    assert set(by_title) == {"one", "two", "three"}  # the episodes are published
    assert "attachments" not in by_title["one"] and "image" not in by_title["one"]
    assert "attachments" not in by_title["two"] and "image" not in by_title["two"]
    assert by_title["three"]["image"] == f"{base}/public/three.jpg"
    assert by_title["three"]["attachments"] == [{"url": f"{base}/public/three.mp3",
                                                 "mime_type": "audio/mpeg",
                                                 "size_in_bytes": 1234}]


def test_a_private_feeds_item_links_never_publish_its_token(tmp_path: Path) -> None:
    """Attack: a private feed whose item links carry its own token (a member site's
    signed article links). The entry is published without that link (its story page
    stands in); an ordinary link of the same feed and a public feed's links go out."""
    with local_httpserver() as server:
        base = server.url_for("/").rstrip("/")
        server.expect_request("/members.xml").respond_with_data(
            _podcast(base, "one", f"{base}/media/one.mp3", f"{base}/art/one.jpg",
                     link=f"{base}/read/one?token=SECRETTOKEN1"),
            content_type="application/rss+xml")
        server.expect_request("/public.xml").respond_with_data(
            _podcast(base, "three", f"{base}/public/three.mp3", f"{base}/public/three.jpg"),
            content_type="application/rss+xml")
        s = settings_for(tmp_path, publish=True, base_url="http://127.0.0.1:8080/")
        write_opml(s, [f"{base}/members.xml?token=SECRETTOKEN1", f"{base}/public.xml"])
        result = one_pass(s)
        assert result.failed == 0, result.outcomes
        with Store(s.db) as store:
            publish_now(s, store)
    files = _published(s.output)
    leaks = sorted(str(p.relative_to(s.output)) for p, t in files.items() if "SECRETTOKEN1" in t)
    assert leaks == []
    by_title = {i["title"]: i for i in json.loads(files[s.output / "feed.json"])["items"]}
    assert set(by_title) == {"one", "three"}
    assert "SECRETTOKEN1" not in by_title["one"].get("url", "")
    assert by_title["three"]["url"] == f"{base}/episodes/three"


# --- retention ------------------------------------------------------------------------


@pytest.mark.parametrize("damaged", ["not json", "", "[1, 2", '{"a": 1}', "null", '"7"'])
def test_a_damaged_latest_document_neither_stops_prune_nor_loses_its_feeds_items(
        tmp_path: Path, damaged: str) -> None:
    """Attack: feeds.latest_items holds something that is no JSON list (a damaged
    file, a hand edit). json_each raised "malformed JSON" on it, so the daily prune
    failed every day; a JSON value that is no list protected nothing. Either way the
    feed now counts as one whose document is not known: its newest items stay."""
    subs = [Subscription(f"http://feed{k}.example/rss", f"Feed {k}", "News") for k in range(2)]
    with Store(tmp_path / "x.db") as store:
        history: dict[str, list[Any]] = {}
        for day in range(40):
            fill_day(store, day, subs, 4, history, article_words=20)
        feed_id = store.feed(subs[0].url).id  # type: ignore[union-attr]
        newest = [r[0] for r in store.conn.execute(
            "SELECT id FROM items WHERE feed_id = ? ORDER BY sort_date DESC, id DESC LIMIT ?",
            (feed_id, retention.UNKNOWN_DOCUMENT_KEEP))]
        store.conn.execute("UPDATE feeds SET latest_items = ? WHERE id = ?", (damaged, feed_id))
        settings = Settings(keep_days=5, keep_article_text_days=2, max_entries=3,
                            category_max_entries=3)
        report = prune(settings, store, now=START + timedelta(days=40))
        assert report.items > 0
        left = {r[0] for r in store.conn.execute("SELECT id FROM items WHERE feed_id = ?",
                                                 (feed_id,))}
        assert set(newest) <= left
        # the other feed's document still protects exactly its own items
        other = store.feed(subs[1].url).id  # type: ignore[union-attr]
        (doc,) = store.conn.execute("SELECT latest_items FROM feeds WHERE id = ?",
                                    (other,)).fetchone()
        assert set(json.loads(doc)) <= {r[0] for r in store.conn.execute(
            "SELECT id FROM items WHERE feed_id = ?", (other,))}


# --- /metrics ---------------------------------------------------------------------------


def test_hostile_status_codes_do_not_grow_the_metrics_series(tmp_path: Path) -> None:
    """Attack: feeds answering made-up statuses (299, 600, 777, 999: HTTP lets any
    three digits through) made one aggregator_polls_total series per code, up to
    ~800 per result for as long as the daemon runs. A registered status keeps its
    number; any other is counted by its class."""
    codes = ["299 Odd", "600 Odd", "777 Odd", "999 Odd", "404 Not Found", "500 Oops"]
    servers = [RawServer(answers(b"<rss version='2.0'><channel><title>t</title></channel>"
                                 b"</rss>", status=c)) for c in codes]
    try:
        s = settings_for(tmp_path)
        write_opml(s, [sv.url(f"/f{k}.xml") for k, sv in enumerate(servers)])
        result = one_pass(s)
    finally:
        for sv in servers:
            sv.close()
    assert sorted(o.status for o in result.outcomes) == [299, 404, 500, 600, 777, 999]
    m = Metrics(None)
    for outcome in result.outcomes:
        m.feed_polled(outcome)
    body, _ = m.render()
    polls = [s for f in text_string_to_metric_families(body.decode())
             for s in f.samples if s.name == "aggregator_polls_total"]
    assert sorted(s.labels["status"] for s in polls) == ["2xx", "404", "500", "6xx", "7xx",
                                                         "9xx"]
    # every code HTTP lets through: a bounded set of label values
    labels = {status_label(code) for code in range(100, 1000)}
    assert len(labels) <= 80 and "200" in labels and "429" in labels


# --- WebSub hub (operator configuration) ------------------------------------------------


@pytest.mark.parametrize("hub", ["https://publisher:s3cret-pass@hub.example/",
                                 "https://hub.example/?token=abc123",
                                 "https://hub.example/publish#key=abc123"])
def test_a_hub_url_carrying_a_secret_is_refused(hub: str) -> None:
    """Attack (on the operator): the hub URL is written into every published feed, so
    a token in its query or fragment was published to every reader; credentials made
    publish drop the hub link silently (discovery broken, pings still sent). Now the
    setting is refused with a message saying why."""
    with pytest.raises(ConfigError, match="websub_hub carries credentials or a token"):
        config.load(env={}, flags={"websub_hub": hub})


@pytest.mark.parametrize("hub", ["https://hub.example/\ufffe", "https://hub.example/\x7f",
                                 "https://hub.example/\ud800", "https://hub.example/a\x85b"])
def test_a_hub_url_xml_cannot_carry_is_refused(hub: str) -> None:
    """U+FFFE, a lone surrogate, DEL and C1 controls passed the check; publish then
    left the hub out of every feed without a word (safe_url refuses them)."""
    with pytest.raises(ConfigError, match="websub_hub must be an http"):
        config.load(env={}, flags={"websub_hub": hub})


def test_an_ordinary_hub_is_still_accepted() -> None:
    for hub in ("https://pubsubhubbub.appspot.com/", "http://127.0.0.1:8085/hub",
                "https://websub.rocks/blog/100/aBcD1234eFgH5678"):
        assert config.load(env={}, flags={"websub_hub": hub}).websub_hub == hub


# --- the Datasette launcher ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["--root", "-i"])
def test_a_database_named_like_an_option_is_opened_as_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Attack: `--db --root` (a relative file name starting with "-") reached
    Datasette's command line as its --root option: the database was not served and
    Datasette printed a URL that logs in as root; "-i" opened the file immutable."""
    pytest.importorskip("datasette", reason="datasette not installed "
                                            "(pip install 'aggregator[datasette]')")
    monkeypatch.chdir(tmp_path)
    with sqlite3.connect(name) as c:
        c.execute("CREATE TABLE t (x)")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(browse.metadata(Path(name))), encoding="utf-8")
    cmd = browse.command(Path(name), meta, host="127.0.0.1", port=8001)
    # --get answers one request in-process: no port is opened
    out = subprocess.run([*cmd, "--get", "/-/databases.json"], capture_output=True,
                         text=True, timeout=120, check=True)
    dbs = json.loads(out.stdout)
    assert [(d["name"], d["is_mutable"]) for d in dbs] == [(name, True)]
    assert "root" not in out.stderr.lower()


# --- refetch --------------------------------------------------------------------------------


ARTICLE = page(FIRST)


def test_refetch_never_reaches_an_internal_address(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack: items whose links point inside (the same host on another port, the
    metadata address, 10/8, an IPv4-mapped loopback, a name the resolver answers with
    loopback). `aggregator refetch` fetches them by hand; the address guard must hold
    as in the summaries stage: only the feed's own origin is trusted."""
    real = httpcore.SyncBackend.connect_tcp

    def connect_tcp(self: Any, host: str, port: int, *args: Any, **kw: Any) -> Any:
        assert host.startswith("127.") or host == "::1", f"test tried to connect to {host}"
        return real(self, host, port, *args, **kw)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    asked = fake_dns(monkeypatch, lambda host: ["127.0.0.1"])
    with local_httpserver() as feed_server, local_httpserver() as inside:
        inside.expect_request("/secret").respond_with_data(ARTICLE, content_type="text/html")
        inside_port = inside.port
        hostile = [f"http://127.0.0.1:{inside_port}/secret",
                   f"http://[::ffff:127.0.0.1]:{inside_port}/secret",
                   f"http://internal.example:{inside_port}/secret",
                   f"http://127.0.0.2:{feed_server.port}/story",
                   "http://169.254.169.254/latest/meta-data/",
                   "http://10.1.2.3/admin"]
        own = feed_server.url_for("/story")
        feed_server.expect_request("/story").respond_with_data(ARTICLE, content_type="text/html")
        feed_server.expect_request("/feed.xml").respond_with_data(
            rss("Harbour", *[(f"Story {k}", u) for k, u in enumerate([own, *hostile])]),
            content_type="application/rss+xml")
        s = settings_for(tmp_path)
        write_opml(s, [feed_server.url_for("/feed.xml")])
        assert one_pass(s).failed == 0
        common = ["--feeds", str(s.feeds), "--db", str(s.db), "--output", str(tmp_path / "o")]
        assert main([*common, "refetch", own]) == 0  # its own origin: fine
        for url in hostile:
            assert main([*common, "refetch", url]) == 1, url
        inside_hits = list(inside.log)
        statuses = {r["url"]: r["article_status"]
                    for r in rows(s, "SELECT url, article_status FROM items")}
    assert inside_hits == []
    for url in hostile:
        assert statuses[url].startswith("failed: BlockedAddressError"), (url, statuses[url])
    assert statuses[own] == "ok"
    assert "internal.example" in asked


def test_an_old_item_a_poll_sees_again_during_prune_is_not_deleted(tmp_path: Path) -> None:
    """Race (held): prune works out what a reader sees once, at its start; a poll that
    then finds an old item in its feed again (another connection, between two of
    prune's batches) writes it into the feed's latest document, and the check inside
    each batch's transaction keeps it, and its article text."""
    subs = [Subscription("http://feed0.example/rss", "Feed 0", "News")]
    with Store(tmp_path / "x.db") as store:
        history: dict[str, list[Any]] = {}
        for day in range(40):
            fill_day(store, day, subs, 4, history, article_words=20)
        old = [r[0] for r in store.conn.execute("SELECT id FROM items ORDER BY sort_date, id")]
        target = old[len(old) // 3]  # in a later batch than the first
        polled = []

        def poll_between_batches() -> None:
            if polled:
                return
            with Store(tmp_path / "x.db") as poller, poller.transaction() as c:
                (doc,) = c.execute("SELECT latest_items FROM feeds").fetchone()
                c.execute("UPDATE feeds SET latest_items = ?",
                          (json.dumps(sorted({*json.loads(doc), target})),))
            polled.append(True)

        settings = Settings(keep_days=5, keep_article_text_days=2, max_entries=3,
                            category_max_entries=3)
        report = prune(settings, store, now=START + timedelta(days=40), batch=10,
                       progress=poll_between_batches)
        assert polled and report.items > 30
        (kept,) = store.conn.execute("SELECT count(*) FROM items WHERE id = ? AND "
                                     "article_text IS NOT NULL", (target,)).fetchone()
        assert kept == 1
        older = old[:len(old) // 3]  # the items before it went, as they should
        marks = ",".join("?" * len(older))
        assert store.conn.execute(f"SELECT count(*) FROM items WHERE id IN ({marks})",
                                  older).fetchone() == (0,)
