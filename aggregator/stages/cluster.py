"""The clustering stage: every stored item into its story, as items arrive.

A stage after storing (like summaries), never on the poll path: ``update``
finishes it before it exits, the daemon runs it on its own executor. One batch
of items not yet clustered, oldest first::

    items   = store.unclustered_items(limit)            # story_id IS NULL
    store.story_window(window, features of the batch)   # what the pass's window lacks:
                                                        # candidate stories, frequencies
    assign(items, window)                               # stories.py's rules, in memory
    store.save_stories(window, ...)                     # one transaction

The store's candidate index (``story_terms``) holds the heaviest centroid
terms of the stories active in the time window only; stories that go quiet
retire from it, so memory and index stay bounded by the window, not by the
database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aggregator import stories
from aggregator.stories import Cluster, ClusterItem, ItemFeatures, Params, Window

__all__ = ["ClusterItem", "Window", "assign", "cluster_pending", "keys_of"]

log = logging.getLogger("aggregator.cluster")

BATCH = 1000


def keys_of(f: ItemFeatures) -> list[str]:
    """The same-article keys of an item, strongest first."""
    keys = []
    if f.canonical_url:
        keys.append("u:" + f.canonical_url)
    if f.guid_key:
        keys.append("g:" + f.guid_key)
    if f.title_key:
        keys.append("t:" + f.title_key)
    return keys


def features_of(item: ClusterItem, params: Params) -> ItemFeatures:
    return stories.features(item.title, item.texts, language=item.language, guid=item.guid,
                            url=item.url, feed_url=item.feed_url, text_words=params.text_words,
                            name_pairs=params.name_pairs)


def assign(batch: Sequence[tuple[ClusterItem, ItemFeatures]], w: Window, params: Params) -> None:
    """Put each item of the batch, in order, into its story in ``w``."""
    seen: list[stories.Seen] = []
    for item, f in batch:
        vec = stories.vector(f, w.df, w.n, params)
        target = _same_article(item, f, w, params)
        if target is None:
            target, _ = stories.choose(vec, f, item.feed_id, item.when,
                                       w.candidates(vec, params), params, w.df, w.n)
        if target is None:
            target = Cluster(w.next_new, {}, 0, set(), item.when, item.when)
            w.next_new -= 1
            w.titles[target.id] = (item.id, item.title)
            w.clusters[target.id] = target
        stories.join(target, vec, f, params)
        target.count += 1
        target.feeds.add(item.feed_id)
        target.first_seen = min(target.first_seen, item.when)
        target.last_seen = max(target.last_seen, item.when)
        target.has_text = target.has_text or f.has_text
        target.changed = True
        if target.count < 8 or target.count % 4 == 0:  # a grown story's top terms move slowly
            w.reindex(target, params)
            if target.count % 2 == 0:
                target = w.merge_near(target, params)
        for key in keys_of(f):
            if key.startswith("t:") or key not in w.keys:
                w.keys[key] = w.new_keys[key] = target.id
        terms = f.terms()
        w.df.update(terms)
        w.df_delta.update(terms)
        w.n += 1
        w.assigned.append((item.id, target.id))
        seen.append((item, f, vec, len(w.assigned) - 1))
    w.recheck(params)  # second looks, now that the batch's stories have grown
    before = list(w.assigned)
    if w.refine(seen, params):
        _follow_moves(seen, before, w)


def _follow_moves(seen: Sequence[stories.Seen], before: Sequence[tuple[int, int]],
                  w: Window) -> None:
    """What points at an item ``refine`` moved follows it: its URL and guid keys (one
    article, one story), and the first item (title) of the story it left, which
    becomes that story's first remaining item."""
    first: dict[int, tuple[int, str]] = {}
    for item, f, _, k in seen:
        old, new = before[k][1], w.assigned[k][1]
        if old != new:
            for key in keys_of(f):
                if not key.startswith("t:") and w.keys.get(key) == old:
                    w.keys[key] = w.new_keys[key] = new
        else:
            first.setdefault(new, (item.id, item.title))
    for item, _, _, k in seen:
        old, new = before[k][1], w.assigned[k][1]
        if old != new and w.titles.get(old, (None,))[0] == item.id and old in first:
            w.titles[old] = first[old]


def _same_article(item: ClusterItem, f: ItemFeatures, w: Window,
                  params: Params) -> Cluster | None:
    """The story of the same article (URL or guid), or of the same headline in
    another feed while that story is active."""
    for key in keys_of(f):
        cid = w.keys.get(key)
        c = w.clusters.get(cid) if cid is not None else None
        if c is None:
            continue
        if key.startswith("t:"):
            if item.feed_id in c.feeds or not c.active_at(item.when, params.window):
                continue
        return c
    return None


def cluster_pending(store: object, params: Params | None = None, *, limit: int = BATCH,
                    clock: Callable[[], datetime] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> int:
    """Cluster every item without a story, in batches; returns how many."""
    from aggregator.store import Store

    assert isinstance(store, Store)
    params = params or Params()
    now = (clock or (lambda: datetime.now(UTC)))()
    done = 0
    w = Window()  # the pass's stories and statistics, filled as batches need them
    while not (should_stop and should_stop()):
        items = store.unclustered_items(limit, now=now, text_chars=params.text_words * 9)
        if not items:
            break
        batch = [(item, features_of(item, params)) for item in items]
        store.story_window(w, batch, params)
        assign(batch, w, params)
        newest = min(now, max(item.when for item in items))
        store.save_stories(w, params, retire_before=newest - params.window)
        done += len(items)
        if len(items) < limit:
            break
    if done:
        log.debug("clustered %d items into stories", done)
    return done
