"""The parser against other projects' test corpora: every file of feedparser's
test suite (illformed/, wellformed/, encoding/, entities/, json/) and of the W3C
Feed Validation Service's test cases goes through ``parse`` (with a content type
taken from its extension, with the headers its comment names, with none), then a
sample of the feeds that parsed goes through ``publish``.

    python -m bench.fuzz                      # counts, errors by type, failures
    AGGREGATOR_FUZZ_CORPUS=/some/fuzz python -m bench.fuzz

Every file must give a ParsedFeed or a ParseError, never another exception, and
what parses must be sane: plain-text titles, http(s) links, dates in
1970..now+1 day, a ttl in range, content without active markup. The published
files must be well-formed XML and JSON, with no script in the page or in the
HTML they carry. tests/test_fuzz.py runs the same functions and asserts on them.

The corpora are read where they lie (../shared/data/fuzz, see
shared/data/SOURCES.md section F), never copied into the project.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lxml import etree
from lxml import html as lxml_html

from aggregator.decide import assign_keys
from aggregator.errors import ParseError
from aggregator.parse import parse
from aggregator.publish import publish
from aggregator.types import Entry, ParsedFeed, Subscription

CORPUS_ENV = "AGGREGATOR_FUZZ_CORPUS"
DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "fuzz"
# feedparser's corpus files date from 2004-2023; a fixed clock keeps the run reproducible
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TTL_MINUTES = 3650 * 24 * 60  # decide.py's longest delay, ten years
CONTENT_TYPES = {".xml": "application/xml", ".json": "application/feed+json",
                 ".opml": "text/x-opml", ".html": "text/html"}  # fmt: skip
# feedparser's fixtures name the HTTP headers they are served with: "Header: Name: value"
_HEADER_LINE = re.compile(rb"^\s*Header:\s*([A-Za-z-]+)\s*:\s*(.*?)\s*$", re.MULTILINE)
# C0 and DEL: never text (XML 1.0 can't even carry most); C1 too in one-line fields,
# where a terminal listing titles would take U+009B for an escape sequence
_C0 = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*):")


def corpus_root() -> Path:
    return Path(os.environ.get(CORPUS_ENV) or DEFAULT_CORPUS)


def corpus_files(root: Path) -> list[Path]:
    """Every test file under ``root``, in a stable order (licences left out)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "LICENSE")


def header_variants(path: Path, body: bytes) -> list[dict[str, str]]:
    """No headers; a content type from the extension; the headers the file's comment names."""
    variants: list[dict[str, str]] = [{}]
    ctype = CONTENT_TYPES.get(path.suffix.lower())
    if ctype:
        variants.append({"Content-Type": ctype})
    named = {m.group(1).decode("ascii"): m.group(2).decode("latin-1")
             for m in _HEADER_LINE.finditer(body[:4096])}  # fmt: skip
    if named:
        variants.append(named)
    return variants


# ----------------------------------------------------------------------------- checks


def _text_problems(what: str, value: object, *, one_line: bool,
                   script_ok: bool = False) -> list[str]:  # fmt: skip
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"{what} is a {type(value).__name__}, not text"]
    out = []
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        out.append(f"{what} holds a lone surrogate: {value[:60]!r}")
    if (_CONTROL if one_line else _C0).search(value):
        out.append(f"{what} holds a control character: {value[:60]!r}")
    if one_line and ("\n" in value or not script_ok and "<script" in value.lower()):
        out.append(f"{what} is not one line of plain text: {value[:60]!r}")
    return out


def _url_problems(what: str, value: str | None) -> list[str]:
    if value is None or value.lower().startswith(("http://", "https://")):
        return []
    return [f"{what} is not an http(s) URL: {value[:80]!r}"]


def _date_problems(what: str, value: datetime | None, now: datetime) -> list[str]:
    if value is None:
        return []
    if value.tzinfo is None:
        return [f"{what} {value} has no time zone"]
    if not EPOCH <= value <= now + timedelta(days=1):
        return [f"{what} {value} is outside 1970..now+1day"]
    return []


# What our own templates write; anything else in a page or a feed's HTML is someone else's.
PAGE_TAGS = frozenset("html head meta title link style body header h1 h2 h3 p a main article "
                      "time ul li footer strong em nav code".split())  # fmt: skip
PAGE_ATTRIBUTES = frozenset("lang charset name content http-equiv rel type title href class "
                            "datetime aria-label aria-current".split())  # fmt: skip
CONTENT_TAGS = frozenset("p strong em ul li a".split())
# what nh3 lets through in an item's HTML must still be inert
_ACTIVE_TAGS = frozenset("script iframe frame frameset object embed applet base form input "
                         "button meta link style svg math template".split())  # fmt: skip
_URL_ATTRIBUTES = frozenset("href src action formaction cite background poster data "
                            "longdesc codebase srcset xlink:href".split())  # fmt: skip


def active_content(markup: str, *, allowed_tags: frozenset[str] | None = None,
                   allowed_attributes: frozenset[str] | None = None) -> list[str]:  # fmt: skip
    """Script, event handlers and non-http(s) links in an HTML page or fragment.
    ``allowed_tags``/``allowed_attributes``: a closed list to hold the markup to
    (our templates'); without them, known active elements are refused."""
    problems = []
    if re.search(r"<\s*script", markup, re.IGNORECASE):
        problems.append("a <script> tag in the markup")
    cleaned = _CONTROL.sub("", markup)  # lxml refuses them; they are not markup
    if not cleaned.strip():
        return problems
    if cleaned.lstrip().lower().startswith("<!doctype"):
        root = lxml_html.document_fromstring(cleaned)
    else:
        root = lxml_html.fragment_fromstring(cleaned, create_parent="div")
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue  # comments, processing instructions
        tag = el.tag.lower()
        if allowed_tags is not None and tag not in allowed_tags | {"div"}:
            problems.append(f"<{tag}> is not one of our templates' elements")
        if tag in _ACTIVE_TAGS and allowed_tags is None:
            problems.append(f"active element <{tag}>")
        for name, value in el.attrib.items():
            name = name.lower()
            if name.startswith("on"):
                problems.append(f"event handler {name}= on <{tag}>")
            if allowed_attributes is not None and name not in allowed_attributes:
                problems.append(f"attribute {name}= on <{tag}>")
            if name in _URL_ATTRIBUTES or name == "content" and "url" in value.lower():
                m = _SCHEME.match(value)
                scheme = m.group(1).lower() if m else None
                if scheme not in (None, "http", "https", "mailto"):
                    problems.append(f"{name}={value[:60]!r} on <{tag}>")
            if name == "style" and re.search(r"expression|url\s*\(|javascript", value, re.I):
                problems.append(f"style={value[:60]!r} on <{tag}>")
    return problems


def feed_problems(feed: ParsedFeed, now: datetime, *,
                  titles_may_mention_script: bool = False) -> list[str]:  # fmt: skip
    """What is wrong with a ParsedFeed, by the promises parse makes. A title is
    plain text, so "&lt;script&gt;" in a feed is the text "<script>", harmless
    once escaped; ``titles_may_mention_script`` allows it (generated input), the
    corpus run holds titles to no "<script" at all."""
    if not isinstance(feed, ParsedFeed):
        return [f"parse returned a {type(feed).__name__}"]
    ok = titles_may_mention_script
    out = _text_problems("feed title", feed.title, one_line=True, script_ok=ok)
    out += _url_problems("site_url", feed.site_url)
    if feed.language is not None and (not isinstance(feed.language, str)
                                      or len(feed.language) > 20):  # fmt: skip
        out.append(f"language {feed.language!r}")
    ttl = feed.ttl_minutes
    if ttl is not None and (type(ttl) is not int or not 0 < ttl <= MAX_TTL_MINUTES):
        out.append(f"ttl {ttl!r} is not a sane number of minutes")
    for n, item in enumerate(feed.items):
        where = f"item {n}"
        for name in ("title", "author"):
            out += _text_problems(f"{where} {name}", getattr(item, name), one_line=True,
                                  script_ok=ok)  # fmt: skip
        for cat in item.categories:
            out += _text_problems(f"{where} category", cat, one_line=True, script_ok=ok)
        if item.guid is not None and not isinstance(item.guid, str):  # identity only:
            out.append(f"{where} guid is a {type(item.guid).__name__}")  # kept as written
        out += _text_problems(f"{where} content_text", item.content_text, one_line=False)
        out += _text_problems(f"{where} content", item.content, one_line=False)
        out += _url_problems(f"{where} url", item.url)
        out += _date_problems(f"{where} published", item.published, now)
        out += _date_problems(f"{where} updated", item.updated, now)
        if item.content:
            out += [f"{where} content: {p}" for p in active_content(item.content)]
    return out


# ----------------------------------------------------------------------------- parsing


@dataclass
class CorpusRun:
    """What the corpus gave: counts, ParseError messages by first word, failures."""

    files: int = 0
    runs: int = 0  # (file, headers) pairs
    parsed: int = 0
    refused: int = 0  # ParseError
    crashed: int = 0  # any other exception
    errors_by_type: Counter[str] = field(default_factory=Counter)
    errors_by_message: Counter[str] = field(default_factory=Counter)  # positions left out
    outcomes_by_folder: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # "path [headers]: problem"
    feeds: list[tuple[Path, ParsedFeed]] = field(default_factory=list)  # first parse per file


def _folder(label: str) -> str:
    return "/".join(Path(label).parts[:2])


def parse_one(path: Path, body: bytes, headers: dict[str, str], now: datetime,
              run: CorpusRun, label: str) -> ParsedFeed | None:  # fmt: skip
    run.runs += 1
    where = f"{label} {headers or '{}'}"
    try:
        feed = parse(body, headers, f"http://127.0.0.1/corpus/{label}", now)
    except ParseError as e:
        run.refused += 1
        run.errors_by_type[(str(e).split() or ["(empty)"])[0].rstrip(":")] += 1
        message = re.sub(r"<unknown>:\d+:\d+: ", "", str(e))
        run.errors_by_message[re.sub(r"\d+", "N", message)[:80]] += 1
        run.outcomes_by_folder[(_folder(label), "ParseError")] += 1
        return None
    except Exception as e:  # the bug this run looks for
        run.crashed += 1
        run.failures.append(f"{where}: {type(e).__name__}: {e}")
        return None
    run.parsed += 1
    run.outcomes_by_folder[(_folder(label), "ParsedFeed")] += 1
    run.failures += [f"{where}: {p}" for p in feed_problems(feed, now)]
    return feed


def run_corpus(root: Path, now: datetime = NOW) -> CorpusRun:
    run = CorpusRun()
    for path in corpus_files(root):
        run.files += 1
        body = path.read_bytes()
        label = str(path.relative_to(root))
        first = None
        for headers in header_variants(path, body):
            feed = parse_one(path, body, headers, now, run, label)
            first = first or feed
        if first is not None:
            run.feeds.append((path, first))
    return run


# ----------------------------------------------------------------------------- publishing


def entries_from(feed: ParsedFeed, feed_url: str, now: datetime, start_id: int = 1) -> list[Entry]:
    """Stored entries as the store would hand them to the publisher: one per key,
    the summary taken from the text (half as a Context, half left to the excerpt)."""
    out = []
    for n, (key, item) in enumerate(assign_keys(feed.items)):
        text = item.content_text or ""
        context = (text[:600],) if text and n % 2 == 0 else ()
        points = tuple(item.categories[:3]) if n % 3 == 0 else ()
        out.append(Entry(
            item_id=start_id + n, key=key, feed_url=feed_url, feed_title=feed.title or "",
            feed_site_url=feed.site_url, category=item.categories[0] if item.categories else None,
            title=item.title, url=item.url, author=item.author, published=item.published,
            updated=item.updated, first_seen=now, language=item.language or feed.language,
            categories=item.categories, summary_context=context, summary_points=points,
            summary_method="fuzz", content_text=text or None,
        ))  # fmt: skip
    return out


def output_problems(out_dir: Path) -> list[str]:
    """Published files that are not well-formed, and active content in the HTML."""
    problems = []
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    for path in sorted(out_dir.rglob("*")):
        if not path.is_file():
            continue
        name = str(path.relative_to(out_dir))
        data = path.read_bytes()
        try:
            if path.suffix in (".xml", ".opml"):
                etree.fromstring(data, parser)
            elif path.suffix == ".json":
                doc = json.loads(data.decode("utf-8"))
                for item in doc["items"]:
                    problems += [f"{name} content_html: {p}" for p in active_content(
                        item.get("content_html", ""), allowed_tags=CONTENT_TAGS,
                        allowed_attributes=frozenset({"href"}))]  # fmt: skip
            elif path.suffix == ".html":
                problems += [f"{name}: {p}" for p in active_content(
                    data.decode("utf-8"), allowed_tags=PAGE_TAGS,
                    allowed_attributes=PAGE_ATTRIBUTES)]  # fmt: skip
                if b"Content-Security-Policy" not in data:
                    problems.append(f"{name}: no Content-Security-Policy")
        except (etree.XMLSyntaxError, ValueError, KeyError) as e:
            problems.append(f"{name}: {type(e).__name__}: {e}")
    return problems


def publish_problems(feed: ParsedFeed, feed_url: str, out_dir: Path, now: datetime) -> list[str]:
    entries = entries_from(feed, feed_url, now)
    subs = [Subscription(url=feed_url, title=feed.title,
                         category=entries[0].category if entries else None,
                         html_url=feed.site_url)]  # fmt: skip
    try:
        publish(entries, out_dir, subscriptions=subs, base_url="http://127.0.0.1:8080/agg/",
                title=feed.title or "fuzz", now=now)  # fmt: skip
    except Exception as e:
        return [f"publish raised {type(e).__name__}: {e}"]
    return output_problems(out_dir)


def publish_sample(feeds: Sequence[tuple[Path, ParsedFeed]], root: Path, every: int,
                   now: datetime = NOW) -> tuple[int, list[str]]:  # fmt: skip
    """Publish every ``every``-th feed that has items, each into a fresh directory."""
    with_items = [(p, f) for p, f in feeds if f.items]
    sample = with_items[::every]
    failures = []
    with tempfile.TemporaryDirectory(prefix="fuzz-publish-") as tmp:
        for n, (path, feed) in enumerate(sample):
            label = str(path.relative_to(root))
            url = f"http://127.0.0.1/corpus/{label}"
            failures += [f"{label}: {p}" for p in
                         publish_problems(feed, url, Path(tmp) / str(n), now)]  # fmt: skip
    return len(sample), failures


# ----------------------------------------------------------------------------- CLI


def _table(rows: Iterable[tuple[str, object]]) -> str:
    rows = list(rows)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=None, help=f"default: ${CORPUS_ENV} or "
                    f"{DEFAULT_CORPUS}")  # fmt: skip
    ap.add_argument("--publish-every", type=int, default=10,
                    help="publish every N-th feed that has items (default 10)")
    args = ap.parse_args(argv)
    root = args.corpus or corpus_root()
    if not root.is_dir():
        print(f"no corpus at {root} (see shared/data/SOURCES.md section F)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    run = run_corpus(root)
    t_parse = time.perf_counter() - t0
    t0 = time.perf_counter()
    published, pub_failures = publish_sample(run.feeds, root, args.publish_every)
    t_publish = time.perf_counter() - t0
    folders = Counter(str(p.relative_to(root)).split(os.sep)[0] for p in corpus_files(root))
    print(f"corpus {root}")
    print(_table([*((f"files in {k}/", v) for k, v in sorted(folders.items())),
                  ("files tried", run.files), ("parse calls (file x headers)", run.runs),
                  ("ParsedFeed", run.parsed), ("ParseError", run.refused),
                  ("other exceptions", run.crashed),
                  ("failures (exceptions, bad values)", len(run.failures)),
                  ("feeds published (sample)", published),
                  ("publish failures", len(pub_failures)),
                  ("parse time, s", f"{t_parse:.1f}"),
                  ("publish time, s", f"{t_publish:.1f}")]))  # fmt: skip
    print("ParseError by type (first word):")
    print(_table(run.errors_by_type.most_common()) if run.errors_by_type else "  none")
    print("ParseError by message (numbers as N, top 15):")
    print(_table(run.errors_by_message.most_common(15)) if run.errors_by_message else "  none")
    print("parse calls by folder: ParsedFeed / ParseError")
    folders2 = sorted({f for f, _ in run.outcomes_by_folder})
    print(_table((f, f"{run.outcomes_by_folder[(f, 'ParsedFeed')]:>5} / "
                     f"{run.outcomes_by_folder[(f, 'ParseError')]:>5}") for f in folders2))
    for line in [*run.failures, *pub_failures][:200]:
        print("FAIL", line)
    return 1 if run.failures or pub_failures else 0


if __name__ == "__main__":
    sys.exit(main())
