"""What every measurement of ``python -m bench`` stands on: the feed farm in a
process of its own (so serving never takes the measured process's GIL or
core time, and its own CPU is read from /proc as the cost of serving),
whole-process runs timed with the CPU and peak memory of their whole process
tree, children included (bench/tree.py), and the environment the aggregator
runs in.
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
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

PROJECT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TREE = PROJECT / "bench" / "tree.py"

# urllib would honour *_proxy variables; the farm is on 127.0.0.1, talk to it directly
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Run:
    """One whole process tree (the command and every process below it):
    wall time until the command exits, CPU time (user + system) of the whole
    tree, peak memory of the whole tree (sum of PSS, sampled), the largest
    single process's peak RSS, and the command's own CPU (what wait4 alone
    reports, leaving out a forkserver's pool)."""

    wall: float
    cpu: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    cpu_main: float = 0.0
    peak_mb: float = 0.0  # sum of PSS over the tree, sampled every 20 ms
    rss_sum_mb: float = 0.0
    processes: int = 1
    commands: tuple[str, ...] = ()  # the processes below the command, by their arguments


def run_process(cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
                cwd: Path | None = None, timeout: float = 900.0) -> Run:
    """Run ``cmd`` to its end under ``bench.tree``, which waits for every
    process the command leaves behind and measures them all; other children of
    the bench (the farm) never count. The wrapper's own start-up is outside
    the figures (it times the command from its own fork)."""
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        report = Path(tmp) / "tree.json"
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        # run as a script (stdlib only): it needs nothing from the command's PYTHONPATH
        wrapped = [PYTHON, str(TREE), str(report), "--", *cmd]
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(wrapped, stdout=out, stderr=err,
                                    env=dict(env or os.environ), cwd=cwd,
                                    stdin=subprocess.DEVNULL)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()  # the wrapper; its tree is reparented and ends with its work
                proc.wait()
        stdout, stderr = out_path.read_text(), err_path.read_text()
        if not report.exists():
            return Run(0.0, 0.0, 0.0, proc.returncode or -9, stdout,
                       stderr + f"\n(bench.tree wrote no report: exit {proc.returncode})")
        r = json.loads(report.read_text())
    peak = r["peak_pss_mb"] or r["max_rss_mb"]  # a process too short to sample: its RSS
    return Run(r["wall"], r["cpu"], r["max_rss_mb"], r["returncode"], stdout, stderr,
               cpu_main=r["cpu_main"], peak_mb=peak, rss_sum_mb=r["peak_rss_sum_mb"],
               processes=r["processes"], commands=tuple(r.get("commands", ())))


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
                 validators: bool = True, window: int | None = None, hosts: int = 1) -> None:
        from bench.farm import MAX_HOSTS

        self.feeds, self.items = feeds, items
        self.hosts = max(1, min(hosts, MAX_HOSTS))
        cmd = [PYTHON, "-m", "bench.farm", "--feeds", str(feeds), "--items", str(items),
               "--port", "0", "--latency", str(latency), "--hosts", str(self.hosts)]
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
        self.port = int(self.base.rsplit(":", 1)[1])

    def urls(self, limit: int | None = None) -> list[str]:
        from bench.farm import feed_url

        n = self.feeds if limit is None else min(limit, self.feeds)
        return [feed_url(self.port, i, self.hosts) for i in range(n)]

    def cpu(self) -> float:
        """The farm's CPU time so far (user + system, all its threads): read
        before and after a run, the cost of serving that run."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # pragma: no cover - not Linux
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
