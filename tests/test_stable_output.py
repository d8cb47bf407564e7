"""Nothing new, nothing rewritten: `aggregator publish` twice, a second apart, and an
`aggregator update` pass that gets only 304s leave every published file byte for byte and
mtime for mtime as it was, so the ETags and Last-Modified a feed reader holds stay valid.

Run as a user runs it: the CLI in a subprocess, a real SQLite file, a local feed farm on
127.0.0.1 (bench/farm.py: ETag and 304 answers), a feeds.opml with a nested folder, a quiet
folder whose only feed fails (an empty category feed: it must not be dated "now"), and a
feed without a folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import feedparser
from lxml import html

from bench.farm import Farm

ROOT = Path(__file__).resolve().parents[1]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("AGGREGATOR_")}
    out = subprocess.run([sys.executable, "-m", "aggregator", "--config", "aggregator.toml",
                          *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                         env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out


def snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(out.rglob("*")) if p.is_file()}  # fmt: skip


def test_publish_twice_and_a_304_pass_change_no_file(tmp_path: Path) -> None:
    with Farm(3, 4).serve() as farm:
        (tmp_path / "feeds.opml").write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0"><head><title>t</title>'
            "</head><body>\n"
            f'<outline text="World"><outline text="Farm 0" xmlUrl="{farm.base}/feed/0.xml"/>\n'
            f'  <outline text="Europe"><outline text="Farm 1" xmlUrl="{farm.base}/feed/1.xml"/>'
            "</outline></outline>\n"
            f'<outline text="Quiet"><outline text="Gone" xmlUrl="{farm.base}/feed/99.xml"/>'
            "</outline>\n"
            f'<outline text="Farm 2" xmlUrl="{farm.base}/feed/2.xml"/>\n'
            "</body></opml>\n",
            encoding="utf-8",
        )
        (tmp_path / "aggregator.toml").write_text(
            'db = "agg.db"\nfeeds = "feeds.opml"\noutput = "public"\n'
            "fetch_articles = false\nsummaries = false\nbase_url = \"http://news.test/\"\n",
            encoding="utf-8",
        )
        out = tmp_path / "public"
        cli(tmp_path, "update", "--all")
        first = snapshot(out)
        assert {"index.html", "rss.xml", "category/quiet/rss.xml",
                "category/quiet/index.html", "category/world-europe/index.html"} <= set(first)

        # The quiet category has no entry: it is dated when its folder appeared, not now,
        # and its page says why it is empty.
        quiet = feedparser.parse(first["category/quiet/rss.xml"][0])
        assert quiet.entries == []
        built = parsedate_to_datetime(quiet.feed.updated)
        page = html.fromstring(first["category/quiet/index.html"][0])
        assert page.find(".//main/p").text_content().startswith("No stories yet: 1 feed, 1 failing")
        # World shows its own stories and World / Europe's; Europe only its own.
        world = feedparser.parse(first["category/world/rss.xml"][0])
        europe = feedparser.parse(first["category/world-europe/rss.xml"][0])
        assert len(world.entries) == 8 and len(europe.entries) == 4
        assert {e.id for e in europe.entries} < {e.id for e in world.entries}

        for _ in range(2):
            time.sleep(1.1)  # a clock-dated file would differ by a second now
            cli(tmp_path, "publish")
            assert snapshot(out) == first

        polled = dict(farm.requests)
        time.sleep(1.1)
        cli(tmp_path, "update", "--all")
        assert snapshot(out) == first
        # That pass did ask every feed again and got 304 (or 404) for each.
        for i in range(3):
            assert farm.requests[f"/feed/{i}.xml"] == polled[f"/feed/{i}.xml"] + 1
            assert farm.conditional[f"/feed/{i}.xml"] >= 1
        assert parsedate_to_datetime(
            feedparser.parse((out / "category/quiet/rss.xml").read_bytes()).feed.updated
        ) == built
