"""Full-text search in the store: the FTS5 index over items and its queries.

Part of the store (the only SQL is in the store package), kept apart because
it is one concern. ``items_fts`` is an external-content FTS5 table over
``items``: it holds the index only, the text stays in ``items``. Triggers keep
it in step with every insert, delete (a feed's cascade included) and update of
an indexed column, whoever writes (the daemon, ``update``, a sqlite3 shell).

It is declared the way sqlite-utils' ``enable_fts`` declares one
(``content="items"``), which is how Datasette finds a table's search index:
the items table then shows a search box, and ``items.json?_search=word`` works.
"""

from __future__ import annotations

import sqlite3

FTS_TABLE = "items_fts"
# what a story says: its title, the feed's own text, our Context, the article page
COLUMNS = ("title", "content_text", "summary_context", "article_text")
TOKENIZE = "porter unicode61 remove_diacritics 2"  # "crashes" finds "crash"; "Zürich" "zurich"


def _cols(prefix: str) -> str:
    return ", ".join(f"{prefix}{c}" for c in COLUMNS)


def create(conn: sqlite3.Connection) -> None:
    """The index, its triggers, and every stored item in it: one ``rebuild``
    reads the items table once (a few seconds for 100,000 items with articles),
    much faster than a row-at-a-time backfill."""
    names = ", ".join(f"[{c}]" for c in COLUMNS)
    conn.execute(f"CREATE VIRTUAL TABLE [{FTS_TABLE}] USING FTS5 ({names}, "
                 f"tokenize='{TOKENIZE}', content=\"items\", content_rowid=\"id\")")
    # An external-content index forgets a row by being told its old values.
    insert = (f"INSERT INTO [{FTS_TABLE}] (rowid, {_cols('')}) "
              f"VALUES (new.id, {_cols('new.')});")
    delete = (f"INSERT INTO [{FTS_TABLE}] ([{FTS_TABLE}], rowid, {_cols('')}) "
              f"VALUES ('delete', old.id, {_cols('old.')});")
    changed = " OR ".join(f"old.{c} IS NOT new.{c}" for c in COLUMNS)
    conn.execute(f"CREATE TRIGGER [items_ai] AFTER INSERT ON [items] BEGIN {insert} END")
    conn.execute(f"CREATE TRIGGER [items_ad] AFTER DELETE ON [items] BEGIN {delete} END")
    # only when an indexed column really changed: article retries, summary
    # hashes and the like cost the index nothing
    conn.execute(f"CREATE TRIGGER [items_au] AFTER UPDATE OF {', '.join(COLUMNS)} ON [items] "
                 f"WHEN {changed} BEGIN {delete} {insert} END")
    conn.execute(f"INSERT INTO [{FTS_TABLE}] ([{FTS_TABLE}]) VALUES ('rebuild')")


def matching_ids(conn: sqlite3.Connection, match: str, *, since: str | None,
                 limit: int) -> list[int]:
    """The ids of the items that match an FTS5 query (see ``search.fts_query``),
    newest first. ``since``: only items dated at or after it (``sort_date``, an
    ISO-8601 UTC string that compares as text)."""
    sql = (f"SELECT i.id FROM items i WHERE i.id IN "
           f"(SELECT rowid FROM [{FTS_TABLE}] WHERE [{FTS_TABLE}] MATCH ?)")
    args: list[object] = [match]
    if since is not None:
        sql += " AND i.sort_date >= ?"
        args.append(since)
    sql += " ORDER BY i.sort_date DESC, i.id DESC LIMIT ?"
    args.append(limit)
    return [r[0] for r in conn.execute(sql, args)]


def has_index(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?",
                        (FTS_TABLE,)).fetchone() is not None


MERGE_PAGES = 2000  # about 8 MB of index rewritten at most per prune


def merge_sql(pages: int = MERGE_PAGES) -> str:
    """FTS5's bounded merge: a negative page count merges segments whatever their
    number, dropping the entries of deleted rows as it goes (positive counts merge
    only levels already holding several segments, which a pruned index rarely has)."""
    return f"INSERT INTO [{FTS_TABLE}] ([{FTS_TABLE}], rank) VALUES ('merge', {-abs(pages)})"
