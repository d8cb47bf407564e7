"""The published output as real clients see it, after a real update.

Pipeline, built once for the module: a local feed farm (bench/farm.py: teaser items
linking to full article pages) plus a hostile feed (tests/data/clients-hostile.xml) on
127.0.0.1 -> ``aggregator update --all`` as a subprocess (articles fetched, summaries on
when aggregator/summarize.py is importable) -> aggregator.serve over the output
directory, in this process so its per-request log lines (status codes) can be read.

Clients:
- newsboat (Debian ``newsboat``; skips when absent): subscribes to rss.xml and atom.xml,
  reloads, every story is in its cache with its Context and Dive deeper text; a later
  reload is answered 304.
- feedparser (RSS, Atom: bozo 0) and the ``reader`` library (RSS, Atom, JSON Feed).
- Headless Chromium (Debian ``chromium`` + ``chromium-driver``, driven by Selenium;
  skips when absent): what a person sees on index.html at desktop and phone width,
  links that lead to the original articles, and no script or dialog from the hostile
  feed, even with the page's Content-Security-Policy switched off.
Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import html as html_lib
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

import feedparser
import pytest
from lxml import etree, html

from aggregator.publish import clean_text, dateline, entry_id, safe_url
from aggregator.serve import ServerHandle, serve_in_thread
from aggregator.store import Store
from bench.farm import Farm
from tests.browsers import chromium

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
ARTIFACTS = ROOT / "test-artifacts"
HOSTILE_FIXTURE = DATA / "clients-hostile.xml"
HOSTILE_PLACEHOLDER = b"http://hostile.invalid"
SUMMARIES = importlib.util.find_spec("aggregator.summarize") is not None
FARM_FEEDS, FARM_ITEMS = 3, 3
PAGE_TITLE = "aggregator"  # Settings.title default
ATOM = "{http://www.w3.org/2005/Atom}"
# Elements that may never come out of a feed into any output (the page's own <meta>,
# <link> and <style> are checked apart).
ACTIVE_TAGS = {"script", "iframe", "object", "embed", "form", "input", "svg", "math", "style",
               "link", "meta", "base", "frame", "img", "video", "audio", "button"}  # fmt: skip
# The page a hostile item links to: text to summarise between active markup.
HOSTILE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Bridge</title><script>window.__pwned=1</script></head>"
    b"<body><article><h1>Council approves river bridge</h1><p>The council voted by nine votes "
    b"to four on Tuesday to build a new bridge over the river.<img src=x onerror=alert(1)></p>"
    b"<p>Work on the bridge will start next spring and take two years, and the road will stay "
    b"open to traffic for most of that time.</p><script>alert('page')</script><p>Local shop "
    b"owners welcomed the decision and said the bridge would bring more visitors to the old "
    b"market square.</p><p>Opponents said the money would be better spent on buses and on "
    b"repairs to the existing crossing further downstream.</p></article></body></html>"
)


# ----------------------------------------------------------------------------- the site


@dataclass(frozen=True)
class Story:
    """One stored entry as every client should show it."""

    id: str
    title: str  # the publisher's one-line text (clean_text of the stored title)
    stored_title: str
    url: str | None
    source: str
    context: str
    points: tuple[str, ...]
    published: datetime
    hostile: bool


@dataclass
class Site:
    tmp: Path
    out: Path
    db: Path
    server: ServerHandle
    farm: Farm
    hostile_base: str
    stories: list[Story]
    published_between: tuple[datetime, datetime]
    update_stdout: str
    log: list[tuple[str, int]]  # (request line, status) from aggregator.serve

    @property
    def base(self) -> str:
        return self.server.url

    def requests_since(self, mark: int) -> list[tuple[str, int]]:
        return self.log[mark:]


class _ServeLog(logging.Handler):
    """Collects aggregator.serve's one DEBUG line per request: (request line, status)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if record.msg == "%s %r %d %d" and isinstance(args, tuple) and len(args) == 4:
            self.lines.append((str(args[1]), int(args[2])))


def _hostile_server() -> ThreadingHTTPServer:
    fixture = HOSTILE_FIXTURE.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            base = f"http://127.0.0.1:{self.server.server_address[1]}".encode()
            if self.path == "/hostile.xml":
                body, ctype = fixture.replace(HOSTILE_PLACEHOLDER, base), "application/rss+xml"
            elif self.path.startswith("/story/"):
                body, ctype = HOSTILE_PAGE, "text/html; charset=utf-8"
            else:
                body, ctype = b"not found", "text/plain"
            self.send_response(200 if ctype != "text/plain" else 404)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _opml(farm: Farm, hostile_base: str) -> str:
    """The farm's feeds, plus the hostile one with no name of its own (so its channel
    title is what gets shown) in a folder whose name is markup."""
    folder = ('<outline text="World &lt;script&gt;alert(1)&lt;/script&gt; news">'
              f'<outline type="rss" xmlUrl="{hostile_base}/hostile.xml"/></outline>')  # fmt: skip
    return farm.opml().replace("</body>", folder + "</body>")


def _stories(db: Path) -> list[Story]:
    with Store(db, readonly=True) as store:
        entries = store.recent_entries(1000)
    return [
        Story(
            id=entry_id(e),
            title=clean_text(e.title),
            stored_title=e.title or "",
            url=safe_url(e.url),
            source=clean_text(e.feed_title),
            context=" ".join(e.summary_context),
            points=tuple(e.summary_points),
            published=e.published or e.first_seen,
            hostile=e.key.startswith("hostile-"),
        )
        for e in entries
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("clients")
    out = tmp / "out"
    out.mkdir()
    serve_log = _ServeLog()
    logger = logging.getLogger("aggregator.serve")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(serve_log)
    farm = Farm(FARM_FEEDS, FARM_ITEMS).serve()
    hostile = _hostile_server()
    server = serve_in_thread(out, port=0)
    try:
        hostile_base = f"http://127.0.0.1:{hostile.server_address[1]}"
        feeds = tmp / "feeds.opml"
        feeds.write_text(_opml(farm, hostile_base), encoding="utf-8")
        # The subprocess runs this checkout's code, whatever else is installed.
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, AGGREGATOR_BASE_URL=server.url, AGGREGATOR_WORKERS="4",
                   PYTHONPATH=path)  # fmt: skip
        for name in [k for k in env if k.startswith("AGGREGATOR_")]:
            if name not in ("AGGREGATOR_BASE_URL", "AGGREGATOR_WORKERS"):
                del env[name]  # no stray settings (config file, switches) from the caller
        cmd = [sys.executable, "-m", "aggregator", "--feeds", str(feeds), "--db",
               str(tmp / "agg.db"), "--output", str(out), "update", "--all"]  # fmt: skip
        if not SUMMARIES:
            cmd.append("--no-summaries")
        before = datetime.now(UTC)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp,
                              timeout=120)  # fmt: skip
        after = datetime.now(UTC)
        assert done.returncode == 0, done.stderr
        yield Site(tmp, out, tmp / "agg.db", server, farm, hostile_base,
                   _stories(tmp / "agg.db"), (before, after), done.stdout,
                   serve_log.lines)  # fmt: skip
    finally:
        server.stop()
        farm.stop()
        hostile.shutdown()
        hostile.server_close()
        logger.removeHandler(serve_log)
        logger.setLevel(old_level)


def _text(fragment: str) -> str:
    """The words of an HTML fragment as a reader shows them, spaces folded."""
    if not fragment.strip():
        return ""
    return " ".join(html.fragment_fromstring(fragment, create_parent="div").text_content().split())


def _fold(text: str) -> str:
    return " ".join(text.split())


def _assert_summary_in(story: Story, shown: str, where: str) -> None:
    if not SUMMARIES:
        return
    assert _fold(story.context) in shown, f"{where}: Context of {story.title!r} missing"
    for point in story.points:
        assert _fold(point) in shown, f"{where}: Dive deeper point of {story.title!r} missing"


# ----------------------------------------------------------------------------- the pipeline


def test_update_stored_and_summarised_every_story(site: Site) -> None:
    farm_stories = [s for s in site.stories if not s.hostile]
    assert len(farm_stories) == FARM_FEEDS * FARM_ITEMS
    assert len([s for s in site.stories if s.hostile]) == 4
    assert f"{FARM_FEEDS + 1} feeds polled" in site.update_stdout
    assert "0 failed" in site.update_stdout
    for name in ("rss.xml", "atom.xml", "feed.json", "index.html", "feeds.opml"):
        assert (site.out / name).stat().st_size > 0, name
    if not SUMMARIES:
        pytest.skip("aggregator/summarize.py is missing: ran with --no-summaries")
    # Farm items are one-line teasers: a Context and five points only come from the
    # fetched article page.
    for s in farm_stories:
        assert s.context and len(s.points) >= 2, s.title  # short stories get 2 (fitted length)


def test_hostile_titles_and_names_are_plain_text(site: Site) -> None:
    hostile = {s.id: s for s in site.stories if s.hostile}
    by_title = {s.title: s for s in hostile.values()}
    assert "Harbour workers strike over pay" in by_title
    assert "Council approves river bridge" in by_title
    assert {s.source for s in hostile.values()} == {"Hostile Times"}
    for s in hostile.values():
        assert "PWNED" not in s.title and "PWNED" not in s.source
    assert by_title["Harbour workers strike over pay"].url is None  # was javascript:
    assert by_title["Council approves river bridge"].url == site.hostile_base + "/story/2.html"


def _published_titles(out: Path) -> list[str]:
    rss = etree.parse(str(out / "rss.xml")).getroot()
    atom = etree.parse(str(out / "atom.xml")).getroot()
    feed = json.loads((out / "feed.json").read_text(encoding="utf-8"))
    return ([t.text or "" for t in rss.iter("title")]
            + [t.text or "" for t in atom.iter(f"{ATOM}title")]
            + [i["title"] for i in feed["items"]])  # fmt: skip


def test_no_published_title_looks_like_markup(site: Site) -> None:
    """Many readers render an RSS/Atom title as HTML: no title may carry a tag."""
    titles = _published_titles(site.out)
    assert any("Ferry timetable changes for winter" in t for t in titles)
    for t in titles:
        assert not re.search(r"<[A-Za-z/!?]", t), t


def test_published_titles_keep_every_word_of_the_stored_title(site: Site) -> None:
    for s in site.stories:
        outside_tags = re.sub(r"<[^<>]*>", " ", html_lib.unescape(s.stored_title))
        for word in re.findall(r"\w+", outside_tags):
            assert word in s.title, (s.stored_title, s.title)


def _assert_inert(root: Any, where: str, allowed: frozenset[str] = frozenset()) -> None:
    """No active element, no event handler, no link other than http(s) (or relative)."""
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        tag = etree.QName(el).localname
        assert tag not in ACTIVE_TAGS - allowed, f"{where}: <{tag}>"
        for name, value in el.attrib.items():
            assert not name.lower().startswith("on"), f"{where}: {name}="
            assert name.lower() not in ("style", "action", "formaction", "data", "src"), where
            if name in ("href", "url", "xmlUrl", "htmlUrl"):
                assert urlsplit(value).scheme in ("http", "https", ""), f"{where}: {value}"
                assert ":" not in value or value.startswith("http"), f"{where}: {value}"


def _fragment(text: str) -> Any:
    return html.fragment_fromstring(text or "", create_parent="div")


def test_no_hostile_markup_is_active_in_any_output(site: Site) -> None:
    names = ["rss.xml", "atom.xml", "feed.json", "index.html", "feeds.opml"]
    files = [site.out / n for n in names] + sorted((site.out / "category").glob("*/*"))
    assert len(files) == 9, "the hostile folder gives one category's three feeds and page"
    bodies = 0
    for path in files:
        raw, where = path.read_bytes(), str(path.relative_to(site.out))
        if path.suffix == ".json":  # plain-text fields are text; content_html is HTML
            for item in json.loads(raw)["items"]:
                _assert_inert(_fragment(item["content_html"]), where)
                assert item.get("url", "http").startswith("http"), where
                bodies += 1
            continue
        # As markup (not escaped text) no script may appear in the XML or the page.
        assert not re.search(rb"<\s*script", raw, re.I), where
        if path.suffix == ".html":
            page = html.document_fromstring(raw)
            _assert_inert(page, where, allowed=frozenset({"meta", "link", "style"}))
            assert [el.tag for el in page.iter("style", "link", "meta")] == (
                ["meta"] * 4 + ["link"] * 3 + ["style"]), where  # fmt: skip
            continue
        doc = etree.fromstring(raw, etree.XMLParser(resolve_entities=False, no_network=True))
        _assert_inert(doc, where, allowed=frozenset({"link"}))  # RSS/Atom <link>
        for el in doc.iter("link", f"{ATOM}link"):
            assert urlsplit(el.text or el.get("href", "")).scheme in ("http", "https"), where
        # The HTML readers render: RSS item description, Atom content and summary.
        for el in doc.iter("description", f"{ATOM}content", f"{ATOM}summary"):
            if el.getparent().tag != "channel":
                _assert_inert(_fragment(el.text), f"{where} <{el.tag}>")
                bodies += 1
    assert bodies > 3 * len(site.stories)
    # The researchers' sentence quotes a tag: shown as text on the page, not dropped.
    page_text = _fold(html.parse(str(site.out / "index.html")).getroot().text_content())
    if SUMMARIES:
        assert "A feed title such as <script>alert(1)</script> is harmless text" in page_text


# ----------------------------------------------------------------------------- newsboat


def _newsboat_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"), LANG="C.UTF-8", TERM="dumb")
    return env


def _newsboat_reload(home: Path) -> None:
    done = subprocess.run(
        ["newsboat", "-x", "reload", "-u", "urls", "-c", "cache.db", "-C", "config"],
        cwd=home, env=_newsboat_env(home), capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["rss.xml", "atom.xml"])
def test_newsboat_reads_every_story_with_its_summary_then_gets_304(site: Site, name: str) -> None:
    """One cache per format: newsboat keys items by guid alone, and both formats carry
    the same ids, so one cache subscribed to both keeps each story once."""
    if shutil.which("newsboat") is None:
        pytest.skip("newsboat is not installed (Debian package newsboat; .ci/run installs it)")
    home = site.tmp / f"newsboat-{name}"
    home.mkdir()
    feed = site.base + name
    (home / "urls").write_text(feed + "\n", encoding="utf-8")
    (home / "config").write_text("", encoding="utf-8")

    _newsboat_reload(home)
    with sqlite3.connect(home / "cache.db") as c:
        rows = c.execute("select feedurl, guid, title, url, content from rss_item").fetchall()
    assert {f for f, *_ in rows} == {feed}
    got = {guid: (title, url, content) for _, guid, title, url, content in rows}
    assert set(got) == {s.id for s in site.stories}
    for s in site.stories:
        title, url, content = got[s.id]
        assert title == s.title
        if s.url:
            assert url == s.url
        shown = _text(content)
        _assert_summary_in(s, shown, f"newsboat {name}")
        assert ("Read the full story at " + s.source) in shown

    # newsboat 2.21 drops the validators of a feed's very first download (it writes them
    # before the feed's row exists), so its second reload is unconditional; by the third
    # it revalidates, and the server must answer 304.
    statuses: list[int] = []
    for _ in range(2):
        mark = len(site.log)
        _newsboat_reload(home)
        statuses = [status for line, status in site.requests_since(mark)]
        assert len(statuses) == 1
        if statuses == [304]:
            break
    assert statuses == [304], "newsboat's conditional reload was not answered 304"
    with sqlite3.connect(home / "cache.db") as c:
        (etag,) = c.execute("select etag from rss_feed where rssurl = ?", (feed,)).fetchone()
        (count,) = c.execute("select count(*) from rss_item where deleted = 0").fetchone()
    assert etag.startswith('"') and etag.endswith('"'), etag
    assert count == len(site.stories)


# ----------------------------------------------------------------------------- libraries


def test_feedparser_reads_rss_and_atom_without_error(site: Site) -> None:
    stories = {s.id: s for s in site.stories}
    for name in ("rss.xml", "atom.xml"):
        parsed = feedparser.parse(site.base + name)  # its own HTTP client, gzip and all
        assert parsed.get("status") == 200, name
        assert parsed.bozo == 0, (name, parsed.get("bozo_exception"))
        assert parsed.version in ("rss20", "atom10")
        assert {e.id for e in parsed.entries} == set(stories), name
        for e in parsed.entries:
            s = stories[e.id]
            assert e.title == s.title
            if s.url:
                assert e.link == s.url
            else:  # a story without an original links its story page
                assert e.get("link", "").startswith(site.base + "story/"), e.get("link")
            body = e.content[0].value if "content" in e else e.summary
            _assert_summary_in(s, _text(body), f"feedparser {name}")


def test_reader_reads_all_three_formats(site: Site) -> None:
    from reader import make_reader

    stories = {s.id: s for s in site.stories}
    urls = [site.base + n for n in ("rss.xml", "atom.xml", "feed.json")]
    r = make_reader(str(site.tmp / "reader.sqlite"))
    try:
        for url in urls:
            r.add_feed(url)
        results = {res.url: res for res in r.update_feeds_iter()}
        assert {u: results[u].error for u in urls} == dict.fromkeys(urls)
        versions = {f.url: f.version for f in r.get_feeds()}
        assert versions == dict(zip(urls, ("rss20", "atom10", "json11"), strict=True))
        for url in urls:
            assert r.get_feed(url).last_exception is None
            entries = list(r.get_entries(feed=url))
            assert {e.id for e in entries} == set(stories), url
            assert r.get_entry_counts(feed=url).total == len(stories)
            for e in entries:
                s = stories[e.id]
                assert e.title == s.title, url
                # (a story without an original links its story page)
                assert e.link == s.url or (s.url is None and e.link.startswith(
                    site.base + "story/")), url
                # RSS <description> becomes reader's summary; Atom/JSON content its content.
                html_body = next((c.value for c in e.content if c.type == "text/html"),
                                 e.summary or "")  # fmt: skip
                _assert_summary_in(s, _text(html_body), f"reader {url}")
        # Scheduled now: reader honours Cache-Control max-age and asks nothing.
        mark = len(site.log)
        assert list(r.update_feeds_iter()) == []
        assert site.requests_since(mark) == []
        # Forced: it revalidates, gets 304 for all three, nothing new.
        again = {res.url: res for res in r.update_feeds_iter(scheduled=False)}
        assert {u: again[u].value for u in urls} == dict.fromkeys(urls)  # None: not modified
        assert sorted(status for _, status in site.requests_since(mark)) == [304] * 3
    finally:
        r.close()


def test_cli_serve_serves_the_same_files(site: Site) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--output", str(site.out), "--db",
         str(site.db), "serve", "--port", str(port)],  # fmt: skip
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=site.tmp,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line, line + (proc.stderr.read() if proc.stderr else "")
        base = f"http://127.0.0.1:{port}/"
        with urlopen(base + "index.html", timeout=10) as resp:
            assert resp.read() == (site.out / "index.html").read_bytes()
        with urlopen(base + "rss.xml", timeout=10) as resp:
            etag = resp.headers["ETag"]
            assert resp.headers["Content-Type"].startswith("application/rss+xml")
        try:
            urlopen(Request(base + "rss.xml", headers={"If-None-Match": etag}), timeout=10)
            raise AssertionError("no 304 for a matching If-None-Match")
        except Exception as e:  # urllib raises HTTPError for 304
            assert getattr(e, "code", None) == 304, e
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


# ----------------------------------------------------------------------------- Chromium

# Runs before any page script, in every page: records dialogs instead of opening them.
DIALOG_SPY = """
window.__dialogs = [];
for (const name of ['alert', 'confirm', 'prompt', 'print']) {
  window[name] = function (...args) { window.__dialogs.push([name, String(args[0])]); };
}
"""


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    with chromium(site.tmp / "chromium", "1280,900") as driver:
        yield driver


def _no_dialog_open(driver: Any) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert  # noqa: B018
    except NoAlertPresentException:
        return True
    return False


def _load(driver: Any, url: str, *, csp_off: bool = False) -> None:
    """Open ``url`` with the dialog spy installed (and the CSP bypassed if asked)."""
    driver.execute_cdp_cmd("Page.enable", {})
    spy = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": DIALOG_SPY})
    driver.execute_cdp_cmd("Page.setBypassCSP", {"enabled": csp_off})
    try:
        driver.get(url)
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                               {"identifier": spy["identifier"]})  # fmt: skip


def _page_stories(driver: Any) -> list[dict[str, Any]]:
    """Each <article> as a person reads it (rendered text, not the source)."""
    return driver.execute_script(
        """
        return [...document.querySelectorAll('main article')].map(a => {
          const h = [...a.querySelectorAll('h3')];
          const ctx = h.find(x => x.innerText.trim() === 'Context');
          const dive = h.find(x => x.innerText.trim() === 'Dive deeper');
          const link = a.querySelector('h2 a');
          return {
            title: a.querySelector('h2').innerText.trim(),
            href: link ? link.href : null,
            meta: a.querySelector('.meta').innerText.trim(),
            context: ctx ? ctx.nextElementSibling.innerText.trim() : '',
            points: dive ? [...dive.nextElementSibling.querySelectorAll('li')]
                             .map(li => li.innerText.trim()) : [],
            visible: a.getBoundingClientRect().width > 0,
          };
        });
        """
    )


def _screenshot(driver: Any, name: str, *, full_page: bool = False) -> Path:
    import base64

    ARTIFACTS.mkdir(exist_ok=True)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page}
    )
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000, f"{name} looks blank"
    return path


def test_browser_shows_every_story_with_source_age_and_summary(site: Site, browser: Any) -> None:
    _load(browser, site.base)
    assert browser.title == PAGE_TITLE
    shown = _page_stories(browser)
    assert [x["title"] for x in shown] == [s.title for s in site.stories]  # newest first
    for s, x in zip(site.stories, shown, strict=True):
        assert x["visible"]
        # Dates written out in UTC: the page stays the same file while its stories do.
        # ... and the story's sources, linking its page (story/<id>.html)
        want = re.escape(f"{s.source} · {dateline(s.published)}") + r"( · \d+ sources?)?"
        assert re.fullmatch(want, x["meta"]), x
        assert x["href"] == s.url
        if SUMMARIES:
            assert _fold(x["context"]) == _fold(s.context), s.title
            assert [_fold(p) for p in x["points"]] == [_fold(p) for p in s.points], s.title
    farm_meta = [x["meta"] for x in shown if x["href"] and x["href"].startswith(site.farm.base)]
    assert len(farm_meta) == FARM_FEEDS * FARM_ITEMS
    assert all(re.fullmatch(r"Farm \d+ · \d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d UTC"
                            r"( · 1 source)?", m) for m in farm_meta), farm_meta
    assert browser.execute_script("return window.__dialogs") == []
    _screenshot(browser, "clients-index-desktop.png")
    _screenshot(browser, "clients-index-desktop-full.png", full_page=True)


def test_browser_phone_width_has_no_sideways_scroll(site: Site, browser: Any) -> None:
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 2,
                             "mobile": True})  # fmt: skip
    try:
        _load(browser, site.base)
        width = browser.execute_script("return window.innerWidth")
        scroll = browser.execute_script("return document.documentElement.scrollWidth")
        assert width == 390 and scroll <= width, (width, scroll)
        font = browser.execute_script(
            "return parseFloat(getComputedStyle(document.querySelector('main p')).fontSize)")
        assert font >= 14, font
        assert len(_page_stories(browser)) == len(site.stories)
        _screenshot(browser, "clients-index-phone.png")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_browser_story_link_opens_the_original_article(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    _load(browser, site.base)
    story = next(s for s in site.stories if s.url and s.url.startswith(site.farm.base))
    link = next(a for a in browser.find_elements(By.CSS_SELECTOR, "article h2 a")
                if a.get_attribute("href") == story.url)  # fmt: skip
    assert link.text == story.title
    before = site.farm.requests[urlsplit(story.url).path]
    link.click()
    WebDriverWait(browser, 10).until(ec.url_to_be(story.url))
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.TAG_NAME, "h1"))
    assert browser.find_element(By.TAG_NAME, "h1").text == story.stored_title
    assert len(browser.find_elements(By.CSS_SELECTOR, "article p")) >= 3
    assert site.farm.requests[urlsplit(story.url).path] == before + 1


def test_browser_opens_a_category_page_from_the_top_of_the_index(site: Site,
                                                                  browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    _load(browser, site.base)
    nav = browser.find_elements(By.CSS_SELECTOR, "header nav a")
    assert [a.text for a in nav][0] == "All stories" and len(nav) == 2, [a.text for a in nav]
    folder = nav[1]
    name = folder.text  # the hostile folder's name, as plain text
    assert name == "World news", name  # its <script> dropped
    # Near the top: on screen without scrolling, above the first story.
    first_story = browser.find_element(By.CSS_SELECTOR, "main article")
    assert folder.rect["y"] < min(first_story.rect["y"], 900), (folder.rect, first_story.rect)
    folder.click()
    WebDriverWait(browser, 10).until(ec.url_matches(r"/category/[^/]+/index\.html$"))
    assert browser.title == f"{PAGE_TITLE}: {name}"
    shown = _page_stories(browser)
    hostile = [s.title for s in site.stories if s.hostile][:30]  # category_max_entries
    assert hostile and [x["title"] for x in shown] == hostile
    assert all(x["visible"] for x in shown)
    here = browser.find_element(By.CSS_SELECTOR, "header nav a[aria-current='page']")
    assert here.text == name
    _load(browser, browser.current_url)  # again, with the dialog spy
    assert len(_page_stories(browser)) == len(hostile)
    _assert_nothing_ran(browser, "category page")
    home = browser.find_element(By.CSS_SELECTOR, "header nav a")
    home.click()
    WebDriverWait(browser, 10).until(ec.url_matches(r"/index\.html$"))
    assert len(_page_stories(browser)) == len(site.stories)


def _assert_nothing_ran(driver: Any, where: str) -> None:
    assert _no_dialog_open(driver), f"{where}: a dialog is open"
    assert driver.execute_script("return window.__dialogs") == [], where
    assert driver.execute_script("return typeof window.__pwned") == "undefined", where
    assert "PWNED" not in driver.title, where


def test_browser_runs_nothing_from_the_hostile_feed(site: Site, browser: Any) -> None:
    # The CSP bypass works: this file's inline script runs only when the CSP is off.
    canary_dir = site.out / "canary"
    canary_dir.mkdir(exist_ok=True)
    (canary_dir / "index.html").write_text(
        "<!DOCTYPE html><title>c</title><script>document.title='ran'</script>")
    try:
        _load(browser, site.base + "canary/")
        assert browser.title == "c"  # the server's CSP stopped it
        _load(browser, site.base + "canary/", csp_off=True)
        assert browser.title == "ran"
    finally:
        shutil.rmtree(canary_dir)

    for csp_off in (False, True):
        _load(browser, site.base, csp_off=csp_off)
        where = f"index.html (CSP {'off' if csp_off else 'on'})"
        _assert_nothing_ran(browser, where)
        assert browser.title == PAGE_TITLE
        found = browser.execute_script(
            """
            const bad = [];
            for (const el of document.querySelectorAll('*')) {
              for (const a of el.attributes) {
                if (a.name.startsWith('on')) bad.push(el.tagName + ' ' + a.name);
                if (/^\\s*(javascript|data|vbscript):/i.test(a.value))
                  bad.push(a.name + '=' + a.value);
              }
            }
            return {scripts: document.scripts.length, frames: window.frames.length,
                    embeds: document.querySelectorAll('iframe,object,embed,svg,img,form').length,
                    bad: bad};
            """
        )
        assert found == {"scripts": 0, "frames": 0, "embeds": 0, "bad": []}, (where, found)
        text = browser.find_element("tag name", "main").text
        assert "Harbour workers strike over pay" in text
        assert "Hostile Times" in text
        assert "PWNED" not in text

    for name in ("rss.xml", "atom.xml"):  # Chromium's XML viewer must not run anything either
        _load(browser, site.base + name, csp_off=True)
        _assert_nothing_ran(browser, name)
        assert browser.execute_script("return document.scripts.length") == 0, name
