"""Story clustering quality and speed on ECB+ and UCI News (../shared/data/stories).

    python -m bench.stories                      # both sets through `aggregator update --all`
    python -m bench.stories --mode memory        # the rules alone, no HTTP, no SQLite
    python -m bench.stories --mode memory --tune # sweep the thresholds on the tune half
    python -m bench.stories --set uci --half test
    python -m bench.stories --no-farm            # without the farm's ingest with/without stories

Each set is served as feeds from a local HTTP server on 127.0.0.1 (one feed per
publisher, each item with its timestamp and, for ECB+, its text as the item's
description), ingested with ``aggregator update --all --no-summaries
--no-publish`` in a subprocess, as a user would, and ``items.story_id`` is
scored against the gold stories with BCubed precision, recall and F1.
``--half tune`` keeps the gold stories of even index (ECB+: even topics, so
both events of a topic stay together), ``--half test`` the others; the
defaults in ``aggregator/stories.py`` were tuned on ``tune``.

ECB+ has no timestamps: its texts get times spread over 48 hours in a seeded
random order (every text in one window, so time does not help). ECB+ texts
without a URL get one on the local server. Speed is measured on the clustering
stage alone (``cluster_pending`` on the ingested database, story tables
emptied first), items per second of wall clock and of CPU time, including the
candidate index upkeep. Last, the bench farm's cold ingest (6000 items) runs with
the stories stage and with ``--no-stories`` (``--no-farm`` skips it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

from aggregator.stages.cluster import BATCH, ClusterItem, Window, assign, features_of
from aggregator.stories import Params

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "stories"
RESULTS = Path(__file__).resolve().parent / "results" / "stories.json"
REPO = Path(__file__).resolve().parents[1]
START = datetime(2013, 5, 2, tzinfo=UTC)


@dataclass(frozen=True)
class Doc:
    id: str
    feed: str  # publisher: one feed each
    gold: str
    title: str
    text: str | None
    url: str | None
    when: datetime


def load_ecb(half: str | None) -> list[Doc]:
    rows = [json.loads(line) for line in (SHARED / "ecbplus.jsonl").open(encoding="utf-8")]
    rng = random.Random(10)
    rng.shuffle(rows)
    docs = []
    seen_urls: set[str] = set()
    for n, r in enumerate(rows):
        if half and ("tune" if r["topic"] % 2 == 0 else "test") != half:
            continue
        url = r.get("url")
        if not url or url in seen_urls:
            url = None
        else:
            seen_urls.add(url)
        host = url.split("/")[2].removeprefix("www.") if url else f"wire{n % 12}"
        docs.append(Doc(r["id"], host, r["event"], r["title"], r["text"], url,
                        START + timedelta(seconds=n * 172800 // len(rows))))
    return docs


def load_uci(half: str | None) -> list[Doc]:
    with (SHARED / "uci-news-dev.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    order = {s: n for n, s in enumerate(sorted({r["STORY"] for r in rows}))}
    docs = []
    for r in rows:
        if half and ("tune" if order[r["STORY"]] % 2 == 0 else "test") != half:
            continue
        docs.append(Doc(r["ID"], r["PUBLISHER"] or r["HOSTNAME"], r["STORY"], r["TITLE"], None,
                        r["URL"], datetime.fromtimestamp(int(r["TIMESTAMP"]) / 1000, UTC)))
    docs.sort(key=lambda d: (d.when, int(d.id)))
    return docs


def bcubed(pred: dict[str, object], gold: dict[str, str]) -> tuple[float, float, float]:
    """BCubed precision, recall and F1 of a predicted clustering against the gold."""
    by_pred: dict[object, list[str]] = defaultdict(list)
    by_gold: dict[str, list[str]] = defaultdict(list)
    for i, c in pred.items():
        by_pred[c].append(i)
        by_gold[gold[i]].append(i)
    p = r = 0.0
    for i in pred:
        mates = by_pred[pred[i]]
        same = sum(1 for j in mates if gold[j] == gold[i])
        p += same / len(mates)
        r += same / len(by_gold[gold[i]])
    p, r = p / len(pred), r / len(pred)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


# --- the rules alone, in memory (tuning) ---------------------------------------------


def run_memory(docs: Sequence[Doc], params: Params) -> tuple[dict[str, object], float]:
    feeds: dict[str, int] = {}
    items = []
    for n, d in enumerate(docs):
        fid = feeds.setdefault(d.feed, len(feeds) + 1)
        items.append((d.id, ClusterItem(n, fid, f"http://127.0.0.1/{fid}.xml", d.url, d.url,
                                        d.title, (d.text,), "en", d.when)))
    w = Window()
    t0 = time.perf_counter()
    for k in range(0, len(items), BATCH):  # as the stage batches them
        chunk = [it for _, it in items[k:k + BATCH]]
        batch = [(it, features_of(it, params)) for it in chunk]
        assign(batch, w, params)
        w.retire(chunk[-1].when - params.window)
    elapsed = time.perf_counter() - t0
    story = dict(w.assigned)
    return {doc_id: story[it.id] for doc_id, it in items}, len(items) / elapsed


# --- as a user would: feeds on a local server, `aggregator update --all` ---------------


def _feed_xml(name: str, docs: Sequence[Doc], base: str) -> bytes:
    out = [f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
           f"<title>{escape(name)}</title><link>{base}/</link>"
           f"<description>{escape(name)}</description>"]
    for d in docs:
        link = d.url or f"{base}/article/{d.id}"
        out.append(f"<item><title>{escape(d.title)}</title><link>{escape(link)}</link>"
                   f'<guid isPermaLink="false">{escape(d.id)}</guid>'
                   f"<pubDate>{format_datetime(d.when)}</pubDate>")
        if d.text:
            out.append(f"<description>{escape(d.text)}</description>")
        out.append("</item>")
    out.append("</channel></rss>")
    return "".join(out).encode()


def run_update(docs: Sequence[Doc], workdir: Path) -> tuple[dict[str, object], Path, float]:
    by_feed: dict[str, list[Doc]] = defaultdict(list)
    for d in docs:
        by_feed[d.feed].append(d)
    names = sorted(by_feed)
    bodies: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = bodies.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    for n, name in enumerate(names):
        bodies[f"/feed/{n}.xml"] = _feed_xml(name, by_feed[name], base)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    opml = workdir / "feeds.opml"
    outlines = "".join(f'<outline type="rss" text="{escape(name, {chr(34): "&quot;"})}" '
                       f'xmlUrl="{base}/feed/{n}.xml"/>' for n, name in enumerate(names))
    opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><head/><body>{outlines}'
                    "</body></opml>", encoding="utf-8")
    db = workdir / "bench.db"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "aggregator", "--db", str(db), "--feeds", str(opml),
                        "--output", str(workdir / "public"), "update", "--all",
                        "--no-summaries", "--no-publish"],
                       check=True, env=env, stdout=subprocess.DEVNULL, cwd=workdir)
    finally:
        server.shutdown()
    elapsed = time.perf_counter() - t0
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT guid, story_id FROM items").fetchall()
    conn.close()
    return {guid: sid for guid, sid in rows}, db, elapsed


def _reset(db: Path) -> None:
    from aggregator.store import Store

    with Store(db) as store, store.transaction() as c:
        c.execute("UPDATE items SET story_id = NULL")
        for table in ("story_terms", "story_keys", "story_df", "stories"):
            c.execute(f"DELETE FROM {table}")  # noqa: S608


def stage_speed(db: Path) -> dict[str, float]:
    """Items per second of the clustering stage alone on an ingested database
    (story tables emptied first), by the wall clock and by the process's CPU time
    (the machine is shared: CPU time is the steadier figure): cold (the first run
    in this process: empty stem memo, as in a new ``update``) and warm (as in a
    running daemon), and the peak traced memory (MiB, a third run: tracing slows
    it)."""
    from aggregator.stages.cluster import cluster_pending
    from aggregator.store import Store

    out: dict[str, float] = {}
    for run in ("cold", "warm", "memory"):
        _reset(db)
        with Store(db) as store:
            if run == "memory":
                tracemalloc.start()
            t0, c0 = time.perf_counter(), time.process_time()
            n = cluster_pending(store)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if run == "memory":
                out["stage_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
                tracemalloc.stop()
            else:
                out[f"stage_{run}_items_per_s"] = round(n / wall)
                out[f"stage_{run}_items_per_cpu_s"] = round(n / cpu)
    return out


def farm_ingest(repeats: int = 3) -> dict[str, float]:
    """Cold ``update --all --no-articles --no-summaries --no-publish`` of the
    bench farm (200 feeds x 30 items of BBC text, bench/farm.py) from a fresh
    database, with the stories stage and with ``--no-stories``, taking turns;
    medians of wall seconds and of the child's CPU seconds."""
    import resource
    import statistics

    from bench.farm import Farm

    times: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with Farm(200, 30).serve(0) as farm, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        opml = farm.write_opml(work / "farm.opml")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for _ in range(repeats):
            for label, extra in (("stories", []), ("no_stories", ["--no-stories"])):
                db = work / f"{label}.db"
                for p in work.glob(f"{label}.db*"):
                    p.unlink()
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "aggregator", "--db", str(db),
                                "--feeds", str(opml), "--output", str(work / "public"),
                                "update", "--all", "--no-articles", "--no-summaries",
                                "--no-publish", *extra], check=True, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
                wall = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                times[label].append((wall, cpu))
    out: dict[str, float] = {"farm_items": 6000}
    for label, runs in times.items():
        out[f"ingest_{label}_s"] = round(statistics.median(w for w, _ in runs), 2)
        out[f"ingest_{label}_cpu_s"] = round(statistics.median(c for _, c in runs), 2)
    return out


# --- main --------------------------------------------------------------------------


def tune(docs: Sequence[Doc], gold: dict[str, str], base: Params, kind: str) -> None:
    grid = ([(t, tw, nb) for t in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45) for tw in (1.0, 2.0, 3.0)
             for nb in (1.0, 1.5, 2.0, 3.0)] if kind == "ecb" else
            [(t, 1.0, nb) for t in (0.08, 0.12, 0.16, 0.2, 0.25) for nb in (1.0, 1.5)])
    for t, tw, nb in grid:
        p = (replace(base, threshold_text=t, title_weight=tw, name_boost=nb) if kind == "ecb"
             else replace(base, threshold_title=t, name_boost=nb))
        pred, _ = run_memory(docs, p)
        bp, br, f1 = bcubed(pred, gold)
        print(f"threshold {t:.2f} title_weight {tw:.1f} name_boost {nb:.1f}: "
              f"P {bp:.3f} R {br:.3f} F1 {f1:.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=("ecb", "uci", "both"), default="both")
    ap.add_argument("--half", choices=("tune", "test", "all", "each"), default="each")
    ap.add_argument("--mode", choices=("update", "memory"), default="update")
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--no-farm", action="store_true",
                    help="skip the cold ingest of the bench farm with and without stories")
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"no data at {SHARED}", file=sys.stderr)
        return 2
    results = []
    halves = ("tune", "test", "all") if args.half == "each" else (args.half,)
    for kind in (("ecb", "uci") if args.set == "both" else (args.set,)):
        for half in halves:
            docs = (load_ecb if kind == "ecb" else load_uci)(None if half == "all" else half)
            gold = {d.id: d.gold for d in docs}
            if args.tune:
                print(f"== {kind} {half}: {len(docs)} items, {len(set(gold.values()))} stories")
                tune(docs, gold, Params(), kind)
                continue
            row: dict[str, object] = {"set": kind, "half": half, "items": len(docs),
                                      "gold_stories": len(set(gold.values()))}
            if args.mode == "memory":
                pred, speed = run_memory(docs, Params())
                row["rules_items_per_s"] = round(speed)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    pred, db, elapsed = run_update(docs, Path(tmp))
                    row["update_s"] = round(elapsed, 2)
                    missing = sum(1 for d in docs if pred.get(d.id) is None)
                    row["items_without_story"] = missing
                    row.update(stage_speed(db))
            bp, br, f1 = bcubed({d.id: pred.get(d.id) or f"none-{d.id}" for d in docs}, gold)
            row.update(precision=round(bp, 3), recall=round(br, 3), f1=round(f1, 3),
                       stories=len(set(pred.values())))
            results.append(row)
            print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    ingest: dict[str, float] = {}
    if args.mode == "update" and not args.tune and not args.no_farm:
        ingest = farm_ingest()
        print("  ".join(f"{k} {v}" for k, v in ingest.items()), flush=True)
    if results and args.mode == "update" and args.half == "each" and args.set == "both":
        RESULTS.write_text(json.dumps({"when": datetime.now(UTC).isoformat(timespec="seconds"),
                                       "results": results, "ingest": ingest}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
