"""The daemon left running: ``aggregator run`` as a child process for a while
against the local feed farm (bench/farm.py in its own process) whose feeds
keep advancing, with article pages, summaries, publishing, serving, and a
reload (SIGHUP) now and then. Its open files, threads and resident memory are
sampled from /proc every few seconds; after a warm-up, a least-squares slope
of each says whether something grows (a leak) or stays flat.

    python -m bench.soak --minutes 30          # writes bench/results/soak.json

The sampling, the slopes and the reading of the daemon's log are shared with
tests/test_soak.py, which runs the same thing for two minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import (
    PYTHON,
    FarmProcess,
    aggregator_cmd,
    bench_env,
    free_port,
    fresh_dir,
    load_average,
    write_opml,
)

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"


# --- what a process holds -------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the start of the run
    fds: int
    threads: int
    rss_mb: float


def sample(pid: int, t: float) -> Sample | None:
    """Open files, threads and RSS of ``pid`` from /proc; None once it is gone."""
    try:
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    threads = int(fields["Threads"].strip())
    rss_kb = int(fields["VmRSS"].split()[0])
    return Sample(t, fds, threads, rss_kb / 1024)


def slope_per_minute(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (seconds), per minute."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return 60.0 * cov / var


@dataclass(frozen=True)
class Trend:
    """One quantity after the warm-up: its range and its slope per minute."""

    first: float
    last: float
    low: float
    high: float
    slope_per_min: float


def trends(samples: Sequence[Sample], warmup: float) -> dict[str, Trend]:
    kept = [s for s in samples if s.t >= warmup]
    out: dict[str, Trend] = {}
    for name in ("fds", "threads", "rss_mb"):
        ys = [float(getattr(s, name)) for s in kept]
        if not ys:
            continue
        out[name] = Trend(ys[0], ys[-1], min(ys), max(ys),
                          round(slope_per_minute([s.t for s in kept], ys), 4))
    return out


# --- what the daemon said -------------------------------------------------------------

_LEVEL = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+)\s+(?P<logger>[\w.]+): (?P<message>.*)$")
_FEED_URL = re.compile(r"^(?:feed )?https?://\S+[: ]")


def bad_lines(lines: Sequence[str]) -> list[str]:
    """ERROR/CRITICAL lines and tracebacks that aren't one feed's own error (a
    feed's own line starts with its URL), plus anything not in the log format."""
    bad = []
    for line in lines:
        if not line.strip() or line.startswith("aggregator: serving "):
            continue
        m = _LEVEL.match(line)
        if m is None:
            bad.append(line)  # a traceback line, a stray print
        elif m["level"] in ("ERROR", "CRITICAL") and not _FEED_URL.match(m["message"]):
            bad.append(line)
        elif "Traceback" in m["message"]:
            bad.append(line)
    return bad


# --- the run ----------------------------------------------------------------------------


@dataclass
class Soak:
    """``aggregator run`` on an advancing farm; ``run()`` returns the figures."""

    work: Path
    seconds: float
    feeds: int = 40
    items: int = 20
    interval_min: float = 0.25  # minutes between polls of a feed
    add_every: float = 20.0  # s between new items (one per feed each time)
    reload_every: float = 300.0  # s between SIGHUPs; 0: never
    sample_every: float = 5.0
    warmup: float = 120.0  # s before the trend is measured
    progress: Any = lambda _: None
    lines: list[str] = field(default_factory=list)

    def run(self) -> dict[str, Any]:
        fresh_dir(self.work)
        with FarmProcess(self.feeds, self.items, window=self.items) as farm:
            opml = write_opml(self.work / "feeds.opml", farm.urls())
            db, out = self.work / "soak.db", self.work / "public"
            cmd = aggregator_cmd(db, opml, out, "run")
            env = bench_env(interval=self.interval_min, min_interval=self.interval_min / 2,
                            port=free_port(), workers=4, per_host=4)
            err = tempfile.TemporaryFile("w+")
            proc = subprocess.Popen(cmd, env=env, cwd=self.work, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, text=True)
            try:
                samples, reloads, adds = self._drive(proc, farm)
            finally:
                code = self._stop(proc)
                err.seek(0)
                self.lines = err.read().splitlines()
                err.close()
            stats = farm.stats()
        requests = stats.get("requests", {})
        feed_requests = sum(n for p, n in requests.items() if p.startswith("/feed/"))
        article_requests = sum(n for p, n in requests.items() if p.startswith("/article/"))
        items, summarised = _count(db)
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(samples[-1].t if samples else 0.0, 1),
            "feeds": self.feeds, "items_per_feed": self.items,
            "interval_min": self.interval_min, "add_every_s": self.add_every,
            "reload_every_s": self.reload_every, "warmup_s": self.warmup,
            "reloads": reloads, "items_added_per_feed": adds,
            "feed_requests": feed_requests, "article_requests": article_requests,
            "items": items, "summarised": summarised,
            "published": sorted(p.name for p in out.glob("*") if p.is_file()),
            "passes": sum("pass: " in line for line in self.lines),
            "trends": {k: asdict(v) for k, v in trends(samples, self.warmup).items()},
            "samples": [asdict(s) for s in samples],
            "bad_log_lines": bad_lines(self.lines)[:50],
            "exit_code": code,
            "load_average": load_average(),
            "python": PYTHON, "platform": platform.platform(),
        }

    def _drive(self, proc: subprocess.Popen[str],
               farm: FarmProcess) -> tuple[list[Sample], int, int]:
        start = time.monotonic()
        next_sample = next_add = 0.0
        next_reload = self.reload_every or float("inf")
        samples: list[Sample] = []
        reloads = adds = 0
        while (now := time.monotonic() - start) < self.seconds:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}")
            if now >= next_sample:
                s = sample(proc.pid, round(now, 2))
                if s is not None:
                    samples.append(s)
                    if len(samples) % 12 == 0:
                        self.progress(f"{now / 60:5.1f} min: {s.fds} fds, {s.threads} threads, "
                                      f"{s.rss_mb:.1f} MB")
                next_sample += self.sample_every
            if now >= next_add:
                # from another thread: the farm re-renders every feed, which takes a while
                threading.Thread(target=farm.add_item, daemon=True).start()
                adds += 1
                next_add += self.add_every
            if now >= next_reload:
                proc.send_signal(signal.SIGHUP)
                reloads += 1
                next_reload += self.reload_every
            time.sleep(0.2)
        return samples, reloads, adds

    @staticmethod
    def _stop(proc: subprocess.Popen[str]) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode


def _count(db: Path) -> tuple[int, int]:
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0, 0
    try:
        total, done = conn.execute(
            "SELECT count(*), sum(summary_hash IS NOT NULL) FROM items").fetchone()
    finally:
        conn.close()
    return int(total or 0), int(done or 0)


def table(res: dict[str, Any]) -> str:
    rows = [f"{'figure':<10} {'after warm-up':>16} {'range':>16} {'slope /min':>12}"]
    units = {"fds": "", "threads": "", "rss_mb": " MB"}
    for name, t in res["trends"].items():
        rows.append(f"{name:<10} {t['first']:>7g} → {t['last']:<7g} "
                    f"{t['low']:>7g}-{t['high']:<7g}{units[name]:<3} {t['slope_per_min']:>+10.3f}")
    rows.append(f"{res['seconds'] / 60:.1f} min, {res['passes']} passes, {res['reloads']} reloads, "
                f"{res['items']} items ({res['summarised']} summarised), "
                f"{res['feed_requests']} feed and {res['article_requests']} article requests, "
                f"{len(res['bad_log_lines'])} bad log lines, exit {res['exit_code']}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the daemon for a while and look for leaks.")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--feeds", type=int, default=40)
    p.add_argument("--items", type=int, default=20, help="items per feed (a sliding window)")
    p.add_argument("--interval", type=float, default=0.25, help="minutes between polls")
    p.add_argument("--add-every", type=float, default=20.0, help="s between new items")
    p.add_argument("--reload-every", type=float, default=300.0, help="s between SIGHUPs")
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=None,
                   help="s before trends are measured (default: a tenth of the run, 60 s+)")
    p.add_argument("--work", type=Path, default=None, help="scratch directory")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    seconds = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else max(60.0, seconds / 10)
    with tempfile.TemporaryDirectory(prefix="aggregator-soak-") as tmp:
        soak = Soak(args.work or Path(tmp), seconds, feeds=args.feeds, items=args.items,
                    interval_min=args.interval, add_every=args.add_every,
                    reload_every=args.reload_every, sample_every=args.sample_every,
                    warmup=warmup, progress=lambda m: print(m, file=sys.stderr, flush=True))
        res = soak.run()
    print(table(res))
    for line in res["bad_log_lines"][:10]:
        print("  bad log line:", line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")
    return 0 if res["exit_code"] == 0 and not res["bad_log_lines"] else 1


if __name__ == "__main__":
    sys.exit(main())
