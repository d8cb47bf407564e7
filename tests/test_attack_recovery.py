"""Attacks on the recovery changes (private subscriptions, the guid takeover rule, the
feeds.opml lock, `import`), each found by trying it and kept here as a regression test.

Everything runs against real things: a local HTTP server on 127.0.0.1, a real SQLite
file, the CLI as a user runs it, real files and symlinks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile_servers import local_httpserver

from aggregator import decide, opml
from aggregator.cli import main
from aggregator.types import ParsedItem, Subscription


def _rss(title: str, link: str, *stories: tuple[str, str]) -> bytes:
    body = "".join(f"<item><title>{t}</title><link>{u}</link><guid>{u}</guid>"
                   f"<description>Text of {t}.</description></item>" for t, u in stories)
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>'
            f"<link>{link}</link>{body}</channel></rss>").encode()


def _published(out: Path) -> dict[Path, str]:
    files = {p: p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file()}
    assert len(files) >= 8, sorted(files)
    return files


def _leaks(files: dict[Path, str], secrets: list[str]) -> dict[str, list[str]]:
    return {s: sorted(p.name for p, text in files.items() if s in text)
            for s in secrets if any(s in text for text in files.values())}


# --- private subscriptions ---------------------------------------------------------------


def test_secrets_in_paths_fragments_site_links_names_and_redirects_are_never_published(
        tmp_path):
    """Attack: a private feed's secret reaches the output some way other than its
    feed URL: the feed's own <link> is the feed URL or sits in its secret folder; the
    token is a path segment or in the fragment; the outline is named after the URL;
    `add` of a token URL follows a redirect to a URL with the token in its path; a
    301 during a pass moves a token URL to such a URL."""
    with local_httpserver() as server:
        base = server.url_for("/").rstrip("/")

        def serve(path: str, title: str, link: str, story: str) -> None:
            server.expect_request(path).respond_with_data(
                _rss(title, link, (story, f"{base}/story/{story.replace(' ', '-')}")),
                content_type="application/rss+xml")

        own_link = f"{base}/members-SECRETONE/feed.xml"  # marked; <link> is itself
        serve("/members-SECRETONE/feed.xml", "Club one", own_link, "Harbour one")
        # `add` of a token URL that redirects to the token in a path
        server.expect_request("/tok.xml").respond_with_data(
            "", status=302, headers={"Location": "/feeds/SECRETTWO/rss"})
        serve("/feeds/SECRETTWO/rss", "", "http://127.0.0.1/", "Library two")
        hex_path = "/u/7f3a9c2e41b84d0e9a6f5c3b2d1e0f4a/rss"  # unmarked, a hex id
        serve(hex_path, "", "http://127.0.0.1/", "Museum three")
        serve("/frag.xml", "", "http://127.0.0.1/", "Bridge four")  # token in the fragment
        # marked; its <link> is its secret folder
        serve("/club-SECRETFIVE/rss", "Club five", f"{base}/club-SECRETFIVE/", "Council five")
        # a 301 met by a pass: from a token in the query to a token in the path
        server.expect_request("/old.xml").respond_with_data(
            "", status=301, headers={"Location": "/members/SECRETSIX/feed"})
        serve("/members/SECRETSIX/feed", "", "http://127.0.0.1/", "Festival six")
        serve("/public.xml", "Public", "http://127.0.0.1/", "Stadium seven")

        feeds = tmp_path / "feeds.opml"
        opml.write(feeds, opml.build([
            Subscription(f"{base}{hex_path}", category="Clubs"),  # named after its URL
            Subscription(f"{base}/frag.xml#token=SECRETFOUR"),
            Subscription(f"{base}/club-SECRETFIVE/rss", category="Clubs", private=True),
            Subscription(f"{base}/old.xml?token=SECRETSIX"),
            Subscription(f"{base}/public.xml"),
        ]))
        args = ["--feeds", str(feeds), "--db", str(tmp_path / "x.db"),
                "--output", str(tmp_path / "out")]
        assert main([*args, "add", own_link, "--private"]) == 0
        assert main([*args, "add", f"{base}/tok.xml?token=SECRETTWO"]) == 0
        assert main([*args, "update", "--all", "--no-articles"]) == 0
    files = _published(tmp_path / "out")
    secrets = ["SECRETONE", "SECRETTWO", "7f3a9c2e41b84d0e9a6f5c3b2d1e0f4a", "SECRETFOUR",
               "SECRETFIVE", "SECRETSIX", "token="]
    assert _leaks(files, secrets) == {}
    rss_text = files[tmp_path / "out" / "rss.xml"]
    # (seven stories with no word in common: the feeds carry each story once)
    for story in ("Harbour one", "Library two", "Museum three", "Bridge four", "Council five",
                  "Festival six", "Stadium seven"):
        assert story in rss_text  # their stories are published, their URLs aren't
    assert f"{base}/public.xml" in files[tmp_path / "out" / "feeds.opml"]
    sources = {i["title"]: i["_source"]
               for i in json.loads(files[tmp_path / "out" / "feed.json"])["items"]}
    assert sources["Harbour one"] == {"title": "Club one"}  # no site link left to show
    assert sources["Museum three"] == {"title": "127.0.0.1",
                                      "home_page_url": "http://127.0.0.1/"}
    # the moved and the redirected feed are marked private in feeds.opml, so they stay so
    marked = {s.url: s.private for s in opml.read(feeds)}
    assert marked[f"{base}/members/SECRETSIX/feed"] is True
    assert marked[f"{base}/feeds/SECRETTWO/rss"] is True
    # `export` is the user's own list: private URLs stay in it
    assert main([*args, "export"]) == 0


def test_export_keeps_private_urls(tmp_path, capsys):
    feeds = tmp_path / "feeds.opml"
    url = "https://example.org/feeds/7f3a9c2e41b84d0e9a6f5c3b2d1e0f4a/rss"
    opml.write(feeds, opml.build([Subscription(url, "Mine", private=True)]))
    assert main(["--feeds", str(feeds), "--db", str(tmp_path / "x.db"), "export"]) == 0
    assert url in capsys.readouterr().out


@pytest.mark.parametrize("url", [
    "https://example.org/u/7f3a9c2e41b84d0e9a6f5c3b2d1e0f4a/rss",
    "https://example.org/feeds/550e8400-e29b-41d4-a716-446655440000.xml",
    "https://example.org/p/dGhpcyBpcyBhIHNlY3JldA9/rss",
    "https://example.org/feed.xml#token=abc",
    "https://example.org/feed.xml#dGhpcyBpcyBhIHNlY3JldA9",
    "https://user%40mail.example:pw@example.org/feed.xml",
])
def test_tokens_in_the_path_or_fragment_are_private(url):
    assert opml.is_private(url)


@pytest.mark.parametrize("url", [
    "https://feeds.bbci.co.uk/news/world/rss.xml",
    "https://rss.nytimes.com/services/xml/rss/nyt/HomePage.xml",
    "https://example.org/2024/03/best-podcasts-of-2024-edition/feed",
    "https://example.org/news/world-cup-2026-qualifiers/rss",
    "https://example.org/feeds/deadbeefdeadbeef.rss",
    "https://example.org/blog/feed/#comments",
])
def test_slugs_dates_and_words_in_the_path_are_not_private(url):
    assert not opml.is_private(url)


def test_what_a_private_feed_may_show():
    feed = "https://example.org/club-SECRET/feed.xml"
    assert opml.reveals("https://example.org/club-SECRET/", feed)  # its folder
    assert opml.reveals(feed, feed)
    assert opml.reveals("https://example.org/?ref=club-SECRET", feed)
    assert opml.reveals("https://example.org/?token=x", feed)  # a token of its own
    assert not opml.reveals("https://example.org/", feed)
    assert not opml.reveals("https://example.org/", "https://example.org/example/f?token=1")
    assert not opml.reveals(None, feed)
    # names: a URL, credentials, a token-like piece go; ordinary words stay
    assert opml.reveals("example.org http://example.org/x", feed, name=True)
    assert opml.reveals("Reader hunter22", "https://reader:hunter22@example.org/f", name=True)
    token_feed = "https://example.org/u/7f3a9c2e41b84d0e9a6f5c3b2d1e0f4a/rss"
    assert opml.reveals("Feed 7f3a9c2e41b84d0e9a6f5c3b2d1e0f4a", token_feed, name=True)
    assert not opml.reveals("The club's feed", feed, name=True)


def test_a_move_keeps_a_private_feed_private_in_feeds_opml():
    tree = opml.build([Subscription("https://example.org/f.xml?token=abc"),
                       Subscription("https://example.org/public.xml")])
    assert opml.rename(tree, "https://example.org/f.xml?token=abc",
                       "https://example.org/members/abc/feed")
    assert opml.rename(tree, "https://example.org/public.xml", "https://example.org/p.xml")
    subs = {s.url: s.private for s in opml.subscriptions(tree)}
    assert subs == {"https://example.org/members/abc/feed": True,
                    "https://example.org/p.xml": False}


# --- the guid takeover rule ----------------------------------------------------------------


def _story(guid: str, n: int, prefix: str = "") -> ParsedItem:
    return ParsedItem(guid=guid, url=f"http://x.example/{prefix}{n}", title=f"{prefix}T{n}",
                      author=None, published=None, updated=None, content="c",
                      content_text="c")


class _Budget:
    """Wraps a function, counting calls; fails the test past ``limit`` calls (a
    bound on work done that holds on any machine, unlike a time)."""

    def __init__(self, fn, limit: int) -> None:
        self.fn, self.limit, self.calls = fn, limit, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.limit:
            raise AssertionError(f"more than {self.limit} calls: not linear")
        return self.fn(*args, **kwargs)


def test_settling_many_stories_under_one_guid_is_linear(monkeypatch):
    """Attack: a feed gives all its 1000 items one guid, new stories each poll. Each
    new story compared itself with every stored row of that guid: 10 s of the single
    writer's time per poll at 5000 stored rows, 45 s at 20,000, growing by 1000 rows
    a poll. Now the rows are indexed by link and title (0.16 s at 20,000)."""
    old = decide.assign_keys([_story("g", n, "old") for n in range(20000)])
    stored = {k: (i.url, i.title) for k, i in old}
    new = decide.assign_keys([_story("g", n) for n in range(1000)])
    norm = _Budget(decide._norm, limit=10 * (len(stored) + len(new)))
    monkeypatch.setattr(decide, "_norm", norm)
    settled = decide.settle_keys(new, stored)
    keys = [k for k, _ in settled]
    assert len(set(keys)) == 1000 and not set(keys) & set(stored)
    assert norm.calls > 0


def test_settle_keys_with_an_index_matches_the_rule():
    """The indexed settle keeps the rule: exact matches first, then an edit (same
    link or same title), each stored row used once, new stories get free keys."""
    stored = {"g": ("http://x/a", "A"), "g#1": ("http://x/b", "B"), "g#2": (None, None),
              "h": ("http://x/c", "C")}

    def item(guid, url, title):
        return ParsedItem(guid=guid, url=url, title=title, author=None, published=None,
                          updated=None, content="c", content_text="c")

    b_edited = item("g", "http://x/b", "B, edited")
    a_moved = item("g", "http://x/a-moved", "A")
    exact_b = item("g", "http://x/b", "B")
    blank = item("g", None, None)
    other = item("g", "http://x/z", "Z")
    settled = decide.settle_keys(
        decide.assign_keys([b_edited, a_moved, exact_b, blank, other]), stored)
    by_title = {i.title: k for k, i in settled}
    assert by_title["B"] == "g#1"  # exact first, though the edit came earlier
    assert by_title["A"] == "g"  # the same title, its link moved
    assert by_title[None] == "g#2"
    assert by_title["B, edited"] not in stored and by_title["Z"] not in stored
    assert len(set(by_title.values())) == 5


# --- the feeds.opml lock -----------------------------------------------------------------


def test_a_lock_file_that_is_a_symlink_is_refused_not_followed(tmp_path):
    """Attack: feeds.opml.lock is a symlink (in a shared directory, as root). Opening
    it with O_CREAT followed it and created the file it points to, anywhere."""
    feeds = tmp_path / "feeds.opml"
    opml.write(feeds, opml.build([]))
    victim = tmp_path / "elsewhere" / "created-by-the-lock"
    victim.parent.mkdir()
    os.symlink(victim, opml.lock_path(feeds))
    with pytest.raises(opml.OPMLError, match="symlink"), opml.locked(feeds):
        pass
    assert not victim.exists()
    status = main(["--feeds", str(feeds), "--db", str(tmp_path / "x.db"), "remove",
                   "https://example.org/f.xml"])
    assert status == 1 and not victim.exists()


def test_an_edit_gives_up_on_a_lock_held_forever_with_one_line(tmp_path, monkeypatch,
                                                               capsys):
    """Attack: a hung process holds the lock; `remove` (or `add`, `import`, a 301
    recorded by the daemon) waited forever. Now it gives up after LOCK_TIMEOUT."""
    feeds = tmp_path / "feeds.opml"
    opml.write(feeds, opml.build([Subscription("https://example.org/f.xml")]))
    monkeypatch.setattr(opml, "LOCK_TIMEOUT", 0.3)
    with opml.locked(feeds):
        status = main(["--feeds", str(feeds), "--db", str(tmp_path / "x.db"), "remove",
                       "https://example.org/f.xml"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("aggregator: error:") and "locked by another process" in err
    assert len(err.strip().splitlines()) == 1
    assert [s.url for s in opml.read(feeds)] == ["https://example.org/f.xml"]  # untouched
    # free again: the same command works
    assert main(["--feeds", str(feeds), "--db", str(tmp_path / "x.db"), "remove",
                 "https://example.org/f.xml"]) == 0


# --- import of a hostile list --------------------------------------------------------------


def test_a_deeply_nested_list_is_imported_without_a_crash(tmp_path, capsys):
    """Attack: 100,000 nested folders. Walking them recursively raised RecursionError
    (a traceback out of the CLI). Folders past MAX_FOLDER_DEPTH add no more levels."""
    depth = 100_000
    data = (b'<opml version="2.0"><body>' + b'<outline text="f">' * depth
            + b'<outline xmlUrl="https://example.org/deep.xml"/>' + b"</outline>" * depth
            + b"</body></opml>")
    source = tmp_path / "deep.opml"
    source.write_bytes(data)
    feeds = tmp_path / "feeds.opml"
    status = main(["--feeds", str(feeds), "--db", str(tmp_path / "x.db"), "import",
                   str(source)])
    assert status == 0, capsys.readouterr().err
    (sub,) = opml.read(feeds)
    assert sub.url == "https://example.org/deep.xml"
    assert sub.category == " / ".join(["f"] * opml.MAX_FOLDER_DEPTH)


def test_merging_a_long_list_is_linear(monkeypatch):
    """Attack: a list of 100,000 feeds. Each add searched every outline: 5000 took
    5.5 s, 100,000 would take most of an hour. Now a set of the URLs already there."""
    subs = [Subscription(f"https://example.org/f{n}.xml") for n in range(20000)]
    tree = opml.build(subs[:10])
    url = _Budget(opml._url, limit=10 * len(subs))
    monkeypatch.setattr(opml, "_url", url)
    added = opml.merge(tree, subs)
    assert len(added) == 19990 and url.calls > 0
    monkeypatch.undo()
    assert len(opml.subscriptions(tree)) == 20000


def test_an_imported_list_with_non_http_feeds_skips_them(tmp_path, capsys):
    source = tmp_path / "list.opml"
    source.write_text(
        '<opml version="2.0"><body>'
        '<outline text="a" xmlUrl="file:///etc/passwd"/>'
        '<outline text="b" xmlUrl="javascript:alert(1)"/>'
        '<outline text="c" xmlUrl="data:text/xml,&lt;rss/&gt;"/>'
        '<outline text="d" xmlUrl="https://example.org/ok.xml"/>'
        "</body></opml>")
    feeds = tmp_path / "feeds.opml"
    status = main(["--feeds", str(feeds), "--db", str(tmp_path / "x.db"), "import",
                   str(source)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert [s.url for s in opml.read(feeds)] == ["https://example.org/ok.xml"]
    assert captured.err.count("not an http(s) URL") == 3
    assert "imported 1 new feeds" in captured.out
