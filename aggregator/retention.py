"""Pure retention rules: what may go, given the time and the settings.

No database, no clock (``now`` is an argument). The store finds the rows;
these rules say which of them are prunable:

    cutoffs(now, keep_days, keep_article_text_days)
        -> items dated (``sort_date``) before ``items_before`` may be deleted,
           items dated before ``text_before`` may lose their article text and
           their HTML (the summary, title, plain text and links stay)
    prunable(item, cutoff, keep)
        -> never an item in ``keep``: what a reader can still see, i.e. the
           items of each feed's latest fetched document, the published window
           (main feed, category feeds) and every member of a story shown there

A setting of 0 days keeps that kind of data forever.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["BATCH", "UNKNOWN_DOCUMENT_KEEP", "Cutoffs", "cutoffs", "prunable"]

BATCH = 500  # rows per transaction: a poll waiting for the write lock waits for one batch
# A feed whose latest document is not known yet (a database from before the
# store recorded it, or a feed answering 304 ever since) keeps its newest this many.
UNKNOWN_DOCUMENT_KEEP = 100


@dataclass(frozen=True)
class Cutoffs:
    """Dates before which items (``items_before``) and their article text
    (``text_before``) may go; None: kept forever."""

    items_before: datetime | None
    text_before: datetime | None


def cutoffs(now: datetime, keep_days: int, keep_article_text_days: int) -> Cutoffs:
    """The dates before which items and article texts are prunable. Text is
    never kept longer than its item: with ``keep_days`` shorter, the item's
    cutoff applies."""
    items = now - timedelta(days=keep_days) if keep_days > 0 else None
    text = now - timedelta(days=keep_article_text_days) if keep_article_text_days > 0 else None
    if items is not None and (text is None or text < items):
        text = items
    return Cutoffs(items, text)


def prunable(item_id: int, dated: datetime, cutoff: datetime | None,
             keep: Collection[int]) -> bool:
    """Whether an item dated ``dated`` may go under ``cutoff``: older than it
    and not something a reader can still see (``keep``)."""
    return cutoff is not None and dated < cutoff and item_id not in keep
