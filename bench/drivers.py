"""The other contestants, each run as a whole process the way a user would run
it, so their import and start-up costs count as the aggregator's do:

    python -m bench.drivers reader URLS DB [--workers 8]
        lemon24/reader through its Python API: make_reader, add_feed for every
        URL (exist_ok), update_feeds(workers=N, scheduled=False) so that every
        feed is polled on every run, as ``aggregator update --all`` does.

    python -m bench.drivers minimal URLS STATE [--workers 8]
        a minimal script: httpx with N threads + feedparser, no storage beyond
        a JSON file of ETag / Last-Modified per URL (so a warm run is
        conditional). Not a floor: it parses on one core under the GIL, which
        a program parsing in other processes beats.

    python -m bench.drivers download URLS STATE [--workers 8]
        the floor: the standard library's http.client on N threads, one
        keep-alive connection per thread and host, conditional GETs from the
        same kind of JSON file; it reads every body and does nothing with it.
        What no feed reader can do without: start Python, ask, read the bytes
        (and the farm's cost of serving them, measured on the farm).

URLS is a file of feed URLs, one a line. Each prints one JSON line: the time
spent after imports ("inner"), and what it saw.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

START = time.perf_counter()


def run_reader(urls: list[str], db: Path, workers: int) -> dict[str, Any]:
    from reader import make_reader

    t0 = time.perf_counter()
    reader = make_reader(str(db))
    try:
        for url in urls:
            reader.add_feed(url, exist_ok=True)
        reader.update_feeds(workers=workers, scheduled=False)
        counts = reader.get_entry_counts()
        broken = sum(1 for f in reader.get_feeds() if f.last_exception is not None)
    finally:
        reader.close()
    return {"inner": time.perf_counter() - t0, "entries": counts.total, "broken": broken}


def run_minimal(urls: list[str], state_path: Path, workers: int) -> dict[str, Any]:
    import feedparser
    import httpx

    t0 = time.perf_counter()
    state: dict[str, list[str | None]] = {}
    if state_path.exists():
        state = json.loads(state_path.read_text())
    client = httpx.Client(limits=httpx.Limits(max_connections=workers,
                                              max_keepalive_connections=workers))

    def one(url: str) -> tuple[str, list[str | None], int, int]:
        etag, modified = state.get(url, [None, None])
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if modified:
            headers["If-Modified-Since"] = modified
        resp = client.get(url, headers=headers)
        if resp.status_code == 304:
            return url, [etag, modified], 304, 0
        parsed = feedparser.parse(io.BytesIO(resp.content), response_headers=dict(resp.headers))
        return (url, [resp.headers.get("etag"), resp.headers.get("last-modified")],
                resp.status_code, len(parsed.entries))

    with client, ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, urls))
    state_path.write_text(json.dumps({url: v for url, v, _, _ in results}))
    return {"inner": time.perf_counter() - t0,
            "entries": sum(n for *_, n in results),
            "not_modified": sum(status == 304 for _, _, status, _ in results),
            "failed": sum(status not in (200, 304) for _, _, status, _ in results)}


def run_download(urls: list[str], state_path: Path, workers: int) -> dict[str, Any]:
    import http.client
    import threading
    from urllib.parse import urlsplit

    t0 = time.perf_counter()
    state: dict[str, list[str | None]] = {}
    if state_path.exists():
        state = json.loads(state_path.read_text())
    local = threading.local()

    def one(url: str) -> tuple[str, list[str | None], int, int]:
        parts = urlsplit(url)
        conns: dict[str, http.client.HTTPConnection] = local.__dict__.setdefault("conns", {})
        conn = conns.get(parts.netloc)
        if conn is None:
            conn = conns[parts.netloc] = http.client.HTTPConnection(parts.netloc, timeout=60)
        etag, modified = state.get(url, [None, None])
        headers = {"Accept-Encoding": "identity"}
        if etag:
            headers["If-None-Match"] = etag
        if modified:
            headers["If-Modified-Since"] = modified
        conn.request("GET", parts.path or "/", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return (url, [resp.getheader("etag"), resp.getheader("last-modified")], resp.status,
                len(body))

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, urls))
    state_path.write_text(json.dumps({url: v for url, v, _, _ in results}))
    return {"inner": time.perf_counter() - t0, "entries": 0,
            "bytes": sum(n for *_, n in results),
            "not_modified": sum(status == 304 for _, _, status, _ in results),
            "failed": sum(status not in (200, 304) for _, _, status, _ in results)}


RUNNERS = {"reader": run_reader, "minimal": run_minimal, "download": run_download}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.drivers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=tuple(RUNNERS))
    p.add_argument("urls", type=Path, help="file of feed URLs, one a line")
    p.add_argument("path", type=Path,
                   help="reader: database file; minimal, download: state JSON file")
    p.add_argument("--workers", type=int, default=8)
    args = p.parse_args(argv)
    urls = [u for u in args.urls.read_text().split() if u]
    out = RUNNERS[args.kind](urls, args.path, args.workers)
    out["process"] = time.perf_counter() - START
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
