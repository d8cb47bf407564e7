"""Summary quality and speed on the BBC News Summary set (2225 articles, extractive
references) and on CNN/DailyMail articles with their human-written highlights.

    python -m bench.summaries                    # BBC held-out half, all methods, 8 sentences
    python -m bench.summaries --set cnn --sentences 3   # CNN/DailyMail held-out half
    python -m bench.summaries --limit 50 --methods lead,reduction,default
    python -m bench.summaries --segmenters       # sentence segmenters compared
    python -m bench.summaries --tune --half tune # the default's knobs, swept
    python -m bench.summaries --lengths --set bbc,cnn --half test  # the length rule

``--half tune`` takes the even-numbered articles of the set (BBC: sorted by
path; CNN/DailyMail: in the file's order), ``--half test`` (the default) the odd
ones: the default method is tuned on the first (``--tune``) and reported on the
second. Every method gets the same number of sentences per article. Speed is
articles per CPU second of this process (one core; sentence splitting included
for the default; other work on a shared machine does not count, but it still
slows caches: the figures are noisy).

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
from aggregator.sentences import split_sentences
from bench.farm import read_text

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = SHARED / "bbc-news-summary"
CNN = SHARED / "human-summaries" / "cnn_dailymail_validation.csv"
RESULTS = Path(__file__).resolve().parent / "results" / "summaries.json"
SUMY = ("lexrank", "lsa", "textrank", "luhn", "edmundson", "sumbasic", "kl", "reduction")
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


def halve(items: list, half: str) -> list:
    """Even-numbered items (``tune``), odd-numbered (``test``) or all."""
    if half == "tune":
        return items[0::2]
    if half == "test":
        return items[1::2]
    return items


def spread(items: list, limit: int | None) -> list:
    if limit and limit < len(items):
        step = len(items) / limit
        return [items[int(i * step)] for i in range(limit)]
    return items


def load_cnn(limit: int | None = None, half: str = "all") -> list[Article]:
    """CNN/DailyMail articles (one paragraph each) and their highlights."""
    import csv

    if not CNN.is_file():
        raise SystemExit(f"{CNN} is absent: the CNN/DailyMail sample is needed")
    csv.field_size_limit(1 << 30)
    with open(CNN, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in spread(halve(rows, half), limit):
        ref = [h.strip() for h in r["highlights"].splitlines() if h.strip()]
        out.append(Article(r["id"], "", r["article"], ref, []))
    return out


def load_set(name: str, limit: int | None = None, half: str = "all") -> list[Article]:
    return load_cnn(limit, half) if name == "cnn" else load(limit, half)


def load(limit: int | None = None, half: str = "all") -> list[Article]:
    if not ROOT.is_dir():
        raise SystemExit(f"{ROOT} is absent: the BBC News Summary set is needed")
    paths = spread(halve(sorted((ROOT / "News Articles").glob("*/*.txt")), half), limit)
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
    """sumy's own summarizer, as sumy picks sentences (its top k, in article order),
    on our sentences and with sumy's English stemmer and stop words."""
    from aggregator.summarizers import document, summarizer

    stem, stop = S._language_tools("english") or (str, frozenset())
    from sumy.nlp.stemmers import Stemmer

    stemmer = Stemmer("english")

    def run(article: Article, sentences: list[str], k: int) -> list[str]:
        s = summarizer(name, stemmer, stop, "english", article.title or None)
        return [str(x) for x in s(document(sentences, "english", article.title or None), k)]

    return run


def _lead(article: Article, sentences: list[str], k: int) -> list[str]:
    return sentences[:k]


def context_size(k: int) -> int:
    """Context sentences in a summary of k: 3 (the project default) from 6 on, else 2."""
    return min(3 if k >= 6 else 2, k)


def _default(article: Article, sentences: list[str], k: int) -> list[str]:
    """The project's summarize() on the raw text: segmentation included in the timing."""
    ctx = context_size(k)
    s = S.summarize(article.body, context_size=ctx, points_size=k - ctx,
                    title=article.title or None, fit=False)
    return [*s.context, *s.points]


def _shaped(name: str) -> Summarizer:
    """A sumy method in the project's shape (``summarize(..., summarizer=name)``)."""

    def run(article: Article, sentences: list[str], k: int) -> list[str]:
        ctx = context_size(k)
        s = S.summarize(article.body, context_size=ctx, points_size=k - ctx,
                        title=article.title or None, fit=False, summarizer=name)
        return [*s.context, *s.points]

    return run


def method(name: str) -> Summarizer:
    if name == "lead":
        return _lead
    if name == "default":
        return _default
    if name in SUMY:
        return _sumy(name)
    if name.endswith("+shape") and name[: -len("+shape")] in SUMY:
        return _shaped(name[: -len("+shape")])
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
    t0 = time.process_time()  # CPU seconds: other work on a shared machine does not count
    for a, sents in zip(articles, segmented, strict=True):
        outputs.append(fn(a, sents, k))
    elapsed = time.process_time() - t0
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
    articles = load_set(args.set, args.limit, args.half)
    rouge = Rouge()
    if args.check:
        print(f"max |ours - rouge_score| on {min(30, len(articles))} summaries: "
              f"{check_rouge(rouge, articles):.2e}")  # fmt: skip
    t0 = time.process_time()
    segmented = [S.split_text(a.body) for a in articles]
    seg_rate = len(articles) / (time.process_time() - t0)
    refs = [rouge.tokens(" ".join(a.reference)) for a in articles]
    names = args.methods.split(",") if args.methods else list(METHODS)
    rows: dict[str, dict[str, float]] = {}
    for name in names:
        label = f"lead-{args.sentences}" if name == "lead" else name
        rows[label] = evaluate(name, method(name), articles, segmented, args.sentences, rouge, refs)
        print(f"  {label:<10} done", file=sys.stderr)
    print(f"\n{args.set} ({args.half}): {len(articles)} articles, "
          f"{args.sentences} sentences per summary "
          f"(default = {context_size(args.sentences)} context + "
          f"{args.sentences - context_size(args.sentences)} points); "
          f"segmentation alone: {seg_rate:.0f} articles/s\n")  # fmt: skip
    print_table(rows)
    return {
        "set": args.set,
        "half": args.half,
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


LENGTH_BUCKETS = (150, 300, 600, 1000, 2000)


def run_lengths(args: argparse.Namespace) -> dict[str, object]:
    """The length rule (``summarize.fitted_sizes``) on each set: per article size,
    the sentences it gives, the summary's share of the article, and ROUGE of the
    fitted default against lead-N at the same count per article."""
    rouge = Rouge()
    out: dict[str, object] = {}
    for name in args.set.split(","):
        arts = load_set(name, args.limit, args.half)
        rows: dict[str, list[float]] = {}
        for a in arts:
            s = S.summarize(a.body, title=a.title or None)
            sents = S.split_text(a.body)
            n_words = sum(len(x.split()) for x in sents)
            got = [*s.context, *s.points]
            ref = rouge.tokens(" ".join(a.reference))
            mine = rouge.score(ref, rouge.tokens(" ".join(got)))
            lead = rouge.score(ref, rouge.tokens(" ".join(sents[: len(got)])))
            label = next((f"<{b}" for b in LENGTH_BUCKETS if n_words < b),
                         f">={LENGTH_BUCKETS[-1]}")  # fmt: skip
            r = rows.setdefault(label, [0.0] * 7)
            summary_words = sum(len(x.split()) for x in got)
            for i, v in enumerate((1, len(s.context), len(s.points), summary_words / n_words,
                                   mine[0], lead[0], mine[2] - lead[2])):
                r[i] += v
        print(f"\n{name} ({args.half}): the length rule, {len(arts)} articles\n")
        print("| article words | articles | context | points | share of the words "
              "| R1 | lead R1 | RL - lead RL |")
        print("|---|---|---|---|---|---|---|---|")
        table = {}
        for label in [*(f"<{b}" for b in LENGTH_BUCKETS), f">={LENGTH_BUCKETS[-1]}"]:
            if label not in rows:
                continue
            r = rows[label]
            n = r[0]
            table[label] = {"articles": n, "context": r[1] / n, "points": r[2] / n,
                            "share": r[3] / n, "R1": 100 * r[4] / n, "lead_R1": 100 * r[5] / n,
                            "RL_gain": 100 * r[6] / n}  # fmt: skip
            t = table[label]
            print(f"| {label} | {n:.0f} | {t['context']:.1f} | {t['points']:.1f} "
                  f"| {100 * t['share']:.0f}% | {t['R1']:.1f} | {t['lead_R1']:.1f} "
                  f"| {t['RL_gain']:+.1f} |")
        out[name] = table
    return {"lengths": out}


TUNE_GRID = {
    "norm_power": (0.4, 0.5),
    "position_weight": (3.0,),
    "lead_share": (0.25, 0.3, 1e9),  # 1e9: the prior at full weight whatever the share
    "context_window": (8, 10),
    "opener_penalty": (0.1, 0.2),
}
TUNE_SENTENCES = {"cnn": 3}  # CNN/DailyMail highlights: ~2.6 sentences; BBC: --sentences


def run_tune(args: argparse.Namespace) -> dict[str, object]:
    """Sweep the default method's knobs on each set of ``--set`` (comma-separated);
    rank by the mean, over the sets, of the gain over lead-N in mean ROUGE
    (CNN: R1, R2, RL; BBC: R1, RL, full and 100 words)."""
    import itertools

    rouge = Rouge()
    sets = args.set.split(",")
    data = {}
    for name in sets:
        arts = load_set(name, args.limit, args.half)
        k = TUNE_SENTENCES.get(name, args.sentences)
        segs = [S.split_text(a.body) for a in arts]
        refs = [rouge.tokens(" ".join(a.reference)) for a in arts]
        lead = evaluate("lead", _lead, arts, segs, k, rouge, refs)
        data[name] = (arts, segs, refs, k, lead)

    def key(name: str, r: dict[str, float]) -> float:
        cols = ("R1", "R2", "RL") if name == "cnn" else ("R1", "RL", "R1_100w", "RL_100w")
        return sum(r[c] for c in cols) / len(cols)

    rows: dict[str, dict[str, float]] = {}
    keys = list(TUNE_GRID)
    for values in itertools.product(*TUNE_GRID.values()):
        params = dict(zip(keys, values, strict=True))
        tuning = S.Tuning(**params)  # type: ignore[arg-type]
        label = " ".join(f"{k}={v}" for k, v in params.items())
        row: dict[str, float] = {}
        for name, (arts, segs, refs, k, lead) in data.items():
            ctx = context_size(k)

            def fn(a: Article, sents: list[str], n: int, t: S.Tuning = tuning,
                   c: int = ctx) -> list[str]:
                s = S.summarize_sentences(sents, "english", title=a.title or None,
                                          context_size=c, points_size=n - c, tuning=t)
                return [*s.context, *s.points]

            r = evaluate("tune", fn, arts, segs, k, rouge, refs)
            for m in ("R1", "R2", "RL"):
                row[f"{name}_{m}"] = r[m]
            row[f"{name}_gain"] = key(name, r) - key(name, lead)
        row["gain"] = sum(row[f"{n}_gain"] for n in data) / len(data)
        rows[label] = row
    print("lead: " + ", ".join(f"{n} {d[4]['R1']:.2f}/{d[4]['R2']:.2f}/{d[4]['RL']:.2f}"
                                for n, d in data.items()))  # fmt: skip
    for label, row in sorted(rows.items(), key=lambda kv: -kv[1]["gain"])[: args.top]:
        cells = " ".join(f"{k}={v:.2f}" for k, v in row.items())
        print(f"{label}\n    {cells}")
    return {"tune": {k: {m: round(v, 2) for m, v in r.items()} for k, r in rows.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.summaries", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--set", default="bbc", help="bbc or cnn (--tune: both, comma-separated)")
    ap.add_argument("--half", choices=("all", "tune", "test"),
                    help="all articles, the even-numbered (tune) or the odd-numbered "
                         "(test: the default; --tune: tune)")
    ap.add_argument("--limit", type=int, help="use N articles spread over the set")
    ap.add_argument("--methods", help=f"comma-separated, from: {','.join(METHODS)}")
    ap.add_argument("--sentences", type=int, default=8, help="sentences per summary (8)")
    ap.add_argument("--segmenters", action="store_true", help="compare sentence segmenters")
    ap.add_argument("--tune", action="store_true", help="sweep the default's position prior")
    ap.add_argument("--lengths", action="store_true",
                    help="the length rule per article size (--set bbc,cnn)")
    ap.add_argument("--top", type=int, default=25, help="rows shown by --tune (25)")
    ap.add_argument("--check", action="store_true", help="check ROUGE against rouge_score")
    ap.add_argument("--output", type=Path, default=RESULTS, help="JSON file to update")
    args = ap.parse_args(argv)
    if args.half is None:
        args.half = "tune" if args.tune else "test"
    if args.segmenters:
        key, result = "segmenters", run_segmenters(args)
    elif args.lengths:
        key, result = f"lengths_{args.half}", run_lengths(args)
    elif args.tune:
        key, result = f"tune_{args.sentences}", run_tune(args)
    else:
        key, result = f"{args.set}_{args.half}_sentences_{args.sentences}", run_methods(args)
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
