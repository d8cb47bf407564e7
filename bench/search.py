"""Search at scale: the m006_search migration (building ``items_fts`` from the
items already stored), what its triggers cost each write, and query times.

    python -m bench.search --items 100000

The database is bench/publishing.py's: items with teaser, full article text and
a summary, over 500 feeds. It is filled twice, once without the index (as a
database made before m006 holds it) and once with it, which measures the
triggers; then the migration runs on the first one, as an upgrade would.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aggregator import search
from aggregator import store as store_module
from aggregator.store import Store
from bench.publishing import fill

RESULTS = Path(__file__).resolve().parent / "results" / "search.json"
QUERIES = ("government", "football club", '"prime minister"', "econom*",
           "market OR shares", "zzzznotaword")


def measure(work: Path, n_items: int, repeats: int = 5) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    plain, indexed = work / "plain.db", work / "indexed.db"
    store_module.MIGRATIONS.remove(store_module.m006_search)  # a database from before m006
    try:
        t0 = time.perf_counter()
        fill(plain, n_items)
        fill_plain_s = time.perf_counter() - t0
    finally:
        store_module.MIGRATIONS.append(store_module.m006_search)
    t0 = time.perf_counter()
    fill(indexed, n_items)  # the same rows, each through the triggers
    fill_indexed_s = time.perf_counter() - t0
    indexed.unlink()
    size_before = plain.stat().st_size
    t0 = time.perf_counter()
    with Store(plain) as store:  # the upgrade: m006_search runs here
        migrate_s = time.perf_counter() - t0
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size_after = plain.stat().st_size
        count = store.count_items()
        queries = {}
        for q in QUERIES:
            match = search.fts_query(q)
            times, hits = [], 0
            for _ in range(repeats):
                t = time.perf_counter()
                hits = len(store.search(match, limit=50))
                times.append(time.perf_counter() - t)
            total = store.conn.execute("SELECT count(*) FROM items_fts WHERE items_fts MATCH ?",
                                       (match,)).fetchone()[0]
            queries[q] = {"median_ms": statistics.median(times) * 1000, "shown": hits,
                          "matches": total}
    return {"items": count, "fill_s": fill_plain_s, "fill_with_triggers_s": fill_indexed_s,
            "migrate_s": migrate_s,
            "size_before_mb": size_before / 1e6, "size_after_mb": size_after / 1e6,
            "queries": queries}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(Path(tmp) / "search", args.items, args.repeats)
    print(f"{r['items']} items: m006_search migration (backfill) {r['migrate_s']:.2f} s; "
          f"file {r['size_before_mb']:.0f} MB -> {r['size_after_mb']:.0f} MB; "
          f"filling it: {r['fill_s']:.1f} s, through the triggers "
          f"{r['fill_with_triggers_s']:.1f} s")
    print(f"{'QUERY':<22}{'MATCHES':>9}{'SHOWN':>7}{'MEDIAN':>10}")
    for q, f in r["queries"].items():
        print(f"{q:<22}{f['matches']:>9}{f['shown']:>7}{f['median_ms']:>8.1f}ms")
    RESULTS.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
