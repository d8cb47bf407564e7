"""A whole pass against a real local feed farm: storing once, conditional
polls, exactly the new items, and a kill -9 that loses nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aggregator.config import Settings
from aggregator.store import Store
from aggregator.update import make_fetcher, run_pass
from bench.farm import Farm


def settings_for(tmp_path: Path, farm: Farm, **kw: object) -> Settings:
    opml = farm.write_opml(tmp_path / "farm.opml")
    base = dict(db=tmp_path / "x.db", feeds=opml, output=tmp_path / "out",
                fetch_articles=False, summaries=False, publish=False, workers=8)
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def count(db: Path, sql: str = "select count(*) from items") -> int:
    with sqlite3.connect(db) as c:
        return int(c.execute(sql).fetchone()[0])


def test_farm_stores_once_then_polls_conditionally_then_adds_exactly_the_new(tmp_path):
    with Farm(200, 30).serve() as farm:
        s = settings_for(tmp_path, farm)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            first = run_pass(s, store, fetcher, all_feeds=True)
            assert first.new == 6000 and first.failed == 0
            assert count(s.db) == 6000

            farm.requests.clear()
            farm.conditional.clear()
            second = run_pass(s, store, fetcher, all_feeds=True)
            assert {o.result for o in second.outcomes} == {"not modified"}
            assert sum(farm.requests.values()) == 200  # exactly one request per feed
            assert sum(farm.conditional.values()) == 200  # every one conditional
            assert count(s.db) == 6000

            farm.add_item()
            third = run_pass(s, store, fetcher, all_feeds=True)
            assert third.new == 200 and third.changed == 0
            assert count(s.db) == 6200
            assert count(s.db, "select count(*) from (select feed_id, guid from items "
                               "group by feed_id, guid having count(*) > 1)") == 0


def test_due_feeds_only_without_all(tmp_path):
    with Farm(5, 3).serve() as farm:
        s = settings_for(tmp_path, farm)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            assert len(run_pass(s, store, fetcher).outcomes) == 5  # new feeds are due
            farm.requests.clear()
            assert run_pass(s, store, fetcher).outcomes == []  # none due yet
            assert sum(farm.requests.values()) == 0
            nxt = store.next_due()
            assert nxt is not None


def test_update_cli_prints_table_and_exits_zero(tmp_path):
    with Farm(3, 4).serve() as farm:
        opml = farm.write_opml(tmp_path / "farm.opml")
        env = dict(os.environ, AGGREGATOR_FETCH_ARTICLES="false", AGGREGATOR_SUMMARIES="false",
                   AGGREGATOR_PUBLISH="false")
        out = subprocess.run(
            [sys.executable, "-m", "aggregator", "--feeds", str(opml), "--db",
             str(tmp_path / "x.db"), "update", "--all"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "3 feeds polled: 12 new items" in out.stdout
        assert "RESULT" in out.stdout and farm.base in out.stdout


def test_kill_9_mid_update_leaves_a_sound_database(tmp_path):
    with Farm(200, 30, latency=0.02).serve() as farm:
        opml = farm.write_opml(tmp_path / "farm.opml")
        db = tmp_path / "x.db"
        cmd = [sys.executable, "-m", "aggregator", "--feeds", str(opml), "--db", str(db),
               "update", "--all", "--no-articles", "--no-summaries", "--no-publish"]
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until writes are under way
            try:
                if db.exists() and count(db) > 0:
                    break
            except sqlite3.OperationalError:
                pass  # the schema isn't there yet
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        partial = count(db)
        assert 0 < partial < 6000
        with sqlite3.connect(db) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # every feed row that says it succeeded has all its items: no half-written feed
        assert count(db, "select count(*) from feeds f where last_success is not null and "
                         "(select count(*) from items i where i.feed_id = f.id) != 30") == 0
        # no parser process outlives its killed parent
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _children_of_killed(tmp_path):
            time.sleep(0.2)
        assert _children_of_killed(tmp_path) == []
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert count(db) == 6000


def _children_of_killed(tmp_path: Path) -> list[str]:
    """Processes (parser pool, forkserver) started from the killed update's directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "forkserver" in cmd and str(tmp_path) in cmd:
            found.append(proc.name)
    return found


@pytest.mark.parametrize("bad", ["not = [valid toml", "interval = 'soon'", "nonsense = 1"])
def test_bad_config_is_a_one_line_error(tmp_path, bad):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(bad)
    out = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(cfg), "feeds"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert out.returncode == 1
    assert out.stderr.startswith("aggregator: error:") and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr


def test_unwritable_database_is_a_one_line_error(tmp_path):
    (tmp_path / "feeds.opml").write_text('<opml version="2.0"><head/><body></body></opml>')
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the database directory should be")
    out = subprocess.run([sys.executable, "-m", "aggregator", "--db",
                          str(blocker / "sub" / "x.db"), "update"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert out.returncode == 1
    assert out.stderr.startswith("aggregator: error: cannot open database")
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1


def test_database_that_is_not_sqlite_is_a_one_line_error(tmp_path):
    (tmp_path / "feeds.opml").write_text('<opml version="2.0"><head/><body></body></opml>')
    bad = tmp_path / "x.db"
    bad.write_bytes(b"this is not a database" * 100)
    out = subprocess.run([sys.executable, "-m", "aggregator", "--db", str(bad), "update"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert out.returncode == 1
    assert out.stderr.startswith("aggregator: error:") and "Traceback" not in out.stderr
    assert bad.read_bytes() == b"this is not a database" * 100  # untouched


def test_a_moved_feed_stays_moved_whatever_the_outline_spelling(tmp_path):
    from hostile_servers import local_httpserver, rss

    with local_httpserver() as server:
        old, new = server.url_for("/old"), server.url_for("/new")
        server.expect_request("/old").respond_with_data("", status=301,
                                                        headers={"Location": "/new"})
        server.expect_request("/new").respond_with_data(
            rss("Moved", ("Story", server.url_for("/s1"))), content_type="application/rss+xml")
        feeds = tmp_path / "feeds.opml"
        feeds.write_text('<opml version="2.0"><head/><body>'
                         f'<outline text="Moved" xmlurl=" {old} "/></body></opml>')
        s = Settings(db=tmp_path / "x.db", feeds=feeds, output=tmp_path / "out",
                     fetch_articles=False, summaries=False, publish=False)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            for _ in range(3):
                run_pass(s, store, fetcher, all_feeds=True)
            rows = [(f.url, f.active) for f in store.feeds()]
            assert rows == [(new, True)]
            assert store.count_items() == 1
        from aggregator import opml

        assert [x.url for x in opml.read(feeds)] == [new]


def test_daemon_passes_survive_a_broken_feeds_opml_but_update_does_not(tmp_path):
    from aggregator.errors import OPMLError

    with Farm(2, 2).serve() as farm:
        s = settings_for(tmp_path, farm)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            assert run_pass(s, store, fetcher).new == 4
            s.feeds.write_text("<opml><body><outline")  # half-saved by an editor
            with pytest.raises(OPMLError):
                run_pass(s, store, fetcher, all_feeds=True)
            farm.add_item()
            kept = run_pass(s, store, fetcher, all_feeds=True, tolerate_bad_opml=True)
            assert kept.new == 2 and store.count_items() == 6


@pytest.mark.parametrize("env", [
    {"AGGREGATOR_INTERVAL": "nan"}, {"AGGREGATOR_PORT": "70000"},
    {"AGGREGATOR_MAX_REDIRECTS": "-1"}, {"AGGREGATOR_TIMEOUT": "0"},
    {"AGGREGATOR_MAX_ENTRIES": "-1"},
])
def test_out_of_range_settings_are_refused(env):
    from aggregator import config

    with pytest.raises(config.ConfigError):
        config.load(None, env=env, flags={})
