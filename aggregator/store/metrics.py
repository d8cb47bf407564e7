"""The figures ``/metrics`` reads from the database at each scrape, mixed into ``Store``.

Every query is answered from an index or a small table, never by reading the items'
rows (their text makes a scan of them cost as much as reading the whole file):

    feeds by state       feeds (one row per subscription)
    items                count(*) over the smallest index of items
    summaries backlog    items_to_summarize, the partial index of summary_hash IS NULL
    clustering backlog   items_unclustered, the partial index of story_id IS NULL
    database size        PRAGMA page_count / freelist_count x page_size, and the -wal file
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MetricsMixin", "StoreMetrics"]


@dataclass(frozen=True)
class StoreMetrics:
    feeds_by_state: dict[str, int]  # active feeds only
    feeds_removed: int
    items: int
    summaries_backlog: int
    clustering_backlog: int
    db_bytes: int
    free_bytes: int
    wal_bytes: int


class MetricsMixin:
    conn: sqlite3.Connection
    path: Path

    def metrics(self) -> StoreMetrics:
        by_state: dict[str, int] = {}
        removed = 0
        for active, state, n in self.conn.execute(
                "SELECT active, state, count(*) FROM feeds GROUP BY active, state"):
            if active:
                by_state[state] = by_state.get(state, 0) + n
            else:
                removed += n
        one = self.conn.execute
        items = one("SELECT count(*) FROM items").fetchone()[0]
        unsummarised = one("SELECT count(*) FROM items WHERE summary_hash IS NULL").fetchone()[0]
        unclustered = one("SELECT count(*) FROM items WHERE story_id IS NULL").fetchone()[0]
        page = one("PRAGMA page_size").fetchone()[0]
        pages = one("PRAGMA page_count").fetchone()[0]
        free = one("PRAGMA freelist_count").fetchone()[0]
        try:
            wal = os.stat(f"{self.path}-wal").st_size
        except OSError:
            wal = 0
        return StoreMetrics(by_state, removed, items, unsummarised, unclustered,
                            pages * page, free * page, wal)
