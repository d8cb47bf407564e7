"""A soak the size of a test: the real daemon (``aggregator run`` in a child
process) for two minutes against the feed farm in its own process, feeds
advancing every 10 s, polled every 6 s, with article pages, summaries,
publishing, serving and a SIGHUP reload every 40 s. Its open files, threads and
RSS are sampled from /proc; after a warm-up they must stay flat, and its log must
hold no error that isn't one feed's own. ``python -m bench.soak`` is the same
run for half an hour (bench/soak.py holds the sampling and the slopes).

The bounds: a leak of one file descriptor or one thread per pass (20 passes a
minute here) would give a slope of 20/min, a leak of the items a pass stores
(20 feeds x 6 new items a minute, ~10 KB each) about 1 MB/min. Allocator noise
over 90 s stays well under the bounds below (measured: fds and threads exactly
flat, RSS +0.9 MB/min while the database grows by 240 items).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.soak import Soak, bad_lines, sample, slope_per_minute, table

RSS_SLOPE_MB_PER_MIN = 3.0
COUNT_SLOPE_PER_MIN = 3.0


def test_slope_of_a_line_and_of_noise() -> None:
    xs = [float(t) for t in range(0, 120, 5)]
    assert slope_per_minute(xs, [2.0 + t / 60 for t in xs]) == pytest.approx(1.0)
    assert slope_per_minute(xs, [7.0] * len(xs)) == 0.0
    assert slope_per_minute([1.0], [3.0]) == 0.0


def test_sample_reads_this_process() -> None:
    s = sample(os.getpid(), 0.0)
    assert s is not None and s.fds > 2 and s.threads >= 1 and s.rss_mb > 5
    assert sample(2**22 + 1, 0.0) is None  # beyond pid_max: no such process


def test_bad_lines_tells_a_feeds_error_from_the_daemons() -> None:
    lines = [
        "2026-11-26 12:00:00 INFO    aggregator.daemon: pass: 3 feeds, 0 new items",
        "2026-11-26 12:00:00 WARNING aggregator.update: feed http://127.0.0.1:1/f.xml "
        "failing: NetworkError: refused",
        "2026-11-26 12:00:00 ERROR   aggregator.update: http://127.0.0.1:1/f.xml: internal",
        "2026-11-26 12:00:01 ERROR   aggregator.daemon: update pass failed: locked",
        "    Traceback (most recent call last):",
        "aggregator: serving http://127.0.0.1:8080/ (files in public); Ctrl-C stops",
    ]
    assert bad_lines(lines) == lines[3:5]


@pytest.mark.slow
def test_two_minute_soak_keeps_files_threads_and_memory_flat(tmp_path: Path) -> None:
    soak = Soak(tmp_path / "soak", 120.0, feeds=20, items=10, interval_min=0.1,
                add_every=10.0, reload_every=40.0, sample_every=2.0, warmup=30.0)
    res = soak.run()
    print("\n" + table(res))  # the figures, with -s
    assert res["exit_code"] == 0, soak.lines[-20:]
    assert res["bad_log_lines"] == [], res["bad_log_lines"]
    assert res["reloads"] == 2
    assert sum("reloaded configuration" in line for line in soak.lines) == 2
    assert res["passes"] >= 10  # the farm was polled all along
    assert res["article_requests"] > 0 and res["summarised"] > 0
    assert {"rss.xml", "atom.xml", "feed.json", "index.html"} <= set(res["published"])
    assert res["items"] >= 20 * 10 + 20 * 5  # items kept arriving and were stored
    assert len(res["samples"]) >= 40
    t = res["trends"]
    assert t["rss_mb"]["slope_per_min"] < RSS_SLOPE_MB_PER_MIN, t
    assert abs(t["fds"]["slope_per_min"]) < COUNT_SLOPE_PER_MIN, t
    assert abs(t["threads"]["slope_per_min"]) < COUNT_SLOPE_PER_MIN, t
    assert t["fds"]["high"] - t["fds"]["low"] <= 12, t  # a pass's sockets come and go
    assert t["threads"]["high"] - t["threads"]["low"] <= 12, t
