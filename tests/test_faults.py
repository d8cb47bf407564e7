"""Faults a long-running aggregator meets, made for real: another process
holding the SQLite write lock, an output directory that can't be written or is
full, a publisher killed with SIGKILL while a reader reads, a database file
that is garbage or cut short, and the wall clock jumping an hour either way.

Everything runs against real things: SQLite files, processes, directories
(immutable through ``chattr +i``, because root ignores file modes), a tmpfs
mount that fills up, the feed farm on 127.0.0.1 counting requests per feed.
Where a tool or a mount isn't available here the test skips with the reason;
under ``CI=true`` it fails instead, so the fault can't go untested unnoticed.

The rules these tests hold the code to:
- a write waits ``store.BUSY_TIMEOUT`` (10 s) for another writer, then fails
  as one StorageError line; the daemon retries at its next pass and nothing
  is lost (a feed counts as fetched only once its transaction committed);
- a failed publish is one PublishError line and leaves every file as it was;
- a database file that isn't whole is refused before SQLite writes a byte;
- after the clock jumps forward every due feed is polled once; after it jumps
  back no feed waits longer than its own delay (not the delay plus the jump).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator import decide
from aggregator import store as store_module
from aggregator.config import Settings
from aggregator.errors import StorageError
from aggregator.store import Store
from aggregator.update import make_fetcher, publish_now, run_pass
from bench.farm import Farm

ROOT = Path(__file__).resolve().parents[1]
CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    """Skip here; under CI the missing tool is a failure."""
    if CI:
        pytest.fail(f"{reason} (CI=true: this fault must be tested)")
    pytest.skip(reason)


def child_env(**settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGGREGATOR_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update({f"AGGREGATOR_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in settings.items()})
    return env


# Runs the real CLI with a shorter busy timeout (the only thing patched), so a
# lock test waits seconds, not the default's ten.
SHORT_BUSY = "import sys, aggregator.store as s; s.BUSY_TIMEOUT = float(sys.argv.pop(1)); " \
             "from aggregator.cli import main; sys.argv[0] = 'aggregator'; sys.exit(main())"


def aggregator(s: Settings, *args: str, busy: float | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "aggregator"] if busy is None else \
        [sys.executable, "-c", SHORT_BUSY, str(busy)]
    cmd += ["--db", str(s.db), "--feeds", str(s.feeds), "--output", str(s.output), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=child_env(),
                          cwd=s.db.parent, timeout=timeout)


def assert_one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stderr.startswith("aggregator: error: "), out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    for needle in needles:
        assert needle in out.stderr, out.stderr


def settings_for(tmp_path: Path, farm: Farm, **kw: object) -> Settings:
    base: dict[str, object] = dict(
        db=tmp_path / "agg.db", feeds=farm.write_opml(tmp_path / "feeds.opml"),
        output=tmp_path / "out", fetch_articles=False, summaries=False, publish=True,
        workers=4, jitter=0.0)
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def count(db: Path, sql: str = "SELECT count(*) FROM items") -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob(".*") if p.name.endswith(".tmp")]


@pytest.fixture
def farm() -> Iterator[Farm]:
    with Farm(4, 3).serve() as f:
        yield f


# --- the database locked by another writer ------------------------------------------

LOCKER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("ROLLBACK")
""")


class Locker:
    """Another process holding SQLite's write lock on ``db`` for ``seconds``."""

    def __init__(self, db: Path, seconds: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(db), str(seconds)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def wait(self) -> None:
        assert self.proc.wait(60) == 0
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def test_default_busy_timeout_is_ten_seconds(tmp_path: Path) -> None:
    with Store(tmp_path / "x.db") as store:
        assert store.busy_timeout == store_module.BUSY_TIMEOUT == 10.0
        assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000


def test_a_locked_database_fails_the_pass_cleanly_and_the_next_one_stores_everything(
        tmp_path: Path, farm: Farm) -> None:
    s = settings_for(tmp_path, farm, publish=False)
    with Store(s.db, busy_timeout=1.0) as store, make_fetcher(s) as fetcher:
        assert run_pass(s, store, fetcher).new == 12
        farm.add_item()
        locks: list[Locker] = []

        def lock_after_first_feed(_: object) -> None:  # the lock comes in mid-pass
            if not locks:
                locks.append(Locker(s.db, 6.0))  # longer than three writes' waits

        try:
            # each write waits 1 s and fails as that feed's (tried again next pass);
            # three in a row mean the database, not a feed: the pass stops, one line
            with pytest.raises(StorageError) as err:
                run_pass(s, store, fetcher, all_feeds=True, progress=lock_after_first_feed)
        finally:
            if locks:
                locks[0].wait()
        assert str(err.value) == (f"database {s.db} is locked by another writer "
                                  "(waited 1 s) (3 writes in a row failed; stopping)")
        assert count(s.db) == 13  # the first feed's transaction; nothing half-written
        again = run_pass(s, store, fetcher, all_feeds=True)
        assert again.new == 3 and again.failed == 0
    assert count(s.db) == 16
    assert count(s.db, "SELECT count(*) FROM feeds WHERE state != 'ok'") == 0


def test_update_on_a_locked_database_is_a_one_line_error(tmp_path: Path, farm: Farm) -> None:
    s = settings_for(tmp_path, farm)
    assert aggregator(s, "update", "--no-publish").returncode == 0
    lock = Locker(s.db, 4.0)
    out = aggregator(s, "update", "--all", busy=1.0)
    lock.wait()
    assert_one_line_error(out, f"database {s.db} is locked by another writer (waited 1 s)")
    farm.add_item()
    out = aggregator(s, "update", "--all", "--no-publish")
    assert out.returncode == 0 and "4 new items" in out.stdout, out.stdout + out.stderr
    assert count(s.db) == 16


@pytest.mark.slow
def test_the_daemon_waits_out_a_lock_and_then_stores_everything(tmp_path: Path,
                                                                  farm: Farm) -> None:
    s = settings_for(tmp_path, farm)
    s.db.parent.mkdir(exist_ok=True)
    err_path = tmp_path / "daemon.err"
    env = child_env(interval=0.03, min_interval=0.02, fetch_articles=False, summaries=False,
                    serve=False, jitter=0)  # feeds due every ~2 s, tick 1 s
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", SHORT_BUSY, "1.0", "--db", str(s.db), "--feeds",
             str(s.feeds), "--output", str(s.output), "run"],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until(lambda: count_or_zero(s.db) == 12, 30, "the first pass")
        lock = Locker(s.db, 5.0)
        farm.add_item()  # 4 new items arrive while the database is locked
        time.sleep(1.0)
        assert count(s.db) == 12
        lock.wait()
        wait_until(lambda: count(s.db) == 16, 30, "the pass after the lock: "
                   + err_path.read_text()[-3000:])
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    log = err_path.read_text()
    assert code == 0, log
    failed = [ln for ln in log.splitlines() if "update pass failed" in ln]
    assert failed, log
    assert all(ln.endswith(f"database {s.db} is locked by another writer (waited 1 s)")
               and " ERROR " in ln for ln in failed), failed
    assert "Traceback" not in log
    assert count(s.db, "SELECT count(*) FROM feeds WHERE state != 'ok'") == 0


def count_or_zero(db: Path) -> int:
    try:
        return count(db)
    except sqlite3.Error:
        return 0


def wait_until(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- the output directory unwritable, full, or a file ---------------------------------


@pytest.fixture
def published(tmp_path: Path, farm: Farm) -> tuple[Settings, Farm]:
    """A database with items and a published output directory; then a new item
    per feed stored, so the next publish has different bytes to write."""
    s = settings_for(tmp_path, farm)
    out = aggregator(s, "update")
    assert out.returncode == 0 and (s.output / "rss.xml").exists(), out.stderr
    farm.add_item()
    out = aggregator(s, "update", "--all", "--no-publish")
    assert out.returncode == 0 and count(s.db) == 16, out.stderr
    return s, farm


@contextmanager
def immutable(directory: Path) -> Iterator[None]:
    if not shutil.which("chattr") or not shutil.which("lsattr"):
        unavailable("chattr/lsattr not installed (e2fsprogs)")
    probe = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
    if probe.returncode != 0:
        unavailable(f"chattr +i does not work on this filesystem: {probe.stderr.strip()}")
    try:
        attrs = subprocess.run(["lsattr", "-d", str(directory)], capture_output=True,
                               text=True).stdout
        assert "i" in attrs.split()[0], attrs
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_publish_into_an_unwritable_directory_fails_in_one_line_and_keeps_the_files(
        published: tuple[Settings, Farm]) -> None:
    s, _ = published
    before = snapshot(s.output)
    with immutable(s.output):
        out = aggregator(s, "publish")
        assert_one_line_error(out, f"cannot write {s.output}", "Operation not permitted")
        assert snapshot(s.output) == before
    assert leftovers(s.output) == []
    assert aggregator(s, "publish").returncode == 0  # writable again: it works
    assert snapshot(s.output) != before


def test_update_stores_then_reports_the_publish_failure(
        published: tuple[Settings, Farm]) -> None:
    s, farm = published
    farm.add_item()
    before = snapshot(s.output)
    with immutable(s.output):
        out = aggregator(s, "update", "--all")
        assert_one_line_error(out, f"cannot write {s.output}")
        assert snapshot(s.output) == before
    assert out.stdout.count("\nnew ") == 4, out.stdout  # the per-feed table came first
    assert count(s.db) == 20  # the new items are stored


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if not shutil.which("mount"):
        unavailable("no mount command")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(directory: Path) -> None:
    """Write zeros until the filesystem says it is full."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    finally:
        os.close(fd)


def test_publish_into_a_full_disk_fails_in_one_line_and_keeps_the_files(
        tmp_path: Path, farm: Farm, tiny_tmpfs: Path) -> None:
    s = settings_for(tmp_path, farm, output=tiny_tmpfs / "out")
    assert aggregator(s, "update").returncode == 0
    farm.add_item()
    assert aggregator(s, "update", "--all", "--no-publish").returncode == 0
    before = snapshot(s.output)
    fill(tiny_tmpfs)
    out = aggregator(s, "publish")
    assert_one_line_error(out, "cannot write", "No space left on device")
    assert snapshot(s.output) == before
    assert leftovers(s.output) == []
    (tiny_tmpfs / "filler").unlink()
    assert aggregator(s, "publish").returncode == 0
    assert snapshot(s.output) != before


def test_publish_to_a_file_instead_of_a_directory_is_a_one_line_error(
        published: tuple[Settings, Farm]) -> None:
    s, _ = published
    blocker = s.output.parent / "not-a-dir"
    blocker.write_bytes(b"a file where the output directory should be")
    s2 = s.replace(output=blocker)
    out = aggregator(s2, "publish")
    assert_one_line_error(out, f"cannot write {blocker}")
    assert blocker.read_bytes() == b"a file where the output directory should be"


def test_the_daemon_logs_a_publish_failure_and_keeps_polling(
        published: tuple[Settings, Farm]) -> None:
    """In-process, the daemon's publish step: one ERROR line, no exception."""
    import logging

    from aggregator.daemon import Daemon

    s, _ = published
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("aggregator").addHandler(handler)
    try:
        daemon = Daemon(s)
        with immutable(s.output):
            with Store(s.db) as store:
                daemon._publish(store)
        daemon.store.close()
        daemon.fetcher.close()
    finally:
        logging.getLogger("aggregator").removeHandler(handler)
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].getMessage().startswith(
        f"publish failed: cannot write {s.output}"), [r.getMessage() for r in records]


# --- kill -9 during publish --------------------------------------------------------------

PUBLISHER = textwrap.dedent("""
    import itertools, sys
    from pathlib import Path
    from aggregator.publish import publish
    from aggregator.store import Store
    store = Store(Path(sys.argv[1]))
    entries, subs = store.recent_entries(100), store.subscriptions()
    print("ready", flush=True)
    for i in itertools.count():  # every file changes every time
        publish(entries, Path(sys.argv[2]), subscriptions=subs, title=f"run {i % 2}",
                max_entries=100)
""")

READER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from lxml import etree
    out, stop = Path(sys.argv[1]), Path(sys.argv[2])
    reads, bad = 0, []
    while not stop.exists():
        for name in ("rss.xml", "atom.xml", "feed.json", "feeds.opml", "index.html"):
            data = (out / name).read_bytes()
            reads += 1
            try:
                if name == "feed.json":
                    assert len(json.loads(data)["items"]) == 100
                elif name == "index.html":
                    assert data.rstrip().endswith(b"</html>")
                else:
                    etree.fromstring(data, etree.XMLParser(resolve_entities=False))
            except Exception as e:
                bad.append(f"{name}: {type(e).__name__}: {e}"[:200])
    print(json.dumps({"reads": reads, "bad": bad[:20], "bad_count": len(bad)}))
""")


@pytest.mark.slow
def test_kill_9_during_publish_never_shows_a_reader_half_a_file(tmp_path: Path) -> None:
    with Farm(20, 6).serve() as farm:
        s = settings_for(tmp_path, farm, max_entries=100)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            assert run_pass(s, store, fetcher).new == 120
            publish_now(s, store)
    stop = tmp_path / "stop"
    env = child_env()
    reader = subprocess.Popen([sys.executable, "-c", READER, str(s.output), str(stop)],
                              stdout=subprocess.PIPE, text=True, env=env)
    kills = mid_write = 0
    rng = random.Random(7)
    try:
        for _ in range(25):
            pub = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(s.db), str(s.output)],
                                   stdout=subprocess.PIPE, text=True, env=env)
            assert pub.stdout is not None and pub.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.2))
            deadline = time.monotonic() + 3.0
            while not leftovers(s.output) and time.monotonic() < deadline:
                pass  # kill it while its temp files exist: between write and rename
            mid_write += bool(leftovers(s.output))
            pub.kill()
            assert pub.wait(10) == -signal.SIGKILL
            pub.stdout.close()
            kills += 1
    finally:
        stop.touch()
        report, _ = reader.communicate(timeout=60)
    result = json.loads(report)
    assert result["bad_count"] == 0, result["bad"]
    assert result["reads"] > 100 and kills == 25
    assert mid_write >= 10, mid_write  # most kills landed mid-publish
    # the killed publishers' temp files go at the next publish, and only there
    leftover_names = leftovers(s.output)
    (s.output / ".rss.xml.abcd1234.tmp").write_bytes(b"<rss")  # one more, by hand
    with Store(s.db) as store:
        publish_now(s, store)
    assert leftovers(s.output) == [], leftover_names
    assert all(not p.name.startswith(".") for p in s.output.rglob("*"))


def test_a_dotfile_temp_name_is_not_served(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from aggregator.serve import serve_in_thread

    (tmp_path / "rss.xml").write_bytes(b"<rss/>")
    (tmp_path / ".rss.xml.abcd1234.tmp").write_bytes(b"<rss")
    server = serve_in_thread(tmp_path, "127.0.0.1", 0)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        base = f"http://127.0.0.1:{server.port}/"
        with opener.open(base + "rss.xml", timeout=10) as resp:
            assert resp.read() == b"<rss/>"
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(base + ".rss.xml.abcd1234.tmp", timeout=10)
        assert err.value.code == 404
        err.value.close()
    finally:
        server.stop()


# --- a corrupt database file ------------------------------------------------------------


def real_database(tmp_path: Path) -> bytes:
    """The bytes of a real aggregator database with a few hundred items."""
    with Farm(10, 20).serve() as farm:
        (tmp_path / "src").mkdir()
        s = settings_for(tmp_path / "src", farm, publish=False)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            run_pass(s, store, fetcher)
    assert not Path(f"{s.db}-wal").exists()  # checkpointed at close
    return s.db.read_bytes()


@pytest.mark.parametrize("kind", ["garbage", "text", "truncated", "truncated-odd", "header"])
def test_a_corrupt_database_is_a_one_line_error_and_stays_untouched(
        tmp_path: Path, kind: str) -> None:
    db = tmp_path / "agg.db"
    if kind == "garbage":
        data = random.Random(1).randbytes(20_000)
    elif kind == "text":
        data = b'<?xml version="1.0"?><opml version="2.0"><body/></opml>\n'
    else:
        whole = real_database(tmp_path)
        assert len(whole) > 40_000
        data = {"truncated": whole[:len(whole) // 2 // 4096 * 4096],
                "truncated-odd": whole[:5000],
                "header": whole[:100]}[kind]
    db.write_bytes(data)
    opml = tmp_path / "feeds.opml"
    opml.write_text('<opml version="2.0"><head/><body></body></opml>')
    s = Settings(db=db, feeds=opml, output=tmp_path / "out")
    for command in (["update"], ["feeds"], ["publish"], ["run", "--no-serve"]):
        out = aggregator(s, *command)
        assert_one_line_error(out, f"not a SQLite database: {db}")
        assert db.read_bytes() == data, command
        assert not Path(f"{db}-wal").exists() and not Path(f"{db}-journal").exists()
    with pytest.raises(StorageError, match="not a SQLite database"):
        Store(db, readonly=True)


def test_an_empty_file_is_a_new_database(tmp_path: Path) -> None:
    db = tmp_path / "agg.db"
    db.touch()
    with Store(db) as store:
        assert store.count_items() == 0
    assert db.read_bytes().startswith(b"SQLite format 3\0")


# --- the clock jumping ---------------------------------------------------------------------

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_clock_rule_moves_feeds_fetched_in_the_future_back_to_now() -> None:
    rule = decide.after_clock_went_back
    last, nxt = T0, T0 + timedelta(minutes=30)
    assert rule(T0 + timedelta(minutes=10), last, nxt) is None  # time went on
    assert rule(T0, last, nxt) is None
    assert rule(T0 + 2 * HOUR, last, nxt) is None  # forward: simply due
    back = T0 - HOUR
    assert rule(back, last, nxt) == (back, back + timedelta(minutes=30))
    # a long server-asked delay is kept, from now
    assert rule(back, last, T0 + timedelta(days=2)) == (back, back + timedelta(days=2))
    assert rule(back, None, T0) == (back, back)  # never fetched: due now
    assert rule(back, None, back) is None
    assert rule(back, None, None) is None


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def test_clock_jumps_on_a_real_store_poll_each_feed_once_and_skip_none(
        tmp_path: Path, farm: Farm) -> None:
    """interval 30 min; passes every 30 s of simulated time, like the daemon."""
    s = settings_for(tmp_path, farm, publish=False, interval=30)
    clock = Clock(T0)
    feeds = [f"/feed/{i}.xml" for i in range(4)]

    def polls() -> list[int]:
        return [farm.requests[f] for f in feeds]

    def run_for(minutes: float) -> None:
        end = clock.now + timedelta(minutes=minutes)
        while clock.now < end:
            run_pass(s, store, fetcher, clock=clock)
            clock.now += timedelta(seconds=30)

    with Store(s.db) as store, make_fetcher(s) as fetcher:
        run_for(1)
        assert polls() == [1, 1, 1, 1]
        clock.now += HOUR  # forward: every feed is due, each polled once
        run_for(5)
        assert polls() == [2, 2, 2, 2]
        clock.now -= HOUR  # back: last fetches are "in the future"
        run_for(29)
        assert polls() == [2, 2, 2, 2]  # not hammered: each waits its interval...
        run_for(2)
        assert polls() == [3, 3, 3, 3]  # ...from the jump, not the interval + an hour
        run_for(30)
        assert polls() == [4, 4, 4, 4]  # and the usual rhythm after
        stored = {f.url: f for f in store.feeds()}
    assert all(f.last_fetch is not None and f.last_fetch <= clock.now for f in stored.values())


CLOCK_WRAPPER = textwrap.dedent("""
    # The real CLI with a wall clock that SIGUSR1 moves an hour forward and SIGUSR2
    # an hour back: time.time(), and datetime.now() where the daemon and APScheduler
    # read it. The monotonic clock is left alone, as a real jump leaves it.
    import signal, sys, time
    from datetime import UTC, datetime, timedelta
    import apscheduler.schedulers.base, apscheduler.triggers.interval
    import aggregator.daemon
    offset = [0.0]
    def shift(seconds):
        def handler(signum, frame):
            offset[0] += seconds
        return handler
    signal.signal(signal.SIGUSR1, shift(3600.0))
    signal.signal(signal.SIGUSR2, shift(-3600.0))
    real_time = time.time
    time.time = lambda: real_time() + offset[0]
    class Now(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(seconds=offset[0])
    for module in (apscheduler.schedulers.base, apscheduler.triggers.interval,
                   aggregator.daemon):
        module.datetime = Now
    aggregator.daemon.utcnow = lambda: Now.now(UTC)
    from aggregator.cli import main
    sys.argv[0] = "aggregator"
    sys.exit(main())
""")


@pytest.mark.slow
def test_the_daemon_keeps_polling_when_the_clock_jumps(tmp_path: Path, farm: Farm) -> None:
    s = settings_for(tmp_path, farm)
    err_path = tmp_path / "daemon.err"
    # every feed every 15 s, a look at the due feeds every second
    env = child_env(interval=0.25, min_interval=0.05, jitter=0, serve=False,
                    fetch_articles=False, summaries=False)
    feeds = [f"/feed/{i}.xml" for i in range(4)]

    def polls() -> list[int]:
        with farm.lock:
            return [farm.requests[f] for f in feeds]

    def passes() -> int:
        return err_path.read_text().count("aggregator.daemon: pass: 4 feeds")

    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLOCK_WRAPPER, "--db", str(s.db), "--feeds", str(s.feeds),
             "--output", str(s.output), "run"],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    try:
        # (a jump during a pass counts for the feeds it records: they were just fetched)
        wait_until(lambda: passes() == 1, 30, "the first pass")
        assert polls() == [1, 1, 1, 1]
        proc.send_signal(signal.SIGUSR1)  # an hour forward
        wait_until(lambda: passes() == 2, 10, "a poll of every feed after the jump")
        time.sleep(5.0)
        assert polls() == [2, 2, 2, 2]  # once each, not hammered
        proc.send_signal(signal.SIGUSR2)  # an hour back
        wait_until(lambda: min(polls()) == 3, 45, "a poll of every feed after the jump back")
        assert polls() == [3, 3, 3, 3]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    log = err_path.read_text()
    assert code == 0, log
    assert "the clock jumped forward by 3600 s" in log and "the clock jumped back by 3600 s" \
        in log, log
    assert "Traceback" not in log and " ERROR " not in log, log
