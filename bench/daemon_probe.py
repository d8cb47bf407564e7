"""The daemon under a big subscription list: ``aggregator run`` as a child
process against a farm of (by default) 1000 feeds, its memory sampled with
psutil (and its exact peak, VmHWM, read back from wait4 at exit).

Two runs on one database:

    busy   the full daemon from a fresh database: the first pass over every
           feed, with the summary job (article pages, extraction, summaries,
           publishing) working off the backlog beside it, for ``busy_window``
           seconds after the first pass ends; peak RSS is the figure
    idle   the same database, nothing due and no backlog (summaries off so the
           busy run's leftover backlog doesn't count as idle work): CPU time
           over ``idle_window`` seconds of waiting between polls, which covers
           the scheduler's ticks (one look at the due feeds every 30 s)
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.compare import count_items
from bench.harness import (
    PYTHON,
    FarmProcess,
    aggregator_cmd,
    bench_env,
    feed_requests,
    free_port,
    fresh_dir,
    write_opml,
)


@dataclass
class _Daemon:
    """A running ``aggregator run`` whose log lines are watched."""

    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.ps = psutil.Process(self.proc.pid)
        self.peak = 0.0
        self.peak_tree = 0.0  # with its child processes (a parse pool, say)
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()

    def rss_mb(self) -> float:
        try:
            rss = self.ps.memory_info().rss / 2**20
            children = self.ps.children(recursive=True)
        except psutil.Error:
            return 0.0
        tree = rss
        for child in children:
            try:
                tree += child.memory_info().rss / 2**20
            except psutil.Error:
                pass
        self.peak = max(self.peak, rss)
        self.peak_tree = max(self.peak_tree, tree)
        return rss

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def wait_for(self, text: str, timeout: float, sample: float = 0.1) -> float | None:
        """Seconds until a log line containing ``text``, sampling RSS meanwhile."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            self.rss_mb()
            with self._seen:
                if any(text in line for line in self.lines):
                    return time.monotonic() - start
                if self.proc.poll() is not None:
                    raise RuntimeError("the daemon exited:\n" + "\n".join(self.lines[-30:]))
                self._seen.wait(sample)
        return None

    def watch(self, seconds: float, sample: float = 0.1) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.proc.poll() is None:
            self.rss_mb()
            time.sleep(sample)

    def stop(self, timeout: float = 120.0) -> tuple[int, float]:
        """(exit code, peak RSS in MB as the kernel counted it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                pid, status, usage = os.wait4(self.proc.pid, 0)
                break
            self.rss_mb()
            time.sleep(0.05)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return self.proc.returncode, usage.ru_maxrss / 1024


def probe(farm: FarmProcess, work: Path, *, busy_window: float = 60.0,
          idle_window: float = 65.0, workers: int = 8, timeout: float = 600.0,
          progress: Any = lambda _: None) -> dict[str, Any]:
    fresh_dir(work)
    opml = write_opml(work / "feeds.opml", farm.urls())
    db, out = work / "daemon.db", work / "public"
    cmd = aggregator_cmd(db, opml, out, "run")
    env = bench_env(workers=workers, per_host=workers, port=free_port())

    before = farm.stats()
    busy = _Daemon(cmd, env, work)
    first = busy.wait_for("pass: ", timeout)
    if first is None:
        busy.stop()
        raise RuntimeError("the daemon's first pass did not end in time:\n"
                           + "\n".join(busy.lines[-30:]))
    rss_after_pass = busy.rss_mb()
    progress(f"daemon: first pass over {farm.feeds} feeds in {first:.1f} s, "
             f"RSS {rss_after_pass:.0f} MB")
    busy.watch(busy_window)
    code, hwm = busy.stop()
    traffic = feed_requests(before, farm.stats())
    items, summarised = count_items(db)
    progress(f"daemon: peak RSS {max(hwm, busy.peak):.0f} MB, {summarised}/{items} summarised")

    env_idle = bench_env(workers=workers, per_host=workers, port=free_port(),
                         summaries=False, fetch_articles=False)
    before = farm.stats()
    idle = _Daemon(cmd, env_idle, work)
    if idle.wait_for("started:", 60) is None:
        idle.stop()
        raise RuntimeError("the idle daemon did not start:\n" + "\n".join(idle.lines[-30:]))
    idle.watch(3.0)  # the first poll job runs at start: nothing is due
    cpu0, t0 = idle.cpu(), time.monotonic()
    idle.watch(idle_window, sample=1.0)
    cpu1, t1 = idle.cpu(), time.monotonic()
    idle_rss = idle.rss_mb()
    idle_code, idle_hwm = idle.stop()
    idle_traffic = feed_requests(before, farm.stats())
    return {
        "feeds": farm.feeds, "items_per_feed": farm.items,
        "first_pass_s": round(first, 2), "rss_after_first_pass_mb": round(rss_after_pass, 1),
        "busy_window_s": busy_window, "peak_rss_mb": round(max(hwm, busy.peak), 1),
        "peak_rss_with_children_mb": round(max(busy.peak_tree, hwm), 1),
        "items": items, "summarised": summarised, "exit_code": code,
        "first_pass_requests": traffic,
        "idle_window_s": round(t1 - t0, 1), "idle_cpu_s": round(cpu1 - cpu0, 3),
        "idle_cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
        "idle_rss_mb": round(idle_rss, 1), "idle_peak_rss_mb": round(max(idle_hwm, idle.peak), 1),
        "idle_requests": idle_traffic["requests"], "idle_exit_code": idle_code,
        "python": PYTHON,
    }
