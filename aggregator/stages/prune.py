"""The retention stage: delete old items and old article text, batch by batch.

Never on the poll path: the daemon runs it once a day on its own executor,
``aggregator prune`` runs it by hand (``--dry-run`` only counts). One pass::

    keep    = the items a reader can still see              (store + publish window)
    cutoffs = retention.cutoffs(now, keep_days, keep_article_text_days)
    repeat: store.prune_candidates(oldest first, 500)  -> retention.prunable
            -> store.delete_items(batch)                  one transaction each
    repeat: the same for article text -> store.drop_article_text(batch)
    store.incremental_vacuum(compact_search=True)         the index merged, pages back

Each batch is its own small transaction, so a poll waiting to write waits for
one batch at most, and a stop between two batches loses nothing. The guard on
the feed's latest document is checked again inside each delete's transaction,
so an item that a poll has just seen in its feed again is not deleted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aggregator import retention
from aggregator.config import Settings
from aggregator.store import Store, from_iso

__all__ = ["PruneReport", "protected_items", "prune"]

log = logging.getLogger("aggregator.prune")


@dataclass(frozen=True)
class PruneReport:
    """What a prune did (or, ``dry_run``, would do): items deleted and article
    texts dropped, in all and per feed id; the file's size before and after."""

    dry_run: bool
    cutoffs: retention.Cutoffs
    items: int = 0
    texts: int = 0
    kept: int = 0  # items protected because a reader can still see them
    items_by_feed: dict[int, int] = field(default_factory=dict)
    texts_by_feed: dict[int, int] = field(default_factory=dict)
    size_before: int = 0
    size_after: int = 0
    incremental: bool = True  # the file gives freed pages back (else: `aggregator vacuum`)


def protected_items(settings: Settings, store: Store) -> set[int]:
    """What a reader can still see: each active feed's latest document, the
    published window (main feed and category feeds, as publish reads them) and
    every item of a story shown there (its story page lists them all)."""
    keep = store.document_item_ids(retention.UNKNOWN_DOCUMENT_KEEP)
    entries = list(store.recent_entries(settings.max_entries))
    for es in store.recent_by_category(settings.category_max_entries).values():
        entries.extend(es)
    keep.update(e.item_id for e in entries)
    keep.update(store.story_member_ids([e.story_id for e in entries if e.story_id]))
    return keep


def prune(settings: Settings, store: Store, *, now: datetime, dry_run: bool = False,
          should_stop: Callable[[], bool] = lambda: False,
          progress: Callable[[], None] = lambda: None,
          batch: int = retention.BATCH) -> PruneReport:
    """Apply the retention settings (module doc); ``progress`` hears each batch."""
    cut = retention.cutoffs(now, settings.keep_days, settings.keep_article_text_days)
    keep = protected_items(settings, store)
    size_before = store.size()
    items: Counter[int] = Counter()
    texts: Counter[int] = Counter()
    kept: set[int] = set()

    def walk(before: datetime, text_only: bool, act: Callable[[list[int]], list[int]],
             tally: Counter[int]) -> None:
        after = None
        while not should_stop():
            rows = store.prune_candidates(before, after=after, limit=batch, text_only=text_only)
            if not rows:
                return
            after = (rows[-1][2], rows[-1][0])
            feeds = {i: f for i, f, _ in rows}
            go = []
            for item_id, _, dated in rows:
                when = from_iso(dated)
                assert when is not None
                if retention.prunable(item_id, when, before, keep):
                    if text_only and retention.prunable(item_id, when, cut.items_before, keep):
                        continue  # a dry run: the item itself goes
                    go.append(item_id)
                else:
                    kept.add(item_id)
            done = go if dry_run else act(go)
            tally.update(feeds[i] for i in done)
            progress()

    if cut.items_before is not None:
        walk(cut.items_before, False, store.delete_items, items)
    if cut.text_before is not None:
        walk(cut.text_before, True, store.drop_article_text, texts)
    incremental = True
    if not dry_run:
        incremental = store.incremental_vacuum(
            compact_search=bool(sum(items.values()) or sum(texts.values())))
    report = PruneReport(
        dry_run=dry_run, cutoffs=cut, items=sum(items.values()), texts=sum(texts.values()),
        kept=len(kept), items_by_feed=dict(items), texts_by_feed=dict(texts),
        size_before=size_before, size_after=store.size(), incremental=incremental)
    if not dry_run and (report.items or report.texts):
        log.info("pruned %d items and %d article texts; database %d -> %d MB", report.items,
                 report.texts, size_before >> 20, report.size_after >> 20)
    return report
