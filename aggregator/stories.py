"""Pure story-matching rules: which stored items tell the same story.

No database, no network, no clock (like ``decide.py``); what an item says
(same-article keys, words, names) is ``storywords.py``; the cluster stage
(``stages/cluster.py``) feeds items through these rules in the order they
arrived and keeps their state in the store. The method is single-pass
clustering of a news stream against each story's running centroid, after
Miranda et al. 2018 ("Multilingual Clustering of Streaming News", EMNLP) and
Google News' public description (titles, text, publication time):

1. The same article joins its story directly: the same canonical URL
   (``canonical_url``: fragment and tracking parameters such as ``utm_*`` and
   the BBC's ``at_medium`` dropped), or the same guid across feeds of one
   publisher. The same headline in two *different* feeds joins too
   (NewsBlur's first rule, an exact title); in one feed never: sites reuse
   titles ("Letters", "Weather").
2. Otherwise the item becomes a TF-IDF vector (``vector``: the first
   ``text_words`` words of its summary and article text when there are any,
   its title words weighing ``title_weight`` more; stop words out, stems by a
   light English stemmer or sumy's for other languages; document frequencies
   kept incrementally by the caller, the IDF smoothed by ``idf_prior``
   imagined items). The index of the window's stories (their heaviest
   centroid terms) gives a shortlist; the item joins the shortlisted active
   story whose centroid is most similar (cosine) if that is above the
   threshold (``threshold_text`` when both have text, ``threshold_title`` for
   headlines); else it starts a new story.
3. Same event against same topic: two earthquakes in one week share most of
   their vocabulary ("quake", "magnitude", "killed"); what differs are names,
   places and numbers. A name is a word a text always capitalises (or two such
   words in a row, or a number); names weigh ``name_boost`` more, and an item
   whose names disagree with a story's names (``names_gate``) does not join it.
4. Generic words never make a story: when an item and a story share a single
   term, that term must be in at most ``generic_share`` of the items seen (on a
   young database "story" in "Alpha story" and "Beta story" is as rare as any
   word by IDF, but not by this count).
5. Two stories that grow together become one (``merge_text``,
   ``merge_title``: their centroids' cosine), the smaller into the larger; a
   story the same-feed rule kept apart stays apart.
6. Stories not seen for a window retire and are no longer candidates.

Tuned with ``bench/stories.py`` on one half of ECB+ (news texts, two events
per topic) and of the UCI Google-News headlines; the other halves held out.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter

from aggregator.storywords import ItemFeatures, canonical_url, features, publisher, title_key

__all__ = [
    "Cluster",
    "ClusterItem",
    "ItemFeatures",
    "Params",
    "Window",
    "join",
    "canonical_url",
    "choose",
    "cosine",
    "features",
    "idf",
    "norm",
    "publisher",
    "title_key",
    "top_terms",
    "vector",
]

# --- vectors ------------------------------------------------------------------------


def idf(df: float, n: float, prior: float = 0.0) -> float:
    """Inverse document frequency over ``n`` items seen so far, smoothed by
    ``prior`` imagined items in which the term did not occur: on a young
    database every word looks rare, and the prior keeps a word seen in half of
    ten items from weighing like a name."""
    return math.log((n + prior + 1.0) / (df + 1.0))


def vector(f: ItemFeatures, df: Mapping[str, float], n: float, params: Params) -> dict[str, float]:
    """The item as a unit TF-IDF vector: sublinear term frequency, title words
    ``title_weight`` more than text words, names and numbers ``name_boost`` more;
    its ``item_terms`` heaviest terms kept."""
    log = math.log
    get = df.get
    base = n + params.idf_prior + 1.0
    boost = params.name_boost if f.text_terms else params.name_boost_title
    names = f.names
    raw: dict[str, float] = {}
    for term, tf in f.text_terms.items():
        raw[term] = 1.0 + log(tf)
    tw = params.title_weight if f.text_terms else 1.0
    for term, tf in f.title_terms.items():
        raw[term] = raw.get(term, 0.0) + tw * (1.0 + log(tf))
    out: dict[str, float] = {}
    for term, w in raw.items():
        i = log(base / (get(term, 0.0) + 1.0))
        if i > 0.0:
            out[term] = w * i * (boost if term in names else 1.0)
    return _unit(top_terms(out, params.item_terms))


def top_terms(vec: Mapping[str, float], k: int) -> dict[str, float]:
    """The ``k`` heaviest terms (ties: the first met)."""
    if len(vec) <= k:
        return dict(vec)
    if k * 4 < len(vec):
        return dict(heapq.nlargest(k, vec.items(), key=itemgetter(1)))
    return dict(sorted(vec.items(), key=itemgetter(1), reverse=True)[:k])


def _unit(vec: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(w * w for w in vec.values()))
    return {t: w / norm for t, w in vec.items()} if norm else {}


def norm(vec: Mapping[str, float]) -> float:
    return math.sqrt(sum(w * w for w in vec.values()))


def dot(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    return sum(a[t] * b[t] for t in a.keys() & b.keys())


def cosine(a: Mapping[str, float], b: Mapping[str, float], norm_b: float | None = None) -> float:
    """Cosine of a unit vector ``a`` (an item's) and any ``b`` (a centroid,
    whose norm its cluster keeps)."""
    d = dot(a, b)
    return d / (norm_b if norm_b is not None else norm(b) or 1.0) if d else 0.0


# --- the decision -------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """The knobs, tuned with ``bench/stories.py`` on one half of ECB+ and of the
    UCI headlines (the other halves held out)."""

    window: timedelta = timedelta(days=3)  # a story seen no later than this is a candidate
    threshold_text: float = 0.28  # centroid cosine to join, item and story with text
    threshold_title: float = 0.06  # centroid cosine to join on headlines
    names_gate: float = 0.1  # names' cosine an item with text needs to join a story with text
    generic_share: float = 0.2  # a term in more of the items seen than this is generic
    title_weight: float = 1.5  # title words against text words, for items with text
    name_boost: float = 3.0  # names and numbers, in an item with text
    name_boost_title: float = 1.0  # in a headline alone
    idf_prior: float = 20.0  # imagined items in which no term occurs (see idf)
    item_terms: int = 50  # heaviest terms kept of an item's vector
    centroid_terms: int = 100  # heaviest terms kept of a story's centroid
    index_terms: int = 20  # centroid terms a story is found by (the candidate index)
    probe_terms: int = 20  # item terms looked up in the candidate index
    shortlist: int = 6  # candidates scored exactly
    posting_cap: int = 200  # stories an index term may head and still find candidates
    text_words: int = 150  # words read of an item's texts
    name_pairs: bool = True  # two capitalised words in a row count as one more term
    merge_text: float = 0.6  # centroids' cosine at which two stories with text become one
    merge_title: float = 0.15  # two stories of headlines
    recheck_size: int = 2  # stories this small, begun in a batch, weighed again at its end
    recheck_text: float = 0.8  # ... join a larger one at this share of threshold_text
    refine: bool = True  # at a batch's end, items move to a story nearer than their own


@dataclass
class Cluster:
    """A story as the rules see it: its centroids (of all terms, of names) and
    what its members share."""

    id: int
    centroid: dict[str, float]
    count: int
    feeds: set[int]
    first_seen: datetime
    last_seen: datetime
    has_text: bool = False
    changed: bool = field(default=False, compare=False)
    norm: float = 0.0  # of the centroid, kept in step with it
    names: dict[str, float] = field(default_factory=dict)  # centroid of the names' vectors
    names_norm: float = 0.0
    stored_terms: frozenset[str] = field(default_factory=frozenset, compare=False)  # in store

    def active_at(self, when: datetime, window: timedelta) -> bool:
        return self.first_seen - window <= when <= self.last_seen + window


def score(vec: Mapping[str, float], f: ItemFeatures, c: Cluster, params: Params,
          df: Mapping[str, float], n: float, names: Mapping[str, float]) -> float:
    """The centroid's cosine over its bar (>= 1 joins); 0 when the item and the
    story share a single term that is generic (in more than ``generic_share``
    of the items seen: on a small corpus "story" in "Alpha story" and "Beta
    story"), or when both have text and their names disagree (``names_gate``;
    ``names`` is the item's ``name_vector``)."""
    text = f.has_text and c.has_text
    centroid = c.centroid
    shared = vec.keys() & centroid.keys()
    if len(shared) < 2:
        if not shared or df.get(next(iter(shared)), 0.0) > params.generic_share * n:
            return 0.0
    d = sum(vec[t] * centroid[t] for t in shared)
    sim = d / (c.norm or norm(c.centroid) or 1.0)
    if text and names and params.names_gate and c.names:
        if cosine(names, c.names, c.names_norm or None) < params.names_gate:
            return 0.0
    return sim / (params.threshold_text if text else params.threshold_title)


def choose(vec: Mapping[str, float], f: ItemFeatures, feed_id: int, when: datetime,
           candidates: Iterable[Cluster], params: Params, df: Mapping[str, float],
           n: float) -> tuple[Cluster | None, float]:
    """The story an item joins by similarity (with its score), or (None, best)
    for a new story. Only stories active around ``when`` are candidates; an item
    with no text never joins a story made of its own feed's items alone (sites
    reuse titles: "Letters", "Weather"); it may join one that other sources
    share."""
    best, best_score = None, 0.0
    names = name_vector(vec, f) if f.has_text and params.names_gate else {}
    for c in candidates:
        if not c.active_at(when, params.window):
            continue
        if c.feeds == {feed_id} and not (f.has_text and c.has_text):
            continue  # the feed's own headlines only: sites reuse titles
        s = score(vec, f, c, params, df, n, names)
        if s > best_score:
            best, best_score = c, s
    if best_score >= 1.0:
        return best, best_score
    return None, best_score


def index_terms(centroid: Mapping[str, float], params: Params) -> list[str]:
    """The terms a story is found by in the candidate index."""
    return list(top_terms(centroid, params.index_terms))


def probe_terms(vec: Mapping[str, float], params: Params) -> list[str]:
    """The item terms looked up in the candidate index."""
    return list(top_terms(vec, params.probe_terms))


def name_vector(vec: Mapping[str, float], f: ItemFeatures) -> dict[str, float]:
    """The names and numbers of an item's vector, as a unit vector."""
    names = f.names
    return _unit({t: w for t, w in vec.items() if t in names})


def _grow(centroid: dict[str, float], sq: float, vec: Mapping[str, float],
          k: int) -> float:
    """Add ``vec`` to ``centroid`` in place; its squared norm, kept in step.
    The centroid is trimmed to its ``k`` heaviest terms once it holds twice as
    many (trimming at every item cost more than all the rest)."""
    get = centroid.get
    cross = 0.0
    own = 0.0
    for t, w in vec.items():
        old = get(t)
        if old is None:
            centroid[t] = w
        else:
            cross += old * w
            centroid[t] = old + w
        own += w * w
    if len(centroid) > 2 * k:
        top = top_terms(centroid, k)
        centroid.clear()
        centroid.update(top)
        return sum(w * w for w in top.values())
    return sq + 2.0 * cross + own


def join(c: Cluster, vec: Mapping[str, float], f: ItemFeatures, params: Params) -> None:
    """Add an item's vector to the story's centroid and its names to the names
    centroid, norms kept in step."""
    c.norm = math.sqrt(_grow(c.centroid, c.norm * c.norm, vec, params.centroid_terms))
    nv = name_vector(vec, f)
    if nv:
        c.names_norm = math.sqrt(_grow(c.names, c.names_norm * c.names_norm, nv,
                                       params.centroid_terms))


@dataclass(frozen=True)
class ClusterItem:
    """A stored item as the clustering stage reads it."""

    id: int
    feed_id: int
    feed_url: str
    guid: str | None
    url: str | None
    title: str | None
    texts: tuple[str | None, ...]
    language: str | None
    when: datetime


Seen = tuple[ClusterItem, ItemFeatures, Mapping[str, float], int]


@dataclass
class Window:
    """The stories an item may join and the statistics it is weighed with: kept
    for one pass of the stage (loaded from the store as batches need them), or
    across batches in memory (the benchmark)."""

    clusters: dict[int, Cluster] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)  # same-article keys -> story
    df: Counter[str] = field(default_factory=Counter)  # document frequency per term
    n: float = 0.0  # items counted in df
    index: dict[str, dict[int, float]] = field(default_factory=dict)  # term -> story -> weight
    indexed: dict[int, list[str]] = field(default_factory=dict)
    next_new: int = -1  # new stories get negative ids until the store numbers them
    new_keys: dict[str, int] = field(default_factory=dict)
    df_delta: Counter[str] = field(default_factory=Counter)
    assigned: list[tuple[int, int]] = field(default_factory=list)  # (item id, story id)
    titles: dict[int, tuple[int, str | None]] = field(default_factory=dict)  # new: first item
    known_terms: set[str] = field(default_factory=set)  # df loaded from the store
    merged: dict[int, int] = field(default_factory=dict)  # story -> the story it went into

    def add(self, c: Cluster, params: Params) -> None:
        self.clusters[c.id] = c
        self.reindex(c, params)

    def reindex(self, c: Cluster, params: Params) -> None:
        index = self.index
        for t in self.indexed.get(c.id, ()):
            ids = index.get(t)
            if ids is not None:
                ids.pop(c.id, None)
                if not ids:
                    del index[t]
        top = top_terms(c.centroid, params.index_terms)
        scale = 1.0 / (c.norm or 1.0)
        self.indexed[c.id] = list(top)
        for t, w in top.items():
            ids = index.get(t)
            if ids is None:
                index[t] = {c.id: w * scale}
            else:
                ids[c.id] = w * scale

    def candidates(self, vec: Mapping[str, float], params: Params) -> list[Cluster]:
        """The stories most similar to ``vec`` by the index alone (their heaviest
        terms), best first: the shortlist scored exactly."""
        acc: dict[int, float] = {}
        index = self.index
        cap = params.posting_cap
        for t, w in top_terms(vec, params.probe_terms).items():
            ids = index.get(t)
            if ids and len(ids) <= cap:  # a term heading this many stories finds none
                get = acc.get
                for cid, cw in ids.items():
                    acc[cid] = get(cid, 0.0) + w * cw
        if len(acc) > params.shortlist:
            best = heapq.nlargest(params.shortlist, acc.items(), key=itemgetter(1))
        else:
            best = list(acc.items())
        return [self.clusters[cid] for cid, _ in best]

    def merge_near(self, c: Cluster, params: Params) -> Cluster:
        """Merge ``c`` with the active story whose centroid is nearest, if that
        is within ``params.merge``: two stories that began apart and grew
        together are one (the smaller goes into the larger). The story kept."""
        bar = params.merge_text if c.has_text else params.merge_title
        if not bar or not c.norm:
            return c
        probe = top_terms(c.centroid, params.probe_terms)
        for o in self.candidates(probe, params)[:3]:  # itself and the two nearest
            if o is c or not o.norm or not o.active_at(c.last_seen, params.window):
                continue
            if c.has_text != o.has_text:
                continue
            if not c.has_text and any(len(a.feeds) == 1 and a.feeds <= b.feeds
                                      for a, b in ((c, o), (o, c))):
                continue  # what the same-feed rule kept apart stays apart
            shared = c.centroid.keys() & o.centroid.keys()
            if len(shared) < 2 and (not shared or self.df.get(next(iter(shared)), 0.0)
                                    > params.generic_share * self.n):
                continue  # one generic word in common (see score)
            if sum(c.centroid[t] * o.centroid[t] for t in shared) / (c.norm * o.norm) >= bar:
                keep, gone = (o, c) if (o.count, -o.id) >= (c.count, -c.id) else (c, o)
                self.absorb(keep, gone, params)
                return keep
        return c

    def recheck(self, params: Params) -> None:
        """Stories begun small in this batch, weighed again against the stories
        grown since: an item that came before its story had a centroid worth
        matching joins it now (arrival order matters less)."""
        if not params.recheck_size:
            return
        small = sorted((c for c in self.clusters.values()
                        if c.changed and c.has_text and c.count <= params.recheck_size
                        and c.norm), key=lambda c: -c.id)
        bar = params.threshold_text * params.recheck_text
        for c in small:
            if c.id not in self.clusters:
                continue
            vec = {t: w / c.norm for t, w in c.centroid.items()}
            names = _unit(dict(c.names)) if c.names else {}
            best, best_sim = None, 0.0
            for o in self.candidates(top_terms(vec, params.probe_terms), params):
                if o is c or not o.has_text or not o.norm or o.count < c.count:
                    continue
                if not (o.first_seen - params.window <= c.last_seen
                        <= o.last_seen + params.window):
                    continue
                shared = vec.keys() & o.centroid.keys()
                if len(shared) < 2:
                    continue
                sim = sum(vec[t] * o.centroid[t] for t in shared) / o.norm
                if names and params.names_gate and o.names and (
                        cosine(names, o.names, o.names_norm or None) < params.names_gate):
                    continue
                if sim > best_sim:
                    best, best_sim = o, sim
            if best is not None and best_sim >= bar:
                self.absorb(best, c, params)

    def refine(self, seen: Sequence[Seen], params: Params) -> int:
        """Items of this batch (``seen``: each with its features, vector and
        index in ``assigned``) in stories begun in it move to the story whose
        centroid, grown since they came, is nearer than their own's without
        them: what single-pass clustering joined while every story was young.
        How many moved."""
        if not params.refine:
            return 0
        moved = 0
        left: set[int] = set()
        for item, f, vec, k in seen:
            if not f.has_text:
                continue
            cid = self.assigned[k][1]
            c = self.clusters.get(cid)
            if c is None or cid >= 0 or c.count < 2:
                continue
            # the cosine with its own story without it (vec is a unit vector)
            centroid = c.centroid
            d = sum(x * centroid[t] for t, x in vec.items() if t in centroid)
            rest = c.norm * c.norm - 2.0 * d + 1.0
            own_sim = (d - 1.0) / math.sqrt(rest) if rest > 1e-9 else 0.0
            best, best_sim = None, max(own_sim, params.threshold_text)
            names: dict[str, float] | None = None
            for o in self.candidates(vec, params):
                if o is c or not o.has_text or not o.active_at(item.when, params.window):
                    continue
                sim = cosine(vec, o.centroid, o.norm or None)
                if sim <= best_sim:
                    continue
                if names is None:
                    names = name_vector(vec, f) if params.names_gate else {}
                if score(vec, f, o, params, self.df, self.n, names) >= 1.0:
                    best, best_sim = o, sim
            if best is None:
                continue
            own = dict(centroid)
            for t, x in vec.items():
                if t in own:
                    own[t] -= x
            nv = name_vector(vec, f)
            c.centroid = {t: x for t, x in own.items() if x > 1e-9}
            c.norm = norm(c.centroid)
            if nv:
                for t, x in nv.items():
                    if t in c.names:
                        c.names[t] -= x
                c.names = {t: x for t, x in c.names.items() if x > 1e-9}
                c.names_norm = norm(c.names)
            c.count -= 1
            c.changed = True
            join(best, vec, f, params)
            best.count += 1
            best.feeds.add(item.feed_id)
            best.changed = True
            self.assigned[k] = (item.id, best.id)
            self.reindex(c, params)
            self.reindex(best, params)
            left.add(c.id)
            moved += 1
        if left:  # the feeds of the stories items left, when all their items are known
            feeds: dict[int, list[int]] = {}
            for item, _, _, k in seen:
                cid = self.assigned[k][1]
                if cid in left:
                    feeds.setdefault(cid, []).append(item.feed_id)
            for cid, ids in feeds.items():
                c = self.clusters[cid]
                if len(ids) == c.count:
                    c.feeds = set(ids)
        return moved

    def absorb(self, keep: Cluster, gone: Cluster, params: Params) -> None:
        keep.norm = math.sqrt(_grow(keep.centroid, keep.norm * keep.norm, gone.centroid,
                                    params.centroid_terms))
        if gone.names:
            keep.names_norm = math.sqrt(_grow(keep.names, keep.names_norm ** 2, gone.names,
                                              params.centroid_terms))
        keep.count += gone.count
        keep.feeds |= gone.feeds
        keep.first_seen = min(keep.first_seen, gone.first_seen)
        keep.last_seen = max(keep.last_seen, gone.last_seen)
        keep.has_text = keep.has_text or gone.has_text
        keep.changed = True
        for t in self.indexed.pop(gone.id, ()):
            ids = self.index.get(t)
            if ids is not None:
                ids.pop(gone.id, None)
                if not ids:
                    del self.index[t]
        del self.clusters[gone.id]
        self.reindex(keep, params)
        for m, into in self.merged.items():
            if into == gone.id:
                self.merged[m] = keep.id
        self.merged[gone.id] = keep.id
        for k, cid in self.keys.items():
            if cid == gone.id:
                self.keys[k] = keep.id
        for k, cid in self.new_keys.items():
            if cid == gone.id:
                self.new_keys[k] = keep.id
        self.assigned = [(i, keep.id if cid == gone.id else cid) for i, cid in self.assigned]
        if gone.id < 0 and keep.id < 0 and gone.id in self.titles:
            if self.titles[gone.id][0] < self.titles[keep.id][0]:
                self.titles[keep.id] = self.titles[gone.id]

    def renumber(self, real: Mapping[int, int]) -> None:
        """Give new stories the ids the store numbered them with, and start the
        next batch: nothing changed, nothing new."""
        for old, new in real.items():
            if old == new:
                continue
            c = self.clusters.pop(old)
            c.id = new
            self.clusters[new] = c
            terms = self.indexed.pop(old, [])
            self.indexed[new] = terms
            for t in terms:
                ids = self.index[t]
                ids[new] = ids.pop(old)
        for key, cid in self.keys.items():
            if cid < 0:
                self.keys[key] = real[cid]
        for c in self.clusters.values():
            c.changed = False
        self.new_keys.clear()
        self.merged.clear()
        self.df_delta.clear()
        self.assigned.clear()
        self.titles.clear()

    def retire(self, before: datetime) -> list[int]:
        """Forget stories last seen before ``before``; their ids."""
        gone = [cid for cid, c in self.clusters.items() if c.last_seen < before]
        for cid in gone:
            for t in self.indexed.pop(cid, ()):
                ids = self.index.get(t)
                if ids is not None:
                    ids.pop(cid, None)
                    if not ids:
                        del self.index[t]
            del self.clusters[cid]
        if gone:
            self.keys = {k: cid for k, cid in self.keys.items() if cid in self.clusters}
        return gone
