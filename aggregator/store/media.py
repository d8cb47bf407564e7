"""The enclosures' SQL, mixed into ``Store`` (``aggregator.store.Store``).

Table (migration ``m008_media`` in migrations.py):

    enclosures    one row per media file an item carries, in the feed's order
        item_id   items.id (deleted with its item)
        position  0, 1, ... within the item
        url       http(s) URL of the file (the daemon never fetches it)
        type      MIME type as the feed said it, lower-case; NULL when not said
        length    size in bytes as the feed said it (1 B .. 1 TiB); NULL when not said
                  or not believable
        kind      'enclosure' (RSS <enclosure>, Atom link rel="enclosure", JSON Feed
                  attachment), 'content' (media:content) or 'thumbnail' (media:thumbnail,
                  JSON Feed image)

An item's rows are replaced whenever the item is stored as new or changed.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from aggregator.types import Enclosure, Entry, ParsedItem

__all__ = ["MediaMixin", "create"]

_CHUNK = 500  # host parameters per IN (...)


def create(conn: Any) -> None:
    conn.execute(
        """
        CREATE TABLE enclosures (
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            url TEXT NOT NULL,
            type TEXT,
            length INTEGER,
            kind TEXT NOT NULL DEFAULT 'enclosure',
            PRIMARY KEY (item_id, position)
        ) WITHOUT ROWID
        """
    )


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for k in range(0, len(values), _CHUNK):
        yield values[k:k + _CHUNK]


class MediaMixin:
    conn: sqlite3.Connection

    @staticmethod
    def _save_media(c: sqlite3.Connection, feed_id: int,
                    new: Sequence[tuple[str, ParsedItem]],
                    changed: Sequence[tuple[int, ParsedItem]]) -> None:
        """Inside the feed's transaction: the enclosures of the items just inserted
        (by key) and of those just updated (by id, their old rows replaced)."""
        ids = [(id_, item) for id_, item in changed]
        wanted = [(k, item) for k, item in new if item.enclosures]
        for chunk in _chunks(wanted):
            by_key = dict(chunk)
            marks = ",".join("?" * len(chunk))
            for id_, key in c.execute(f"SELECT id, key FROM items WHERE feed_id = ? AND key IN "
                                      f"({marks})", (feed_id, *by_key)):
                ids.append((id_, by_key[key]))
        gone = [id_ for id_, _ in changed]
        for chunk in _chunks(gone):
            c.execute(f"DELETE FROM enclosures WHERE item_id IN ({','.join('?' * len(chunk))})",
                      chunk)
        rows = [(id_, n, e.url, e.type, e.length, e.kind)
                for id_, item in ids for n, e in enumerate(item.enclosures)]
        if rows:
            c.executemany("INSERT INTO enclosures (item_id, position, url, type, length, kind) "
                          "VALUES (?, ?, ?, ?, ?, ?)", rows)

    def enclosures(self, item_ids: Sequence[int]) -> dict[int, tuple[Enclosure, ...]]:
        """item id -> its enclosures in order (items without any are left out)."""
        out: dict[int, list[Enclosure]] = {}
        for chunk in _chunks(sorted(set(item_ids))):
            for id_, url, type_, length, kind in self.conn.execute(
                    "SELECT item_id, url, type, length, kind FROM enclosures WHERE item_id IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY item_id, position", chunk):
                out.setdefault(id_, []).append(Enclosure(url, type_, length, kind))
        return {k: tuple(v) for k, v in out.items()}

    def with_media(self, entries: list[Entry]) -> list[Entry]:
        """The entries with their enclosures (one read per 500 entries)."""
        if not entries:
            return entries
        found = self.enclosures([e.item_id for e in entries])
        if not found:
            return entries
        return [dataclasses.replace(e, enclosures=found[e.item_id]) if e.item_id in found
                else e for e in entries]
