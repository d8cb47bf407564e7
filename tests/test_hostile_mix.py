"""Every class of hostile input from the hardening issue, in one real `aggregator update`
run twice, as a user would run it: articles, summaries and publishing on.

One local web server carries the good feeds and the hostile ones (a twenty-digit <ttl>, a
body that names a local feed file, a `gzip, gzip` bomb, a JSON Feed, a feed whose article
links point at another internal origin); a second local server stands for an internal host
and records every request it gets. Both passes must exit 0 without a traceback, the good
feeds must be stored and published, no local file and no internal host may be read, peak
memory stays under 400 MB, the published feeds are well-formed XML and the page carries
nothing active.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

from hostile_servers import (
    RawServer,
    answers,
    items_of,
    local_httpserver,
    rows,
    rss,
    settings_for,
    write_opml,
)
from lxml import etree
from werkzeug import Response

ROOT = Path(__file__).resolve().parents[1]

# runs the CLI in this process and reports its own peak RSS (KiB): VmHWM belongs to the
# process's own memory since exec, while getrusage's ru_maxrss also counts what the forking
# parent (pytest, hundreds of MB late in the suite) had
PEAK = """
import re, sys
from aggregator.cli import main
try:
    code = main(sys.argv[2:])
finally:
    with open("/proc/self/status") as status, open(sys.argv[1], "w") as f:
        f.write(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))
sys.exit(code)
"""


def _bomb() -> bytes:
    """256 MB of zeros, gzipped twice: about 1 KB on the wire."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    once = b"".join(inner.compress(chunk) for _ in range(256)) + inner.flush()
    return gzip.compress(once, 9)


def _update(settings, tmp_path: Path, peak: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env.update(AGGREGATOR_TIMEOUT="5", AGGREGATOR_CONNECT_TIMEOUT="2",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", PEAK, str(peak), "--db", str(settings.db),
         "--feeds", str(settings.feeds), "--output", str(settings.output), "update", "--all"],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)


def test_two_passes_over_every_hostile_class(tmp_path: Path) -> None:
    local_feed = tmp_path / "local-feed.xml"  # what a "body is a path" answer points at
    local_feed.write_bytes(rss("Local", ("LOCAL-FILE-MARKER", "http://127.0.0.1/local")))
    with local_httpserver() as web, RawServer(answers(b"INTERNAL-SECRET",
                                                      content_type="text/html")) as internal:
        base = web.url_for("")
        good = rss("Good", ("Bridge reopens after repairs", base + "a/bridge"),
                   ("Council approves budget", base + "a/budget"))
        article = ("<html><body><article><h1>Bridge</h1>" + "".join(
            f"<p>The bridge reopened on day {n} after {n + 2} years of repairs, officials said. "
            f"Traffic on lane {n} is expected to return to normal within {n + 1} weeks.</p>"
            for n in range(12)) + "</article></body></html>").encode()
        web.expect_request("/good.xml").respond_with_data(good, content_type="application/rss+xml")
        web.expect_request("/a/bridge").respond_with_data(article, content_type="text/html")
        web.expect_request("/a/budget").respond_with_data(article, content_type="text/html")
        web.expect_request("/ttl.xml").respond_with_data(
            rss("Ttl", ("Twenty digits", base + "a/ttl"),
                extra="<ttl>99999999999999999999</ttl>"), content_type="application/rss+xml")
        web.expect_request("/path.xml").respond_with_data(
            str(local_feed).encode(), content_type="application/rss+xml")
        web.expect_request("/bomb.xml").respond_with_response(Response(
            _bomb(), 200, headers={"Content-Type": "application/rss+xml",
                                   "Content-Encoding": "gzip, gzip"}))
        web.expect_request("/feed.json").respond_with_data(json.dumps({
            "version": "https://jsonfeed.org/version/1.1", "title": "Json",
            "items": [{"id": "j1", "url": base + "a/json", "title": "Json story",
                       "content_html": "<p>Json text</p><script>alert(1)</script>"}],
        }), content_type="application/feed+json")
        # article links at another internal origin: never fetched
        web.expect_request("/ssrf.xml").respond_with_data(
            rss("Ssrf", ("Internal link", internal.url("/admin")),
                ("Localhost link", internal.url("/admin", host="localhost"))),
            content_type="application/rss+xml")
        web.expect_request("/a/ttl").respond_with_data(article, content_type="text/html")
        web.expect_request("/a/json").respond_with_data(article, content_type="text/html")

        settings = settings_for(tmp_path)
        names = ("good.xml", "ttl.xml", "path.xml", "bomb.xml", "feed.json", "ssrf.xml")
        urls = {n: web.url_for("/" + n) for n in names}
        write_opml(settings, list(urls.values()))
        peaks = []
        for n in (1, 2):
            peak = tmp_path / f"peak{n}"
            out = _update(settings, tmp_path, peak)
            assert out.returncode == 0, out.stdout + out.stderr
            assert "Traceback" not in out.stderr + out.stdout
            peaks.append(int(peak.read_text()) / 1024)
        assert internal.requests == []  # no internal host was read

    assert max(peaks) < 400, peaks  # MB
    state = {r["url"]: r for r in rows(settings, "SELECT url, state, last_error FROM feeds")}
    for name in ("good.xml", "ttl.xml", "feed.json", "ssrf.xml"):
        assert state[urls[name]]["state"] == "ok", (name, state[urls[name]])
    assert state[urls["path.xml"]]["state"] == "error"
    assert state[urls["bomb.xml"]]["state"] == "error"
    assert "TooLargeError" in state[urls["bomb.xml"]]["last_error"]
    everything = json.dumps(rows(settings, "SELECT * FROM items"))
    assert "LOCAL-FILE-MARKER" not in everything  # no local file was read
    assert "INTERNAL-SECRET" not in everything
    assert "<script" not in everything
    titles = {i["title"] for i in items_of(settings, urls["good.xml"])}
    assert titles == {"Bridge reopens after repairs", "Council approves budget"}
    ssrf = items_of(settings, urls["ssrf.xml"])
    assert all(i["article_status"].startswith("failed: BlockedAddressError") for i in ssrf)
    bridge = next(i for i in items_of(settings, urls["good.xml"]) if "Bridge" in i["title"])
    assert bridge["article_status"] == "ok" and bridge["summary_context"]

    out = settings.output
    for name in ("rss.xml", "atom.xml", "feeds.opml"):
        etree.fromstring((out / name).read_bytes(), etree.XMLParser(resolve_entities=False))
    feed = json.loads((out / "feed.json").read_text())
    assert {"Bridge reopens after repairs", "Json story", "Twenty digits"} <= {
        i["title"] for i in feed["items"]}
    page = (out / "index.html").read_text()
    assert "Bridge reopens after repairs" in page
    assert not re.search(r"<script|<iframe|<object|<embed|\son\w+\s*=|javascript:", page, re.I)
