"""The only package that touches SQLite: schema, migrations, every query.

Split by concern: ``migrations`` (the schema), ``rows`` (the values rows become),
``feeds`` and ``items`` (subscriptions, fetch outcomes, items, summaries, publishing
reads), ``stories``, ``search``, ``retention``, ``media``, ``metrics``; ``Store``
here opens the file and mixes them in.

One writer at a time (SQLite's rule); WAL mode so ``sqlite3``, Datasette or a
publisher read the file while the daemon writes it. Each thread opens its own
Store. Every change a pass makes to one feed is one transaction, so a killed
process leaves either the old state or the new one, never half.

Timestamps are ISO-8601 UTC text (``2026-11-25T23:03:00+00:00``), which sorts
as text and reads as a date in any SQL tool.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aggregator.errors import StorageError
from aggregator.store import retention as storeretention
from aggregator.store.feeds import FeedsMixin
from aggregator.store.items import ItemsMixin
from aggregator.store.media import MediaMixin
from aggregator.store.metrics import MetricsMixin
from aggregator.store.migrations import MIGRATIONS, _migrate, _pending, migration, migration_set
from aggregator.store.retention import RetentionMixin
from aggregator.store.rows import (
    _ENTRY_SELECT,
    FeedRow,
    ItemCounts,
    PendingItem,
    _entry,
    from_iso,
    iso,
)
from aggregator.store.stories import StoriesMixin

__all__ = ["BUSY_TIMEOUT", "MIGRATIONS", "FeedRow", "ItemCounts", "PendingItem", "Store",
           "_ENTRY_SELECT", "_entry", "from_iso", "iso", "migration", "migration_set"]

# A write waits this long for another writer (an `update` beside the daemon, a
# sqlite3 shell in a transaction) before it fails as a StorageError. The daemon
# retries at its next pass, so a lock held for 30 s costs one failed pass, not a
# pass stuck for as long as the lock lasts (WAL readers never wait at all).
BUSY_TIMEOUT = 10.0

def _check_whole(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that is not, or no longer, a whole SQLite database before
    SQLite or a migration writes a byte to it: garbage, another kind of file,
    one cut short. An empty file is a new database; a file with a write-ahead
    log beside it is left to SQLite, which replays the log. Everything is read
    through SQLite and os.stat: opening the file ourselves and closing it would
    drop every SQLite lock this process holds on it (POSIX locks die with any
    close of the file), and the daemon keeps connections open."""
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reads the header and schema
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    except sqlite3.DatabaseError as e:
        if "not a database" not in str(e) and "malformed" not in str(e):
            raise  # locked, unreadable: "cannot open database", below
        conn.close()
        raise StorageError(f"not a SQLite database: {path} ({e})") from e
    try:
        size = path.stat().st_size
        wal = Path(f"{path}-wal")
        if size == 0 or (wal.exists() and wal.stat().st_size > 0):
            return
    except FileNotFoundError:
        return
    if size % page or size < pages * page:
        conn.close()
        raise StorageError(f"not a SQLite database: {path} "
                           f"(truncated: {size} of {pages * page} bytes)")


class Store(FeedsMixin, ItemsMixin, StoriesMixin, RetentionMixin, MediaMixin, MetricsMixin):
    """One connection to the file, with every query of the mixins above."""

    def __init__(self, path: Path, *, readonly: bool = False,
                 busy_timeout: float | None = None) -> None:
        self.path = path
        self.busy_timeout = BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        existed = path.exists() and path.stat().st_size > 0
        try:
            if not readonly:
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                f"file:{path}?mode=ro" if readonly else str(path),
                uri=readonly,
                timeout=self.busy_timeout,
                isolation_level=None,  # we open transactions ourselves
                check_same_thread=False,
            )
            _check_whole(conn, path)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if not readonly:
                pending = _pending(conn)
                if pending and existed:  # an upgrade: never migrate a damaged file
                    check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
                    if check != "ok":
                        conn.close()
                        raise StorageError(f"not a SQLite database: {path} (damaged: {check})")
                if not existed:  # before the first table: no VACUUM needed to set it
                    conn.execute(f"PRAGMA auto_vacuum = {storeretention.INCREMENTAL}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StorageError(f"{path}: cannot switch to WAL mode (got {mode})")
                conn.execute("PRAGMA synchronous = NORMAL")
                if pending:
                    _migrate(conn)
                    storeretention.after_migrate(conn, path)
        except sqlite3.DatabaseError as e:
            if "not a database" in str(e) or "malformed" in str(e):
                raise StorageError(f"not a SQLite database: {path} ({e})") from e
            raise StorageError(f"cannot open database {path}: {e}") from e
        except OSError as e:
            raise StorageError(f"cannot open database {path}: {e.strerror}") from e
        self.conn = conn

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise StorageError(f"database {self.path} is locked by another writer "
                                   f"(waited {self.busy_timeout:g} s)") from e
            raise StorageError(f"database {self.path} is busy or read-only: {e}") from e
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as e:
            if self.conn.in_transaction:  # SQLite may have rolled back already (disk full)
                self.conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StorageError(f"cannot write database {self.path}: {e}") from e
            raise

    def fetched_feed_count(self) -> int:
        """Active feeds with a stored document (fetched at least once)."""
        return int(self.conn.execute(
            "SELECT count(*) FROM feeds WHERE active = 1 AND body_hash IS NOT NULL"
        ).fetchone()[0])

    # --- health ------------------------------------------------------------------

    def ping(self) -> bool:
        try:
            return self.conn.execute("SELECT 1").fetchone() == (1,)
        except sqlite3.Error:
            return False

