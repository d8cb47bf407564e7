"""Pure story-matching rules: which stored items tell the same story.

No database, no network, no clock (like ``decide.py``); the cluster stage
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
2. Otherwise the item becomes a TF-IDF vector (``vector``: title words always,
   summary and article text when there are any; stop words and stems from
   sumy's lists for the item's language; document frequencies kept
   incrementally by the caller) and joins the active story whose centroid is
   most similar (cosine), if that is above the threshold and the story was
   seen within the time window; else it starts a new story.
3. Same event against same topic: two earthquakes in one week share most of
   their vocabulary ("quake", "magnitude", "killed"); what differs are names,
   places and numbers. Words capitalised inside a sentence and numbers weigh
   more, and the thresholds (tuned on ECB+, where every topic holds two
   different events, and on Google-News headlines) keep them apart.
4. Stories not seen for a window retire and are no longer candidates.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "Cluster",
    "ClusterItem",
    "ItemFeatures",
    "Params",
    "Window",
    "add_to_centroid",
    "canonical_url",
    "choose",
    "cosine",
    "features",
    "idf",
    "norm",
    "publisher",
    "title_key",
    "vector",
]

# --- canonical URLs -----------------------------------------------------------------

# Query parameters that only say how a reader came to the page, never which page.
_TRACKING_PREFIXES = ("utm_", "at_", "mc_", "pk_", "piwik_", "hsa_", "oly_", "_hs")
_TRACKING = frozenset({
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "igshid",
    "mkt_tok", "_ga", "_gl", "ref_src", "ref_url", "cmpid", "ncid", "ocid", "smid", "sr_share",
    "xtor", "ito", "cmp", "spm", "s_cid", "rss", "feedtype", "icid", "intcmp", "wt.mc_id",
    "mbid", "share", "ns_mchannel", "ns_source", "ns_campaign", "ns_linkname", "ns_fee",
    "__twitter_impression", "cid", "src",
})  # fmt: skip


def canonical_url(url: str | None) -> str | None:
    """The URL with what does not name the page dropped: the fragment, tracking
    parameters (``utm_*``, ``at_medium``, ``fbclid``...), a default port, the
    case of scheme and host. Everything else (path, other parameters and their
    order) is kept: ``?id=3`` names a page. None for what is not an http(s) URL."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not _tracking(k)]
    return urlunsplit((scheme, host, parts.path or "/", urlencode(query), ""))


def _tracking(name: str) -> bool:
    n = name.lower()
    return n in _TRACKING or n.startswith(_TRACKING_PREFIXES)


def publisher(url: str | None) -> str:
    """Who publishes a feed, from its URL or site URL: the registrable part of
    the host (``feeds.bbci.co.uk`` -> ``bbci.co.uk``), so that two feeds of one
    site share their guids' namespace."""
    try:
        host = (urlsplit(url or "").hostname or "").lower().rstrip(".")
    except ValueError:
        return ""
    labels = host.split(".")
    if len(labels) <= 2 or host.replace(".", "").isdigit():
        return host
    # co.uk, com.au, org.br: a short second-level label under a country code
    keep = 3 if len(labels[-1]) == 2 and len(labels[-2]) <= 3 else 2
    return ".".join(labels[-keep:])


# --- words --------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:['’.][^\W_]+)*", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?:;\"“”])\s+|\n")


def title_key(title: str | None) -> str | None:
    """A headline compared for the exact-title rule: case, accents, punctuation
    and spacing ignored; None for headlines too short to tell stories apart."""
    if not title:
        return None
    t = unicodedata.normalize("NFKD", title).casefold()
    words = [w for w in _WORD.findall(t) if not unicodedata.combining(w[0])]
    key = " ".join("".join(c for c in w if not unicodedata.combining(c)) for w in words)
    return key if len(words) >= 4 else None


@lru_cache(maxsize=16)
def _language_tools(language: str) -> tuple[Callable[[str], str], frozenset[str]]:
    """(stem, stop words) from sumy for a language, English when sumy lacks it."""
    from sumy.nlp.stemmers import Stemmer
    from sumy.utils import get_stop_words

    try:
        stemmer = Stemmer(language)
        stemmer("test")  # greek and polish need extra packages, found only on first use
        stop = frozenset(w.lower() for w in get_stop_words(language))
    except (LookupError, ValueError):
        if language == "english":
            raise
        return _language_tools("english")
    from aggregator.summarize import memo

    return memo(stemmer), stop


def _language(code: str | None) -> str:
    from aggregator.summarize import language_name

    return language_name(code) or "english"


@dataclass(frozen=True)
class ItemFeatures:
    """What the rules know of one item: its words (stemmed, stop words out) and
    the keys that make it the same article as another."""

    title_terms: Mapping[str, float]
    text_terms: Mapping[str, float]
    canonical_url: str | None
    guid_key: str | None
    title_key: str | None

    @property
    def has_text(self) -> bool:
        return bool(self.text_terms)

    def terms(self) -> set[str]:
        return set(self.title_terms) | set(self.text_terms)


def _terms(text: str, stem: Callable[[str], str], stop: frozenset[str],
           boost: float, limit: int) -> Counter[str]:
    """Word counts; a word capitalised inside a sentence, or a number, counts
    ``boost`` times: names, places and figures tell one event from another."""
    inner: list[str] = []
    firsts: list[str] = []  # capitalised whatever they are
    n = 0
    for sentence in _SENTENCE.split(text):
        words = _WORD.findall(sentence)
        if words:
            firsts.append(words[0].lower())
            inner.extend(words[1:])
            n += len(words)
            if n >= limit:
                break
    counts: Counter[str] = Counter()
    for word, tf in Counter(inner).items():
        lower = word.lower()
        if lower in stop or (len(lower) < 2 and not lower.isdigit()):
            continue
        first = word[0]
        counts[stem(lower)] += tf * boost if first.isdigit() or first.isupper() else tf
    for lower in firsts:
        if lower not in stop and (len(lower) > 1 or lower.isdigit()):
            counts[stem(lower)] += boost if lower[0].isdigit() else 1.0
    return counts


def features(title: str | None, texts: Iterable[str | None], *, language: str | None,
             guid: str | None, url: str | None, feed_url: str | None,
             params: Params) -> ItemFeatures:
    """The item's words and same-article keys."""
    stem, stop = _language_tools(_language(language))
    title_terms = _terms(title or "", stem, stop, 1.0, 100)  # headline case: all capitals
    text_terms: Counter[str] = Counter()
    budget = params.text_words
    for text in texts:
        if text and budget > 0:
            text_terms.update(_terms(text, stem, stop, params.name_boost, budget))
            budget -= len(text.split())
    guid_key = None
    if guid and guid.strip():
        guid_key = f"{publisher(feed_url)}\t{guid.strip()}"
    return ItemFeatures(title_terms, text_terms, canonical_url(url), guid_key, title_key(title))


# --- vectors ------------------------------------------------------------------------


def idf(df: float, n: float) -> float:
    """Smoothed inverse document frequency over ``n`` items seen so far."""
    return math.log((n + 1.0) / (df + 1.0)) + 1.0


def vector(f: ItemFeatures, df: Mapping[str, float], n: float, params: Params) -> dict[str, float]:
    """The item as a unit TF-IDF vector (sublinear term frequency; title words
    weigh ``title_weight`` more than text words), its ``item_terms`` heaviest
    terms kept."""
    raw: dict[str, float] = {}
    for term, tf in f.text_terms.items():
        raw[term] = 1.0 + math.log(tf) if tf >= 1 else tf
    title_weight = params.title_weight if f.has_text else 1.0
    for term, tf in f.title_terms.items():
        raw[term] = raw.get(term, 0.0) + title_weight * (1.0 + math.log(tf) if tf >= 1 else tf)
    weighted = {t: w * idf(df.get(t, 0.0), n) for t, w in raw.items()}
    return _unit(_top(weighted, params.item_terms))


def _top(vec: Mapping[str, float], k: int) -> dict[str, float]:
    if len(vec) <= k:
        return dict(vec)
    return dict(sorted(vec.items(), key=lambda tw: (-tw[1], tw[0]))[:k])


def _unit(vec: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(w * w for w in vec.values()))
    return {t: w / norm for t, w in vec.items()} if norm else {}


def norm(vec: Mapping[str, float]) -> float:
    return math.sqrt(sum(w * w for w in vec.values()))


def cosine(a: Mapping[str, float], b: Mapping[str, float], norm_b: float | None = None) -> float:
    """Cosine of two sparse vectors, ``a`` a unit vector (an item's), ``b`` any
    (a centroid, whose norm its cluster keeps)."""
    get = b.get
    dot = sum(w * get(t, 0.0) for t, w in a.items())
    if not dot:
        return 0.0
    return dot / ((norm_b if norm_b is not None else norm(b)) * (norm(a) or 1.0))


def add_to_centroid(centroid: Mapping[str, float], vec: Mapping[str, float],
                    k: int) -> dict[str, float]:
    """The running centroid (the sum of its members' unit vectors) with one more
    member, bounded to its ``k`` heaviest terms."""
    out = dict(centroid)
    for t, w in vec.items():
        out[t] = out.get(t, 0.0) + w
    return _top(out, k)


# --- the decision -------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """The knobs, tuned with ``bench/stories.py`` (ECB+ and UCI News)."""

    window: timedelta = timedelta(days=3)  # a story seen no later than this is a candidate
    threshold_text: float = 0.27  # cosine to join when the item has summary or article text
    threshold_title: float = 0.08  # cosine to join on a headline alone
    title_weight: float = 1.0  # title words against text words, for items with text
    name_boost: float = 2.0  # a capitalised word inside a text's sentence, or a number
    item_terms: int = 60  # heaviest terms kept of an item's vector
    centroid_terms: int = 100  # heaviest terms kept of a story's centroid
    index_terms: int = 20  # centroid terms a story is found by (the candidate index)
    probe_terms: int = 20  # item terms looked up in the candidate index
    text_words: int = 600  # words read of an item's texts


@dataclass
class Cluster:
    """A story as the rules see it: its centroid and what its members share."""

    id: int
    centroid: dict[str, float]
    count: int
    feeds: set[int]
    first_seen: datetime
    last_seen: datetime
    has_text: bool = False
    changed: bool = field(default=False, compare=False)
    norm: float = 0.0  # of the centroid, kept in step with it

    def active_at(self, when: datetime, window: timedelta) -> bool:
        return self.first_seen - window <= when <= self.last_seen + window


def choose(vec: Mapping[str, float], f: ItemFeatures, feed_id: int, when: datetime,
           candidates: Iterable[Cluster], params: Params) -> tuple[Cluster | None, float]:
    """The story an item joins by similarity (with its cosine), or (None, best)
    for a new story. Only stories active around ``when`` are candidates; an item
    with no text never joins a story made of its own feed's items alone (sites
    reuse titles: "Letters", "Weather"); it may join one that other sources
    share."""
    best, best_sim = None, 0.0
    for c in candidates:
        if not c.active_at(when, params.window):
            continue
        if c.feeds == {feed_id} and not (f.has_text and c.has_text):
            continue  # the feed's own headlines only: sites reuse titles
        sim = cosine(vec, c.centroid, c.norm or None)
        threshold = params.threshold_text if f.has_text and c.has_text else params.threshold_title
        if sim >= threshold and sim > best_sim:
            best, best_sim = c, sim
    return best, best_sim


def index_terms(centroid: Mapping[str, float], params: Params) -> list[str]:
    """The terms a story is found by in the candidate index."""
    return list(_top(centroid, params.index_terms))


def probe_terms(vec: Mapping[str, float], params: Params) -> list[str]:
    """The item terms looked up in the candidate index."""
    return list(_top(vec, params.probe_terms))


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


@dataclass
class Window:
    """The stories an item may join and the statistics it is weighed with: loaded
    from the store for one batch, or kept across batches (the benchmark)."""

    clusters: dict[int, Cluster] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)  # same-article keys -> story
    df: dict[str, float] = field(default_factory=dict)  # document frequency per term
    n: float = 0.0  # items counted in df
    index: dict[str, set[int]] = field(default_factory=dict)  # term -> candidate stories
    indexed: dict[int, list[str]] = field(default_factory=dict)
    next_new: int = -1  # new stories get negative ids until the store numbers them
    new_keys: dict[str, int] = field(default_factory=dict)
    df_delta: dict[str, float] = field(default_factory=dict)
    assigned: list[tuple[int, int]] = field(default_factory=list)  # (item id, story id)
    titles: dict[int, tuple[int, str | None]] = field(default_factory=dict)  # new: first item

    def add(self, c: Cluster, params: Params) -> None:
        self.clusters[c.id] = c
        self.reindex(c, params)

    def reindex(self, c: Cluster, params: Params) -> None:
        for t in self.indexed.get(c.id, ()):
            ids = self.index.get(t)
            if ids is not None:
                ids.discard(c.id)
                if not ids:
                    del self.index[t]
        terms = index_terms(c.centroid, params)
        self.indexed[c.id] = terms
        for t in terms:
            self.index.setdefault(t, set()).add(c.id)

    def retire(self, before: datetime) -> None:
        """Forget stories last seen before ``before`` (the benchmark's window)."""
        for cid in [cid for cid, c in self.clusters.items() if c.last_seen < before]:
            for t in self.indexed.pop(cid, ()):
                ids = self.index.get(t)
                if ids is not None:
                    ids.discard(cid)
                    if not ids:
                        del self.index[t]
            del self.clusters[cid]
