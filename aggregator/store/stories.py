"""The stories' SQL, mixed into ``Store`` (``aggregator.store.Store``).

Tables (migration ``m005_stories`` in migrations.py):

    stories       one row per story: first_seen, last_seen, title (of its first
                  item), item_id (that item), item_count, source_count (distinct
                  feeds), feed_ids (JSON list), centroid (JSON term -> weight,
                  its heaviest terms), has_text, retired (1 once quiet for the
                  window: no longer a candidate)
    items.story_id  the story an item belongs to; NULL until clustered
    story_terms   (term, story_id): the candidate index, for active stories only
    story_keys    (key, story_id): same-article keys, "u:" canonical URL,
                  "g:" publisher + guid, "t:" headline
    story_df      (term, df): document frequencies; the row with term '' holds
                  the number of items counted
    stories.names (migration ``m009_story_names``): JSON term -> weight, the
                  centroid of the members' names and numbers (stories.py)
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aggregator.types import Entry

if TYPE_CHECKING:  # the rules' module is imported by the methods that use it: a
    # pass with nothing to cluster (a poll of 304s) never loads it
    from aggregator.stories import ClusterItem, ItemFeatures, Params, Window

__all__ = ["StoriesMixin", "StoryRow"]

_CHUNK = 500  # host parameters per IN (...)
_DF_MEMORY = 200_000  # document frequencies a pass keeps in memory at most


def _vector_json(vec: dict[str, float], params: Params) -> str:
    """A centroid's heaviest terms as stored."""
    from aggregator.stories import top_terms

    return json.dumps({t: round(v, 5) for t, v in top_terms(vec, params.centroid_terms).items()},
                      ensure_ascii=False)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _time(text: str) -> datetime:
    d = datetime.fromisoformat(text)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for k in range(0, len(values), _CHUNK):
        yield values[k:k + _CHUNK]


class StoryRow(dict):  # type: ignore[type-arg]
    """A story with its sources, as ``aggregator stories`` shows it."""


class StoriesMixin:
    conn: sqlite3.Connection

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError

    def has_unclustered(self) -> bool:
        """Whether any item is without a story (one look at a partial index)."""
        return self.conn.execute(
            "SELECT 1 FROM items WHERE story_id IS NULL LIMIT 1").fetchone() is not None

    def unclustered_items(self, limit: int, *, now: datetime,
                          text_chars: int = 4000) -> list[ClusterItem]:
        """Items without a story, oldest first (their time: published, never
        later than when they were first seen), each text cut at ``text_chars``
        (the rules read the first words only)."""
        from aggregator.stories import ClusterItem

        rows = self.conn.execute(
            "SELECT i.id, i.feed_id, f.url, i.guid, i.url, i.title, substr(i.content_text, 1, ?), "
            "substr(i.article_text, 1, ?), coalesce(i.language, f.language), i.sort_date, "
            "i.first_seen FROM items i JOIN feeds f ON f.id = i.feed_id "
            "WHERE i.story_id IS NULL ORDER BY i.sort_date, i.id LIMIT ?",
            (text_chars, text_chars, limit)).fetchall()
        return [ClusterItem(r[0], r[1], r[2], r[3], r[4], r[5], (r[6], r[7]), r[8],
                            min(_time(r[9]), _time(r[10]), now)) for r in rows]

    def story_window(self, w: Window, batch: Sequence[tuple[ClusterItem, ItemFeatures]],
                     params: Params) -> Window:
        """Fill ``w`` with what a batch is clustered against and it lacks: the
        document frequencies of the batch's terms, the stories its same-article
        keys name, and the active stories sharing a term with it (the candidate
        index, ``story_terms``). A window lives for one pass of the stage."""
        from aggregator.stages.cluster import keys_of
        from aggregator.stories import Cluster, index_terms, norm

        terms = sorted({t for _, f in batch for t in f.terms()} - w.known_terms)
        for chunk in _chunks(terms):
            dict.update(w.df, self.conn.execute(  # the store's figure, not added to
                f"SELECT term, df FROM story_df WHERE term IN ({','.join('?' * len(chunk))})",
                chunk).fetchall())
        w.known_terms.update(terms)
        if not w.n:
            row = self.conn.execute("SELECT df FROM story_df WHERE term = ''").fetchone()
            w.n = row[0] if row else 0.0
        keys = sorted({k for _, f in batch for k in keys_of(f)} - w.keys.keys())
        found: dict[str, int] = {}
        for chunk in _chunks(keys):
            found.update(self.conn.execute(
                f"SELECT key, story_id FROM story_keys WHERE key IN ({','.join('?' * len(chunk))})",
                chunk).fetchall())
        ids = set(found.values())
        for chunk in _chunks(terms):
            ids.update(r[0] for r in self.conn.execute(
                "SELECT DISTINCT story_id FROM story_terms "
                f"WHERE term IN ({','.join('?' * len(chunk))})", chunk))
        for chunk in _chunks(sorted(ids - w.clusters.keys())):
            for r in self.conn.execute(
                    "SELECT id, centroid, item_count, feed_ids, first_seen, last_seen, has_text, "
                    f"names FROM stories WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                centroid = json.loads(r[1])
                names = json.loads(r[7])
                c = Cluster(r[0], centroid, r[2], set(json.loads(r[3])), _time(r[4]),
                            _time(r[5]), bool(r[6]), norm=norm(centroid), names=names,
                            names_norm=norm(names),
                            stored_terms=frozenset(index_terms(centroid, params)))
                w.add(c, params)
        w.keys.update((k, cid) for k, cid in found.items() if cid in w.clusters)
        return w

    def save_stories(self, w: Window, params: Params, *, retire_before: datetime) -> None:
        """Write one clustered batch in one transaction: new and grown stories,
        the changes to their index terms, their keys, every item's story_id, the
        document frequencies; stories merged into another are deleted, their
        items and keys moved to it; then retire the stories quiet since
        ``retire_before``. ``w`` is then ready for the next batch."""
        from aggregator.stories import index_terms

        with self.transaction() as c:
            real: dict[int, int] = {}
            for cid, cl in w.clusters.items():
                if cid < 0:
                    item_id, title = w.titles[cid]
                    real[cid] = c.execute(
                        "INSERT INTO stories (first_seen, last_seen, title, item_id) "
                        "VALUES (?, ?, ?, ?)",
                        (_iso(cl.first_seen), _iso(cl.last_seen), title, item_id)).lastrowid or 0
            changed = [(real.get(cid, cid), cl) for cid, cl in w.clusters.items() if cl.changed]
            c.executemany(
                "UPDATE stories SET first_seen = ?, last_seen = ?, item_count = ?, "
                "source_count = ?, feed_ids = ?, centroid = ?, has_text = ?, names = ?, "
                "retired = 0 WHERE id = ?",
                [(_iso(cl.first_seen), _iso(cl.last_seen), cl.count, len(cl.feeds),
                  json.dumps(sorted(cl.feeds)), _vector_json(cl.centroid, params),
                  int(cl.has_text), _vector_json(cl.names, params), sid) for sid, cl in changed])
            gone: list[tuple[str, int]] = []
            new: list[tuple[str, int]] = []
            for sid, cl in changed:
                terms = frozenset(index_terms(cl.centroid, params))
                gone.extend((t, sid) for t in cl.stored_terms - terms)
                new.extend((t, sid) for t in terms - cl.stored_terms)
                cl.stored_terms = terms
            c.executemany("DELETE FROM story_terms WHERE term = ? AND story_id = ?", gone)
            c.executemany("INSERT OR IGNORE INTO story_terms (term, story_id) VALUES (?, ?)", new)
            c.executemany("INSERT OR REPLACE INTO story_keys (key, story_id) VALUES (?, ?)",
                          [(k, real.get(cid, cid)) for k, cid in w.new_keys.items()])
            c.executemany("UPDATE items SET story_id = ? WHERE id = ? AND story_id IS NULL",
                          [(real.get(cid, cid), item_id) for item_id, cid in w.assigned])
            c.executemany("INSERT INTO story_df (term, df) VALUES (?, ?) "
                          "ON CONFLICT (term) DO UPDATE SET df = df + excluded.df",
                          [*w.df_delta.items(), ("", float(len(w.assigned)))])
            merged = [(real.get(into, into), gone) for gone, into in w.merged.items()
                      if gone > 0]
            c.executemany("UPDATE items SET story_id = ? WHERE story_id = ?", merged)
            c.executemany("UPDATE story_keys SET story_id = ? WHERE story_id = ?", merged)
            c.executemany("DELETE FROM story_terms WHERE story_id = ?",
                          [(gone,) for _, gone in merged])
            c.executemany("DELETE FROM stories WHERE id = ?", [(gone,) for _, gone in merged])
            c.execute("DELETE FROM story_terms WHERE story_id IN "
                      "(SELECT id FROM stories WHERE retired = 0 AND last_seen < ?)",
                      (_iso(retire_before),))
            c.execute("UPDATE stories SET retired = 1 WHERE retired = 0 AND last_seen < ?",
                      (_iso(retire_before),))
        w.renumber(real)
        w.retire(retire_before)
        if len(w.df) > _DF_MEMORY:  # the vocabulary grows with the pass: read again as needed
            w.df.clear()
            w.known_terms.clear()

    def stories(self, *, since: datetime, min_sources: int = 1,
                limit: int | None = None) -> list[dict[str, Any]]:
        """Stories seen since ``since`` with at least ``min_sources`` feeds, most
        sources first, then newest; each with its items and their feeds."""
        rows = self.conn.execute(
            "SELECT id, first_seen, last_seen, title, item_count, source_count FROM stories "
            "WHERE last_seen >= ? AND source_count >= ? "
            "ORDER BY source_count DESC, last_seen DESC, id DESC"
            + (" LIMIT ?" if limit else ""),
            (_iso(since), min_sources, *((limit,) if limit else ()))).fetchall()
        out = []
        for r in rows:
            items = self.conn.execute(
                "SELECT i.title, i.url, i.sort_date, coalesce(f.title, f.feed_title, f.url), "
                "CASE WHEN f.private THEN NULL ELSE f.url END "
                "FROM items i JOIN feeds f ON f.id = i.feed_id WHERE i.story_id = ? "
                "ORDER BY i.sort_date, i.id", (r[0],)).fetchall()
            out.append({"id": r[0], "first_seen": r[1], "last_seen": r[2], "title": r[3],
                        "item_count": r[4], "source_count": r[5],
                        "items": [{"title": t, "url": u, "published": d, "source": s,
                                   "feed": fu} for t, u, d, s, fu in items]})
        return out

    def story_entries(self, story_ids: Sequence[int]) -> dict[int, list[Entry]]:
        """Every item of each story (of active feeds), as the publisher sees items,
        oldest first: what a story page lists as its sources."""
        from aggregator.store.rows import _ENTRY_SELECT, _entry

        out: dict[int, list[Entry]] = {sid: [] for sid in story_ids}
        for chunk in _chunks(sorted(set(story_ids))):
            for r in self.conn.execute(
                    _ENTRY_SELECT + "WHERE f.active = 1 AND i.story_id IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY i.sort_date, i.id", chunk):
                e = _entry(r)
                out[e.story_id or 0].append(e)
        return out

    # --- publishing: entry ids and related stories (aggregator/publish.py) --------------

    def story_anchors(self, story_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """Each story's first item as (its feed's first URL, its key): what the story's
        entry id in the feeds is made of, so the id stays put when the story gains
        sources or another item comes to represent it. The first item is the one that
        started the story (``stories.item_id``), else its oldest stored item; removed
        feeds' items count, so unsubscribing a feed doesn't move the ids of its stories."""
        out: dict[int, tuple[str, str]] = {}
        for chunk in _chunks(sorted(set(story_ids))):
            for sid, origin, key in self.conn.execute(
                    "SELECT s.id, coalesce(f.origin_url, f.url), i.key FROM stories s "
                    "JOIN items i ON i.id = coalesce("
                    "(SELECT x.id FROM items x WHERE x.id = s.item_id AND x.story_id = s.id), "
                    "(SELECT min(x.id) FROM items x WHERE x.story_id = s.id)) "
                    "JOIN feeds f ON f.id = i.feed_id "
                    f"WHERE s.id IN ({','.join('?' * len(chunk))})", chunk):
                out[sid] = (origin, key)
        return out

    def related_stories(self, story_ids: Sequence[int], *, min_shared: int = 3,
                        limit: int = 5) -> dict[int, list[int]]:
        """Other stories on the same topic: those sharing at least ``min_shared`` of
        their heaviest terms with the story in the candidate index (``story_terms``: an
        active story's 20 heaviest centroid terms, stemmed, stop words out). Most shared
        terms first, then the newest; at most ``limit``. A retired story (no longer in
        the index) is looked up by the heaviest terms of its stored centroid, among the
        active stories. On ECB+ (each topic two different events) 3 shared terms makes
        83 % of the pairs same-topic and finds one for 67 of the 89 stories with a
        same-topic peer; 2 drops that to 61 %."""
        out: dict[int, list[int]] = {}
        for sid in sorted(set(story_ids)):
            own = [r[0] for r in self.conn.execute(
                "SELECT term FROM story_terms WHERE story_id = ?", (sid,))]
            if not own:
                row = self.conn.execute("SELECT centroid FROM stories WHERE id = ?",
                                        (sid,)).fetchone()
                try:
                    weights = json.loads(row[0]) if row and row[0] else {}
                except ValueError:
                    weights = {}
                own = sorted(weights, key=lambda t: (-weights[t], t))[:RELATED_TERMS]
            if len(own) < min_shared:
                out[sid] = []
                continue
            rows = self.conn.execute(
                "SELECT t.story_id, count(*) AS shared FROM story_terms t "
                "JOIN stories s ON s.id = t.story_id "
                f"WHERE t.term IN ({','.join('?' * len(own))}) AND t.story_id != ? "
                "GROUP BY t.story_id HAVING shared >= ? "
                "ORDER BY shared DESC, max(s.last_seen) DESC, t.story_id DESC LIMIT ?",
                (*own, sid, min_shared, limit)).fetchall()
            out[sid] = [r[0] for r in rows]
        return out


RELATED_TERMS = 20  # centroid terms a retired story is looked up by (Params.index_terms)

