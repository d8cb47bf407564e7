"""Summary quality and speed on the BBC News Summary set (2225 articles).

    python -m bench.summaries                    # all methods, 8 sentences (3 + 5)
    python -m bench.summaries --sentences 5      # at the issue's reference size
    python -m bench.summaries --limit 50 --methods lead,reduction,default
    python -m bench.summaries --segmenters       # sentence segmenters compared
    python -m bench.summaries --tune             # the default's position prior, swept

ROUGE-1/-2/-L F1 (x100) of each method's summary against the reference summary,
both as produced ("full") and cut to the first 100 words ("100w"). Scores use
rouge-score's tokenizer (Porter stemming) with a bit-parallel LCS, checked
against ``rouge_score.RougeScorer`` on a sample (``--check``). Results go to
bench/results/summaries.json (merged by summary size). Data: ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aggregator import summarize as S
from aggregator.sentences import SentenceTokenizer, split_sentences
from bench.farm import read_text

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbc-news-summary"
RESULTS = Path(__file__).resolve().parent / "results" / "summaries.json"
SUMY = ("lexrank", "lsa", "textrank", "luhn", "sumbasic", "kl", "reduction")
METHODS = ("lead", *SUMY, "default")
CUT_WORDS = 100


# -- data ------------------------------------------------------------------------


@dataclass
class Article:
    key: str
    title: str
    body: str  # text after the title line
    reference: list[str]  # reference summary, split into sentences
    gold: list[str]  # reference sentences found verbatim, sentence-aligned, in the body


# A join of two sentences in a reference: sentence punctuation, maybe closing
# quotes, directly followed by no space.
_JOIN = re.compile(r"[.!?][\"'”’]*(?=[^\s.!?\"'”’])")


def split_reference(summary: str, body: str) -> tuple[list[str], list[str]]:
    """Reference sentences, and those found in ``body`` on sentence-like edges.

    The references glue sentences with no space ("$10.9bn.For the year"); a
    quote at a join may close the first sentence or open the next, so each
    candidate cut is checked against the article.
    """
    flat = " " + " ".join(body.split()) + " "
    cuts = sorted({m.end() for m in _JOIN.finditer(summary)} | {len(summary)})
    # Also allow the cut before the closing quotes (the quote opens the next one).
    cuts = sorted(set(cuts) | {m.start() + 1 for m in _JOIN.finditer(summary)})
    pieces: list[str] = []
    gold: list[str] = []
    start = 0
    while start < len(summary):
        found = None
        for c in cuts:
            if c <= start:
                continue
            piece = summary[start:c].strip()
            if piece and f" {piece} " in flat:
                found = c
                break
        if found is None:  # not in the article: take the first plain cut
            nxt = next((c for c in cuts if c > start), len(summary))
            piece = summary[start:nxt].strip()
            if piece:
                pieces.append(piece)
            start = nxt
            continue
        piece = summary[start:found].strip()
        pieces.append(piece)
        gold.append(piece)
        start = found
    return pieces, gold


def load(limit: int | None = None) -> list[Article]:
    if not ROOT.is_dir():
        raise SystemExit(f"{ROOT} is absent: the BBC News Summary set is needed")
    paths = sorted((ROOT / "News Articles").glob("*/*.txt"))
    if limit and limit < len(paths):  # spread evenly over the categories
        step = len(paths) / limit
        paths = [paths[int(i * step)] for i in range(limit)]
    out = []
    for p in paths:
        text = read_text(p)
        title, _, body = text.partition("\n")
        summary = read_text(ROOT / "Summaries" / p.parent.name / p.name)
        ref, gold = split_reference(summary.strip(), body)
        out.append(Article(f"{p.parent.name}/{p.stem}", title.strip(), body, ref, gold))
    return out


# -- ROUGE -------------------------------------------------------------------------


class Rouge:
    """rouge-score's tokenizer + scoring formulas; LCS by bit-parallel algorithm."""

    def __init__(self) -> None:
        from rouge_score import tokenizers

        self._tok = tokenizers.DefaultTokenizer(use_stemmer=True)
        self._cache: dict[str, list[str]] = {}

    def tokens(self, text: str) -> list[str]:
        t = self._cache.get(text)
        if t is None:
            t = self._cache[text] = self._tok.tokenize(text)
        return t

    @staticmethod
    def lcs(a: Sequence[str], b: Sequence[str]) -> int:
        """Length of the longest common subsequence (Hyyrö's bit-vector method)."""
        if not a or not b:
            return 0
        masks: dict[str, int] = {}
        for i, tok in enumerate(b):
            masks[tok] = masks.get(tok, 0) | (1 << i)
        full = (1 << len(b)) - 1
        v = full
        for tok in a:
            m = masks.get(tok)
            if m is None:
                continue
            u = v & m
            v = ((v + u) | (v - u)) & full
        return len(b) - bin(v).count("1")

    @staticmethod
    def _f(overlap: float, n_pred: int, n_ref: int) -> float:
        p = overlap / max(n_pred, 1)
        r = overlap / max(n_ref, 1)
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    def score(self, ref: list[str], pred: list[str]) -> tuple[float, float, float]:
        """(R1, R2, RL) F1 for token lists."""
        if not ref or not pred:
            return 0.0, 0.0, 0.0
        r1c, p1c = Counter(ref), Counter(pred)
        r1 = self._f(sum((r1c & p1c).values()), len(pred), len(ref))
        r2c, p2c = (
            Counter(zip(ref, ref[1:], strict=False)),
            Counter(zip(pred, pred[1:], strict=False)),
        )
        r2 = self._f(sum((r2c & p2c).values()), len(pred) - 1, len(ref) - 1)
        rl = self._f(self.lcs(ref, pred), len(pred), len(ref))
        return r1, r2, rl


def check_rouge(rouge: Rouge, articles: Sequence[Article], n: int = 30) -> float:
    """Largest difference from rouge_score.RougeScorer on ``n`` lead-3 summaries."""
    from rouge_score import rouge_scorer

    ref_scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    worst = 0.0
    for a in articles[:n]:
        pred = " ".join(S.split_text(a.body)[:3])
        ref = " ".join(a.reference)
        want = ref_scorer.score(ref, pred)
        got = rouge.score(rouge.tokens(ref), rouge.tokens(pred))
        for k, g in zip(("rouge1", "rouge2", "rougeL"), got, strict=True):
            worst = max(worst, abs(want[k].fmeasure - g))
    return worst


# -- methods -----------------------------------------------------------------------

Summarizer = Callable[[Article, list[str], int], list[str]]


def _sumy(name: str) -> Summarizer:
    from sumy.models.dom import ObjectDocumentModel, Paragraph, Sentence
    from sumy.nlp.stemmers import Stemmer
    from sumy.summarizers.kl import KLSummarizer
    from sumy.summarizers.lex_rank import LexRankSummarizer
    from sumy.summarizers.lsa import LsaSummarizer
    from sumy.summarizers.luhn import LuhnSummarizer
    from sumy.summarizers.reduction import ReductionSummarizer
    from sumy.summarizers.sum_basic import SumBasicSummarizer
    from sumy.summarizers.text_rank import TextRankSummarizer
    from sumy.utils import get_stop_words

    cls = {
        "lexrank": LexRankSummarizer, "lsa": LsaSummarizer, "textrank": TextRankSummarizer,
        "luhn": LuhnSummarizer, "sumbasic": SumBasicSummarizer, "kl": KLSummarizer,
        "reduction": ReductionSummarizer,
    }[name]  # fmt: skip
    summarizer = cls(Stemmer("english"))
    summarizer.stop_words = get_stop_words("english")
    tokenizer = SentenceTokenizer("english")

    def run(article: Article, sentences: list[str], k: int) -> list[str]:
        doc = ObjectDocumentModel([Paragraph([Sentence(s, tokenizer) for s in sentences])])
        return [str(s) for s in summarizer(doc, k)]

    return run


def _lead(article: Article, sentences: list[str], k: int) -> list[str]:
    return sentences[:k]


def context_size(k: int) -> int:
    """Context sentences in a summary of k: 3 (the project default) from 6 on, else 2."""
    return min(3 if k >= 6 else 2, k)


def _default(article: Article, sentences: list[str], k: int) -> list[str]:
    """The project's summarize() on the raw text: segmentation included in the timing."""
    ctx = context_size(k)
    s = S.summarize(article.body, context_size=ctx, points_size=k - ctx, title=article.title)
    return [*s.context, *s.points]


def method(name: str) -> Summarizer:
    if name == "lead":
        return _lead
    if name == "default":
        return _default
    if name in SUMY:
        return _sumy(name)
    raise SystemExit(f"unknown method {name!r}; known: {', '.join(METHODS)}")


# -- runs --------------------------------------------------------------------------


def cut(sentences: Sequence[str], n_words: int = CUT_WORDS) -> str:
    return " ".join(" ".join(sentences).split()[:n_words])


def evaluate(
    name: str,
    fn: Summarizer,
    articles: Sequence[Article],
    segmented: Sequence[list[str]],
    k: int,
    rouge: Rouge,
    refs: Sequence[list[str]],
) -> dict[str, float]:
    outputs = []
    t0 = time.perf_counter()
    for a, sents in zip(articles, segmented, strict=True):
        outputs.append(fn(a, sents, k))
    elapsed = time.perf_counter() - t0
    full = [0.0, 0.0, 0.0]
    short = [0.0, 0.0, 0.0]
    words = 0
    for out, ref in zip(outputs, refs, strict=True):
        pred = rouge.tokens(" ".join(out)) if out else []
        for i, v in enumerate(rouge.score(ref, pred)):
            full[i] += v
        for i, v in enumerate(rouge.score(ref, rouge._tok.tokenize(cut(out)))):
            short[i] += v
        words += len(" ".join(out).split())
    n = len(articles)
    return {
        "R1": 100 * full[0] / n, "R2": 100 * full[1] / n, "RL": 100 * full[2] / n,
        "R1_100w": 100 * short[0] / n, "R2_100w": 100 * short[1] / n, "RL_100w": 100 * short[2] / n,
        "words": words / n,
        "articles_per_s": n / elapsed if elapsed else float("inf"),
    }  # fmt: skip


def run_methods(args: argparse.Namespace) -> dict[str, object]:
    articles = load(args.limit)
    rouge = Rouge()
    if args.check:
        print(f"max |ours - rouge_score| on {min(30, len(articles))} summaries: "
              f"{check_rouge(rouge, articles):.2e}")  # fmt: skip
    t0 = time.perf_counter()
    segmented = [S.split_text(a.body) for a in articles]
    seg_rate = len(articles) / (time.perf_counter() - t0)
    refs = [rouge.tokens(" ".join(a.reference)) for a in articles]
    names = args.methods.split(",") if args.methods else list(METHODS)
    rows: dict[str, dict[str, float]] = {}
    for name in names:
        label = f"lead-{args.sentences}" if name == "lead" else name
        rows[label] = evaluate(name, method(name), articles, segmented, args.sentences, rouge, refs)
        print(f"  {label:<10} done", file=sys.stderr)
    print(f"\n{len(articles)} articles, {args.sentences} sentences per summary "
          f"(default = {context_size(args.sentences)} context + "
          f"{args.sentences - context_size(args.sentences)} points); "
          f"segmentation alone: {seg_rate:.0f} articles/s\n")  # fmt: skip
    print_table(rows)
    return {
        "articles": len(articles),
        "sentences": args.sentences,
        "segmentation_articles_per_s": round(seg_rate, 1),
        "methods": {k: {m: round(v, 2) for m, v in r.items()} for k, r in rows.items()},
    }


def print_table(rows: dict[str, dict[str, float]]) -> None:
    head = ("method", "R1", "R2", "RL", "R1 100w", "R2 100w", "RL 100w", "words", "art/s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, r in rows.items():
        vals = [r["R1"], r["R2"], r["RL"], r["R1_100w"], r["R2_100w"], r["RL_100w"], r["words"]]
        cells = [f"{v:.1f}" for v in vals] + [f"{r['articles_per_s']:.0f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


# -- segmenters ----------------------------------------------------------------------


def _segmenters() -> dict[str, Callable[[str], list[str]]]:
    """Every segmenter that is installed; each splits one paragraph."""
    out: dict[str, Callable[[str], list[str]]] = {"aggregator": split_sentences}
    try:
        import pysbd

        seg = pysbd.Segmenter(language="en", clean=False)
        out["pysbd"] = lambda t: [s.strip() for s in seg.segment(t)]
    except ImportError:
        pass
    try:
        from syntok import segmenter as syn

        def syntok_split(t: str) -> list[str]:
            return [
                "".join(tok.spacing + tok.value for tok in sent).strip()
                for para in syn.process(t)
                for sent in para
            ]

        out["syntok"] = syntok_split
    except ImportError:
        pass
    try:
        import blingfire

        out["blingfire"] = lambda t: blingfire.text_to_sentences(t).split("\n")
    except ImportError:
        pass
    try:
        import sentencex

        out["sentencex"] = lambda t: list(sentencex.segment("en", t))
    except ImportError:
        pass
    try:
        from sentence_splitter import SentenceSplitter

        koehn = SentenceSplitter(language="en")
        out["sentence-splitter"] = koehn.split
    except ImportError:
        pass
    return out


def run_segmenters(args: argparse.Namespace) -> dict[str, object]:
    articles = load(args.limit)
    n_gold = sum(len(a.gold) for a in articles)
    n_ref = sum(len(a.reference) for a in articles)
    paras = [[" ".join(p.split()) for p in a.body.split("\n\n") if p.strip()] for a in articles]
    rows = {}
    for name, fn in _segmenters().items():
        t0 = time.perf_counter()
        found = [{" ".join(s.split()) for p in ps for s in fn(p)} for ps in paras]
        rate = len(articles) / (time.perf_counter() - t0)
        hits = sum(g in f for a, f in zip(articles, found, strict=True) for g in a.gold)
        per_article = sum(len(f) for f in found) / len(articles)
        rows[name] = {
            "exact": 100 * hits / n_gold,
            "sentences": per_article,
            "articles_per_s": rate,
        }
    print(f"\n{len(articles)} articles, {n_gold} of {n_ref} reference sentences found "
          "sentence-aligned in their article (the gold)\n")  # fmt: skip
    print("| segmenter | gold sentences found exactly (%) | sentences/article | articles/s |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['exact']:.2f} | {r['sentences']:.1f} | {r['articles_per_s']:.0f} |")
    return {"articles": len(articles), "gold": n_gold, "segmenters": rows}


TUNE_GRID = {
    "position_weight": (0.0, 0.1, 0.2),
    "title_weight": (0.0, 0.1, 0.2),
    "sqrt_norm": (False, True),
    "keep_lead": (False, True),
    "redundancy": (0.8, 1.1),
}


def run_tune(args: argparse.Namespace) -> dict[str, object]:
    """Sweep the default method's knobs; print the best by mean of R1/RL, full and 100w."""
    import itertools

    articles = load(args.limit)
    rouge = Rouge()
    segmented = [S.split_text(a.body) for a in articles]
    refs = [rouge.tokens(" ".join(a.reference)) for a in articles]
    ctx = context_size(args.sentences)
    rows = {}
    keys = list(TUNE_GRID)
    for values in itertools.product(*TUNE_GRID.values()):
        params = dict(zip(keys, values, strict=True))
        tuning = S.Tuning(**params)  # type: ignore[arg-type]

        def fn(a: Article, sents: list[str], k: int, t: S.Tuning = tuning) -> list[str]:
            s = S.summarize_sentences(
                sents, "english", title=a.title, context_size=ctx, points_size=k - ctx, tuning=t
            )
            return [*s.context, *s.points]

        label = " ".join(f"{k.split('_')[0]}={v}" for k, v in params.items())
        rows[label] = evaluate("tune", fn, articles, segmented, args.sentences, rouge, refs)
    key = lambda r: (r["R1"] + r["RL"] + r["R1_100w"] + r["RL_100w"]) / 4  # noqa: E731
    best = dict(sorted(rows.items(), key=lambda kv: -key(kv[1]))[: args.top])
    print_table(best)
    return {"tune": {k: {m: round(v, 2) for m, v in r.items()} for k, r in rows.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.summaries", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--limit", type=int, help="use N articles spread over the set")
    ap.add_argument("--methods", help=f"comma-separated, from: {','.join(METHODS)}")
    ap.add_argument("--sentences", type=int, default=8, help="sentences per summary (8)")
    ap.add_argument("--segmenters", action="store_true", help="compare sentence segmenters")
    ap.add_argument("--tune", action="store_true", help="sweep the default's position prior")
    ap.add_argument("--top", type=int, default=25, help="rows shown by --tune (25)")
    ap.add_argument("--check", action="store_true", help="check ROUGE against rouge_score")
    ap.add_argument("--output", type=Path, default=RESULTS, help="JSON file to update")
    args = ap.parse_args(argv)
    if args.segmenters:
        key, result = "segmenters", run_segmenters(args)
    elif args.tune:
        key, result = f"tune_{args.sentences}", run_tune(args)
    else:
        key, result = f"sentences_{args.sentences}", run_methods(args)
    if args.limit:
        key += f"_limit_{args.limit}"
    data = {}
    if args.output.exists():
        data = json.loads(args.output.read_text())
    data[key] = result
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
