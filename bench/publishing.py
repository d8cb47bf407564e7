"""Publishing from a big database: fill an aggregator database with N items
(direct SQL into the documented schema, which Store creates), then time
``update.publish_now`` - the newest entries, one query per category, every
output file rendered and written when its bytes change.

    python -m bench.publishing --items 100000

Items carry what a real database holds: teaser HTML and text, the article's
full text and a summary, spread over 500 feeds in 5 categories, one item every
few minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator.config import Settings
from aggregator.store import Store, iso
from aggregator.update import publish_now
from bench.farm import load_articles

CATEGORIES = ("World", "Business", "Technology", "Sport", "Culture")


def fill(db: Path, n_items: int, n_feeds: int = 500) -> None:
    """A database of ``n_items`` summarised items over ``n_feeds`` feeds."""
    articles = load_articles(min(2225, max(50, n_items)))
    end = datetime(2026, 11, 25, 12, tzinfo=UTC)
    with Store(db) as store, store.transaction() as c:
        c.executemany(
            "INSERT INTO feeds (id, url, origin_url, title, category, language, state, "
            "added_at, last_success, next_fetch) VALUES (?, ?, ?, ?, ?, 'en', 'ok', ?, ?, ?)",
            [(f + 1, f"https://news{f}.example/feed.xml", f"https://news{f}.example/feed.xml",
              f"News {f}", CATEGORIES[f % len(CATEGORIES)], iso(end), iso(end), iso(end))
             for f in range(n_feeds)],
        )

        def rows() -> Any:
            for i in range(n_items):
                title, paras = articles[i % len(articles)]
                feed = i % n_feeds + 1
                when = iso(end - timedelta(minutes=3 * (n_items - i)))
                teaser = paras[0]
                chash = hashlib.sha256(f"{i}{title}".encode()).hexdigest()[:32]
                yield (feed, f"guid:{i}", f"guid-{i}", f"https://news{feed - 1}.example/a/{i}",
                       title, None, when, None, f"<p>{teaser}</p>", teaser, "[]", None,
                       when, when, when, chash, "ok", "\n\n".join(paras), " ".join(paras[:2]),
                       json.dumps(paras[2:5]), "default", chash, when)

        c.executemany(
            "INSERT INTO items (feed_id, key, guid, url, title, author, published, updated, "
            "content, content_text, categories, language, first_seen, changed_at, sort_date, "
            "content_hash, article_status, article_text, summary_context, summary_points, "
            "summary_method, summary_hash, summarized_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows(),
        )
        c.execute("ANALYZE")


def measure(work: Path, n_items: int, repeats: int = 5) -> dict[str, Any]:
    """Median seconds of ``publish_now`` (and of its database reads alone)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db, out = work / "publish.db", work / "public"
    t0 = time.perf_counter()
    fill(db, n_items)
    fill_s = time.perf_counter() - t0
    settings = Settings(db=db, output=out, feeds=work / "feeds.opml")
    runs, reads = [], []
    with Store(db) as store:
        count = store.count_items()
        for _ in range(repeats):
            t = time.perf_counter()
            publish_now(settings, store)
            runs.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.recent_entries(settings.max_entries)
            by_category = getattr(store, "recent_by_category", None)  # a proposed patch
            if by_category is not None:
                by_category(settings.category_max_entries)
            else:
                for c in store.categories():
                    store.recent_entries(settings.category_max_entries, category=c)
            reads.append(time.perf_counter() - t)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    runs_sorted = sorted(runs)
    return {"items": count, "fill_s": round(fill_s, 2),
            "db_mb": round(db.stat().st_size / 2**20, 1),
            "runs": [round(r, 4) for r in runs], "first": round(runs[0], 4),
            "median": round(runs_sorted[len(runs) // 2], 4),
            "reads_median": round(sorted(reads)[len(reads) // 2], 4), "files": len(files)}


def main() -> None:
    p = argparse.ArgumentParser(description="Time publishing from a database of N items.")
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        print(json.dumps(measure(Path(tmp), args.items, args.repeats), indent=2))


if __name__ == "__main__":
    main()
