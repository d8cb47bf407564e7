"""Attacks on the media, metrics, retention, WebSub and Datasette code (attack13).

Every server is a real one on 127.0.0.1; host names go through the fake resolver."""

from __future__ import annotations

import json
from pathlib import Path

from aggregator.store import Store
from aggregator.types import Subscription
from aggregator.update import publish_now
from tests.hostile_servers import local_httpserver, one_pass, settings_for, write_opml

MEDIA_NS = "http://search.yahoo.com/mrss/"


def _podcast(base: str, title: str, enclosure: str, thumbnail: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<rss version="2.0" xmlns:media="{MEDIA_NS}"><channel><title>Members</title>'
        "<link>http://127.0.0.1/</link><description>d</description>"
        f"<item><title>{title}</title><link>{base}/episodes/{title}</link>"
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
