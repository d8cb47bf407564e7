"""Pure rules for what an item says, for story matching (``stories.py``):
the keys that make it the same article as another (canonical URL, publisher
and guid, headline) and its words (tokens, stems, stop words, names).

No database, no network, no clock.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aggregator.sentences import memo

__all__ = ["ItemFeatures", "canonical_url", "english_stem", "features", "publisher", "title_key"]

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


def title_key(title: str | None) -> str | None:
    """A headline compared for the exact-title rule: case, accents, punctuation
    and spacing ignored; None for headlines too short to tell stories apart."""
    if not title:
        return None
    if title.isascii():
        words = _WORD.findall(title.lower())
    else:
        t = unicodedata.normalize("NFKD", title).casefold()
        words = ["".join(c for c in w if not unicodedata.combining(c))
                 for w in _WORD.findall(t) if not unicodedata.combining(w[0])]
    key = " ".join(words)
    return key if len(words) >= 4 else None


_VOWELS = frozenset("aeiouy")
_KEEP = frozenset("news series species always perhaps towards afterwards united".split())


def english_stem(word: str) -> str:
    """A light English stemmer for matching, not for display: plurals, ``-ing``,
    ``-ed``, ``-ly`` (after Porter's first step). sumy's Snowball stemmers need
    nltk, whose import alone cost a fresh ``update`` half a second of CPU."""
    n = len(word)
    if n <= 3 or not word.isalpha() or word in _KEEP:
        return word
    if word.endswith("s"):
        if word.endswith("ies") and n > 4:
            return word[:-3] + "y"
        if word.endswith("sses"):
            return word[:-2]
        if word.endswith(("ches", "shes", "xes", "zes")):
            return word[:-2]
        if not word.endswith(("ss", "us", "is")):
            word = word[:-1]
            n -= 1
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and n - len(suffix) >= 3:
            stem = word[:-len(suffix)]
            if not _VOWELS.intersection(stem):
                break
            if stem[-1] == stem[-2] and stem[-1] not in "lsz":
                stem = stem[:-1]
            return stem
    if word.endswith("ly") and n > 5:
        return word[:-2]
    if word.endswith("e") and n > 4:  # seize, seized: seiz
        return word[:-1]
    return word


@lru_cache(maxsize=16)
def _language_tools(language: str) -> tuple[Callable[[str], str], frozenset[str]]:
    """(stem, stop words) for a language: English by the light rules above and
    sumy's list of stop words (read without importing sumy's modules), others
    by sumy; English when sumy lacks the language."""
    if language == "english":
        from importlib.resources import files

        text = (files("sumy") / "data" / "stopwords" / "english.txt").read_text("utf-8")
        return memo(english_stem), frozenset(w.strip().lower() for w in text.split())
    from sumy.nlp.stemmers import Stemmer
    from sumy.utils import get_stop_words

    try:
        stemmer = Stemmer(language)
        stemmer("test")  # greek and polish need extra packages, found only on first use
        stop = frozenset(w.lower() for w in get_stop_words(language))
    except (LookupError, ValueError):
        return _language_tools("english")
    return memo(stemmer), stop


def _language(code: str | None) -> str:
    if not code or code.strip().lower()[:2] == "en":
        return "english"
    from aggregator.summarize import language_name

    return language_name(code) or "english"


@lru_cache(maxsize=256)
def _tools_for(code: str | None) -> tuple[Callable[[str], str], frozenset[str]]:
    return _language_tools(_language(code))


@dataclass(frozen=True)
class ItemFeatures:
    """What the rules know of one item: its words (stemmed, stop words out),
    which of them are names or numbers, and the keys that make it the same
    article as another."""

    title_terms: Mapping[str, float]
    text_terms: Mapping[str, float]
    names: frozenset[str]
    canonical_url: str | None
    guid_key: str | None
    title_key: str | None

    @property
    def has_text(self) -> bool:
        return bool(self.text_terms)

    def terms(self) -> set[str]:
        return set(self.title_terms) | set(self.text_terms)


def _count(text: str, stem: Callable[[str], str], stop: frozenset[str], limit: int,
           counts: dict[str, float], caps: dict[str, float], pairs: bool = False) -> int:
    """Add the stems of the first ``limit`` words of ``text`` to ``counts``, and
    of those written with a capital or a digit to ``caps``; the words read."""
    words = _WORD.findall(text[:limit * 9])[:limit]
    prev = ""  # the previous word's stem when it was capitalised
    for word in words:
        lower = word.lower()
        if lower in stop or (len(lower) < 2 and not lower.isdigit()):
            prev = ""
            continue
        s = stem(lower)
        counts[s] = counts.get(s, 0.0) + 1.0
        if not word[0].islower():
            caps[s] = caps.get(s, 0.0) + 1.0
            if prev and pairs:
                pair = prev + " " + s
                counts[pair] = counts.get(pair, 0.0) + 1.0
                caps[pair] = caps.get(pair, 0.0) + 1.0
            prev = s
        else:
            prev = ""
    return len(words)


def features(title: str | None, texts: Iterable[str | None], *, language: str | None,
             guid: str | None, url: str | None, feed_url: str | None,
             text_words: int = 150, name_pairs: bool = True) -> ItemFeatures:
    """The item's words and same-article keys. A name is a word a text always
    writes with a capital (``Lorca``; not ``The`` nor ``Earthquake`` when the text
    also says ``earthquake``) or a number: names, places and figures tell one
    event from another of the same kind. A headline in title case names nothing
    by itself; in sentence case its capitalised words after the first do."""
    stem, stop = _tools_for(language)
    text_terms: dict[str, float] = {}
    caps: dict[str, float] = {}
    budget = text_words
    for text in texts:
        if text and budget > 0:
            budget -= _count(text, stem, stop, budget, text_terms, caps, name_pairs)
    names = {s for s, n in caps.items() if n >= text_terms[s]}
    title_terms: dict[str, float] = {}
    title_caps: dict[str, float] = {}
    if title:
        words = _WORD.findall(title[:400])
        _count(title, stem, stop, 100, title_terms, title_caps)
        capitalised = sum(1 for w in words[1:] if not w[0].islower() and len(w) > 3)
        longer = sum(1 for w in words[1:] if len(w) > 3)
        if not text_terms and capitalised * 2 <= longer:  # a headline in sentence case
            first = stem(words[0].lower()) if words else ""
            names.update(s for s, n in title_caps.items()
                         if n >= title_terms[s] and (s != first or n > 1))
        names.update(s for s in title_terms if s[0].isdigit())
    guid_key = None
    if guid and guid.strip():
        guid_key = f"{publisher(feed_url)}\t{guid.strip()}"
    return ItemFeatures(title_terms, text_terms, frozenset(names), canonical_url(url),
                        guid_key, title_key(title))
