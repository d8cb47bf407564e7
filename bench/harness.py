"""What every measurement of ``python -m bench`` stands on: the feed farm in a
process of its own (so serving never takes the measured process's GIL or
core time), whole-process runs timed with their own CPU and peak memory
(``os.wait4``), and the environment the aggregator runs in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

PROJECT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# urllib would honour *_proxy variables; the farm is on 127.0.0.1, talk to it directly
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Run:
    """One whole process: wall time, CPU time (user + system), peak RSS."""

    wall: float
    cpu: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_process(cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
                cwd: Path | None = None, timeout: float = 900.0) -> Run:
    """Run ``cmd`` to its end; its own rusage comes from wait4, so other
    children (the farm) never count."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=dict(env or os.environ),
                                cwd=cwd, stdin=subprocess.DEVNULL)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                   proc.returncode, out.read(), err.read())


def check(run: Run, what: str) -> Run:
    if run.returncode != 0:
        raise RuntimeError(f"{what} exited with {run.returncode}:\n{run.stderr[-3000:]}")
    return run


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - not on Linux
        return (0.0, 0.0, 0.0)


# --- the farm, in its own process ------------------------------------------------------


class FarmProcess:
    """``python -m bench.farm`` as a child process, driven over HTTP."""

    def __init__(self, feeds: int, items: int, *, latency: float = 0.0,
                 validators: bool = True, window: int | None = None) -> None:
        self.feeds, self.items = feeds, items
        cmd = [PYTHON, "-m", "bench.farm", "--feeds", str(feeds), "--items", str(items),
               "--port", "0", "--latency", str(latency)]
        if not validators:
            cmd.append("--no-validators")
        if window is not None:
            cmd += ["--window", str(window)]
        self._err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, text=True,
                                     cwd=PROJECT, env=bench_env(), stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+)/farm\.opml", line)
        if not m:
            self.stop()
            self._err.seek(0)
            raise RuntimeError(f"the farm did not start: {line!r} {self._err.read()[-2000:]}")
        self.base = m.group(1)

    def urls(self, limit: int | None = None) -> list[str]:
        n = self.feeds if limit is None else min(limit, self.feeds)
        return [f"{self.base}/feed/{i}.xml" for i in range(n)]

    def stats(self) -> dict[str, dict[str, int]]:
        with _OPENER.open(f"{self.base}/_control/stats", timeout=30) as resp:
            data: dict[str, dict[str, int]] = json.load(resp)
        return data

    def add_item(self) -> None:
        req = urllib.request.Request(f"{self.base}/_control/add", data=b"", method="POST")
        with _OPENER.open(req, timeout=60) as resp:
            resp.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._err.close()

    def __enter__(self) -> FarmProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def feed_requests(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, float]:
    """What one client sent to the feeds between two farm snapshots."""
    def delta(kind: str) -> dict[str, int]:
        a, b = after.get(kind, {}), before.get(kind, {})
        return {p: n - b.get(p, 0) for p, n in a.items()
                if p.startswith("/feed/") and n - b.get(p, 0) > 0}

    req, cond = delta("requests"), delta("conditional")
    arts = sum(n - before.get("requests", {}).get(p, 0)
               for p, n in after.get("requests", {}).items() if p.startswith("/article/"))
    return {"requests": sum(req.values()), "feeds": len(req),
            "max_per_feed": max(req.values(), default=0), "conditional": sum(cond.values()),
            "article_requests": arts}


# --- the aggregator's surroundings ---------------------------------------------------


def bench_env(**settings: object) -> dict[str, str]:
    """The environment for every child: no stray AGGREGATOR_* settings, the
    project importable, and the given settings as AGGREGATOR_* variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AGGREGATOR_") and not k.lower().endswith("_proxy")}
    # a PYTHONPATH given to the bench comes first (e.g. a patched copy to compare)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(PROJECT)) if p)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    for name, value in settings.items():
        env["AGGREGATOR_" + name.upper()] = str(value).lower() if isinstance(value, bool) \
            else str(value)
    return env


def write_opml(path: Path, urls: Sequence[str]) -> Path:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<opml version="2.0"><head><title>bench</title></head><body>']
    lines += [f"<outline text={quoteattr(f'Farm {i}')} xmlUrl={quoteattr(u)}/>"
              for i, u in enumerate(urls)]
    lines.append("</body></opml>")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_urls(path: Path, urls: Sequence[str]) -> Path:
    path.write_text("\n".join(urls) + "\n", encoding="utf-8")
    return path


def aggregator_cmd(db: Path, opml: Path, output: Path, *args: str) -> list[str]:
    return [PYTHON, "-m", "aggregator", "--db", str(db), "--feeds", str(opml),
            "--output", str(output), *args]


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
