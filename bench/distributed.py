"""Embedded against distributed (issue 12): one farm of feeds with article pages,
worked off from an empty database three ways, until every item is stored and
summarised:

    embedded   ``aggregator run`` (the daemon: polls, article pages, extraction
               and summaries in its own processes), the default mode
    1 worker   ``aggregator coordinator`` + one worker
    2 workers  ``aggregator coordinator`` + two workers

plus, as a reference, ``aggregator update --all`` (one pass doing the same work,
then stories and publishing; it ends when it is done, so it needs no watching).

    python -m bench.distributed                  # 2,000 feeds x 2 items, 100 hosts
    python -m bench.distributed --feeds 50       # smoke run (a minute)
    python -m bench.distributed --modes embedded,2 --items 3

Comparable means the same end for everyone: the daemon and the coordinator are
long-running processes, so each is started on a fresh database (subscriptions
synced from the same feeds.opml) and the bench watches the database (read-only,
every 0.25 s) until all ``feeds x items`` items are stored ("polls done") and
all are summarised ("done"); end to end is start to done, start-up included.
Then every process gets SIGTERM. The daemon against the coordinator is the
like-for-like pair: both schedule from the database, summarise on the same
jobs, publish and cluster beside it. ``update --all`` does the same work in one
pass; its figure says what the daemon's scheduling costs.

A worker here is what one machine runs with the shipped units: one
``aggregator worker --role poll`` (``--poll-concurrency`` pool processes, 4 by
default: polls wait on the network) and one ``aggregator worker --role
extract`` (``--extract-concurrency``, 1 by default: extraction and summaries
are CPU bound, so one worker is one core's worth of it). Two workers are two
such pairs on the same machine. Workers are started first and measured from
the moment Celery says they are ready (their start-up is outside their
figures); the coordinator is measured from its start. Each run gets its own
redis-server on a free 127.0.0.1 port (``--save '' --appendonly yes``, in a
temporary directory) and its CPU is reported beside the others.

CPU is read from /proc for each whole process tree (pool processes included:
bench/tree.py's descendants), at "polls done" and at "done" (the long-running
processes are not run under bench.tree itself: its 20 ms memory sampling would
cost each tree a tenth of a core; ``update --all`` is). Figures:

    items/s              items stored and summarised / end-to-end wall time
    coordinator CPU/res  the writer's CPU seconds per result applied (a result:
                         one poll or one article's extraction + summary); for
                         embedded, the daemon's whole CPU per result
    writer ceiling       1 / (CPU per result): the results per second one core
                         of the coordinator could apply if that were all it did
    polls/s per core     polls / the poll workers' CPU seconds until polls done
    extracts/s per core  summaries / the extract workers' CPU seconds

On a 2-core machine nothing scales past 2 cores: two workers measure the cost of
coordination and the sharing of those cores, not a bigger farm. The machine
may be shared: the load average at the start of each run is in the results.
Results: bench/results/distributed.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    FarmProcess,
    aggregator_cmd,
    bench_env,
    check,
    feed_requests,
    free_port,
    fresh_dir,
    load_average,
    run_process,
    write_opml,
)
from bench.tree import descendants

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.json"
MODES = ("update", "embedded", "1", "2")
CLK = os.sysconf("SC_CLK_TCK")


# --- processes and their CPU ------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """One process's CPU (user + system) and that of the children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / CLK


class Tree:
    """A command and every process below it, running in the background until stop().

    Run directly, not under bench.tree: its 20 ms memory sampling of every process
    costs a tenth of a core per tree over a run of minutes, and a distributed run has
    up to five trees. CPU comes from /proc instead (bench.tree's ``descendants``): each
    live process's own time plus that of the children it has reaped."""

    def __init__(self, name: str, cmd: Sequence[str], env: dict[str, str], work: Path) -> None:
        self.name = name
        self.err_path = work / f"{name}.stderr"
        self._err = open(self.err_path, "w")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(list(cmd), env=env, cwd=work, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._err,
                                     start_new_session=True)
        self.baseline = 0.0
        self.last_cpu = 0.0

    def cpu(self) -> float:
        """The tree's CPU so far, minus the baseline."""
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        total = sum(proc_cpu(p) for p in pids)
        if total:
            self.last_cpu = total
        return self.last_cpu - self.baseline

    def processes(self) -> int:
        return 1 + len(descendants(self.proc.pid))

    def stderr(self) -> str:
        self._err.flush()
        return self.err_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """SIGTERM to the command (a warm shutdown for Celery), then how it ended: its
        exit status, the tree's CPU just before its end, the seconds the stop took."""
        t0 = time.perf_counter()
        self.cpu()
        self.terminate()
        try:
            while self.proc.poll() is None and time.perf_counter() - t0 < timeout:
                self.cpu()  # the last reading before the processes go
                time.sleep(0.1)
            self.proc.wait(0)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._err.close()
        return {"returncode": self.proc.returncode, "cpu_s": round(self.last_cpu, 3),
                "stop_s": round(time.perf_counter() - t0, 3)}


class Redis:
    """A redis-server of our own on a free 127.0.0.1 port, in a temporary directory."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found (Debian package redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", str(self.dir), "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not self.ping():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- watching the database ---------------------------------------------------------------


def counts(db: Path) -> tuple[int, int]:
    """(items stored, items with an up-to-date summary); (0, 0) before the schema exists."""
    if not db.exists():
        return 0, 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute(
                "SELECT count(*), sum(summary_hash = content_hash) FROM items").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0, 0
    return int(row[0]), int(row[1] or 0)


@dataclass
class Watch:
    """When the work was done, and the CPU of each process tree at those moments."""

    expected: int
    start: float
    polls_done: float | None = None
    done: float | None = None
    cpu_at_polls: dict[str, float] = field(default_factory=dict)
    cpu_at_done: dict[str, float] = field(default_factory=dict)
    items: int = 0
    summarised: int = 0


def watch(db: Path, expected: int, trees: Sequence[Tree], start: float,
          timeout: float, say: Any) -> Watch:
    w = Watch(expected, start)
    deadline = start + timeout
    last_say = start
    while time.perf_counter() < deadline:
        w.items, w.summarised = counts(db)
        now = time.perf_counter()
        if w.polls_done is None and w.items >= expected:
            w.polls_done = now
            w.cpu_at_polls = {t.name: t.cpu() for t in trees}
        if w.items >= expected and w.summarised >= w.items:
            w.done = now
            w.cpu_at_done = {t.name: t.cpu() for t in trees}
            return w
        dead = [t.name for t in trees if not t.alive()]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited early:\n" +
                               "\n".join(t.stderr()[-2000:] for t in trees if not t.alive()))
        if now - last_say > 15:
            say(f"  {now - start:5.0f} s: {w.items}/{expected} stored, "
                f"{w.summarised} summarised")
            last_say = now
        time.sleep(0.25)
    raise RuntimeError(f"not done after {timeout:.0f} s: {w.items}/{expected} items stored, "
                       f"{w.summarised} summarised")


# --- one mode ------------------------------------------------------------------------------


def _env(args: argparse.Namespace) -> dict[str, str]:
    """The same settings for every mode: the defaults but for the HTTP server, and one
    task key for the coordinator and its workers (signed, as a deployment should be)."""
    return bench_env(workers=args.fetchers, per_host=args.per_host, serve=False,
                     task_key=secrets.token_hex(32))


def _rates(polls: int, summaries: int, wall: float, cpu: dict[str, float],
           writer: str) -> dict[str, Any]:
    results = polls + summaries
    wcpu = cpu.get(writer, 0.0)
    out: dict[str, Any] = {
        "results": results,
        "writer_cpu_s": round(wcpu, 3),
        "writer_cpu_ms_per_result": round(1000 * wcpu / results, 3) if results else None,
        "writer_ceiling_results_per_s": round(results / wcpu, 1) if wcpu else None,
        "cpu_total_s": round(sum(cpu.values()), 3),
    }
    return out


def run_update(args: argparse.Namespace, farm: FarmProcess, work: Path,
               say: Any) -> dict[str, Any]:
    opml, db, out = _files(farm, args, work)
    before, farm_cpu = farm.stats(), farm.cpu()
    load = load_average()
    run = check(run_process(aggregator_cmd(db, opml, out, "update", "--all"), env=_env(args),
                            cwd=work, timeout=args.timeout), "aggregator update --all")
    items, summarised = counts(db)
    traffic = feed_requests(before, farm.stats())
    res = {"mode": "update", "label": "update --all (one pass)", "wall_s": round(run.wall, 3),
           "items": items, "summarised": summarised,
           "items_per_s": round(summarised / run.wall, 1) if run.wall else None,
           "polls": traffic["requests"], "article_requests": traffic["article_requests"],
           "cpu": {"update": round(run.cpu, 3)}, "peak_mb": round(run.peak_mb, 1),
           "farm_cpu_s": round(farm.cpu() - farm_cpu, 3), "load_avg": load}
    res.update(_rates(traffic["requests"], summarised, run.wall, {"update": run.cpu}, "update"))
    return res


def _files(farm: FarmProcess, args: argparse.Namespace, work: Path) -> tuple[Path, Path, Path]:
    fresh_dir(work)
    opml = write_opml(work / "feeds.opml", farm.urls(args.feeds))
    return opml, work / "aggregator.db", fresh_dir(work / "out")


def run_mode(args: argparse.Namespace, mode: str, farm: FarmProcess, work: Path,
             say: Any) -> dict[str, Any]:
    if mode == "update":
        return run_update(args, farm, work, say)
    opml, db, out = _files(farm, args, work)
    env = _env(args)
    expected = args.feeds * args.items
    trees: list[Tree] = []
    redis: Redis | None = None
    res: dict[str, Any] = {"mode": mode, "load_avg": load_average()}
    try:
        if mode == "embedded":
            res["label"] = "embedded (aggregator run)"
            writer = "daemon"
        else:
            n = int(mode)
            res["label"] = f"coordinator + {n} worker{'s' if n > 1 else ''}"
            res["worker"] = (f"1 poll worker (--concurrency {args.poll_concurrency}) + "
                             f"1 extract worker (--concurrency {args.extract_concurrency})")
            writer = "coordinator"
            redis = Redis()
            for i in range(n):
                for role, conc in (("poll", args.poll_concurrency),
                                   ("extract", args.extract_concurrency)):
                    cmd = aggregator_cmd(db, opml, out, "worker", "--broker", redis.url,
                                         "--role", role, "--concurrency", str(conc))
                    trees.append(Tree(f"{role}{i + 1}", cmd, env, work))
            for t in trees:
                if not t.wait_for("ready", 120):
                    raise RuntimeError(f"worker {t.name} not ready:\n{t.stderr()[-3000:]}")
                t.baseline = t.cpu()  # workers are measured from ready on
        before, farm_cpu = farm.stats(), farm.cpu()
        redis_cpu = redis.cpu() if redis else 0.0
        start = time.perf_counter()
        if mode == "embedded":
            cmd = aggregator_cmd(db, opml, out, "run", "--no-serve")
        else:
            assert redis is not None
            cmd = aggregator_cmd(db, opml, out, "coordinator", "--broker", redis.url)
        trees.insert(0, Tree(writer, cmd, env, work))
        w = watch(db, expected, trees, start, args.timeout, say)
        traffic = feed_requests(before, farm.stats())
        assert w.done is not None and w.polls_done is not None
        wall = w.done - start
        cpu = w.cpu_at_done
        res.update({
            "wall_s": round(wall, 3), "polls_done_s": round(w.polls_done - start, 3),
            "items": w.items, "summarised": w.summarised,
            "items_per_s": round(w.summarised / wall, 1),
            "polls": traffic["requests"], "article_requests": traffic["article_requests"],
            "cpu": {k: round(v, 3) for k, v in cpu.items()},
            "cpu_at_polls_done": {k: round(v, 3) for k, v in w.cpu_at_polls.items()},
            "farm_cpu_s": round(farm.cpu() - farm_cpu, 3),
        })
        if redis is not None:
            res["redis_cpu_s"] = round(redis.cpu() - redis_cpu, 3)
            cpu = {**cpu, "redis": redis.cpu() - redis_cpu}
            res["cpu"]["redis"] = res["redis_cpu_s"]
        res.update(_rates(traffic["requests"], w.summarised, wall, cpu, writer))
        if mode != "embedded":
            poll_cpu = sum(v for k, v in w.cpu_at_polls.items() if k.startswith("poll"))
            extract_cpu = sum(v for k, v in cpu.items() if k.startswith("extract"))
            res["poll_workers_cpu_s"] = round(poll_cpu, 3)
            res["extract_workers_cpu_s"] = round(extract_cpu, 3)
            res["polls_per_poll_core_s"] = round(traffic["requests"] / poll_cpu, 1) \
                if poll_cpu else None
            res["summaries_per_extract_core_s"] = round(w.summarised / extract_cpu, 2) \
                if extract_cpu else None
    finally:
        res["trees"] = {}
        for t in trees:  # the writer first: it stops dispatching before the workers go
            res["trees"][t.name] = t.stop()
        if redis is not None:
            redis.stop()
    say(f"  {res['label']}: {res.get('items_per_s')} items/s, "
        f"{res.get('writer_cpu_ms_per_result')} ms writer CPU per result")
    return res


# --- the table ------------------------------------------------------------------------------


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def table(runs: Sequence[dict[str, Any]]) -> str:
    cols = [("mode", "label", 26), ("end to end s", "wall_s", 12), ("items/s", "items_per_s", 8),
            ("writer ms/res", "writer_cpu_ms_per_result", 13),
            ("ceiling res/s", "writer_ceiling_results_per_s", 13),
            ("poll CPU s", "poll_workers_cpu_s", 10), ("polls/core-s", "polls_per_poll_core_s", 12),
            ("extract CPU s", "extract_workers_cpu_s", 13),
            ("sum/core-s", "summaries_per_extract_core_s", 10),
            ("redis CPU s", "redis_cpu_s", 11), ("all CPU s", "cpu_total_s", 9)]
    lines = ["  ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, _, w) in enumerate(cols))]
    for r in runs:
        cells = []
        for i, (_, key, w) in enumerate(cols):
            v = _f(r.get(key), 2 if key == "summaries_per_extract_core_s" else
                   3 if key == "writer_cpu_ms_per_result" else 1)
            cells.append(f"{v:<{w}}" if i == 0 else f"{v:>{w}}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.distributed",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feeds", type=int, default=2000)
    p.add_argument("--items", type=int, default=2, help="items (article pages) per feed")
    p.add_argument("--hosts", type=int, default=100, help="loopback hosts of the farm")
    p.add_argument("--modes", default=",".join(MODES),
                   help="comma-separated: update, embedded, 1, 2 (workers)")
    p.add_argument("--poll-concurrency", type=int, default=4)
    p.add_argument("--extract-concurrency", type=int, default=1)
    p.add_argument("--fetchers", type=int, default=8, help="the `workers` setting")
    p.add_argument("--per-host", type=int, default=2, help="the `per_host` setting")
    p.add_argument("--timeout", type=float, default=1800.0, help="per mode, seconds")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: tmp)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM to the bench: stop every process it started (the finally clauses), then exit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        build_parser().error(f"unknown mode(s): {', '.join(unknown)}; modes: {', '.join(MODES)}")

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        work = args.work or Path(tmp)
        say(f"farm: {args.feeds} feeds x {args.items} items on {args.hosts} hosts")
        with FarmProcess(args.feeds, args.items, hosts=args.hosts) as farm:
            for mode in modes:
                say(f"{mode}:")
                runs.append(run_mode(args, mode, farm, work / f"mode-{mode}", say))
    data = {
        "feeds": args.feeds, "items_per_feed": args.items, "hosts": args.hosts,
        "settings": {"workers": args.fetchers, "per_host": args.per_host,
                     "poll_concurrency": args.poll_concurrency,
                     "extract_concurrency": args.extract_concurrency},
        "cpus": os.cpu_count(), "python": sys.version.split()[0],
        "note": ("machine shared with other work: figures are noisy; compare the modes of "
                 "one run (same farm, same minutes) rather than runs"),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
