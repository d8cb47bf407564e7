"""sumy summarizers on our own sentences, and the shape every summary takes.

Each method is a sumy ``AbstractSummarizer`` working on sumy's document model
(``ObjectDocumentModel`` -> ``Paragraph`` -> ``Sentence``), built from
sentences that ``aggregator.sentences`` split offline: nothing here loads NLTK
data (sumy's summarizers use only NLTK's Snowball stemmers, which are code).

* ``default`` is ``LeadCentralitySummarizer`` below: centrality (word overlap
  with the other sentences) plus a position prior whose weight depends on how
  much of the article the summary keeps (``lead_weight``): a few sentences of a
  long story lean on its opening, a summary of 30% or more is picked by
  centrality alone;
* ``lexrank``, ``lsa``, ``textrank``, ``luhn``, ``edmundson``, ``kl``,
  ``sumbasic``, ``reduction`` are sumy's own classes, unchanged except that
  the rating of *every* sentence is kept (``ranking``), not just the top few;
* ``lead`` rates sentences by position.

``shape`` turns any method's ratings into the seed's shape: a Context (the
first real sentence and the best-rated of the opening) and Dive deeper points
(the best-rated of the rest), each in article order.

Measured (``python -m bench.summaries``: tuned on the even-numbered articles,
figures from the odd-numbered ones, every method at the same sentence count):
on CNN/DailyMail human highlights (3 sentences) the default scores above lead-3
and every sumy method on ROUGE-1, -2 and -L (29.3/11.0/19.6 against lead-3's
28.7/10.4/19.0); on the BBC News Summary set (8 sentences, extractive
references) it is first on ROUGE-L and on ROUGE-1/-L cut to 100 words, and level
with sumy's Reduction on full-length ROUGE-1 (76.2 each: 0.02 ahead, well inside
the noise). With 4 or 5 sentences on CNN/DailyMail it is only level with the
lead (the tuning half: 27.6 against 28.0 R1 at 4).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sumy.models.dom import ObjectDocumentModel, Paragraph, Sentence
from sumy.summarizers import AbstractSummarizer

from aggregator.config import SUMMARIZERS
from aggregator.sentences import SentenceTokenizer, words

__all__ = [
    "DEFAULT_TUNING",
    "NAMES",
    "LeadCentralitySummarizer",
    "Tuning",
    "check_name",
    "lead_weight",
    "document",
    "ranking",
    "shape",
]

NAMES = SUMMARIZERS


def check_name(name: str) -> str:
    """The method's canonical name; ValueError naming the known ones otherwise."""
    key = (name or "").strip().lower()
    if key not in NAMES:
        raise ValueError(f"unknown summarizer {name!r}; known: {', '.join(NAMES)}")
    return key


@dataclass(frozen=True)
class Tuning:
    """Knobs of the default method (chosen with ``python -m bench.summaries --tune``
    on the even-numbered halves of the CNN/DailyMail and BBC sets; see
    bench/summaries.py). The figures in the comments are from that half."""

    forward: float = 1.0  # weight of similarity to the sentences after this one
    backward: float = 1.0  # ... and to those before it (PACSUM: less; 0.5, 0.7 measured worse)
    norm_power: float = 0.4  # a pair's overlap / (|a| |b|) ** this (0.5: -0.1 R1 BBC;
    # 0.3 and sumy Reduction's log |a| + log |b|: -0.3 R1 CNN/DailyMail)
    position_weight: float = 3.0  # + weight x lead x scale / (scale + i)
    position_scale: float = 1.0
    lead_share: float = 0.3  # lead = max(0, 1 - (summary sentences / article sentences) / this)
    title_weight: float = 0.0  # share of the title's words found in the sentence (0.1: -0.2 R1 BBC)
    keep_lead: bool = True  # the first real sentence always opens the context (False: +0.4 R1 BBC)
    context_window: int = 8  # the context is picked from the first max(window, n x share)
    context_share: float = 1 / 3
    redundancy: float = 0.9  # a point sharing this share of its words with a chosen one is skipped
    min_point_words: int = 5  # shorter sentences ("Read more.") never become points
    opener_penalty: float = 0.1  # an unresolved "But ..."/"He said" point loses this share
    context_position: float = 1.0  # the context's picks: + this x lead x scale / (scale + i)


def lead_weight(n_sentences: int, size: int | None, tuning: Tuning | None = None) -> float:
    """How much the position prior counts, 0 to 1: fully for a summary that is a
    small share of its article (a reader wants the story's opening: human
    highlights follow it), fading to nothing as the summary reaches
    ``lead_share`` of the sentences (then the most central sentences make a
    better digest). ``size`` None: fully."""
    t = tuning or DEFAULT_TUNING
    if size is None or n_sentences <= 0 or t.lead_share <= 0:
        return 1.0
    return max(0.0, 1.0 - (size / n_sentences) / t.lead_share)


DEFAULT_TUNING = Tuning()


# -- the document model -------------------------------------------------------------


def document(
    sentences: Sequence[str], language: str = "english", title: str | None = None
) -> ObjectDocumentModel:
    """sumy's document for our sentences: one paragraph, the title as its heading."""
    tokenizer = SentenceTokenizer(language)
    items = [Sentence(title, tokenizer, is_heading=True)] if title else []
    items += [Sentence(s, tokenizer) for s in sentences]
    return ObjectDocumentModel([Paragraph(items)])


class _Ranked:
    """Mixin for sumy summarizers: keep the rating of every sentence in ``ranking``."""

    ranking: dict[Any, float]

    def _get_best_sentences(  # type: ignore[override]
        self, sentences: Sequence[Any], count: Any, rating: Any, *args: Any, **kwargs: Any
    ) -> tuple[Any, ...]:
        if isinstance(rating, dict):
            self.ranking = {s: float(rating[s]) for s in sentences}
        else:
            self.ranking = {s: float(rating(s, *args, **kwargs)) for s in sentences}
        return AbstractSummarizer._get_best_sentences(sentences, count, self.ranking)


# -- the default method ---------------------------------------------------------------


def bags(
    texts: Sequence[str], stem: Callable[[str], str], stop: frozenset[str]
) -> list[Counter[str]]:
    """Content words of each text: lower-cased, stop words out, stemmed."""
    out = []
    for s in texts:
        out.append(Counter(stem(t) for t in (w.lower() for w in words(s)) if t not in stop))
    return out


def directed_centrality(
    bags_: Sequence[Counter[str]],
    forward: float = 1.0,
    backward: float = 1.0,
    power: float = 0.5,
) -> list[float]:
    """Sum over the other sentences of shared words / (|a| |b|) ** power (0.5: a
    cosine-like norm), the pairs with a later sentence weighted ``forward``, those
    with an earlier one ``backward`` (PACSUM's directed centrality on word
    overlap; 1, 1 is sumy's Reduction graph with another norm)."""
    n = len(bags_)
    sizes = [sum(b.values()) for b in bags_]
    # Inverted index: word -> [(sentence, count)], so only sharing pairs are visited.
    index: dict[str, list[tuple[int, int]]] = {}
    for i, bag in enumerate(bags_):
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
                shared[i, j] += ci * cj  # i < j: postings are in sentence order
    scores = [0.0] * n
    for (i, j), overlap in shared.items():
        r = overlap / (sizes[i] * sizes[j]) ** power
        scores[i] += forward * r
        scores[j] += backward * r
    return scores


class LeadCentralitySummarizer(AbstractSummarizer):
    """The default: directed centrality (max-normalised) + a position prior scaled
    by ``lead_weight`` (+ title overlap, off by default). Rates sumy sentences;
    ``__call__`` returns the best ``sentences_count`` in document order."""

    def __init__(
        self,
        stemmer: Callable[[str], str] = str,
        stop_words: frozenset[str] = frozenset(),
        tuning: Tuning = DEFAULT_TUNING,
    ) -> None:
        super().__init__(stemmer)
        self._stem = stemmer
        self.stop_words = stop_words
        self.tuning = tuning

    def __call__(self, document: ObjectDocumentModel, sentences_count: int) -> tuple[Any, ...]:
        ratings = self.rate_sentences(document, sentences_count)
        return self._get_best_sentences(document.sentences, sentences_count, ratings)

    def rate_sentences(
        self, document: ObjectDocumentModel, size: int | None = None
    ) -> dict[Any, float]:
        sentences = document.sentences
        scores = self.rate_texts(
            [str(s) for s in sentences], " ".join(str(h) for h in document.headings) or None,
            size,
        )
        self.ranking = dict(zip(sentences, scores, strict=True))
        return self.ranking

    def rate_texts(
        self, texts: Sequence[str], title: str | None = None, size: int | None = None
    ) -> list[float]:
        return self.rate_bags(bags(texts, self._stem, self.stop_words), title, size)

    def rate_bags(
        self, bags_: Sequence[Counter[str]], title: str | None = None, size: int | None = None
    ) -> list[float]:
        """Ratings for a summary of ``size`` sentences (None: the full position prior)."""
        t = self.tuning
        central = directed_centrality(bags_, t.forward, t.backward, t.norm_power)
        top = max((abs(c) for c in central), default=0.0) or 1.0
        scale = t.position_scale
        # (A bonus for long sentences, or a floor under the prior, measured worse
        # on both sets: BBC's references favour central sentences, not long ones.)
        weight = t.position_weight * lead_weight(len(bags_), size, t)
        out = [c / top + weight * scale / (scale + i) for i, c in enumerate(central)]
        title_bag = bags([title], self._stem, self.stop_words)[0] if title else None
        if title_bag and t.title_weight:
            for i, bag in enumerate(bags_):
                out[i] += t.title_weight * sum(1 for w in title_bag if w in bag) / len(title_bag)
        return out


# -- sumy's methods ----------------------------------------------------------------------


def _sumy_class(name: str) -> type:
    from sumy.summarizers.edmundson import EdmundsonSummarizer
    from sumy.summarizers.kl import KLSummarizer
    from sumy.summarizers.lex_rank import LexRankSummarizer
    from sumy.summarizers.lsa import LsaSummarizer
    from sumy.summarizers.luhn import LuhnSummarizer
    from sumy.summarizers.reduction import ReductionSummarizer
    from sumy.summarizers.sum_basic import SumBasicSummarizer
    from sumy.summarizers.text_rank import TextRankSummarizer

    return {
        "lexrank": LexRankSummarizer, "lsa": LsaSummarizer, "textrank": TextRankSummarizer,
        "luhn": LuhnSummarizer, "edmundson": EdmundsonSummarizer, "kl": KLSummarizer,
        "sumbasic": SumBasicSummarizer, "reduction": ReductionSummarizer,
    }[name]  # fmt: skip


_CLASSES: dict[str, type] = {}

# Edmundson's cue words: bonus words mark a sentence that states something,
# stigma words one that hedges or points elsewhere. English only; other
# languages get the title's words as bonus words and their stop words as null words.
_BONUS = {
    "english": "said announced found confirmed killed died million billion first new police "
               "government president court report",
}
_STIGMA = {
    "english": "perhaps maybe hardly click follow subscribe photo video read share comment "
               "copyright",
}


def summarizer(
    name: str,
    stem: Callable[[str], str],
    stop: frozenset[str],
    language: str = "english",
    title: str | None = None,
    tuning: Tuning = DEFAULT_TUNING,
    texts: Sequence[str] = (),
) -> AbstractSummarizer:
    """A fresh summarizer for ``name`` (not ``lead``) with the language's stemmer
    and stop words."""
    if name == "default":
        return LeadCentralitySummarizer(stem, stop, tuning)
    cls = _CLASSES.get(name)
    if cls is None:
        cls = _CLASSES[name] = type(f"Ranked{_sumy_class(name).__name__}",
                                    (_Ranked, _sumy_class(name)), {})  # fmt: skip
    s = cls(stem)
    if name == "edmundson":
        # sumy refuses empty sets: a language without cue words gets the title's
        # words (else the text's most frequent content words) as bonus words.
        title_words = [w.lower() for w in words(title or "") if w.lower() not in stop]
        frequent = [w for w, _ in Counter(
            w.lower() for t in texts for w in words(t) if w.lower() not in stop
        ).most_common(10)]  # fmt: skip
        s.bonus_words = [*_BONUS.get(language, "").split(), *title_words] or frequent or ["-"]
        s.stigma_words = _STIGMA.get(language, "").split() or ["-"]
        s.null_words = stop or frozenset(["-"])
    else:
        s.stop_words = stop
    return s


def ranking(
    name: str,
    sentences: Sequence[str],
    stem: Callable[[str], str],
    stop: frozenset[str],
    language: str = "english",
    title: str | None = None,
    tuning: Tuning = DEFAULT_TUNING,
    bags_: Sequence[Counter[str]] | None = None,
    size: int | None = None,
) -> list[float]:
    """Each sentence's rating by method ``name`` (higher is better); ``bags_``:
    the sentences' ``bags``, when already made; ``size``: the summary's sentences
    (the default's position prior depends on it, see ``lead_weight``)."""
    n = len(sentences)
    if name == "lead":
        return [float(n - i) for i in range(n)]
    if name == "default":
        default = LeadCentralitySummarizer(stem, stop, tuning)
        if bags_ is not None:
            return default.rate_bags(bags_, title, size)
        return default.rate_texts(sentences, title, size)
    s = summarizer(name, stem, stop, language, title, tuning, sentences)
    doc = document(sentences, language, title)
    s(doc, n)
    by_text = {str(k): v for k, v in s.ranking.items()}  # type: ignore[attr-defined]
    return [by_text.get(x, -math.inf) for x in sentences]


# -- the shape -----------------------------------------------------------------------------

# A point that opens with one of these leans on a sentence the reader has not seen.
# (Pronoun openers, "It"/"This"/"They", were penalised too: that cost 0.4 ROUGE-1
# on BBC and bought nothing on CNN/DailyMail.)
# English, German, French, Spanish, Portuguese.
_DANGLING = re.compile(
    r"^[\"“„«'‘]?\s?(?:"
    r"(?:But|And|Or|So|Yet|However|Also|Still|Then|Instead|Meanwhile)\b"
    r"|(?:He|She|They) (?:said|added|says|told|explained)\b"
    r"|(?:Aber|Und|Doch|Jedoch|Trotzdem|Allerdings|Dennoch)\b"
    r"|(?:Er|Sie) (?:sagte|sagt|fügte)\b"
    r"|(?:Mais|Et|Pourtant|Cependant|Toutefois|Or)\b"
    r"|(?:Il|Elle|Ils|Elles) (?:a|ont) (?:dit|ajouté|déclaré)\b"
    r"|(?:Pero|Sin embargo|Además|También|Aunque)\b|Y(?=\s)"
    r"|(?:Mas|Porém|Contudo|Entretanto|Apesar disso|Além disso|Também)\b|E(?=\s)"
    r"|(?:Ele|Ela|Eles|Elas) (?:disse|afirmou|acrescentou)\b"
    r")"
)


def similar(a: Counter[str], b: Counter[str]) -> float:
    """Share of the smaller sentence's distinct words found in the other one."""
    if not a or not b:
        return 0.0
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    return sum(1 for w in small if w in large) / len(small)


def shape(
    sentences: Sequence[str],
    scores: Sequence[float],
    bags_: Sequence[Counter[str]],
    context_size: int,
    points_size: int,
    tuning: Tuning = DEFAULT_TUNING,
    eligible: Sequence[bool] | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Context and Dive deeper from any method's ratings.

    Context: the first real sentence (four words or more), then the best-rated of
    the opening (the first third of the text, at least its first
    ``context_window`` sentences). Points: the best-rated of the other sentences
    of ``min_point_words`` or more that are ``eligible`` (not questions, captions,
    calls to action), skipping near-repeats of a chosen one; a point opening
    "But"/"He said" is rated ``opener_penalty`` lower unless the sentence before
    it is chosen. Each group in article order.
    """
    n = len(sentences)
    lengths = [len(s.split()) for s in sentences]
    ok = list(eligible) if eligible is not None else [True] * n
    spread = (max(scores, default=0.0) - min(scores, default=0.0)) or 1.0
    window = max(tuning.context_window, math.ceil(n * tuning.context_share), context_size)
    opening = [i for i in range(n) if lengths[i] >= 4 and ok[i]][:window]
    if len(opening) < min(context_size, n):
        opening = list(range(min(window, n)))
    scale = tuning.position_scale
    bonus = tuning.context_position * lead_weight(n, context_size + points_size, tuning) * spread
    lead_first = sorted(opening, key=lambda i: (-(scores[i] + bonus * scale / (scale + i)), i))
    ranked_opening = lead_first
    if tuning.keep_lead and opening and context_size > 0:
        rest = [i for i in ranked_opening if i != opening[0]]
        context = sorted([opening[0], *rest[: context_size - 1]])
    else:
        context = sorted(ranked_opening[:context_size])
    chosen = set(context)

    penalty = tuning.opener_penalty * spread
    dangling = [bool(penalty) and _DANGLING.match(s) is not None for s in sentences]

    def point_score(i: int) -> float:
        # "But ..."/"He said" reads well right after the sentence it leans on
        if dangling[i] and i - 1 not in chosen:
            return scores[i] - penalty
        return scores[i]

    pool = [i for i in range(n) if i not in chosen and ok[i]
            and lengths[i] >= tuning.min_point_words]  # fmt: skip
    repeats: set[int] = {i for i in pool if any(
        similar(bags_[i], bags_[j]) >= tuning.redundancy for j in chosen)}  # fmt: skip
    picked: list[int] = []
    while len(picked) < points_size:
        fresh = [i for i in pool if i not in chosen and i not in repeats]
        if not fresh:
            break
        best = max(fresh, key=lambda i: (point_score(i), -i))
        picked.append(best)
        chosen.add(best)
        repeats.update(i for i in fresh if similar(bags_[i], bags_[best]) >= tuning.redundancy)
    # rather a near-repeat than too short a summary
    rest = sorted((i for i in pool if i not in chosen), key=lambda i: (-point_score(i), i))
    picked += rest[: points_size - len(picked)]
    return tuple(sentences[i] for i in context), tuple(sentences[i] for i in sorted(picked))
