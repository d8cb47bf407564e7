"""Operator stages: fetch an item's article again, summarise items again.

The same units of work as the summaries stage (update.py), asked for by hand
(``aggregator refetch``, ``aggregator resummarize``) instead of found in the
backlog: an article is fetched by the very function the stage uses, so with
the same address guard (a feed's link may reach an internal address only
when the feed itself is on one), size cap, timeouts and redirect rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from aggregator.config import Settings
from aggregator.fetch import Fetcher

# the summaries stage's own units of work, so that a refetch is an ordinary fetch
from aggregator.stages.summaries import _fetch_article, _summarize_item
from aggregator.store import PendingItem, Store
from aggregator.types import Summary

__all__ = ["Reworked", "refetch", "resummarize"]

log = logging.getLogger("aggregator.rework")


@dataclass(frozen=True)
class Reworked:
    """One item done again: its article fetch's outcome (``ok``, ``too little
    text``, ``failed: ...``, or ``no link``) and whether a summary was written."""

    item_id: int
    url: str | None
    article: str
    summarised: bool


def refetch(settings: Settings, store: Store, fetcher: Fetcher, item_ids: Sequence[int],
            now: datetime) -> list[Reworked]:
    """Fetch these items' articles again and summarise them from what came.
    A failed fetch keeps the summary there was (and is retried as usual)."""
    out = []
    for item in store.work_items(item_ids):
        if not item.url:
            out.append(Reworked(item.id, None, "no link", False))
            continue
        article = _fetch_article(fetcher, item)
        wrote = _summarize_item(store, item, article, now, settings.summarizer)
        out.append(Reworked(item.id, item.url, article.status, wrote))
    return out


def resummarize(settings: Settings, store: Store, *, now: datetime, feed_id: int | None = None,
                since: datetime | None = None,
                progress: Callable[[int], None] = lambda n: None) -> int:
    """Write every matching item's summary anew (by its feed's method, else the
    setting), from its article when there is one, else its own text. Each is
    one small transaction. Returns how many were written."""
    from aggregator.summarize import summarize

    done = 0
    for item in store.work_items(feed_id=feed_id, since=since):
        text, source = _text(item)
        try:
            summary = summarize(text, language=item.language, title=item.title,
                                summarizer=item.summarizer or settings.summarizer)
        except Exception as e:  # a bug in one summary: recorded on it, as the stage does
            log.debug("item %d: cannot summarise", item.id, exc_info=e)
            log.error("item %d (%s): cannot summarise: %s: %s", item.id, item.url,
                      type(e).__name__, e)
            summary = Summary((), (), "none:error")
        if store.save_summary(item.id, item.content_hash, summary, now, source=source):
            done += 1
            progress(done)
    return done


def _text(item: PendingItem) -> tuple[str, str]:
    if item.article_status == "ok" and item.article_text:
        return item.article_text, "article"
    return item.content_text or "", "item"
