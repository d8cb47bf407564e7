"""Article main-text extraction: which extractor, which settings.

Runs several extractors over the article pages in ../shared/data/articles and
scores them the way the Zyte article-extraction benchmark does: bags of 4-token
shingles (tokens are \\w+ runs), TP/FP/FN normalised per page, precision and
recall averaged over pages, F1 of the two averages. Also reported: the same
with single tokens, the mean of per-page F1 (which, unlike the Zyte F1, counts
an empty answer as 0), empty answers and time per page.

    cd /work/main && .venv/bin/python -m bench.extraction            # full run
    .venv/bin/python -m bench.extraction --limit 2 --output /tmp/x.json

Datasets: zyte (181 pages, full plain-text ground truth), readability
(18 pages of mozilla/readability; expected.html turned into text with
html_to_text) and trafilatura-eval (18 pages; only "with"/"without" snippets,
scored as the share of snippets found / kept out). Extractors that are not
installed are listed as such and skipped: only trafilatura is a project
dependency. Every extractor runs with outgoing connections refused.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import random
import re
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from aggregator import extract as _extract_module
from aggregator.extract import MIN_MAIN_TEXT_CHARS, extract_main_text, html_to_text

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT.parent / "shared" / "data"
DEFAULT_OUTPUT = PROJECT / "bench" / "results" / "extraction.json"


@dataclass(frozen=True)
class Page:
    key: str
    url: str | None
    raw: bytes
    expected: str | None = None  # full expected text (zyte, readability)
    with_snippets: tuple[str, ...] = ()  # must appear (trafilatura-eval)
    without_snippets: tuple[str, ...] = ()  # must not appear

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", errors="replace")


# --- datasets -------------------------------------------------------------


def load_zyte(data: Path) -> list[Page]:
    base = data / "articles" / "zyte-article-extraction-benchmark"
    truth = json.loads((base / "ground-truth.json").read_text(encoding="utf-8"))
    return [
        Page(
            key=key,
            url=item.get("url"),
            raw=gzip.decompress((base / "html" / f"{key}.html.gz").read_bytes()),
            expected=item.get("articleBody") or "",
        )
        for key, item in sorted(truth.items())
    ]


def load_readability(data: Path) -> list[Page]:
    base = data / "articles" / "readability-test-pages"
    return [
        Page(
            key=folder.name,
            url=None,
            raw=(folder / "source.html").read_bytes(),
            expected=html_to_text((folder / "expected.html").read_bytes()),
        )
        for folder in sorted(p for p in base.iterdir() if p.is_dir())
    ]


def load_trafilatura_eval(data: Path) -> list[Page]:
    base = data / "articles" / "trafilatura-eval"
    evaldata = json.loads((base / "evaldata-subset.json").read_text(encoding="utf-8"))
    return [
        Page(
            key=item["file"],
            url=url,
            raw=(base / "html" / item["file"]).read_bytes(),
            with_snippets=tuple(item.get("with", ())),
            without_snippets=tuple(item.get("without", ())),
        )
        for url, item in sorted(evaldata.items(), key=lambda kv: kv[1]["file"])
    ]


DATASETS: dict[str, Callable[[Path], list[Page]]] = {
    "zyte": load_zyte,
    "readability": load_readability,
    "trafilatura-eval": load_trafilatura_eval,
}


# --- extractors -----------------------------------------------------------

Extractor = Callable[[Page], "str | None"]


def _trafilatura(**options: Any) -> Extractor:
    import trafilatura

    def run(page: Page) -> str | None:
        return trafilatura.extract(page.text, url=page.url, include_comments=False, **options)

    return run


def _ours(page: Page) -> str | None:
    # The public function exactly as the daemon calls it: bytes in, with the
    # threshold; the threshold's own effect is measured in threshold_report().
    return extract_main_text(page.raw, page.url)


def _ours_with(**changes: Any) -> Extractor:
    """Our pipeline (decoding, parser, headline drop, cut-off) with other
    trafilatura settings, to pick the settings on equal terms."""
    options = {**_extract_module._TRAFILATURA_OPTIONS, **changes}

    def run(page: Page) -> str | None:
        text = _extract_module._main_text(page.raw, page.url, None, options)
        return text if len(text) >= MIN_MAIN_TEXT_CHARS else None

    return run


def _ours_unfiltered(page: Page) -> str | None:
    return _extract_module._main_text(
        page.raw, page.url, None, _extract_module._TRAFILATURA_OPTIONS
    )


def _full_text(page: Page) -> str | None:
    return html_to_text(page.raw)


def _readability(page: Page) -> str | None:
    from readability import Document

    return html_to_text(Document(page.text, url=page.url).summary(html_partial=True))


def _justext(page: Page) -> str | None:
    import justext

    paragraphs = justext.justext(page.raw, justext.get_stoplist("English"))
    return "\n\n".join(p.text for p in paragraphs if not p.is_boilerplate)


def _resiliparse(page: Page) -> str | None:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(
        page.text,
        preserve_formatting=True,
        main_content=True,
        list_bullets=False,
        alt_texts=False,
        comments=False,
    )


def _boilerpy3(page: Page) -> str | None:
    from boilerpy3 import extractors

    return extractors.ArticleExtractor(raise_on_failure=False).get_content(page.text)


_goose: Any = None


def _goose3(page: Page) -> str | None:
    global _goose
    from goose3 import Goose

    if _goose is None:
        _goose = Goose({"enable_image_fetching": False, "use_meta_language": True})
    return _goose.extract(raw_html=page.text).cleaned_text


@dataclass(frozen=True)
class Candidate:
    name: str
    dist: str  # PyPI distribution, for the version and "not installed"
    make: Callable[[], Extractor]
    note: str = ""


CANDIDATES: tuple[Candidate, ...] = (
    Candidate(
        "aggregator.extract",
        "trafilatura",
        lambda: _ours,
        "chosen: bytes in, headline dropped, threshold",
    ),
    Candidate("  + favor_precision", "trafilatura", lambda: _ours_with(favor_precision=True)),
    Candidate("  + favor_recall", "trafilatura", lambda: _ours_with(favor_recall=True)),
    Candidate("  + fast", "trafilatura", lambda: _ours_with(fast=True), "no fallback extractors"),
    Candidate(
        "trafilatura",
        "trafilatura",
        lambda: _trafilatura(),
        "plain call: str in, default (with fallbacks)",
    ),
    Candidate(
        "trafilatura fast", "trafilatura", lambda: _trafilatura(fast=True), "no fallback extractors"
    ),
    Candidate("trafilatura precision", "trafilatura", lambda: _trafilatura(favor_precision=True)),
    Candidate("trafilatura recall", "trafilatura", lambda: _trafilatura(favor_recall=True)),
    Candidate("trafilatura no tables", "trafilatura", lambda: _trafilatura(include_tables=False)),
    Candidate("readability-lxml", "readability-lxml", lambda: _readability),
    Candidate("resiliparse", "resiliparse", lambda: _resiliparse, "main_content=True"),
    Candidate("goose3", "goose3", lambda: _goose3),
    Candidate("justext", "justext", lambda: _justext, "English stoplist"),
    Candidate("boilerpy3", "boilerpy3", lambda: _boilerpy3, "ArticleExtractor"),
    Candidate(
        "full text (html_to_text)", "lxml", lambda: _full_text, "baseline: no boilerplate removal"
    ),
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# --- scoring --------------------------------------------------------------

_TOKEN = re.compile(r"\w+")
BOOTSTRAP = 1000


def shingles(text: str, n: int) -> Counter[tuple[str, ...]]:
    tokens = _TOKEN.findall(text or "")
    if len(tokens) < n:
        return Counter([tuple(tokens)]) if tokens else Counter()
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def overlap(expected: str, got: str, n: int) -> tuple[float, float, float]:
    """TP, FP, FN over bags of n-token shingles, normalised to sum to 1 so
    long pages do not outweigh short ones."""
    want, have = shingles(expected, n), shingles(got, n)
    tp = sum((want & have).values())
    fp = sum((have - want).values())
    fn = sum((want - have).values())
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def _precision(tp: float, fp: float, fn: float) -> float:
    return 1.0 if fp == fn == 0 else (tp / (tp + fp) if tp + fp else 0.0)


def _recall(tp: float, fp: float, fn: float) -> float:
    return 1.0 if fp == fn == 0 else (tp / (tp + fn) if tp + fn else 0.0)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def summarise(counts: list[tuple[float, float, float]], bootstrap: int = 0) -> dict[str, float]:
    """Zyte's aggregation: mean precision over pages that predicted something,
    mean recall over pages that expect something, F1 of the means; plus the
    mean per-page F1 and, with ``bootstrap``, the 95% interval half-width of
    F1 from resampling pages (seeded, so runs compare)."""
    ps = [_precision(*c) for c in counts if c[0] + c[1] > 0]
    rs = [_recall(*c) for c in counts if c[0] + c[2] > 0]
    p = statistics.fmean(ps) if ps else 0.0
    r = statistics.fmean(rs) if rs else 0.0
    page_f1 = statistics.fmean(_f1(_precision(*c), _recall(*c)) for c in counts) if counts else 0.0
    result = {"f1": _f1(p, r), "precision": p, "recall": r, "page_f1": page_f1}
    if bootstrap and len(counts) > 1:
        rng = random.Random(20191119)
        f1s = [summarise(rng.choices(counts, k=len(counts)))["f1"] for _ in range(bootstrap)]
        result["f1_ci"] = 1.96 * statistics.stdev(f1s)
    return result


def _squash(text: str) -> str:
    return " ".join(text.split())


def snippet_scores(pages: list[Page], outputs: list[str]) -> dict[str, float]:
    found = kept_out = n_with = n_without = 0
    for page, out in zip(pages, outputs, strict=True):
        flat = _squash(out)
        n_with += len(page.with_snippets)
        n_without += len(page.without_snippets)
        found += sum(_squash(s) in flat for s in page.with_snippets)
        kept_out += sum(_squash(s) not in flat for s in page.without_snippets)
    return {
        "with_found": found / n_with if n_with else 0.0,
        "without_kept_out": kept_out / n_without if n_without else 0.0,
        "accuracy": (found + kept_out) / (n_with + n_without) if n_with + n_without else 0.0,
    }


# --- running --------------------------------------------------------------


class _NoNetwork:
    """Refuse every outgoing connection while extractors run, and count tries."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def __enter__(self) -> _NoNetwork:
        self._saved = (socket.socket.connect, socket.socket.connect_ex, socket.create_connection)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            self.attempts.append(repr(args[1:2] or args[:1]))
            raise OSError("bench.extraction: network disabled")

        socket.socket.connect = refuse  # type: ignore[method-assign]
        socket.socket.connect_ex = refuse  # type: ignore[method-assign]
        socket.create_connection = refuse  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        socket.socket.connect, socket.socket.connect_ex, socket.create_connection = self._saved  # type: ignore[method-assign,assignment]


@dataclass
class Run:
    outputs: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_extractor(extract: Extractor, pages: list[Page], warm_up: bool = True) -> Run:
    """Each page once, timed; one untimed call first so imports and caches
    are not charged to the first page."""
    run = Run()
    if warm_up and pages:
        try:
            extract(pages[0])
        except Exception:
            pass
    for page in pages:
        start = time.perf_counter()
        try:
            out = extract(page) or ""
        except Exception as e:  # an extractor crashing on a page is a result
            out = ""
            run.errors.append(f"{page.key}: {type(e).__name__}: {e}"[:200])
        run.seconds.append(time.perf_counter() - start)
        run.outputs.append(out)
    return run


def score(pages: list[Page], run: Run) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if any(p.expected is not None for p in pages):
        pairs = [(p.expected or "", out) for p, out in zip(pages, run.outputs, strict=True)]
        result.update(summarise([overlap(e, o, 4) for e, o in pairs], bootstrap=BOOTSTRAP))
        tokens = summarise([overlap(e, o, 1) for e, o in pairs])
        result["token_f1"] = tokens["f1"]
        result["token_precision"] = tokens["precision"]
        result["token_recall"] = tokens["recall"]
    if any(p.with_snippets or p.without_snippets for p in pages):
        result.update(snippet_scores(pages, run.outputs))
    ms = sorted(s * 1000 for s in run.seconds)
    result.update(
        pages=len(pages),
        empty=sum(1 for o in run.outputs if not o.strip()),
        errors=len(run.errors),
        error_samples=run.errors[:3],
        ms_mean=statistics.fmean(ms) if ms else 0.0,
        ms_median=statistics.median(ms) if ms else 0.0,
        ms_p95=ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else 0.0,
        ms_max=ms[-1] if ms else 0.0,
    )
    return result


def threshold_report(data: Path, zyte: list[Page], limit: int | None) -> dict[str, Any]:
    """Evidence for MIN_MAIN_TEXT_CHARS: how short real article bodies get,
    how long feed teasers get, and what each cut-off would throw away."""
    import feedparser

    bodies = sorted(len(p.expected or "") for p in zyte)
    unfiltered = run_extractor(_ours_unfiltered, zyte).outputs
    teasers: list[int] = []
    for feed in sorted((data / "feeds").glob("bbc-*")):
        parsed = feedparser.parse(feed.read_bytes())
        teasers.extend(len(html_to_text(e.get("summary", ""))) for e in parsed.entries[:limit])
    teasers = sorted(t for t in teasers if t)
    cuts = {}
    for cut in (100, 150, 200, 250, 300, 350, 400, 500):
        cuts[str(cut)] = {
            "zyte_bodies_below": sum(1 for b in bodies if b < cut),
            "extractions_below": sum(1 for o in unfiltered if 0 < len(o) < cut),
            "bbc_teasers_at_or_above": sum(1 for t in teasers if t >= cut),
        }
    return {
        "chosen": MIN_MAIN_TEXT_CHARS,
        "zyte_body_chars": _spread(bodies),
        "extraction_chars": _spread(sorted(len(o) for o in unfiltered if o)),
        "extraction_empty": sum(1 for o in unfiltered if not o),
        "bbc_teaser_chars": _spread(teasers),
        "by_cut": cuts,
    }


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": values[0],
        "p05": values[int(0.05 * (len(values) - 1))],
        "median": statistics.median(values),
        "p95": values[int(0.95 * (len(values) - 1))],
        "max": values[-1],
    }


def _iter_runs(
    pages_by_set: dict[str, list[Page]], candidates: list[Candidate]
) -> Iterator[tuple[str, Candidate, dict[str, Any]]]:
    for cand in candidates:
        extract = cand.make()
        for name, pages in pages_by_set.items():
            yield name, cand, score(pages, run_extractor(extract, pages))


# --- output ---------------------------------------------------------------

_COLS = (
    ("F1", "f1", "{:.3f}"),
    ("±", "f1_ci", "{:.3f}"),
    ("P", "precision", "{:.3f}"),
    ("R", "recall", "{:.3f}"),
    ("pageF1", "page_f1", "{:.3f}"),
    ("tokF1", "token_f1", "{:.3f}"),
    ("with", "with_found", "{:.2f}"),
    ("w/o", "without_kept_out", "{:.2f}"),
    ("empty", "empty", "{}"),
    ("err", "errors", "{}"),
    ("ms/pg", "ms_mean", "{:.1f}"),
    ("p95ms", "ms_p95", "{:.1f}"),
)


def format_table(dataset: str, rows: dict[str, dict[str, Any]]) -> str:
    present = [c for c in _COLS if any(c[1] in r for r in rows.values())]
    width = max([len("extractor")] + [len(n) for n in rows])
    head = f"{'extractor':<{width}}  " + "  ".join(f"{c[0]:>6}" for c in present)
    lines = [f"== {dataset}", head, "-" * len(head)]
    for name, r in rows.items():
        if "skipped" in r:
            lines.append(f"{name:<{width}}  ({r['skipped']})")
            continue
        cells = [c[2].format(r[c[1]]) if c[1] in r else "" for c in present]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{x:>6}" for x in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.extraction", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="the shared data folder (default: %(default)s)",
    )
    parser.add_argument("--limit", type=int, help="first N pages of each dataset (a quick run)")
    parser.add_argument(
        "--only", action="append", help="run only extractors whose name contains this (repeatable)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"JSON results (default without --limit: {DEFAULT_OUTPUT.relative_to(PROJECT)})",
    )
    args = parser.parse_args(argv)
    output = args.output or (None if args.limit else DEFAULT_OUTPUT)
    if not (args.data / "articles").is_dir():
        print(f"no article data under {args.data}", file=sys.stderr)
        return 2

    pages_by_set = {name: load(args.data)[: args.limit] for name, load in DATASETS.items()}
    candidates = [c for c in CANDIDATES if not args.only or any(o in c.name for o in args.only)]
    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in pages_by_set}
    installed: list[Candidate] = []
    for cand in candidates:
        if _version(cand.dist) is None:
            for name in results:
                results[name][cand.name] = {"skipped": f"{cand.dist} not installed"}
        else:
            installed.append(cand)
    with _NoNetwork() as guard:
        for dataset, cand, scores in _iter_runs(pages_by_set, installed):
            results[dataset][cand.name] = scores
        threshold = threshold_report(args.data, pages_by_set["zyte"], args.limit)
    for name in results:  # keep the table order of CANDIDATES
        results[name] = {c.name: results[name][c.name] for c in candidates}

    for dataset, rows in results.items():
        print(format_table(f"{dataset} ({len(pages_by_set[dataset])} pages)", rows))
        print()
    print(f"threshold MIN_MAIN_TEXT_CHARS={MIN_MAIN_TEXT_CHARS}: {json.dumps(threshold['by_cut'])}")
    print(f"network attempts refused: {len(guard.attempts)}")

    if output:
        report = {
            "meta": {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "limit": args.limit,
                "metric": "Zyte article-extraction-benchmark: 4-token shingles of \\w+ tokens, "
                "TP/FP/FN normalised per page, mean P and R over pages, F1 of the means",
                "versions": {
                    c.name: {"dist": c.dist, "version": _version(c.dist), "note": c.note}
                    for c in candidates
                },
                "network_attempts": guard.attempts[:20],
            },
            "datasets": {
                n: {"pages": len(p), "results": results[n]} for n, p in pages_by_set.items()
            },
            "threshold": threshold,
        }
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
