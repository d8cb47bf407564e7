"""The command line as a user meets it: help, subscriptions, import/export."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator import opml
from aggregator.cli import COMMANDS, build_parser, main
from bench.farm import Farm

ROOT = Path(__file__).resolve().parents[1]


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aggregator", *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60, env=env)


def test_every_command_has_help_with_an_example_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "example:" in text and "aggregator" in text, name
        assert p.description, name
        assert re.search(rf"aggregator [^\n]*\b{name}\b", readme), f"{name} not in README"


def test_python_dash_m_and_console_script_both_work(tmp_path):
    assert "usage: aggregator" in run(tmp_path, "--help").stdout
    script = Path(sys.executable).parent / "aggregator"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.stdout.startswith("aggregator ")


def test_add_finds_feed_through_alternate_link_and_remove_keeps_items(tmp_path):
    with Farm(2, 3).serve() as farm:
        page = tmp_path / "page.html"
        feeds = tmp_path / "feeds.opml"
        feeds.write_text('<opml version="2.0"><head/><body/></opml>')
        # a web page that announces feed 1
        import http.server
        import threading

        html = (f'<html><head><link rel="alternate" type="application/rss+xml" '
                f'href="{farm.base}/feed/1.xml"></head><body>hi</body></html>').encode()

        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(html)))
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *a: object) -> None:
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            page_url = f"http://127.0.0.1:{srv.server_address[1]}/"
            # the page and the feed it announces are two internal origins: the
            # typed URL's origin is trusted, the other one only through allow_private
            out = run(tmp_path, "--feeds", str(feeds), "--db", "x.db", "add", page_url)
            assert out.returncode == 1
            assert f"refused {farm.base}/feed/1.xml" in out.stderr, out.stderr
            out = run(tmp_path, "--feeds", str(feeds), "--db", "x.db", "add", page_url,
                      "--category", "World",
                      env=dict(os.environ, AGGREGATOR_ALLOW_PRIVATE="127.0.0.0/8"))
        finally:
            srv.shutdown()
            srv.server_close()
        assert out.returncode == 0, out.stderr
        assert f"added: {farm.base}/feed/1.xml" in out.stdout
        subs = opml.read(feeds)
        assert [(s.url, s.category, s.title) for s in subs] == [
            (f"{farm.base}/feed/1.xml", "World", "Farm feed 1")]
        assert page.exists() is False

        env = dict(os.environ, AGGREGATOR_SUMMARIES="false", AGGREGATOR_PUBLISH="false")
        assert run(tmp_path, "--feeds", str(feeds), "--db", "x.db", "update", env=env
                   ).returncode == 0
        out = run(tmp_path, "--feeds", str(feeds), "--db", "x.db", "remove",
                  f"{farm.base}/feed/1.xml")
        assert out.returncode == 0 and "removed" in out.stdout
        assert opml.read(feeds) == []
        listing = run(tmp_path, "--feeds", str(feeds), "--db", "x.db", "feeds").stdout
        assert "removed" in listing and "3" in listing  # inactive, its 3 items kept


def test_add_of_a_page_without_feed_is_a_clear_error(tmp_path, httpserver):
    httpserver.expect_request("/").respond_with_data("<html><body>no feed</body></html>",
                                                      content_type="text/html")
    (tmp_path / "feeds.opml").write_text('<opml version="2.0"><head/><body/></opml>')
    out = run(tmp_path, "add", httpserver.url_for("/"))
    assert out.returncode == 1
    assert "links to no feed" in out.stderr and "Traceback" not in out.stderr


def test_import_merges_and_export_prints_opml(tmp_path, httpserver):
    feeds = tmp_path / "feeds.opml"
    opml.write(feeds, opml.build([opml.Subscription("http://a.example/rss", "A", "News")]))
    other = tmp_path / "other.opml"
    other.write_text(
        '<?xml version="1.0"?><opml version="1.0"><head><title>Reader export</title></head>'
        '<body><outline text="Tech"><outline text="B" type="rss" xmlUrl="http://b.example/atom"/>'
        '</outline><outline text="A again" type="rss" xmlUrl="http://a.example/rss"/></body></opml>')
    out = run(tmp_path, "import", str(other))
    assert out.returncode == 0 and "imported 1 new feeds (1 already followed)" in out.stdout
    httpserver.expect_request("/subs.opml").respond_with_data(
        '<opml version="2.0"><head/><body><outline text="C" xmlUrl="http://c.example/feed"/>'
        "</body></opml>", content_type="text/x-opml")
    out = run(tmp_path, "import", httpserver.url_for("/subs.opml"))
    assert out.returncode == 0, out.stderr
    exported = run(tmp_path, "export").stdout
    subs = opml.subscriptions(opml.parse_bytes(exported.encode()))
    assert [(s.url, s.category) for s in subs] == [
        ("http://a.example/rss", "News"), ("http://b.example/atom", "Tech"),
        ("http://c.example/feed", None)]


def test_a_remote_list_cannot_subscribe_to_internal_addresses(tmp_path, httpserver):
    """feeds.opml trusts a feed URL that names an IP address or localhost; a list fetched
    from the network must not hand that trust to its own entries."""
    feeds = tmp_path / "feeds.opml"
    opml.write(feeds, opml.build([]))
    own = httpserver.url_for("/mine.xml")  # the origin the user typed: kept
    httpserver.expect_request("/subs.opml").respond_with_data(
        '<opml version="2.0"><head/><body>'
        '<outline text="meta" xmlUrl="http://169.254.169.254/latest/meta-data/"/>'
        '<outline text="lo" xmlUrl="http://localhost:6379/"/>'
        '<outline text="v6" xmlUrl="http://[::1]:8080/x"/>'
        f'<outline text="own" xmlUrl="{own}"/>'
        '<outline text="public" xmlUrl="http://news.example/feed"/>'
        "</body></opml>", content_type="text/x-opml")
    out = run(tmp_path, "import", httpserver.url_for("/subs.opml"))
    assert out.returncode == 0, out.stderr
    assert "imported 2 new feeds" in out.stdout
    assert out.stderr.count("may not subscribe to an internal address") == 3
    urls = [s.url for s in opml.read(feeds)]
    assert urls == [own, "http://news.example/feed"]


def test_import_of_a_broken_or_hostile_opml_changes_nothing(tmp_path):
    feeds = tmp_path / "feeds.opml"
    opml.write(feeds, opml.build([opml.Subscription("http://a.example/rss", "A")]))
    before = feeds.read_bytes()
    bomb = tmp_path / "bomb.opml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "aaaaaaaaaa">'
                    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
                    '<opml version="2.0"><body><outline text="&b;" xmlUrl="http://x/"/></body>'
                    "</opml>")
    broken = tmp_path / "broken.opml"
    broken.write_text("<opml><body><outline")
    for f in (bomb, broken):
        out = run(tmp_path, "import", str(f))
        assert out.returncode == 1 and out.stderr.startswith("aggregator: error:")
    assert feeds.read_bytes() == before


def test_corrupt_feeds_opml_is_a_clear_error_and_keeps_the_database(tmp_path):
    (tmp_path / "feeds.opml").write_text("<opml><body>")
    out = run(tmp_path, "update")
    assert out.returncode == 1
    assert "feeds.opml: not well-formed XML" in out.stderr


def test_flags_beat_environment_beat_config_file(tmp_path, monkeypatch):
    from aggregator import config

    cfg = tmp_path / "a.toml"
    cfg.write_text('db = "from-file.db"\ninterval = 10\nfeeds = "f.opml"\n')
    s = config.load(cfg, env={}, flags={})
    assert s.db == tmp_path / "from-file.db" and s.interval == 10  # relative to the file
    s = config.load(cfg, env={"AGGREGATOR_DB": "env.db", "AGGREGATOR_INTERVAL": "20"}, flags={})
    assert s.db == Path("env.db") and s.interval == 20
    s = config.load(cfg, env={"AGGREGATOR_DB": "env.db"}, flags={"db": Path("flag.db")})
    assert s.db == Path("flag.db")
    s = config.load(None, env={"AGGREGATOR_CONFIG": str(cfg)}, flags={})
    assert s.interval == 10
    with pytest.raises(config.ConfigError, match="AGGREGATOR_INTERVAL"):
        config.load(None, env={"AGGREGATOR_INTERVAL": "often"}, flags={})
    with pytest.raises(config.ConfigError, match="min_interval"):
        config.load(None, env={"AGGREGATOR_MIN_INTERVAL": "100", "AGGREGATOR_MAX_INTERVAL": "5"})


def test_defaults_work_from_the_project_directory(monkeypatch):
    from aggregator import config

    monkeypatch.chdir(ROOT)
    s = config.load(None, env={}, flags={})
    assert s.feeds == Path("feeds.opml") and (ROOT / s.feeds).exists()
    subs = opml.read(ROOT / s.feeds)
    urls = {x.url for x in subs}
    assert "https://feeds.bbci.co.uk/news/rss.xml" in urls
    assert "https://feeds.bbci.co.uk/news/world/rss.xml" in urls
    assert len(subs) >= 5 and all(x.category for x in subs)


def test_main_returns_one_line_error_in_process(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--feeds", str(tmp_path / "missing.opml"), "export"]) == 1
    err = capsys.readouterr().err
    assert err == f"aggregator: error: subscription list not found: {tmp_path / 'missing.opml'}\n"


def test_add_private_marks_the_outline_and_export_keeps_it(tmp_path):
    import sqlite3

    with Farm(1, 1).serve() as farm:
        (tmp_path / "feeds.opml").write_text('<opml version="2.0"><head/><body/></opml>')
        url = f"{farm.base}/feed/0.xml"
        out = run(tmp_path, "--db", "x.db", "add", url, "--private")
        assert out.returncode == 0, out.stderr
    outline = opml.parse_bytes((tmp_path / "feeds.opml").read_bytes()).find(".//outline")
    assert outline.get("xmlUrl") == url and outline.get("private") == "true"
    (sub,) = opml.subscriptions(opml.parse_bytes(run(tmp_path, "export").stdout.encode()))
    assert sub.private and sub.url == url
    with sqlite3.connect(tmp_path / "x.db") as c:
        assert c.execute("SELECT private FROM feeds").fetchall() == [(1,)]
