"""WebSub against a local hub: a real HTTP server on 127.0.0.1 that records every ping.

With ``websub_hub`` set every feed (main and category, RSS, Atom, JSON Feed) names the hub
and itself; a publish that changed feeds pings once per changed feed (hub.mode=publish,
hub.url=the feed's public URL), one with no change pings nothing; a hub answering 500, or
a closed port, costs one log line and the publish still succeeds."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs
from xml.sax.saxutils import quoteattr

import pytest
from lxml import etree

from aggregator import config, websub
from aggregator.config import Settings
from aggregator.errors import ConfigError
from aggregator.store import Store
from aggregator.update import make_fetcher, publish_now, run_pass
from bench.farm import Farm
from tests.test_publish import validate_atom, validate_json_feed, validate_rss

ATOM = "{http://www.w3.org/2005/Atom}"
BASE = "http://news.example/"


class Hub:
    """Records each POST's form; answers ``status``."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.pings: list[dict[str, list[str]]] = []
        self.content_types: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode()
                hub.pings.append(parse_qs(body))
                hub.content_types.append(self.headers.get("Content-Type", ""))
                self.send_response(hub.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def urls(self) -> list[str]:
        return sorted(u for p in self.pings for u in p.get("hub.url", []))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub()
    yield h
    h.close()


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websub, "BACKOFF", 0.01)


def _settings(tmp_path: Path, farm: Farm, hub_url: str) -> Settings:
    """Two folders, one feed each, so a change in one leaves the other's feeds alone."""
    outlines = "".join(
        f'<outline text="{name}"><outline text="f{i}" xmlUrl={quoteattr(farm.base + f"/feed/{i}.xml")}/></outline>'  # noqa: E501
        for i, name in enumerate(("World", "Sport")))
    opml = tmp_path / "feeds.opml"
    opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head>'
                    f"<body>{outlines}</body></opml>", encoding="utf-8")
    return Settings(db=tmp_path / "x.db", feeds=opml, output=tmp_path / "out",
                    fetch_articles=False, summaries=False, stories=False, base_url=BASE,
                    websub_hub=hub_url)


def _publish(s: Settings, store: Store) -> list[Path]:
    changed = publish_now(s, store)
    assert websub.wait_all(20)
    return changed


FEEDS = ("rss.xml", "atom.xml", "feed.json")


def test_every_feed_names_hub_and_self_and_changes_ping_once_each(tmp_path: Path,
                                                                   hub: Hub) -> None:
    with Farm(2, 3).serve() as farm:
        s = _settings(tmp_path, farm, hub.url)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            run_pass(s, store, fetcher, all_feeds=True)
            _publish(s, store)
            everything = sorted(BASE + d + n for d in ("", "category/sport/", "category/world/")
                                for n in FEEDS)
            assert hub.urls() == everything  # once per changed feed
            assert all(p["hub.mode"] == ["publish"] and len(p["hub.url"]) == 1
                       for p in hub.pings)
            assert set(hub.content_types) == {"application/x-www-form-urlencoded"}

            for d, base in ((s.output, BASE),
                            (s.output / "category" / "world", BASE + "category/world/")):
                validate_rss(d / "rss.xml", base)
                validate_atom(d / "atom.xml", base)
                validate_json_feed(d / "feed.json", base)
                rss = etree.fromstring((d / "rss.xml").read_bytes())
                links = {ln.get("rel"): ln.get("href")
                         for ln in rss.findall(f"channel/{ATOM}link")}
                assert links == {"self": base + "rss.xml", "hub": hub.url}
                atom = etree.fromstring((d / "atom.xml").read_bytes())
                links = {ln.get("rel"): ln.get("href") for ln in atom.findall(f"{ATOM}link")}
                assert links["self"] == base + "atom.xml" and links["hub"] == hub.url
                doc = json.loads((d / "feed.json").read_text(encoding="utf-8"))
                assert doc["feed_url"] == base + "feed.json"
                assert doc["hubs"] == [{"type": "WebSub", "url": hub.url}]

            hub.pings.clear()
            assert _publish(s, store) == []  # nothing changed: nothing to tell
            assert hub.pings == []

            farm.add_item()  # a new item in every feed: every feed changes
            run_pass(s, store, fetcher, all_feeds=True)
            _publish(s, store)
            assert hub.urls() == sorted(BASE + d + n for d in ("", "category/sport/",
                                                               "category/world/")
                                        for n in FEEDS)


def test_only_changed_feeds_are_pinged(tmp_path: Path, hub: Hub) -> None:
    """A change in one folder pings its feeds and the main ones, not the other folder's."""
    with Farm(2, 3).serve() as farm:
        s = _settings(tmp_path, farm, hub.url)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            run_pass(s, store, fetcher, all_feeds=True)
            _publish(s, store)
            hub.pings.clear()
            s2 = s.replace(feeds=_one_folder_changed(tmp_path, farm))
            run_pass(s2, store, fetcher, all_feeds=True)  # the feeds answer 304
            _publish(s2, store)
            assert hub.urls() == sorted(BASE + d + n for d in ("", "category/sport/")
                                        for n in FEEDS)


def _one_folder_changed(tmp_path: Path, farm: Farm) -> Path:
    """feeds.opml with the Sport feed renamed: only Sport's and the main feeds change."""
    outlines = (
        f'<outline text="World"><outline text="f0" xmlUrl={quoteattr(farm.base + "/feed/0.xml")}/></outline>'  # noqa: E501
        f'<outline text="Sport"><outline text="Renamed" xmlUrl={quoteattr(farm.base + "/feed/1.xml")}/></outline>')  # noqa: E501
    opml = tmp_path / "feeds2.opml"
    opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head>'
                    f"<body>{outlines}</body></opml>", encoding="utf-8")
    return opml


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hub"


@pytest.mark.parametrize("kind", ["500", "closed port"])
def test_failing_hub_costs_one_log_line_and_never_the_publish(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    failing = Hub(500) if kind == "500" else None
    hub_url = failing.url if failing else _closed_port()
    try:
        with Farm(2, 3).serve() as farm:
            s = _settings(tmp_path, farm, hub_url)
            with Store(s.db) as store, make_fetcher(s) as fetcher:
                run_pass(s, store, fetcher, all_feeds=True)
                with caplog.at_level(logging.WARNING, logger="aggregator"):
                    changed = _publish(s, store)
                assert (s.output / "rss.xml").is_file() and changed
        lines = [r for r in caplog.records if r.name == "aggregator.websub"]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert "9 of 9 ping(s) failed" in lines[0].getMessage()
        assert hub_url in lines[0].getMessage()
        if failing:
            assert len(failing.pings) == 9 * websub.TRIES  # bounded retries, each feed
            assert "HTTP 500" in lines[0].getMessage()
    finally:
        if failing:
            failing.close()


def test_a_4xx_is_not_tried_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    refusing = Hub(400)
    try:
        with caplog.at_level(logging.WARNING, logger="aggregator"):
            websub.announce(refusing.url, [tmp_path / "rss.xml"], tmp_path, BASE)
            assert websub.wait_all(10)
        assert len(refusing.pings) == 1
        assert [r.getMessage() for r in caplog.records if r.name == "aggregator.websub"] == [
            f"WebSub hub {refusing.url}: 1 of 1 ping(s) failed after up to 3 tries: HTTP 400"]
    finally:
        refusing.close()


@pytest.mark.parametrize("bad", ["javascript:alert(1)", "ftp://hub.example/", "hub.example",
                                 "http://", "http://hub example/", "file:///etc/passwd"])
def test_hub_must_be_an_http_url(bad: str) -> None:
    with pytest.raises(ConfigError, match="websub_hub must be an http"):
        config.load(env={}, flags={"websub_hub": bad})


def test_hub_setting_is_read() -> None:
    s = config.load(env={"AGGREGATOR_WEBSUB_HUB": " https://hub.example/ "})
    assert s.websub_hub == "https://hub.example/"
    assert config.load(env={}).websub_hub == ""
