"""/metrics: the real daemon (``python -m aggregator run``) polls a local feed farm on
127.0.0.1, its built-in server is scraped over HTTP, the text is read with
prometheus-client's own parser, and every figure is checked against the SQLite file;
``metrics = false`` makes /metrics a 404."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator.metrics import Metrics
from aggregator.serve import serve_in_thread
from bench.farm import Farm

ROOT = Path(__file__).resolve().parents[1]
SERVING = re.compile(r"serving (http://127\.0\.0\.1:\d+/)")


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels), as prometheus-client reads the text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _opml(path: Path, urls: list[str]) -> Path:
    outlines = "".join(f"<outline text={quoteattr(u)} xmlUrl={quoteattr(u)}/>" for u in urls)
    path.write_text(f'<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head>'
                    f"<body>{outlines}</body></opml>", encoding="utf-8")
    return path


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(urls: list[str], **settings: str) -> tuple[str, Path]:
        n = len(procs)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AGGREGATOR_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        env.update(PYTHONPATH=str(ROOT), AGGREGATOR_PORT="0", AGGREGATOR_FETCH_ARTICLES="false",
                   AGGREGATOR_SUMMARIES="false", AGGREGATOR_STORIES="false")
        env.update({f"AGGREGATOR_{k.upper()}": v for k, v in settings.items()})
        db = tmp_path / f"agg{n}.db"
        out = tmp_path / f"stdout{n}.txt"
        with open(out, "wb") as o, open(tmp_path / f"stderr{n}.txt", "wb") as e:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "aggregator", "--feeds",
                 str(_opml(tmp_path / f"feeds{n}.opml", urls)), "--db", str(db),
                 "--output", str(tmp_path / f"public{n}"), "run"],
                env=env, cwd=tmp_path, stdout=o, stderr=e, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = SERVING.search(out.read_text(encoding="utf-8", errors="replace"))
            if m:
                return m[1], db
            assert procs[-1].poll() is None, (tmp_path / f"stderr{n}.txt").read_text()
            time.sleep(0.1)
        raise AssertionError("the daemon never said where it serves")

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _after_first_pass(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    deadline = time.monotonic() + 30
    while True:
        status, ctype, body = _get(url + "metrics")
        assert status == 200, body
        assert ctype.startswith("text/plain; version=0.0.4")
        got = samples(body.decode())
        if got.get(("aggregator_passes_total", (("result", "ok"),)), 0) >= 1:
            return got
        assert time.monotonic() < deadline, "no pass in 30 s"
        time.sleep(0.2)


def test_metrics_match_the_database_after_a_pass(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with Farm(3, 5).serve() as farm:
        urls = [f"{farm.base}/feed/{i}.xml" for i in range(3)] + [f"{farm.base}/feed/99.xml"]
        started = time.time()
        url, db = daemon(urls)
        m = _after_first_pass(url)

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        states = dict(c.execute("SELECT state, count(*) FROM feeds WHERE active = 1 "
                                "GROUP BY state").fetchall())
        items = c.execute("SELECT count(*) FROM items").fetchone()[0]
        unsummarised = c.execute("SELECT count(*) FROM items WHERE summary_hash IS NULL"
                                 ).fetchone()[0]
        unclustered = c.execute("SELECT count(*) FROM items WHERE story_id IS NULL").fetchone()[0]
        size = (c.execute("PRAGMA page_count").fetchone()[0]
                * c.execute("PRAGMA page_size").fetchone()[0])
    assert states == {"ok": 3, "error": 1} and items == 15

    assert m[("aggregator_store_up", ())] == 1
    for state in ("new", "ok", "error", "gone"):
        assert m[("aggregator_feeds", (("state", state),))] == states.get(state, 0)
    assert m[("aggregator_feeds_removed", ())] == 0
    assert m[("aggregator_items", ())] == items
    assert m[("aggregator_items_stored_total", (("kind", "new"),))] == items
    assert m[("aggregator_items_stored_total", (("kind", "changed"),))] == 0
    assert m[("aggregator_summaries_backlog", ())] == unsummarised == 15  # summaries off
    assert m[("aggregator_clustering_backlog", ())] == unclustered == 15  # stories off
    assert m[("aggregator_database_bytes", ())] == size > 0
    assert m[("aggregator_database_free_bytes", ())] >= 0
    assert m[("aggregator_polls_total", (("result", "new"), ("status", "200")))] == 3
    assert m[("aggregator_polls_total", (("result", "error"), ("status", "404")))] == 1
    assert m[("aggregator_fetch_duration_seconds_count", ())] == 4
    assert 0 < m[("aggregator_fetch_duration_seconds_sum", ())] < 60
    assert m[("aggregator_fetch_duration_seconds_bucket", (("le", "+Inf"),))] == 4
    assert m[("aggregator_passes_total", (("result", "ok"),))] == 1
    assert m[("aggregator_pass_duration_seconds_count", ())] == 1
    assert m[("aggregator_publish_duration_seconds_count", ())] >= 1
    assert m[("aggregator_articles_total", (("result", "failed"),))] == 0
    assert m[("aggregator_summary_duration_seconds_count", ())] == 0
    last_ok = m[("aggregator_last_successful_pass_timestamp_seconds", ())]
    assert started <= last_ok <= time.time()
    assert m[("aggregator_last_pass_timestamp_seconds", ())] == last_ok
    # a registry of our own: none of the library's default process/platform collectors
    assert not any(name.startswith(("process_", "python_")) for name, _ in m)
    assert not any(name.endswith("_created") for name, _ in m)


def test_metrics_false_is_404(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with Farm(1, 2).serve() as farm:
        url, _ = daemon([f"{farm.base}/feed/0.xml"], metrics="false")
        status, _, _ = _get(url + "metrics")
        assert status == 404
        assert _get(url + "healthz")[0] == 200  # the rest still served


def test_unreadable_database_is_store_up_0_not_a_failed_scrape(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    metrics = Metrics(tmp_path / "missing.db", counting=False)
    server = serve_in_thread(out, "127.0.0.1", 0, metrics=metrics.render)
    try:
        status, _, body = _get(server.url + "metrics")
        assert status == 200
        m = samples(body.decode())
        assert m == {("aggregator_store_up", ()): 0}
        status, _, _ = _get(server.url + "metrics/")
        assert status == 404
    finally:
        server.stop()
    assert not (tmp_path / "missing.db").exists()  # a scrape never creates the database


def test_article_results_and_summary_times_are_counted() -> None:
    m = Metrics(None)
    m.article("ok")
    m.article("failed: ReadTimeout: timed out")
    m.article("too little text")
    m.summarized(0.02)
    got = samples(m.render()[0].decode())
    for result in ("ok", "failed", "too_little_text"):
        assert got[("aggregator_articles_total", (("result", result),))] == 1
    assert got[("aggregator_summary_duration_seconds_count", ())] == 1
