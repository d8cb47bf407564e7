"""Enclosures, media:content and media:thumbnail: stored from a real podcast feed served
on 127.0.0.1 (the BBC Radio 4 capture in ../shared/data/feeds), republished in RSS
(<enclosure>), Atom (link rel="enclosure") and JSON Feed (attachments), each output still
valid by the schemas test_publish.py uses; hostile enclosures (javascript:, file:, data:
URLs, lengths of -5, 10^30 and "twelve", a type with markup) reach none of them, and the
daemon never asks for an enclosure's URL."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
from lxml import etree

from aggregator import media
from aggregator.config import Settings
from aggregator.jsonfeed import parse as parse_json_feed
from aggregator.parse import parse
from aggregator.store import Store
from aggregator.types import Enclosure
from aggregator.update import make_fetcher, publish_now, run_pass
from tests.test_publish import validate_atom, validate_json_feed, validate_rss

DATA = Path(__file__).with_name("data")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "feeds"
PODCAST = SHARED / "bbc-radio4-in-our-time-podcast-2021.xml"
MP3 = ("http://open.live.bbc.co.uk/mediaselector/6/redir/version/2.0/mediaset/"
       "audio-nondrm-download/proto/http/vpid/p097wt5b.mp3")
ATOM = "{http://www.w3.org/2005/Atom}"
NOW = datetime(2026, 5, 1, tzinfo=UTC)


class Files:
    """A real HTTP server on 127.0.0.1 serving fixed bodies; it records every path asked."""

    def __init__(self) -> None:
        self.bodies: dict[str, tuple[bytes, str]] = {}
        self.asked: list[str] = []
        files = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                files.asked.append(self.path)
                body, ctype = files.bodies.get(self.path, (b"not here", "text/plain"))
                self.send_response(200 if self.path in files.bodies else 404)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def files() -> Iterator[Files]:
    f = Files()
    yield f
    f.close()


def _opml(path: Path, urls: list[str]) -> Path:
    outlines = "\n".join(f'<outline text="f" xmlUrl={quoteattr(u)}/>' for u in urls)
    path.write_text(f'<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head>'
                    f'<body><outline text="Audio">{outlines}</outline></body></opml>',
                    encoding="utf-8")
    return path


def _pass_and_publish(tmp_path: Path, urls: list[str]) -> Settings:
    s = Settings(db=tmp_path / "x.db", feeds=_opml(tmp_path / "feeds.opml", urls),
                 output=tmp_path / "out", fetch_articles=False, summaries=False,
                 stories=False, base_url="http://127.0.0.1:8080/")
    with Store(s.db) as store, make_fetcher(s) as fetcher:
        result = run_pass(s, store, fetcher, all_feeds=True)
        assert result.failed == 0, result.outcomes
        publish_now(s, store)
    return s


def _outputs(out: Path) -> tuple[etree._Element, etree._Element, dict[str, object]]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    rss = etree.fromstring((out / "rss.xml").read_bytes(), parser)
    atom = etree.fromstring((out / "atom.xml").read_bytes(), parser)
    return rss, atom, json.loads((out / "feed.json").read_text(encoding="utf-8"))


def test_podcast_enclosure_reaches_rss_atom_and_json_feed(tmp_path: Path, files: Files) -> None:
    if not PODCAST.is_file():
        pytest.skip(f"{PODCAST} absent (../shared/data is not laid out here)")
    files.bodies["/podcast.xml"] = (PODCAST.read_bytes(), "application/rss+xml")
    s = _pass_and_publish(tmp_path, [files.base + "/podcast.xml"])

    with sqlite3.connect(s.db) as c:
        rows = c.execute("SELECT url, type, length, kind FROM enclosures").fetchall()
    assert rows == [(MP3, "audio/mpeg", 50496000, "enclosure")]  # media:content repeats it

    rss, atom, feed = _outputs(s.output)
    (enc,) = rss.findall("channel/item/enclosure")
    assert dict(enc.attrib) == {"url": MP3, "length": "50496000", "type": "audio/mpeg"}
    links = [dict(ln.attrib) for ln in atom.iter(f"{ATOM}link") if ln.get("rel") == "enclosure"]
    assert links == [{"rel": "enclosure", "href": MP3, "type": "audio/mpeg",
                      "length": "50496000"}]
    (item,) = feed["items"]  # type: ignore[index]
    assert item["attachments"] == [{"url": MP3, "mime_type": "audio/mpeg",
                                    "size_in_bytes": 50496000}]
    for base, d in ((s.base_url, s.output), (s.base_url + "category/audio/",
                                             s.output / "category" / "audio")):
        validate_rss(d / "rss.xml", base)
        validate_atom(d / "atom.xml", base)
        validate_json_feed(d / "feed.json", base)
    # a reader of our feed finds the same file: our RSS parsed again
    again = parse((s.output / "rss.xml").read_bytes(), {}, s.base_url + "rss.xml", NOW)
    assert again.items[0].enclosures == (Enclosure(MP3, "audio/mpeg", 50496000, "enclosure"),)
    assert not any("mediaselector" in p for p in files.asked)  # never fetched


def test_hostile_enclosures_reach_no_output(tmp_path: Path, files: Files) -> None:
    body = (DATA / "media-hostile-enclosures.xml").read_text(encoding="utf-8")
    files.bodies["/hostile.xml"] = (body.replace("ENCLOSURE_BASE", files.base).encode(),
                                    "application/rss+xml")
    s = _pass_and_publish(tmp_path, [files.base + "/hostile.xml"])

    with sqlite3.connect(s.db) as c:
        rows = c.execute("SELECT url, type, length, kind FROM enclosures "
                         "ORDER BY item_id, position").fetchall()
    assert rows == [(files.base + "/negative.mp3", "audio/mpeg", None, "enclosure"),
                    (files.base + "/huge.mp4", "video/mp4", None, "content"),
                    (files.base + "/words.ogg", None, None, "content")]
    texts = [(s.output / n).read_text(encoding="utf-8")
             for n in ("rss.xml", "atom.xml", "feed.json", "index.html")]
    for text in texts:
        for bad in ("javascript:", "file:", "data:", "/etc/passwd", "<script", 'length="-5"',
                    ":-5", "1000000000000000000000000000000", "twelve"):
            assert bad not in text, (bad, text[:200])
    rss, atom, feed = _outputs(s.output)
    encs = [dict(e.attrib) for e in rss.iter("enclosure")]
    # one per item (RSS 2.0): the first audio or video file, with length 0 for "not known"
    assert encs == [{"url": files.base + "/negative.mp3", "length": "0", "type": "audio/mpeg"}]
    links = [dict(ln.attrib) for ln in atom.iter(f"{ATOM}link") if ln.get("rel") == "enclosure"]
    assert links == [  # no length attribute when none is believable; the type guessed
        {"rel": "enclosure", "href": files.base + "/negative.mp3", "type": "audio/mpeg"},
        {"rel": "enclosure", "href": files.base + "/huge.mp4", "type": "video/mp4"},
        {"rel": "enclosure", "href": files.base + "/words.ogg", "type": "audio/ogg"}]
    attachments = [a for i in feed["items"] for a in i.get("attachments", [])]  # type: ignore[attr-defined]
    assert all("size_in_bytes" not in a for a in attachments) and len(attachments) == 3
    validate_rss(s.output / "rss.xml", s.base_url)
    validate_atom(s.output / "atom.xml", s.base_url)
    validate_json_feed(s.output / "feed.json", s.base_url)
    assert files.asked == ["/hostile.xml"]  # the daemon never asked for an enclosure


def test_thumbnails_and_json_feed_attachments_round_trip(tmp_path: Path, files: Files) -> None:
    """media:thumbnail goes out as RSS/Atom media:thumbnail and JSON Feed ``image``; a JSON
    Feed's attachments come in like enclosures. The page shows no thumbnail (it would
    load from another site)."""
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": [
        {"id": "1", "url": "http://127.0.0.1/1", "title": "Pictures", "content_text": "x",
         "image": "http://127.0.0.1/pic.jpg",
         "attachments": [{"url": "http://127.0.0.1/ep.m4a", "mime_type": "audio/mp4",
                          "size_in_bytes": 1234},
                         {"url": "javascript:alert(1)", "mime_type": "audio/mp4"},
                         {"url": "http://127.0.0.1/big", "size_in_bytes": 10**30}]}]}
    parsed = parse_json_feed(json.dumps(doc).encode(), "http://127.0.0.1/feed.json", NOW)
    assert parsed.items[0].enclosures == (
        Enclosure("http://127.0.0.1/ep.m4a", "audio/mp4", 1234, "enclosure"),
        Enclosure("http://127.0.0.1/big", None, None, "enclosure"),
        Enclosure("http://127.0.0.1/pic.jpg", "image/jpeg", None, "thumbnail"))
    files.bodies["/feed.json"] = (json.dumps(doc).encode(), "application/feed+json")
    s = _pass_and_publish(tmp_path, [files.base + "/feed.json"])
    rss, atom, feed = _outputs(s.output)
    media_ns = "{http://search.yahoo.com/mrss/}"
    assert [t.get("url") for t in rss.iter(media_ns + "thumbnail")] == [
        "http://127.0.0.1/pic.jpg"]
    (item,) = feed["items"]  # type: ignore[index]
    assert item["image"] == "http://127.0.0.1/pic.jpg"
    assert [a["url"] for a in item["attachments"]] == ["http://127.0.0.1/ep.m4a",
                                                       "http://127.0.0.1/big"]
    page = (s.output / "index.html").read_text(encoding="utf-8")
    assert "pic.jpg" not in page and "<img" not in page
    validate_rss(s.output / "rss.xml", s.base_url)
    validate_atom(s.output / "atom.xml", s.base_url)
    validate_json_feed(s.output / "feed.json", s.base_url)


@pytest.mark.parametrize(("raw", "expected"), [
    ("50496000", 50496000), (" 12 ", 12), (12, 12), ("0", None), ("-5", None), (-5, None),
    ("1" + "0" * 30, None), (10**30, None), ("twelve", None), ("1e6", None), (True, None),
    ("١٢", None), (None, None), (2**40, 2**40), (2**40 + 1, None),
])
def test_length_is_clamped(raw: object, expected: int | None) -> None:
    assert media.length(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("audio/mpeg", "audio/mpeg"), ("Audio/MPEG; charset=x", "audio/mpeg"),
    ('audio/ogg"><script>', None), ("mpeg", None), ("", None), (None, None),
    ("a/" + "b" * 200, None),
])
def test_mime_type_is_a_token(raw: object, expected: str | None) -> None:
    assert media.mime_type(raw) == expected


def test_rss_picks_the_first_audio_or_video() -> None:
    image = Enclosure("http://x/a.jpg", "image/jpeg", 10)
    video = Enclosure("http://x/b.mp4", "video/mp4", 20, "content")
    thumb = Enclosure("http://x/t.jpg", None, None, "thumbnail")
    assert media.rss_choice([thumb, image, video]) == video
    assert media.rss_choice([thumb, image]) == image
    assert media.rss_choice([thumb]) is None
