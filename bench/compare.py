"""The aggregator against lemon24/reader, a minimal script and the floor on
the same farm feeds, each run as a whole process tree (bench/tree.py: CPU and
peak memory of every child process, the parse pool's forkserver included):

    cold         fresh database, every feed fetched and stored
    warm         every feed unchanged: one conditional request each, all 304
    incremental  one new item in every feed

The contestants (bench/drivers.py):

    aggregator   ``update --all --no-articles --no-summaries --no-publish``, with
                 ``workers`` and ``per_host`` as the run's setting says. Its
                 cold run that is set beside reader's also has ``--no-stories``
                 (``aggregator-nostories``): reader clusters no stories, so the
                 like-for-like work is fetch, parse, store and the search
                 index. The cold run with the stories stage, as it runs for a
                 user, takes its turn too and is reported as a row of its own
                 ("cold ingest + stories"), with no reader target. The warm
                 and incremental polls run as a user's do: stories stage on
    reader       lemon24/reader, ``update_feeds(workers=N)`` (no per-host limit)
    minimal      a minimal script: httpx + feedparser on N threads, no storage
    floor        http.client on N threads reading every body, nothing else:
                 process start-up plus asking plus reading the bytes

They take turns inside every repeat (the order flips from one repeat to the
next), so a noisy neighbour on the machine hits them alike. The farm's own
CPU time is read before and after every run: the cost of serving it.

``pipeline`` is the whole of ``aggregator update --all`` from a fresh
database: feeds, article pages, extraction, summaries, publishing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    PYTHON,
    FarmProcess,
    Run,
    aggregator_cmd,
    bench_env,
    check,
    feed_requests,
    fresh_dir,
    remove_db,
    run_process,
    write_opml,
    write_urls,
)

TOOLS = ("aggregator", "reader", "minimal", "floor")
# the cold turn: the with-stories run, then the one set beside reader
COLD_TOOLS = ("aggregator", "aggregator-nostories", "reader", "minimal", "floor")
DRIVER = {"reader": "reader", "minimal": "minimal", "floor": "download"}
PHASES = ("startup", "cold", "warm", "incremental")
# what each contestant imports before its first request ("python": nothing)
STARTUP = {
    "aggregator": "import aggregator.cli, aggregator.update",
    "reader": "import reader, reader._parser.feedparser, requests",
    "minimal": "import httpx, httpcore, feedparser",
    "floor": "import argparse, concurrent.futures, http.client, json",
    "python": "pass",
}


@dataclass(frozen=True)
class Sample:
    tool: str
    phase: str
    run: Run
    entries: int  # aggregator/reader: stored in total; minimal: parsed; floor: 0
    traffic: dict[str, float]  # what the farm saw, and its CPU serving it ("farm_cpu")
    inner: float | None = None  # the driver's own time after imports

    def as_dict(self) -> dict[str, Any]:
        return {"wall": round(self.run.wall, 4), "cpu": round(self.run.cpu, 4),
                "cpu_main": round(self.run.cpu_main, 4),
                "peak_mb": round(self.run.peak_mb, 1),
                "rss_sum_mb": round(self.run.rss_sum_mb, 1),
                "max_rss_mb": round(self.run.max_rss_mb, 1),
                "processes": self.run.processes, "entries": self.entries,
                "inner": None if self.inner is None else round(self.inner, 4),
                **self.traffic}


def count_items(db: Path) -> tuple[int, int]:
    """(items stored, items with an up-to-date summary) in an aggregator database."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT count(*), sum(summary_hash = content_hash) FROM items"
                           ).fetchone()
    conn.close()
    return int(row[0]), int(row[1] or 0)


@dataclass(frozen=True)
class Setting:
    """How a run is set up: the aggregator's ``workers`` and ``per_host``
    (reader, the minimal script and the floor take ``workers`` only: none has a
    per-host limit), and over how many loopback hosts the farm spreads its feeds."""

    name: str
    workers: int
    per_host: int
    hosts: int

    @property
    def label(self) -> str:
        return (f"{self.workers} workers, {self.per_host} per host, "
                f"{self.hosts} host{'s' if self.hosts > 1 else ''}")


def settings(workers: int, hosts: int) -> dict[str, Setting]:
    """The two settings every run is reported with: at reader's concurrency
    (``per_host = workers``, the farm on one host) and with the shipped
    defaults (``per_host`` 2) on a farm spread over many hosts, as real
    subscriptions are."""
    return {"equal": Setting("equal", workers, workers, 1),
            "defaults": Setting("defaults", workers, 2, hosts)}


@dataclass
class Ingest:
    farm: FarmProcess
    work: Path
    workers: int = 8
    per_host: int | None = None  # None: the same as workers
    samples: list[Sample] = field(default_factory=list)
    no_stories: bool = True  # also a cold aggregator run without the stories stage

    def __post_init__(self) -> None:
        fresh_dir(self.work)
        urls = self.farm.urls()
        self.opml = write_opml(self.work / "feeds.opml", urls)
        self.url_file = write_urls(self.work / "urls.txt", urls)
        self.path = {"aggregator": self.work / "aggregator.db",
                     "aggregator-nostories": self.work / "nostories.db",
                     "reader": self.work / "reader.db", "minimal": self.work / "minimal.json",
                     "floor": self.work / "floor.json"}
        per_host = self.workers if self.per_host is None else self.per_host
        self.env = bench_env(workers=self.workers, per_host=per_host)

    def reset(self, tool: str) -> None:
        remove_db(self.path[tool])

    def run(self, tool: str, phase: str) -> Sample:
        before, farm_cpu = self.farm.stats(), self.farm.cpu()
        inner = None
        if tool.startswith("aggregator"):
            run = check(_run_aggregator(self.path[tool], self.opml, self.work / "out",
                                        self.env, stories=tool == "aggregator"),
                        "aggregator update")
            entries = count_items(self.path[tool])[0]
        else:
            run = check(run_process(
                [PYTHON, "-m", "bench.drivers", DRIVER[tool], str(self.url_file),
                 str(self.path[tool]), "--workers", str(self.workers)],
                env=self.env, cwd=self.work), tool)
            out = json.loads(run.stdout.strip().splitlines()[-1])
            entries, inner = int(out["entries"]), float(out["inner"])
        farm_cpu = self.farm.cpu() - farm_cpu
        traffic = {**feed_requests(before, self.farm.stats()), "farm_cpu": round(farm_cpu, 3)}
        sample = Sample(tool, phase, run, entries, traffic, inner)
        self.samples.append(sample)
        return sample

    def startup(self, tool: str) -> Sample:
        """Start-up alone: the interpreter and the imports each contestant needs."""
        code = STARTUP[tool]
        run = check(run_process([PYTHON, "-c", code], env=self.env, cwd=self.work), code)
        sample = Sample(tool, "startup", run, 0, {})
        self.samples.append(sample)
        return sample

    def repeat(self, index: int, progress: Callable[[str], None] = lambda _: None, *,
               phases: Sequence[str] = PHASES, validators: bool = True) -> None:
        order = TOOLS if index % 2 == 0 else TOOLS[::-1]
        n_feeds, n_items = self.farm.feeds, self.farm.items
        stored: dict[str, int] = {}
        if "startup" in phases:
            for tool in (*order, "python"):
                self.startup(tool)
        cold = order
        if self.no_stories:  # in the turn, next to reader: load hits both alike
            cold = COLD_TOOLS if index % 2 == 0 else COLD_TOOLS[::-1]
        for tool in cold:
            self.reset(tool)
            s = self.run(tool, "cold")
            _expect(s, n_feeds * n_items)
            stored[tool] = s.entries
            progress(f"cold {tool} {s.run.wall:.2f} s")
        for tool in order:
            s = self.run(tool, "warm")
            _expect(s, (0 if validators else n_feeds * n_items) if tool == "minimal"
                    else stored[tool])
            progress(f"warm {tool} {s.run.wall:.2f} s")
        if "incremental" not in phases:
            return
        self.farm.add_item()
        for tool in order:
            s = self.run(tool, "incremental")
            _expect(s, n_feeds * n_items if tool == "minimal" else stored[tool] + n_feeds)
            progress(f"incremental {tool} {s.run.wall:.2f} s")

    def of(self, tool: str, phase: str) -> list[Sample]:
        return [s for s in self.samples if s.tool == tool and s.phase == phase]


def _expect(sample: Sample, entries: int) -> None:
    """A run that didn't do the work measures nothing: stop the bench. (The
    floor parses nothing: every feed asked once is its work.)"""
    if sample.tool == "floor":
        if sample.traffic["feeds"] != sample.traffic["requests"] or not sample.traffic["feeds"]:
            raise RuntimeError(f"floor {sample.phase}: {sample.traffic}")
        return
    if sample.entries != entries:
        raise RuntimeError(f"{sample.tool} {sample.phase}: expected {entries} entries, "
                           f"got {sample.entries}\n{sample.run.stderr[-2000:]}")


def _run_aggregator(db: Path, opml: Path, out: Path, env: dict[str, str], *,
                    full: bool = False, stories: bool = True) -> Run:
    args = ["update", "--all"] if full else \
        ["update", "--all", "--no-articles", "--no-summaries", "--no-publish"]
    if not stories:
        args.append("--no-stories")
    return run_process(aggregator_cmd(db, opml, out, *args), env=env, cwd=db.parent)


# --- the full pipeline -----------------------------------------------------------------


@dataclass(frozen=True)
class PipelineRun:
    run: Run
    items: int
    summarised: int
    traffic: dict[str, float]

    @property
    def items_per_s(self) -> float:
        return self.items / self.run.wall if self.run.wall else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"wall": round(self.run.wall, 3), "cpu": round(self.run.cpu, 3),
                "cpu_main": round(self.run.cpu_main, 3), "peak_mb": round(self.run.peak_mb, 1),
                "max_rss_mb": round(self.run.max_rss_mb, 1), "items": self.items,
                "summarised": self.summarised, "items_per_s": round(self.items_per_s, 1),
                **self.traffic}


def pipeline(farm: FarmProcess, work: Path, feeds: int, repeats: int, workers: int = 8,
             progress: Callable[[str], None] = lambda _: None, *,
             per_host: int | None = None) -> list[PipelineRun]:
    """``aggregator update --all`` (articles, summaries, publishing on) from a
    fresh database on the first ``feeds`` farm feeds."""
    fresh_dir(work)
    opml = write_opml(work / "feeds.opml", farm.urls(feeds))
    env = bench_env(workers=workers, per_host=workers if per_host is None else per_host)
    db = work / "pipeline.db"
    runs = []
    for _ in range(repeats):
        remove_db(db)
        out = fresh_dir(work / "out")
        before = farm.stats()
        run = check(_run_aggregator(db, opml, out, env, full=True), "aggregator update (full)")
        items, summarised = count_items(db)
        if not items or summarised != items or not (out / "index.html").exists():
            raise RuntimeError(f"pipeline: {items} items, {summarised} summarised, "
                               f"published: {(out / 'index.html').exists()}\n{run.stderr[-2000:]}")
        runs.append(PipelineRun(run, items, summarised, feed_requests(before, farm.stats())))
        progress(f"pipeline {items} items in {run.wall:.2f} s")
    return runs
