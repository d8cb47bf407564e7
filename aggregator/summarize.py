"""Article text -> Summary: a Context paragraph and a few Dive deeper points.

Every sentence of a summary is a sentence of the text (white space collapsed),
so a reader never sees words the source did not print.

Every method is a sumy summarizer working on sumy's document model, built from
our offline sentence splitter (``aggregator.sentences``: no NLTK data):
``default`` (``aggregator.summarizers.LeadCentralitySummarizer``), ``lead`` and
sumy's lexrank, lsa, textrank, luhn, edmundson, kl, sumbasic and reduction. One
function, ``summarizers.shape``, turns any method's ratings into the seed's shape:

* Context = the lead (first real sentence) + the best-rated of the opening
  (the first third, at least the first 8 sentences), with a bonus for position
  when the summary is a small share of the article;
* Dive deeper = the best-rated of the other sentences, skipping questions,
  captions, bylines, "Read more" lines and near-repeats, marking down a point
  that opens with "But", "He said" (and their German, French, Spanish and
  Portuguese equivalents) unless the sentence it leans on is in the summary;
  each group in article order;
* the length fits the article (``fitted_sizes``): under 300 words 2 + 2,
  else 3 Context sentences and one point per 150 words, 2 to 5.

The default scores each sentence by centrality (word overlap with the other
sentences, each pair divided by (|a| |b|) ** 0.4, stop words out) plus a
position prior weighted by ``summarizers.lead_weight``: fully for a summary that
is a small share of its article, fading to nothing at 30% of its sentences.
Measured on held-out halves at equal sentence count (``python -m
bench.summaries``): on CNN/DailyMail human highlights (3 sentences) it is above
lead-3 and every sumy method on ROUGE-1/2/L; on the BBC News Summary set (8
sentences) it is first on ROUGE-L and on ROUGE-1/L cut to 100 words, and level
with sumy's Reduction on full-length ROUGE-1.

Languages: the feed's code (``en-gb``, ``de``, ``fr-FR``) picks sumy's stemmer
and stop words, unless the text plainly contradicts it (a French page whose
template says ``lang="en"``: its function words win). Text with no language
(or a code that is no language) gets a cheap guess (script, then common
function words), else English. A language sumy has no stemmer for gets the lead
sentences and ``method = "lead:<code>"``; an empty text gets ``"none:empty"``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from aggregator.sentences import memo, split_sentences, words
from aggregator.summarizers import (
    DEFAULT_TUNING,
    NAMES,
    Tuning,
    bags,
    check_name,
    ranking,
    shape,
)
from aggregator.types import Summary

__all__ = [
    "NAMES",
    "Tuning",
    "check_language",
    "check_name",
    "is_point",
    "language_name",
    "guess_language",
    "score_sentences",
    "split_text",
    "summarize",
    "summarize_file",
    "summarize_sentences",
]

log = logging.getLogger("aggregator.summarize")


MAX_SENTENCES = 250  # sentences scored at most: the pairwise score is quadratic
# English is scored on lower-cased words, unstemmed: Snowball stems cost 0.5
# ROUGE-1 on BBC and moved CNN/DailyMail by under 0.3 (tuning halves). Other
# languages (richer inflection, not measured) are stemmed.
UNSTEMMED = frozenset({"english"})

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
    "tr": "ve bir bu için ile da de olarak çok daha gibi en olan ancak sonra ise değil kadar",
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

_MARKER_LANGS: dict[str, tuple[str, ...]] = {}
for _lang, _ws in _MARKER_SETS.items():
    for _w in _ws:
        _MARKER_LANGS[_w] = (*_MARKER_LANGS.get(_w, ()), _lang)

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
    """Cheap guess from the script, then from common function words; None if unsure.

    A sumy language name (``english``, ``russian``), or the ISO code of a language
    recognised but not scored (``ja``, ``zh``, ``ko``, ``th``, ``tr``)."""
    sample = text[:4000]
    n_letters = sum(map(str.isalpha, sample))
    if not n_letters:
        return None
    others = _NON_LATIN.findall(sample)  # few in a Latin-script text: counted one by one
    scripts = Counter(_script(ch) for ch in others)
    scripts["latin"] = n_letters - len(others)
    script, count = scripts.most_common(1)[0]
    if script in ("han", "kana") and scripts["kana"] >= 0.05 * n_letters:
        return "ja"  # Japanese mixes kanji with kana; Chinese has none
    if count < 0.5 * n_letters:
        return None
    if script != "latin":
        if script == "cyrillic":
            return "ukrainian" if any(ch in "іїєґІЇЄҐ" for ch in others) else "russian"
        return _SCRIPT_CODES.get(script) or (script if script in _NAMES else None)
    tokens = [w.lower() for w in words(sample)]
    if len(tokens) < 5:
        return None
    scores = _marker_scores(tokens)
    best = max(scores, key=scores.__getitem__)
    return best if scores[best] >= max(2, 0.05 * len(tokens)) else None


def _marker_scores(tokens: Sequence[str]) -> dict[str, float]:
    """Per language, its markers among ``tokens``, each counted 1 / (languages having it)."""
    scores = dict.fromkeys(_MARKER_SETS, 0.0)
    for t, c in Counter(tokens).items():
        for lang in _MARKER_LANGS.get(t, ()):
            scores[lang] += c / _MARKER_WEIGHT[t]
    return scores


def _contradicted(declared: str, text: str) -> str | None:
    """The language the text is plainly written in when it is not ``declared``
    (a French page whose template says ``lang="en"``): its function words score
    10% of the words or more and three times the declared language's; else None."""
    tokens = [w.lower() for w in words(text[:4000])]
    if len(tokens) < 20 or declared not in _MARKER_SETS:
        return None
    scores = _marker_scores(tokens)
    best = max(scores, key=scores.__getitem__)
    if (best != declared and best in _NAMES and scores[best] >= 0.1 * len(tokens)
            and scores[best] >= 3 * scores[declared]):  # fmt: skip
        return best
    return None


_NON_LATIN = re.compile(r"[^\W\d_\u0000-\u024f]")
_SCRIPT_CODES = {"han": "zh", "kana": "ja", "hangul": "ko", "thai": "th"}


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
    if 0xE00 <= o < 0xE80:
        return "thai"
    if 0x3040 <= o < 0x3100 or 0x31F0 <= o < 0x3200 or 0xFF66 <= o < 0xFFA0:
        return "kana"
    if 0xAC00 <= o < 0xD7B0 or 0x1100 <= o < 0x1200 or 0x3130 <= o < 0x3190:
        return "hangul"
    if 0x4E00 <= o < 0xA000 or 0x3400 <= o < 0x4DC0 or 0xF900 <= o < 0xFB00:
        return "han"
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
    if language in UNSTEMMED:
        return str, stop
    return memo(stemmer), stop


# -- text -> sentences -------------------------------------------------------

# A wire credit or dateline glued to a sentence's start: "(CNN) -- ", "(CNN)The",
# "LONDON, England (Reuters) - ", "WASHINGTON -- ", "Updated 10:15 GMT ...".
_DATELINE = re.compile(
    r"^(?:[A-Z][\w.'’-]*(?:[ ,]+[A-Z][\w.'’-]*){0,3},?\s*)?"
    r"\((?:CNN|Reuters|AP|AFP|UPI|EW\.com|[A-Z][\w.&' ]{1,30}?)\)\s*(?:--|[-–—:|])?\s*"
    r"|^[A-Z][A-Z.'’-]{2,}(?:[ ,]+[A-Z][A-Za-z.'’-]+){0,3}\s+(?:--|[–—])\s+"
)


def strip_dateline(sentence: str) -> str:
    """``sentence`` without a dateline or wire credit at its start (the rest verbatim)."""
    m = _DATELINE.match(sentence)
    if m is None or m.end() >= len(sentence):
        return sentence
    rest = sentence[m.end():]
    return rest if rest[:1].isupper() or rest[:1].isdigit() or rest[:1] in "\"“'‘" else sentence



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
            sentence = strip_dateline(sentence)
            # a repeated line (a title shown twice) counts once
            if sentence and sentence not in seen:
                seen.add(sentence)
                out.append(sentence)
    return out


# -- scoring -----------------------------------------------------------------


def score_sentences(
    sentences: Sequence[str],
    language: str = "english",
    *,
    title: str | None = None,
    tuning: Tuning | None = None,
    summarizer: str = "default",
) -> list[float]:
    """A method's rating of each sentence (higher is more summary-worthy)."""
    tools = _language_tools(language)
    if tools is None:
        raise LookupError(f"no word scoring for {language}")
    return ranking(check_name(summarizer), sentences, *tools, language, title,
                   tuning or DEFAULT_TUNING)


# Calls to action, captions, credits, bylines and timestamps; a news sentence
# opening "Shares in ...", "Sources said ..." or "Images of ..." is none of them.
_NOT_A_POINT_START = re.compile(
    r"\W*(?:(?:read|see)\s+(?:more|also|our|the full|full|related|all)\b"
    r"|(?:click|tap|subscribe|scroll)\b|sign up\b"
    r"|follow\s+(?:us|@|our|on|live)\b|share\s+(?:this|on|with|your|the story)\b"
    r"|(?:download|watch|listen)\s*(?:[:|]|now\b|live\b|here\b|again\b|the (?:full|video)\b)"
    r"|(?:photo|picture|image|video|caption|credit|source|copyright|file photo)s?\s*[:|–—©]"
    r"|copyright\b|©|pictured\b"
    r"|(?:last\s+)?(?:updated|published|posted)\s*(?::|\d|on\s+\d|at\s+\d)"
    r"|by\s+(?-i:[A-Z][\w.'-]*\s*){1,4}$)",
    re.IGNORECASE,
)
_NOT_A_POINT_END = re.compile(
    r"(?:\?|(?:[:/|©(]\s*|photo(?:graph)?\s*:?\s*)"
    r"(?-i:Getty(?: Images)?|AFP|Reuters|REUTERS|AP|AP Photo|PA|EPA|Shutterstock)\W*"
    r"|\((?-i:AP|AFP|Reuters|Getty|EPA|PA)\b[^()]{0,40}\)\W*"
    r"|\bgetty images\W*|\ball rights reserved\W*)[\"'”’)\].]*$",
    re.IGNORECASE,
)


def is_point(sentence: str) -> bool:
    """False for what readers don't want as a key point: questions, photo captions
    and credits, bylines, "Read more", "Follow us", timestamps."""
    return (_NOT_A_POINT_START.match(sentence) is None
            and _NOT_A_POINT_END.search(sentence[-40:]) is None)


# -- public API ----------------------------------------------------------------


def fitted_sizes(n_words: int, context_size: int = 3, points_size: int = 5) -> tuple[int, int]:
    """Context and points for an article of ``n_words``: under 300 words at most
    2 + 2; longer, one point per 150 words (at least 2), up to the sizes asked for."""
    if n_words < 300:
        return min(context_size, 2), min(points_size, 2)
    return context_size, min(points_size, max(2, n_words // 150))


def check_language(code: str | None) -> str | None:
    """``code`` if it names a language (a sumy name or an ISO 639 code), else ValueError."""
    if code is None or language_name(code) is not None:
        return code
    base = code.strip().lower().replace("_", "-").split("-", 1)[0]
    if _is_language_code(base):
        return code
    raise ValueError(f"unknown language {code!r}: give an ISO 639 code such as en, de, fr")


def summarize(
    text: str,
    *,
    language: str | None = None,
    context_size: int = 3,
    points_size: int = 5,
    title: str | None = None,
    summarizer: str = "default",
    fit: bool = True,
) -> Summary:
    """Context (the story's opening) + up to ``points_size`` key sentences of ``text``.

    ``title`` (the item's headline, optional) is not summarised; sentences that
    share its words score a little higher. ``summarizer`` is one of ``NAMES``.
    ``fit``: a short text gets fewer sentences (``fitted_sizes``).
    """
    name = check_name(summarizer)
    lang = language_name(language)
    code = (language or "").strip().lower().replace("_", "-").split("-", 1)[0]
    if lang is None and not _is_language_code(code):
        code = ""  # None, "", "xx-unknown": not a language, guess it
    if lang is None and not code:
        guess = guess_language(text)
        if guess in _NAMES:
            lang = guess
        elif guess:
            code = guess  # a language sumy cannot score (ja, zh, ko, th, tr ...)
        else:
            lang = "english"
    if lang is not None and language:
        other = _contradicted(lang, text or "")
        if other is not None:
            log.debug("declared %s, written in %s: summarised as %s", language, other, other)
            lang = other
    tools = _language_tools(lang) if lang else None
    sentences = split_text(text or "", lang or "english")
    if not sentences:
        return Summary((), (), "none:empty")
    if fit:
        n_words = sum(len(s.split()) for s in sentences)
        context_size, points_size = fitted_sizes(n_words, context_size, points_size)
    if tools is None or name == "lead":
        label = lang if tools is not None else (code or lang or "und")
        ok = [is_point(s) for s in sentences]
        rest = [s for s, good in zip(sentences[context_size:], ok[context_size:], strict=True)
                if good]  # fmt: skip
        return Summary(
            tuple(sentences[:context_size]), tuple(rest[:points_size]), f"lead:{label}"
        )
    assert lang is not None
    return summarize_sentences(
        sentences, lang, title=title, context_size=context_size, points_size=points_size,
        summarizer=name,
    )


def summarize_sentences(
    sentences: Sequence[str],
    language: str,
    *,
    title: str | None = None,
    context_size: int = 3,
    points_size: int = 5,
    tuning: Tuning | None = None,
    summarizer: str = "default",
) -> Summary:
    """A method on sentences already split (``split_text``), in the common shape."""
    tools = _language_tools(language)
    if tools is None:
        raise LookupError(f"no word scoring for {language}")
    if not sentences:
        return Summary((), (), "none:empty")
    if len(sentences) > MAX_SENTENCES:
        log.debug("summarising the first %d of %d sentences", MAX_SENTENCES, len(sentences))
        sentences = sentences[:MAX_SENTENCES]
    name = check_name(summarizer)
    tuning = tuning or DEFAULT_TUNING
    bags_ = bags(sentences, *tools)
    scores = ranking(name, sentences, *tools, language, title, tuning, bags_,
                     context_size + points_size)
    ok = [is_point(s) for s in sentences]
    context, points = shape(sentences, scores, bags_, context_size, points_size, tuning, ok)
    return Summary(context, points, f"{name}:{language}")


def summarize_file(
    path: str | Path,
    language: str | None = None,
    *,
    context_size: int = 3,
    points_size: int = 5,
    summarizer: str = "default",
    fit: bool = True,
) -> Summary:
    """Summary of a saved article: ``.html``/``.htm`` (main text extracted) or plain
    text whose first line is the title (not summarised)."""
    from aggregator.extract import decode_html

    p = Path(path)
    # its byte order mark, UTF-8, the charset it declares, else Windows-1252
    content = decode_html(p.read_bytes())
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
        summarizer=summarizer,
        fit=fit,
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

    # the text is decoded already: its <meta charset> must not decode it a second time
    parser = lxml.html.HTMLParser(no_network=True, remove_comments=True, remove_pis=True,
                                  encoding="utf-8")
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
