"""The first hour at the command line (issue 14): one-line errors for unwritable
directories, subscribing to feeds that don't answer yet, typos, read-only
commands that stay read-only, feeds.opml edits that keep the file's formatting,
and `summarize` refusing what is not text."""

from __future__ import annotations

import difflib
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from werkzeug import Request, Response

from aggregator import opml
from aggregator.cli import main
from aggregator.types import Subscription

ROOT = Path(__file__).resolve().parents[1]

RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>Local news</title>
<link>http://example.com/</link><description>d</description>
<item><title>One</title><guid>one</guid><link>http://example.com/1</link>
<description>First story of the day.</description></item>
<item><title>Two</title><guid>two</guid><link>http://example.com/2</link>
<description>Second story of the day.</description></item>
</channel></rss>"""


pytestmark = pytest.mark.usefixtures("clean_env")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if not line[:4].isdigit()]  # log lines carry a date
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("aggregator: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def count(db: Path, sql: str = "SELECT count(*) FROM items") -> int:
    with sqlite3.connect(db) as c:
        return int(c.execute(sql).fetchone()[0])


@contextmanager
def immutable(directory: Path) -> Iterator[None]:
    """``chattr +i``: even root can't create, rename or delete in it (chmod
    doesn't stop root). Skips where the tool or the filesystem can't (a
    failure under CI=true, see conftest.py)."""
    if not shutil.which("chattr"):
        pytest.skip("chattr not installed (e2fsprogs)")
    probe = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {probe.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def feed_server(httpserver, path: str = "/feed.xml") -> list[dict[str, str]]:
    """A feed with an ETag that answers 304 to it; returns the requests' headers."""
    seen: list[dict[str, str]] = []

    def handler(request: Request) -> Response:
        seen.append(dict(request.headers))
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304, headers={"ETag": '"v1"'})
        return Response(RSS, content_type="application/rss+xml", headers={"ETag": '"v1"'})

    httpserver.expect_request(path).respond_with_handler(handler)
    return seen


# --- 1. an unwritable feeds.opml directory or output directory: one line, exit 1 ----------


@pytest.mark.parametrize("lock_exists", [False, True])
def test_add_remove_import_into_an_unwritable_directory_fail_in_one_line(
        tmp_path, capsys, lock_exists):
    conf = tmp_path / "conf"
    conf.mkdir()
    feeds = conf / "feeds.opml"
    shutil.copy(ROOT / "feeds.opml", feeds)
    if lock_exists:  # a lock file made by an earlier edit: the write itself fails
        opml.lock_path(feeds).touch()
    other = tmp_path / "other.opml"
    opml.write(other, opml.build([Subscription("http://b.example/feed", "B")]))
    before = feeds.read_bytes()
    with immutable(conf):
        for args in (["add", "http://127.0.0.1:9/feed.xml"],
                     ["remove", "https://feeds.npr.org/1001/rss.xml"],
                     ["import", str(other)]):
            code, _, err = cli(capsys, "--feeds", str(feeds), "--db", "x.db", *args)
            assert code == 1, args
            line = one_line_error(err)
            assert f"cannot write {feeds}" in line, line
            assert "Operation not permitted" in line or "Permission denied" in line, line
    assert feeds.read_bytes() == before
    assert sorted(p.name for p in conf.iterdir()) == sorted(
        ["feeds.opml"] + (["feeds.opml.lock"] if lock_exists else []))


def test_publish_and_update_into_an_unwritable_output_fail_in_one_line(
        tmp_path, capsys, httpserver):
    feed_server(httpserver)
    opml.write(tmp_path / "feeds.opml", opml.build([Subscription(httpserver.url_for("/feed.xml"))]))
    out = tmp_path / "public"
    out.mkdir()
    base = ["--db", "x.db", "--output", str(out)]
    with immutable(out):
        code, stdout, err = cli(capsys, *base, "update", "--no-articles", "--no-summaries")
        assert code == 1
        line = one_line_error(err)
        assert "not published" in line and str(out) in line and "stored" in line, line
        # what was stored is said before the error
        assert "1 feeds polled: 2 new items" in stdout, stdout
        assert count(tmp_path / "x.db") == 2
        code, stdout, err = cli(capsys, *base, "publish")
        assert code == 1
        assert "cannot write" in one_line_error(err)
    assert list(out.iterdir()) == []
    code, stdout, _ = cli(capsys, *base, "publish")
    assert code == 0 and (out / "index.html").exists()


# --- 5. subscribing ----------------------------------------------------------------------


def test_add_of_a_feed_that_does_not_answer_subscribes_it_with_a_warning(tmp_path, capsys):
    feeds = tmp_path / "feeds.opml"
    url = "http://127.0.0.1:9/feed.xml"  # the discard port: nothing listens
    code, out, err = cli(capsys, "--db", "x.db", "add", url, "--category", "Later")
    assert code == 0, err
    assert f"added: {url}" in out
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and f"cannot fetch {url}: " in warning[0], err
    assert "--check" in warning[0]
    assert [(s.url, s.category) for s in opml.read(feeds)] == [(url, "Later")]
    assert count(tmp_path / "x.db", "SELECT count(*) FROM feeds WHERE active = 1") == 1


def test_add_check_refuses_a_feed_that_does_not_answer_and_changes_nothing(tmp_path, capsys):
    shutil.copy(ROOT / "feeds.opml", tmp_path / "feeds.opml")
    code, out, err = cli(capsys, "add", "--check", "http://127.0.0.1:9/feed.xml")
    assert code == 1 and out == ""
    assert "cannot fetch http://127.0.0.1:9/feed.xml: " in one_line_error(err)
    assert (tmp_path / "feeds.opml").read_bytes() == (ROOT / "feeds.opml").read_bytes()
    assert not (tmp_path / "data").exists()


def test_a_404_names_the_url_and_the_reason_and_is_not_subscribed(tmp_path, capsys, httpserver):
    httpserver.expect_request("/missing.xml").respond_with_data("no", status=404)
    url = httpserver.url_for("/missing.xml")
    code, _, err = cli(capsys, "--db", "x.db", "add", url)
    assert code == 1
    assert one_line_error(err) == f"aggregator: error: cannot fetch {url}: HTTP 404 Not Found"
    assert not (tmp_path / "feeds.opml").exists()
    code, _, err = cli(capsys, "--db", "x.db", "import", url)
    assert code == 1
    assert one_line_error(err) == f"aggregator: error: cannot fetch {url}: HTTP 404 Not Found"


def test_add_keeps_the_items_and_validators_of_its_fetch(tmp_path, capsys, httpserver):
    seen = feed_server(httpserver)
    url = httpserver.url_for("/feed.xml")
    code, out, err = cli(capsys, "--db", "x.db", "add", url)
    assert code == 0, err
    assert f"added: {url} (2 items stored)" in out
    db = tmp_path / "x.db"
    assert count(db) == 2
    assert count(db, "SELECT count(*) FROM feeds WHERE etag = '\"v1\"'") == 1
    assert len(seen) == 1
    code, out, err = cli(capsys, "--db", "x.db", "update", "--all", "--no-articles",
                         "--no-summaries", "--no-publish")
    assert code == 0, err
    assert len(seen) == 2 and seen[1].get("If-None-Match") == '"v1"'  # asked, not fetched again
    assert "0 new items" in out and count(db) == 2


def test_a_url_without_a_scheme_is_tried_as_https(tmp_path, capsys, httpserver):
    feed_server(httpserver)
    bare = httpserver.url_for("/feed.xml").removeprefix("http://")
    code, out, err = cli(capsys, "--db", "x.db", "add", bare)
    # the test server speaks plain HTTP, so https:// fails and the guess is not kept
    assert code == 1 and out == ""
    line = one_line_error(err)
    assert line.startswith(f"aggregator: error: no scheme: did you mean https://{bare}? "), line
    assert not (tmp_path / "feeds.opml").exists()


def test_remove_matches_scheme_and_host_in_any_case_and_titles(tmp_path, capsys):
    feeds = tmp_path / "feeds.opml"
    shutil.copy(ROOT / "feeds.opml", feeds)
    code, out, err = cli(capsys, "--db", "x.db", "remove", "  HTTPS://FEEDS.NPR.ORG/1001/rss.xml ")
    assert code == 0, err
    assert out == "removed: https://feeds.npr.org/1001/rss.xml (its items stay in the database)\n"
    code, out, err = cli(capsys, "--db", "x.db", "remove", "al   jazeera")
    assert code == 0 and "removed: https://www.aljazeera.com/xml/rss/all.xml" in out, err
    # the path is case-sensitive: another path is another feed
    code, _, err = cli(capsys, "--db", "x.db", "remove", "https://feeds.bbci.co.uk/NEWS/rss.xml")
    assert code == 1 and "not subscribed" in one_line_error(err)
    urls = {s.url for s in opml.read(feeds)}
    assert "https://feeds.npr.org/1001/rss.xml" not in urls
    assert "https://www.aljazeera.com/xml/rss/all.xml" not in urls
    assert len(urls) == 7


def test_remove_by_a_title_two_feeds_share_is_refused(tmp_path, capsys):
    feeds = tmp_path / "feeds.opml"
    opml.write(feeds, opml.build([Subscription("http://a.example/1", "News"),
                                  Subscription("http://b.example/2", "News", "Other")]))
    code, _, err = cli(capsys, "--db", "x.db", "remove", "News")
    line = one_line_error(err)
    assert code == 1 and "names 2 feeds" in line and "http://a.example/1" in line
    assert len(opml.read(feeds)) == 2


def test_typos_get_the_closest_name(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        main(["updte"])
    assert exit_.value.code == 2
    assert "did you mean 'update'?" in capsys.readouterr().err
    (tmp_path / "aggregator.toml").write_text("intervall = 10\n")
    code, _, err = cli(capsys, "export")
    assert code == 1 and "intervall (did you mean interval?)" in one_line_error(err)
    (tmp_path / "aggregator.toml").unlink()
    shutil.copy(ROOT / "feeds.opml", tmp_path / "feeds.opml")
    monkeypatch.setenv("AGGREGATOR_MAX_ENTRYS", "5")
    monkeypatch.setenv("AGGREGATOR_CONFIG", "")  # a known name, not warned about
    code, out, err = cli(capsys, "export")
    assert code == 0 and "<opml" in out
    assert err == ("aggregator: warning: $AGGREGATOR_MAX_ENTRYS is not a setting; ignored "
                   "(did you mean $AGGREGATOR_MAX_ENTRIES?)\n")


# --- 6. read-only commands -------------------------------------------------------------


def test_feeds_and_export_never_create_a_database(tmp_path, capsys):
    shutil.copy(ROOT / "feeds.opml", tmp_path / "feeds.opml")
    code, out, err = cli(capsys, "feeds", "--db", "typo.db")  # a global option after the command
    assert code == 1 and out == ""
    assert one_line_error(err) == ("aggregator: error: no database at typo.db (check --db, or "
                                   "run `aggregator update` to create it)")
    code, out, _ = cli(capsys, "export", "--db", "typo.db")
    assert code == 0 and "<opml" in out
    code, _, _ = cli(capsys, "feeds", "--revive", "http://a.example/", "--db", "typo.db")
    assert code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feeds.opml"]


def test_feeds_does_not_sync_subscriptions_and_says_its_times_are_utc(tmp_path, capsys):
    feeds = tmp_path / "feeds.opml"
    opml.write(feeds, opml.build([Subscription("http://a.example/feed", "A")]))
    assert cli(capsys, "--db", "x.db", "remove", "http://nothing.example/")[0] == 1  # makes x.db
    opml.write(feeds, opml.build([Subscription("http://a.example/feed", "A")]))
    cli(capsys, "--db", "x.db", "import", str(feeds))
    db_before = (tmp_path / "x.db").read_bytes()
    opml.write(feeds, opml.build([Subscription("http://b.example/feed", "B")]))
    code, out, err = cli(capsys, "--db", "x.db", "feeds")
    assert code == 0, err
    header = out.splitlines()[0]
    assert "LAST FETCH (UTC)" in header and "NEXT FETCH (UTC)" in header
    assert "http://a.example/feed" in out and "b.example" not in out
    assert (tmp_path / "x.db").read_bytes() == db_before
    assert count(tmp_path / "x.db", "SELECT count(*) FROM feeds WHERE active = 1") == 1


# --- 10. feeds.opml keeps its formatting ---------------------------------------------------


def diff(before: bytes, after: bytes) -> list[str]:
    """The lines added (+) and removed (-), sorted (where an added "</outline>"
    goes in a diff is a matter of taste)."""
    return sorted(line for line in difflib.unified_diff(before.decode().splitlines(),
                                                  after.decode().splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---")))


def test_add_import_remove_change_only_their_lines_of_the_repos_feeds_opml(tmp_path, capsys):
    feeds = tmp_path / "feeds.opml"
    shutil.copy(ROOT / "feeds.opml", feeds)
    original = feeds.read_bytes()
    code, _, err = cli(capsys, "--db", "x.db", "add", "http://127.0.0.1:9/a.xml",
                       "--category", "World", "--title", "A & B")
    assert code == 0, err
    assert diff(original, feeds.read_bytes()) == [
        '+      <outline type="rss" text="A &amp; B" title="A &amp; B" '
        'xmlUrl="http://127.0.0.1:9/a.xml"/>']
    other = tmp_path / "other.opml"
    opml.write(other, opml.build([Subscription("http://c.example/c", "C", "Science / Space"),
                                  Subscription("http://d.example/d", "D", "Technology")]))
    step = feeds.read_bytes()
    code, out, err = cli(capsys, "--db", "x.db", "import", str(other))
    assert code == 0 and "imported 2 new feeds" in out, err
    assert diff(step, feeds.read_bytes()) == sorted([
        '+      <outline type="rss" text="D" title="D" xmlUrl="http://d.example/d"/>',
        '+    <outline text="Science" title="Science">',
        '+      <outline text="Space" title="Space">',
        '+        <outline type="rss" text="C" title="C" xmlUrl="http://c.example/c"/>',
        "+      </outline>",
        "+    </outline>"])
    assert feeds.read_text().index("http://d.example/d") < feeds.read_text().index(
        '<outline text="Science"') < feeds.read_text().index("http://c.example/c")
    for url in ("http://127.0.0.1:9/a.xml", "http://c.example/c", "http://d.example/d"):
        assert cli(capsys, "--db", "x.db", "remove", url)[0] == 0
    # the empty folders stay; every feed line is gone
    assert diff(original, feeds.read_bytes()) == sorted([
        '+    <outline text="Science" title="Science">', '+      <outline text="Space" '
        'title="Space">', "+      </outline>", "+    </outline>"])


def test_an_edit_keeps_comments_quotes_and_a_latin1_encoding(tmp_path):
    feeds = tmp_path / "feeds.opml"
    feeds.write_bytes(
        b"<?xml version='1.0' encoding='ISO-8859-1'?>\n<opml version='1.0'>\n"
        b"  <head><title>mine</title></head>\n  <body>\n"
        b"    <!-- my news -->\n"
        b"    <outline text='Caf\xe9' xmlUrl='http://a.example/' />\n"
        b"  </body>\n</opml>\n")
    before = feeds.read_bytes()
    assert opml.edit_document(feeds, lambda d: d.add(Subscription("http://b.example/", "Bé")))
    after = feeds.read_bytes()
    assert after == before.replace(
        b"xmlUrl='http://a.example/' />\n",
        b"xmlUrl='http://a.example/' />\n"
        b'    <outline type="rss" text="B&#233;" title="B&#233;" xmlUrl="http://b.example/" />\n')
    assert [s.title for s in opml.read(feeds)] == ["Café", "Bé"]


def test_an_edit_the_text_cannot_take_writes_the_tree_anew(tmp_path):
    feeds = tmp_path / "feeds.opml"
    feeds.write_text('<opml version="2.0"><head/><body/></opml>')  # no outline to follow
    assert opml.edit_document(feeds, lambda d: d.add(Subscription("http://a.example/", "A", "X")))
    assert [(s.url, s.category) for s in opml.read(feeds)] == [("http://a.example/", "X")]
    feeds.write_text('<opml version="2.0"><head/><body><outline text="A" xmlUrl="http://a/"/>'
                     '<outline text="B" xmlUrl="http://b/"/></body></opml>')  # one line
    assert opml.edit_document(feeds, lambda d: d.remove("http://a/"))
    assert [s.url for s in opml.read(feeds)] == ["http://b/"]


# --- 10. summarize refuses what is not text ----------------------------------------------


def test_summarize_refuses_binary_and_noise_in_one_line_each(tmp_path, capsys):
    import random

    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    nul = tmp_path / "notes.txt"
    nul.write_bytes(b"Title\nSome words\x00\x00\x01 and more")
    noise = tmp_path / "noise.txt"
    noise.write_bytes(bytes(random.Random(1).randrange(0x80, 0x100) for _ in range(3000)))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Titre\nLe café du coin ferme. Les habitués regrettent déjà ce lieu.\n"
                      .encode("latin-1"))
    code, out, err = cli(capsys, "summarize", str(png), str(nul), str(noise), str(latin))
    assert code == 1
    assert err.splitlines() == [
        f"aggregator: error: {png}: a PNG image, not text; not summarised",
        f"aggregator: error: {nul}: binary data (NUL bytes), not text; not summarised",
        f"aggregator: error: {noise}: not UTF-8 text and no charset declared (it reads as "
        "noise); not summarised"]
    assert out.startswith(f"== {latin} (") and "Le café du coin ferme." in out
