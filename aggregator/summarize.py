"""Article text -> Summary: a Context paragraph and a few Dive deeper points.

Every sentence of a summary is a sentence of the text (white space collapsed),
so a reader never sees words the source did not print.

The default method, in short:

* split the text into sentences offline (``aggregator.sentences``: no NLTK data);
  headings, bylines and repeated lines are not sentences;
* score each sentence by centrality: its word overlap with every other
  sentence (lower-cased, stop words out; stemmed except in English), each pair
  divided by sqrt(|a| |b|), summed - sumy's "Reduction" graph score with a
  cosine-like norm - plus a little for words shared with the title;
* Context = the lead (first real sentence) + the best-scored of the opening
  (the first third of the text, at least its first six sentences): news puts
  the essentials first, so the Context reads as the story's opening;
* Dive deeper = the best-scored of the other sentences (five words or more),
  skipping near-repeats of a chosen one; each group in article order.

On the BBC News Summary set this beats every sumy algorithm on ROUGE-1 and
ROUGE-L at 3 + 5 sentences, and runs at ~1000 articles/s on one core
(``python -m bench.summaries``; figures in bench/results/summaries.json).
A position prior beyond the lead measured no gain there, so it is off
(``Tuning.position_weight``).

Languages: the feed's code (``en-gb``, ``de``, ``fr-FR``) picks sumy's stemmer
and stop words. Text with no language (or a code that is no language) gets a
cheap guess (script, then common function words), else English. A language
sumy has no stemmer for gets the lead sentences and ``method = "lead:<code>"``;
an empty text gets ``"none:empty"``.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from aggregator.sentences import split_sentences, words
from aggregator.types import Summary

__all__ = [
    "language_name",
    "guess_language",
    "score_sentences",
    "split_text",
    "summarize",
    "summarize_file",
    "summarize_sentences",
]

log = logging.getLogger("aggregator.summarize")


@dataclass(frozen=True)
class Tuning:
    """Knobs of the default method; the defaults were chosen with
    ``python -m bench.summaries --tune`` on the BBC set."""

    position_weight: float = 0.0  # prior(i) = scale / (scale + i); the lead is kept anyway
    position_scale: float = 3.0
    title_weight: float = 0.1  # share of the title's words found in the sentence
    sqrt_norm: bool = True  # pair score / sqrt(|a| |b|) instead of / (log |a| + log |b|)
    keep_lead: bool = True  # the first real sentence always opens the context
    context_window: int = 6  # the context is picked from the first max(window, n x share)
    context_share: float = 1 / 3
    redundancy: float = 0.9  # a point sharing this share of its words with a chosen one is skipped
    min_point_words: int = 5  # shorter sentences ("Read more.") never become points


DEFAULT_TUNING = Tuning()
MAX_SENTENCES = 250
# Scored on lower-cased words, unstemmed: Snowball stems cost 0.4 ROUGE-1 on the
# BBC set. Other languages (richer inflection, not measured) are stemmed.
UNSTEMMED = frozenset({"english"})  # sentences scored at most: the pairwise score is quadratic

# ISO 639-1 code -> sumy language name, for the languages handled by "default".
_CODES = {
    "ar": "arabic", "cs": "czech", "da": "danish", "de": "german", "el": "greek",
    "en": "english", "es": "spanish", "fi": "finnish", "fr": "french", "he": "hebrew",
    "hu": "hungarian", "it": "italian", "nb": "norwegian", "nl": "dutch", "nn": "norwegian",
    "no": "norwegian", "pl": "polish", "pt": "portuguese", "ro": "romanian", "ru": "russian",
    "sk": "slovak", "sv": "swedish", "uk": "ukrainian",
}  # fmt: skip
_NAMES = frozenset(_CODES.values())

# A few very common function words per language, for guessing (not for scoring).
_MARKERS = {
    "english": "the of and to in is that for it was on with as he said at by from his have are",
    "german": "der die und den von zu das mit sich des auf für ist im dem nicht ein eine auch",
    "french": "le la les de des du et à un une est que qui dans pour pas sur au il elle",
    "spanish": "el la los las de del y que en un una es por con para se no su al lo como",
    "italian": "il la le di che e un una per non è del della si con sono alla da gli",
    "portuguese": "o a os as de do da e que em um uma para com não por no na se dos",
    "dutch": "de het een en van is dat op te zijn met voor niet die er aan ook",
    "swedish": "och att det som en på är av för med den till inte har de om ett",
    "danish": "og at det som en på er af for med den til ikke har de om et",
    "finnish": "ja on ei se että oli hän mutta kun myös tai ovat",
    "polish": "i w nie na się z że do jest to o jak ale po co",
    "czech": "a se na je v že to s z do o by jako ale pro",
    "romanian": "și în de la a cu că pe nu o un este din",
    "hungarian": "a az és hogy nem is egy van meg de",
}
_MARKER_SETS = {lang: frozenset(ws.split()) for lang, ws in _MARKERS.items()}
# A marker several languages share says less than one only a single language
# uses: each counts 1 / (languages that have it). One-letter words ("a", "v",
# "s" of "Newcastle's") and English words ("to", "do") never speak for another
# language: English is the fallback, the others must show words of their own.
_MARKER_WEIGHT = Counter(w for ws in _MARKER_SETS.values() for w in ws)
_MARKER_SETS = {
    lang: ws if lang == "english"
    else frozenset(w for w in ws if len(w) > 1 and w not in _MARKER_SETS["english"])
    for lang, ws in _MARKER_SETS.items()
}

_LINE_END = re.compile(r"[.!?…。！？\"'”’»)\]]\s*$")
HEADING_WORDS = 25  # a line with no closing punctuation and fewer words is a heading
_BULLET = re.compile(r"^\s*(?:[•·▪◦‣*–—-]|\d{1,2}[.)])\s+")


# -- language ----------------------------------------------------------------


def language_name(code: str | None) -> str | None:
    """sumy's name for a language code or name; None when it is not one we handle."""
    if not code:
        return None
    c = code.strip().lower().replace("_", "-")
    if c in _NAMES:
        return c
    return _CODES.get(c.split("-", 1)[0])


def _is_language_code(code: str) -> bool:
    """An ISO 639 code (pycountry comes with sumy)."""
    if not (len(code) in (2, 3) and code.isascii() and code.isalpha()):
        return False
    import pycountry

    key = "alpha_2" if len(code) == 2 else "alpha_3"
    return pycountry.languages.get(**{key: code}) is not None


def guess_language(text: str) -> str | None:
    """Cheap guess from the script, then from common function words; None if unsure."""
    sample = text[:4000]
    letters = [ch for ch in sample if ch.isalpha()]
    if not letters:
        return None
    scripts = Counter(_script(ch) for ch in letters)
    script, count = scripts.most_common(1)[0]
    if count < 0.5 * len(letters):
        return None
    if script != "latin":
        if script == "cyrillic":
            return "ukrainian" if any(ch in "іїєґІЇЄҐ" for ch in letters) else "russian"
        return script if script in _NAMES else None
    tokens = [w.lower() for w in words(sample)]
    if len(tokens) < 5:
        return None
    best, hits = max(
        ((lang, sum(1 / _MARKER_WEIGHT[t] for t in tokens if t in ws))
         for lang, ws in _MARKER_SETS.items()),
        key=lambda x: x[1],
    )
    return best if hits >= max(2, 0.05 * len(tokens)) else None


def _script(ch: str) -> str:
    o = ord(ch)
    if o < 0x250:
        return "latin"
    if 0x370 <= o < 0x400:
        return "greek"
    if 0x400 <= o < 0x530:
        return "cyrillic"
    if 0x590 <= o < 0x600:
        return "hebrew"
    if 0x600 <= o < 0x700:
        return "arabic"
    return "other"


@lru_cache(maxsize=32)
def _language_tools(language: str) -> tuple[Callable[[str], str], frozenset[str]] | None:
    """(stem, stop words) from sumy, or None when sumy has no stemmer for it."""
    from sumy.nlp.stemmers import Stemmer
    from sumy.utils import get_stop_words

    try:
        stemmer = Stemmer(language)
        stemmer("test")  # greek and polish need extra packages, found only on first use
    except (LookupError, ValueError):
        return None
    try:
        stop = frozenset(w.lower() for w in get_stop_words(language))
    except LookupError:
        stop = frozenset(_MARKERS.get(language, "").split())
    cache: dict[str, str] = {}
    if language in UNSTEMMED:
        return str, stop

    def stem(word: str) -> str:
        s = cache.get(word)
        if s is None:
            if len(cache) > 200_000:
                cache.clear()
            s = cache[word] = stemmer(word)
        return s

    return stem, stop


# -- text -> sentences -------------------------------------------------------


def split_text(text: str, language: str = "english") -> list[str]:
    """Sentences of a plain text, in order, each with its white space collapsed.

    Blank lines separate paragraphs; lines inside a paragraph are joined. A
    line with no closing punctuation and under HEADING_WORDS words (a heading,
    a byline, "Latest News") is not a sentence, unless the text has nothing
    else; a line followed by one that starts in lower case is wrapped text, not
    a heading. Bullet marks are dropped, each bullet stands alone. A sentence seen
    before is dropped.
    """
    blocks: list[str] = []
    headings: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            blocks.append(" ".join(current))
            current.clear()

    lines = [" ".join(raw.split()) for raw in text.splitlines()]
    for n, line in enumerate(lines):
        if not line:
            flush()
            continue
        bullet = _BULLET.match(line)
        if bullet:
            flush()
            line = line[bullet.end() :]
        following = lines[n + 1][:1] if n + 1 < len(lines) else ""
        if (
            not _LINE_END.search(line)
            and len(line.split()) < HEADING_WORDS
            and not following.islower()  # not a hard-wrapped line of a paragraph
        ):
            flush()
            headings.append(line)
            continue
        current.append(line)
        if bullet:
            flush()
    flush()
    if not blocks:
        blocks = headings
    out: list[str] = []
    seen: set[str] = set()
    for block in blocks:
        for sentence in split_sentences(block, language):
            if sentence not in seen:  # a repeated line (a title shown twice) counts once
                seen.add(sentence)
                out.append(sentence)
    return out


# -- scoring -----------------------------------------------------------------


def _bags(
    sentences: Sequence[str], stem: Callable[[str], str], stop: frozenset[str]
) -> list[Counter[str]]:
    bags = []
    for s in sentences:
        toks = [w.lower() for w in words(s)]
        bags.append(Counter(stem(t) for t in toks if t not in stop))
    return bags


def _centrality(bags: Sequence[Counter[str]], sqrt_norm: bool = False) -> list[float]:
    """Reduction score: sum over the other sentences of shared words / (log|a| + log|b|)."""
    n = len(bags)
    sizes = [sum(b.values()) for b in bags]
    logs = [math.log(k) if k else 0.0 for k in sizes]
    # Inverted index: word -> [(sentence, count)], so only sharing pairs are visited.
    index: dict[str, list[tuple[int, int]]] = {}
    for i, bag in enumerate(bags):
        for w, c in bag.items():
            index.setdefault(w, []).append((i, c))
    shared: Counter[tuple[int, int]] = Counter()
    for postings in index.values():
        if len(postings) < 2:
            continue
        for a in range(len(postings)):
            i, ci = postings[a]
            for b in range(a + 1, len(postings)):
                j, cj = postings[b]
                shared[i, j] += ci * cj
    scores = [0.0] * n
    for (i, j), overlap in shared.items():
        norm = math.sqrt(sizes[i] * sizes[j]) if sqrt_norm else logs[i] + logs[j]
        if norm > 0:
            r = overlap / norm
            scores[i] += r
            scores[j] += r
    return scores


def _scores(
    bags: Sequence[Counter[str]], title: Counter[str] | None, tuning: Tuning
) -> list[float]:
    """Centrality (max-normalised) + title overlap + position prior."""
    central = _centrality(bags, tuning.sqrt_norm)
    top = max(central, default=0.0) or 1.0
    scale = tuning.position_scale
    out = [c / top + tuning.position_weight * scale / (scale + i) for i, c in enumerate(central)]
    if title and tuning.title_weight:
        for i, bag in enumerate(bags):
            out[i] += tuning.title_weight * sum(1 for w in title if w in bag) / len(title)
    return out


def score_sentences(
    sentences: Sequence[str],
    language: str = "english",
    *,
    title: str | None = None,
    tuning: Tuning | None = None,
) -> list[float]:
    """The default method's score of each sentence (higher is more summary-worthy)."""
    tools = _language_tools(language)
    if tools is None:
        raise LookupError(f"no word scoring for {language}")
    title_bag = _bags([title], *tools)[0] if title else None
    return _scores(_bags(sentences, *tools), title_bag, tuning or DEFAULT_TUNING)


def _similar(a: Counter[str], b: Counter[str]) -> float:
    """Share of the smaller sentence's distinct words found in the other one."""
    if not a or not b:
        return 0.0
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    return sum(1 for w in small if w in large) / len(small)


def _select(
    sentences: Sequence[str],
    scores: Sequence[float],
    bags: Sequence[Counter[str]],
    context_size: int,
    points_size: int,
    tuning: Tuning,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    n = len(sentences)
    lengths = [len(s.split()) for s in sentences]
    best_first = sorted(range(n), key=lambda i: (-scores[i], i))
    # Context: the lead, then the best of the opening (the first third, at least
    # the first few sentences); a too-short line (dateline, "Updated 5 min ago")
    # is skipped unless there is nothing else.
    window = max(tuning.context_window, math.ceil(n * tuning.context_share), context_size)
    opening = [i for i in range(n) if lengths[i] >= 4][:window]
    if len(opening) < min(context_size, n):
        opening = list(range(min(window, n)))
    in_opening = set(opening)
    ranked_opening = [i for i in best_first if i in in_opening]
    if tuning.keep_lead and opening and context_size > 0:
        rest = [i for i in ranked_opening if i != opening[0]]
        context = sorted([opening[0], *rest[: context_size - 1]])
    else:
        context = sorted(ranked_opening[:context_size])
    chosen = set(context)
    candidates = [i for i in best_first if i not in chosen and lengths[i] >= tuning.min_point_words]
    picked: list[int] = []
    for i in candidates:
        if len(picked) >= points_size:
            break
        if any(_similar(bags[i], bags[j]) >= tuning.redundancy for j in chosen):
            continue
        picked.append(i)
        chosen.add(i)
    for i in candidates:  # rather a near-repeat than too short a summary
        if len(picked) >= points_size:
            break
        if i not in chosen:
            picked.append(i)
            chosen.add(i)
    return tuple(sentences[i] for i in context), tuple(sentences[i] for i in sorted(picked))


# -- public API ----------------------------------------------------------------


def summarize(
    text: str,
    *,
    language: str | None = None,
    context_size: int = 3,
    points_size: int = 5,
    title: str | None = None,
) -> Summary:
    """Context (the story's opening) + up to ``points_size`` key sentences of ``text``.

    ``title`` (the item's headline, optional) is not summarised; sentences that
    share its words score a little higher.
    """
    lang = language_name(language)
    code = (language or "").strip().lower().replace("_", "-").split("-", 1)[0]
    if lang is None and not _is_language_code(code):
        code = ""  # None, "", "xx-unknown": not a language, guess it
    if lang is None and not code:
        lang = guess_language(text) or "english"
    tools = _language_tools(lang) if lang else None
    sentences = split_text(text or "", lang or "english")
    if not sentences:
        return Summary((), (), "none:empty")
    if tools is None:
        label = code or lang or "und"
        return Summary(
            tuple(sentences[:context_size]),
            tuple(sentences[context_size : context_size + points_size]),
            f"lead:{label}",
        )
    assert lang is not None
    return summarize_sentences(
        sentences, lang, title=title, context_size=context_size, points_size=points_size
    )


def summarize_sentences(
    sentences: Sequence[str],
    language: str,
    *,
    title: str | None = None,
    context_size: int = 3,
    points_size: int = 5,
    tuning: Tuning | None = None,
) -> Summary:
    """The default method on sentences already split (``split_text``)."""
    tools = _language_tools(language)
    if tools is None:
        raise LookupError(f"no word scoring for {language}")
    if not sentences:
        return Summary((), (), "none:empty")
    if len(sentences) > MAX_SENTENCES:
        log.debug("summarising the first %d of %d sentences", MAX_SENTENCES, len(sentences))
        sentences = sentences[:MAX_SENTENCES]
    tuning = tuning or DEFAULT_TUNING
    bags = _bags(sentences, *tools)
    title_bag = _bags([title], *tools)[0] if title else None
    scores = _scores(bags, title_bag, tuning)
    context, points = _select(sentences, scores, bags, context_size, points_size, tuning)
    return Summary(context, points, f"default:{language}")


def summarize_file(
    path: str | Path,
    language: str | None = None,
    *,
    context_size: int = 3,
    points_size: int = 5,
) -> Summary:
    """Summary of a saved article: ``.html``/``.htm`` (main text extracted) or plain
    text whose first line is the title (not summarised)."""
    p = Path(path)
    raw = p.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = raw.decode("cp1252", errors="replace")
    title: str | None = None
    if p.suffix.lower() in (".html", ".htm", ".xhtml"):
        text = _html_text(content)
        if language is None:
            language = _html_language(content)
    else:
        title, _, text = content.partition("\n")
    return summarize(
        text or "",
        language=language,
        context_size=context_size,
        points_size=points_size,
        title=title,
    )


def _html_text(html: str) -> str:
    """The page's main text; its paragraphs when the extractor finds no article."""
    from aggregator.extract import extract_main_text

    return extract_main_text(html) or _paragraph_text(html)


def _paragraph_text(html: str) -> str:
    """Fallback for a page the extractor gives up on: its paragraphs and list items,
    without scripts, menus, headers and footers."""
    import lxml.etree
    import lxml.html

    parser = lxml.html.HTMLParser(no_network=True, remove_comments=True, remove_pis=True)
    try:
        doc = lxml.html.document_fromstring(html.encode("utf-8"), parser=parser)
    except (lxml.etree.ParserError, ValueError):  # empty or not HTML
        return ""
    for bad in doc.xpath("//script|//style|//nav|//header|//footer|//aside|//form|//noscript"):
        bad.drop_tree()
    paras = [" ".join(p.text_content().split()) for p in doc.iter("p", "li", "h1", "h2", "h3")]
    return "\n\n".join(p for p in paras if p)


def _html_language(html: str) -> str | None:
    m = re.search(
        r"<html\b[^>]*?\blang\s*=\s*[\"']?([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)*)", html[:5000]
    )
    return m.group(1) if m else None
