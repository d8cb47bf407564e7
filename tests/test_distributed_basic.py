"""The distributed mode end to end, with the real parts: a redis-server of our own on a
free 127.0.0.1 port (append-only file on), a real ``aggregator coordinator`` process,
one poll worker and one extract worker (``aggregator worker --role ...``), and a farm
of feeds with article pages on loopback addresses. Every item is stored once, every
feed asked once per poll, every item summarised from its article page (fetched once),
the published files written; SIGTERM stops all three cleanly (exit 0)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.farm import Farm
from tests.redis_harness import REDIS_SERVER, redis_server

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (.ci/run installs it)")


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    yield from redis_server(tmp_path)


def _env(**settings: object) -> dict[str, str]:
    drop = ("AGGREGATOR_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM", "LISTEN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = str(ROOT)
    env.update({f"AGGREGATOR_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class Procs:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.tmp_path / f"{name}.err", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "aggregator", *args], env=env,
                                    cwd=self.tmp_path, stdout=subprocess.DEVNULL, stderr=err,
                                    stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.err").read_text(encoding="utf-8", errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {n}:\n{self.log(n)[-4000:]}" for n in self.procs)

    def stop(self, name: str, timeout: float = 30) -> int:
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still running {timeout} s after SIGTERM\n"
                                 + self.logs()) from None

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.kill_all()


def _rows(db: Path, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def _wait(what: str, check: Callable[[], bool], procs: Procs, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for name, proc in procs.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited ({proc.returncode}) while waiting for "
                                     f"{what}\n" + procs.logs())
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n" + procs.logs())
        time.sleep(0.2)


def _requests(farm: Farm, prefix: str) -> dict[str, int]:
    with farm.lock:
        return {p: n for p, n in farm.requests.items() if p.startswith(prefix)}


def test_coordinator_and_workers_store_every_item_once(tmp_path: Path, redis_url: str,
                                                        procs: Procs) -> None:
    feeds_n, items_n = 4, 3
    with Farm(feeds_n, items_n, hosts=2).serve() as farm:
        opml = farm.write_opml(tmp_path / "feeds.opml")
        db, out = tmp_path / "agg.db", tmp_path / "public"
        env = _env(serve="false", min_interval="0.1", visibility_timeout="30",
                   lease_seconds="60", jitter="0")
        common = ["--feeds", str(opml), "--db", str(db), "--output", str(out)]
        procs.start("coordinator", *common, "coordinator", "--broker", redis_url, env=env)
        procs.start("poll", *common, "worker", "--broker", redis_url, "--role", "poll",
                    "--concurrency", "2", env=env)
        procs.start("extract", *common, "worker", "--broker", redis_url, "--role", "extract",
                    "--concurrency", "1", env=env)
        total = feeds_n * items_n

        def summarised() -> bool:
            done = _rows(db, "SELECT count(*) FROM items WHERE summary_hash = content_hash "
                         "AND article_status = 'ok'")
            return bool(done) and done[0][0] == total

        _wait("every item summarised from its article", summarised, procs)
        _wait("the published files", lambda: (out / "rss.xml").exists()
              and all(f"/article/{f}/" in (out / "rss.xml").read_text("utf-8")
                      for f in range(feeds_n)), procs, timeout=60)

        rows = _rows(db, "SELECT feed_id, key, count(*) FROM items GROUP BY feed_id, key")
        assert len(rows) == total and all(r[2] == 1 for r in rows)
        feeds = _requests(farm, "/feed/")
        assert feeds == {f"/feed/{i}.xml": 1 for i in range(feeds_n)}  # one request per feed
        articles = _requests(farm, "/article/")
        assert len(articles) == total and set(articles.values()) == {1}  # each page once
        for method, points in _rows(db, "SELECT summary_method, summary_points FROM items"):
            assert str(method).startswith("default:") and points not in (None, "[]")
        for name in ("index.html", "rss.xml", "atom.xml", "feed.json"):
            assert (out / name).stat().st_size > 0, name
        # the lease of every claim is closed by its result, and a worker held it
        _wait("every lease closed", lambda: _rows(
            db, "SELECT count(*) FROM feeds WHERE lease_until IS NOT NULL")[0][0] == 0, procs,
            timeout=30)
        assert {r[0] for r in _rows(db, "SELECT poll_seq FROM feeds")} == {1}

        # a second poll: one new item per feed, asked for conditionally, only it stored
        farm.add_item()
        with sqlite3.connect(db, timeout=10) as conn:
            conn.execute("UPDATE feeds SET next_fetch = ?",
                         (datetime.now(UTC).isoformat(timespec="seconds"),))
        _wait("the new items", lambda: _rows(db, "SELECT count(*) FROM items")[0][0]
              == total + feeds_n, procs)
        _wait("the new items summarised", lambda: _rows(
            db, "SELECT count(*) FROM items WHERE summary_hash = content_hash "
            "AND article_status = 'ok'")[0][0] == total + feeds_n, procs)
        assert _requests(farm, "/feed/") == {f"/feed/{i}.xml": 2 for i in range(feeds_n)}
        with farm.lock:
            assert all(farm.conditional[f"/feed/{i}.xml"] == 1 for i in range(feeds_n))
        articles = _requests(farm, "/article/")
        assert len(articles) == total + feeds_n and set(articles.values()) == {1}
        rows = _rows(db, "SELECT feed_id, key, count(*) FROM items GROUP BY feed_id, key")
        assert len(rows) == total + feeds_n and all(r[2] == 1 for r in rows)

        # SIGTERM: the coordinator finishes what it holds and exits 0; workers warm-stop
        assert procs.stop("coordinator") == 0, procs.logs()
        assert procs.stop("poll") == 0, procs.logs()
        assert procs.stop("extract") == 0, procs.logs()
        assert "Traceback" not in procs.logs()
        # no task_key here: unsigned, as before signing, and each process says so once
        assert all(procs.log(n).count("tasks are not signed") == 1 for n in procs.procs)
