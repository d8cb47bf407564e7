"""The database's size over a simulated month, with and without retention.

    python -m bench.retention [--days 30] [--feeds 40] [--per-day 12]

Every simulated day each feed publishes ``--per-day`` items (a 600-character
teaser as HTML and text) whose linked article (about 5 KB of text) is fetched,
and every item is summarised; each feed's document holds its newest 20 items.
The same days are written into three databases through the store's own write
path (record_feed, save_article, save_summary: the search triggers run), and
after each day two of them are pruned as the daemon would (``stages.prune``):

    none       no retention (keep_days = keep_article_text_days = 0)
    defaults   keep_days 90, keep_article_text_days 14
    short      keep_days 10, keep_article_text_days 3 (shows the plateau)

It prints the file's size (pages in use and free, as ``ls`` shows it after a
checkpoint) day by day and writes bench/results/retention.json.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator import decide
from aggregator.config import Settings
from aggregator.stages.prune import prune
from aggregator.store import Store
from aggregator.types import ParsedFeed, ParsedItem, Subscription, Summary

RESULTS = Path(__file__).resolve().parent / "results" / "retention.json"
START = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
DOCUMENT = 20  # items in a feed's document
WORDS = ("government minister election market shares football club weather storm "
         "court ruling police report hospital patients school students energy prices "
         "climate summit talks border trade deal company profits bank rates housing "
         "river flood train strike airport flights museum exhibition film festival "
         "science study researchers space mission rocket launch").split()


def _text(rng: random.Random, words: int, vocabulary: tuple[str, ...] = WORDS) -> str:
    out = []
    for _ in range(max(1, words // 12)):
        out.append(" ".join(rng.choice(vocabulary) for _ in range(12)).capitalize() + ".")
    return " ".join(out)


def day_words(day: int) -> tuple[str, ...]:
    """Words of one day only (``government`` + a tag spelling the day in letters)."""
    tag = "".join(chr(ord("q") + int(c)) for c in str(day))
    return tuple(w + tag for w in WORDS)


def feeds(n: int) -> list[Subscription]:
    return [Subscription(f"http://feed{k}.example/rss", f"Feed {k}", "News") for k in range(n)]


def day_items(feed: int, day: int, per_day: int, rng: random.Random,
              vocabulary: tuple[str, ...] = WORDS) -> list[ParsedItem]:
    when = START + timedelta(days=day)
    out = []
    for n in range(per_day):
        teaser = _text(rng, 100, vocabulary)
        out.append(ParsedItem(
            guid=f"f{feed}-d{day}-{n}", url=f"http://feed{feed}.example/{day}/{n}",
            title=f"Story {day}.{n} from feed {feed}: " + _text(rng, 12, vocabulary)[:60],
            author=None,
            published=when + timedelta(minutes=n), updated=None,
            content=f"<p>{teaser}</p>", content_text=teaser))
    return out


def fill_day(store: Store, day: int, subs: list[Subscription], per_day: int,
             history: dict[str, list[ParsedItem]], *, seed: int = 1,
             article_words: int = 800, distinct_days: bool = False) -> None:
    """One simulated day: each feed's document (its newest DOCUMENT items) is
    stored, the new items' articles fetched and their summaries written.
    ``distinct_days``: each day's items share words of their own (stories then
    form per day) instead of all items sharing one vocabulary."""
    vocabulary = day_words(day) if distinct_days else WORDS
    rng = random.Random(seed * 100_003 + day)
    now = START + timedelta(days=day, hours=12)
    if day == 0:
        store.sync_subscriptions(subs, now)
    for k, sub in enumerate(subs):
        new = day_items(k, day, per_day, rng, vocabulary)
        doc = (new + history.get(sub.url, []))[:DOCUMENT]
        history[sub.url] = doc
        feed = store.feed(sub.url)
        assert feed is not None
        store.record_feed(feed.id, now, status=200, headers={}, body_hash=f"{day}",
                          parsed=ParsedFeed(sub.title, None, "en", None, tuple(doc)),
                          items=[(decide.item_key(i), i, decide.content_hash(i)) for i in doc],
                          next_fetch=now + timedelta(minutes=30))
        for item in new:
            row = store.conn.execute("SELECT id, content_hash FROM items WHERE feed_id = ? "
                                     "AND key = ?", (feed.id, decide.item_key(item))).fetchone()
            store.save_article(row[0], "ok", _text(rng, article_words, vocabulary))
            store.save_summary(row[0], row[1], Summary((_text(rng, 40, vocabulary),),
                                                       (_text(rng, 20, vocabulary),),
                                                       "default:english"), now,
                               source="article")


def run(days: int, n_feeds: int, per_day: int, work: Path) -> dict[str, Any]:
    policies = {"none": (0, 0), "defaults": (90, 14), "short": (10, 3)}
    subs = feeds(n_feeds)
    stores = {name: Store(work / f"{name}.db") for name in policies}
    histories: dict[str, dict[str, list[ParsedItem]]] = {name: {} for name in policies}
    rows = []
    prune_s: dict[str, float] = {name: 0.0 for name in policies}
    try:
        for day in range(days):
            row: dict[str, Any] = {"day": day + 1}
            for name, (keep, text) in policies.items():
                store = stores[name]
                fill_day(store, day, subs, per_day, histories[name])
                settings = Settings(keep_days=keep, keep_article_text_days=text,
                                    max_entries=100, category_max_entries=30)
                t0 = time.perf_counter()
                prune(settings, store, now=START + timedelta(days=day, hours=23))
                prune_s[name] += time.perf_counter() - t0
                store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                row[name] = round(store.size() / 1e6, 2)
                row[name + "_items"] = store.count_items()
            rows.append(row)
    finally:
        for store in stores.values():
            store.close()
    return {"days": days, "feeds": n_feeds, "per_day": per_day, "rows": rows,
            "prune_seconds_total": {k: round(v, 2) for k, v in prune_s.items()}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--feeds", type=int, default=40)
    ap.add_argument("--per-day", type=int, default=12)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        result = run(args.days, args.feeds, args.per_day, Path(tmp))
    print(f"{args.feeds} feeds x {args.per_day} items a day, each with ~5 KB of article "
          "text and a summary; file size in MB (items stored)")
    print(f"{'day':>4}  {'none':>16}  {'defaults 90/14':>16}  {'short 10/3':>16}")
    for r in result["rows"]:
        print(f"{r['day']:>4}  " + "  ".join(
            f"{r[n]:>7.2f} ({r[n + '_items']:>6})" for n in ("none", "defaults", "short")))
    print("prune time over the month (s):", result["prune_seconds_total"])
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
