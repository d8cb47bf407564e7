"""A big backlog's article pages and summaries are worked off by worker
processes (aggregator/offload.py): what is stored is exactly what the same
work done in the one process stores, and the workers really ran it. Real
farm over HTTP on 127.0.0.1, real SQLite files, real processes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hostile_servers import settings_for

from aggregator import offload, pools
from aggregator.stages.summaries import summarize_pending
from aggregator.store import Store
from aggregator.update import make_fetcher, run_pass
from bench.farm import Farm

COLUMNS = ("key", "article_status", "article_text", "article_tries", "summary_context",
           "summary_points", "summary_method", "summary_source", "summary_hash")


def stored(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as c:
        rows = c.execute(f"SELECT {', '.join(COLUMNS)} FROM items ORDER BY key").fetchall()
        # the search index is in step with the rows written by either path
        c.execute("INSERT INTO items_fts (items_fts, rank) VALUES ('integrity-check', 1)")
    c.close()
    return rows


def work_off(tmp_path: Path, farm: Farm, name: str, processes: int) -> list[tuple[object, ...]]:
    s = settings_for(tmp_path, db=tmp_path / f"{name}.db", fetch_articles=True,
                     summaries=True, parse_processes=processes,
                     feeds=farm.write_opml(tmp_path / f"{name}.opml"))
    with Store(s.db) as store, make_fetcher(s) as fetcher:
        run_pass(s, store, fetcher, all_feeds=True)
        assert summarize_pending(s, store, fetcher) == 60
    return stored(s.db)


def test_worker_processes_store_what_the_one_process_stores(tmp_path, monkeypatch):
    asked: list[str] = []
    submit = pools._LazyPool.submit

    def counting(self, fn, /, *args, **kwargs):
        asked.append(fn.__name__)
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(pools._LazyPool, "submit", counting)
    monkeypatch.setattr(pools, "_pool_size", lambda processes: processes)  # any machine
    with Farm(4, 15).serve() as farm:  # 60 items: a first batch of 50 is full
        alone = work_off(tmp_path, farm, "alone", 0)
        assert asked == []
        pooled = work_off(tmp_path, farm, "pooled", 2)
    assert len(alone) == 60 and all(r[1] == "ok" and r[6] for r in alone)
    assert pooled == alone
    assert asked.count("main_text") == 60 and asked.count("summary") == 60


def test_a_small_backlog_starts_no_process(tmp_path, monkeypatch):
    started: list[int] = []
    monkeypatch.setattr(pools._LazyPool, "submit",
                        lambda self, *a, **k: started.append(1))
    monkeypatch.setattr(pools, "_pool_size", lambda processes: processes)
    with Farm(2, 5).serve() as farm:
        s = settings_for(tmp_path, fetch_articles=True, summaries=True, parse_processes=2,
                         feeds=farm.write_opml(tmp_path / "feeds.opml"))
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            run_pass(s, store, fetcher, all_feeds=True)
            assert summarize_pending(s, store, fetcher) == 10
    assert started == []


@pytest.mark.parametrize("name", offload.PRELOAD)
def test_the_workers_preload_is_importable(name):
    __import__(name)
