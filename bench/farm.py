"""A local feed farm: N RSS feeds of M items on 127.0.0.1, each item a one-line
teaser linking to a full article page, built from real article text (the BBC
set beside the project when present, generated text otherwise).

Polite-server behaviour a poller can be measured against: ETag and
Last-Modified with 304 answers, optional latency, request counting, and
``add_item()`` (or ``POST /_control/add``) to add one new item to every feed.
``window`` keeps each feed at its newest ``window`` items as items are added
(a real feed's sliding window), so a cold fetch sees the same size every time.
``GET /_control/stats`` returns the request counters as JSON (not counted).

``hosts`` spreads the feeds over that many loopback addresses (127.0.0.2,
127.0.0.3, ...: feed i on the (i mod hosts)-th), one listening socket each on
the same port, as real subscriptions are spread over many sites; the control
endpoints and ``/farm.opml`` answer on 127.0.0.1 as well. With one host (the
default) everything is on 127.0.0.1.

Run it alone:  python -m bench.farm --feeds 200 --items 30 --port 8800 [--hosts 100]
(``--port 0`` picks a free port; the first line printed names the base URL.)
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import html
import json
import random
import selectors
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
BBC = SHARED / "data" / "bbc-news-summary" / "News Articles"

_WORDS = (
    "government minister council plans report market growth city people water energy "
    "school police court market budget health service week year company prices workers "
    "officials announced said would could new first last public local national world "
    "election vote party leader climate rain storm river bridge project cost million "
    "children families hospital doctors patients study research team scientists data"
).split()


def read_text(path: Path) -> str:
    """A BBC-set file: UTF-8, but one has a stray cp1252 byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")


def load_articles(limit: int, seed: int = 1) -> list[tuple[str, list[str]]]:
    """(title, paragraphs) pairs: BBC articles when available, else generated."""
    out: list[tuple[str, list[str]]] = []
    if BBC.is_dir():
        files = sorted(BBC.glob("*/*.txt"))
        random.Random(seed).shuffle(files)
        for f in files[:limit]:
            lines = [ln.strip() for ln in read_text(f).splitlines()]
            title, body = lines[0], [p for p in lines[1:] if p]
            if body:
                out.append((title, body))
    rng = random.Random(seed)
    while len(out) < limit:
        paras = []
        for _ in range(rng.randint(5, 9)):
            sents = []
            for _ in range(rng.randint(2, 4)):
                words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 22))]
                sents.append(" ".join(words).capitalize() + ".")
            paras.append(" ".join(sents))
        title = " ".join(rng.choice(_WORDS) for _ in range(6)).capitalize()
        out.append((title, paras))
    return out


MAX_HOSTS = 250  # 127.0.0.2 .. 127.0.0.251


def host_of(index: int, hosts: int) -> str:
    """The loopback address feed ``index`` is served on, among ``hosts``."""
    if hosts <= 1:
        return "127.0.0.1"
    return f"127.0.0.{2 + index % min(hosts, MAX_HOSTS)}"


def feed_url(port: int, index: int, hosts: int = 1) -> str:
    return f"http://{host_of(index, hosts)}:{port}/feed/{index}.xml"


@dataclass
class _Feed:
    index: int
    items: list[tuple[int, int]] = field(default_factory=list)  # (article index, serial)
    body: bytes = b""
    etag: str = ""
    modified: str = ""


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a burst of new connections beyond it
    # loses SYNs and waits a 1 s retransmit, which would time the farm, not the
    # client. Real servers listen with hundreds (nginx: 511).
    request_queue_size = 512
    daemon_threads = True


class Farm:
    def __init__(self, feeds: int = 200, items: int = 30, *, latency: float = 0.0,
                 validators: bool = True, seed: int = 1, window: int | None = None,
                 hosts: int = 1) -> None:
        self.n_feeds, self.n_items, self.latency = feeds, items, latency
        self.hosts = max(1, min(hosts, MAX_HOSTS))
        self.port = 0
        self.validators = validators
        self.window = window
        self.articles = load_articles(min(feeds * items + 50, 2225), seed)
        self.start = datetime(2026, 11, 1, tzinfo=UTC)
        self.serial = 0
        self.feeds = [_Feed(i) for i in range(feeds)]
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.conditional: Counter[str] = Counter()
        self.user_agents: Counter[str] = Counter()
        self.server: ThreadingHTTPServer | None = None
        self.servers: list[ThreadingHTTPServer] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.base = ""
        for feed in self.feeds:
            for _ in range(items):
                self._push(feed)
            self._render(feed)

    def _push(self, feed: _Feed) -> None:
        self.serial += 1
        art = (feed.index * 7919 + self.serial) % len(self.articles)
        feed.items.insert(0, (art, self.serial))
        if self.window is not None:
            del feed.items[self.window:]

    def feed_base(self, index: int) -> str:
        host = host_of(index, self.hosts)
        return f"http://{host}:{self.port}" if self.port else f"http://{host}"

    def urls(self) -> list[str]:
        return [feed_url(self.port, i, self.hosts) for i in range(len(self.feeds))]

    def _render(self, feed: _Feed) -> None:
        base = self.feed_base(feed.index)
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>',
               f"<title>Farm feed {feed.index}</title><link>{base}/</link>",
               "<description>A feed of the local farm</description><language>en-gb</language>"]
        for art, serial in feed.items:
            title, paras = self.articles[art]
            when = self.start + timedelta(minutes=serial)
            teaser = paras[0].split(". ")[0]
            out.append(
                f"<item><title>{html.escape(title)}</title>"
                f"<link>{base}/article/{feed.index}/{serial}.html</link>"
                f'<guid isPermaLink="false">farm-{feed.index}-{serial}</guid>'
                f"<pubDate>{format_datetime(when)}</pubDate>"
                f"<description>{html.escape(teaser)}</description></item>"
            )
        out.append("</channel></rss>")
        feed.body = "".join(out).encode("utf-8")
        feed.etag = '"' + hashlib.sha1(feed.body).hexdigest()[:16] + '"'
        feed.modified = format_datetime(datetime.now(UTC), usegmt=True)

    def add_item(self) -> None:
        """One new item at the top of every feed."""
        with self.lock:
            for feed in self.feeds:
                self._push(feed)
                self._render(feed)

    def stats(self) -> dict[str, dict[str, int]]:
        """The request counters, for a client in another process."""
        with self.lock:
            return {"requests": dict(self.requests), "conditional": dict(self.conditional),
                    "user_agents": dict(self.user_agents)}

    def article_page(self, feed_index: int, serial: int) -> bytes | None:
        feed = self.feeds[feed_index] if 0 <= feed_index < len(self.feeds) else None
        if feed is None:
            return None
        for art, s in feed.items:
            if s == serial:
                title, paras = self.articles[art]
                body = "".join(f"<p>{html.escape(p)}</p>" for p in paras)
                return (
                    "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                    f"<title>{html.escape(title)}</title></head><body>"
                    "<nav><a href='/'>Home</a> <a href='/news'>News</a></nav>"
                    f"<main><article><h1>{html.escape(title)}</h1>{body}</article></main>"
                    "<footer>Farm News, local test server</footer></body></html>"
                ).encode()
        return None

    def opml(self) -> str:
        lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<opml version="2.0"><head>'
                 "<title>farm</title></head><body>"]
        for i, url in enumerate(self.urls()):
            lines.append(f'<outline text="Farm {i}" xmlUrl="{url}"/>')
        lines.append("</body></opml>")
        return "\n".join(lines)

    # --- serving -----------------------------------------------------------------------

    def serve(self, port: int = 0) -> Farm:
        farm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: with Nagle on, the body
            # waits for the client's delayed ACK (40 ms) on every response
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                if self.path == "/_control/add":
                    farm.add_item()
                    self._send(200, b"ok", "text/plain")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_GET(self) -> None:
                if self.path == "/_control/stats":
                    return self._send(200, json.dumps(farm.stats()).encode(),
                                      "application/json")
                if farm.latency:
                    time.sleep(farm.latency)
                path = self.path.split("?")[0]
                with farm.lock:
                    farm.requests[path] += 1
                    farm.user_agents[self.headers.get("User-Agent", "")] += 1
                    if self.headers.get("If-None-Match") or self.headers.get("If-Modified-Since"):
                        farm.conditional[path] += 1
                if path.startswith("/feed/") and path.endswith(".xml"):
                    try:
                        feed = farm.feeds[int(path[6:-4])]
                    except (ValueError, IndexError):
                        return self._send(404, b"no such feed", "text/plain")
                    with farm.lock:
                        body, etag, modified = feed.body, feed.etag, feed.modified
                    if farm.validators:
                        inm = self.headers.get("If-None-Match")
                        if inm is not None and inm == etag:
                            return self._send(304, b"", None, etag, modified)
                        return self._send(200, body, "application/rss+xml", etag, modified)
                    return self._send(200, body, "application/rss+xml")
                if path.startswith("/article/"):
                    try:
                        f, s = path[9:].removesuffix(".html").split("/")
                        page = farm.article_page(int(f), int(s))
                    except ValueError:
                        page = None
                    if page is None:
                        return self._send(404, b"no such article", "text/plain")
                    return self._send(200, page, "text/html; charset=utf-8")
                if path == "/farm.opml":
                    return self._send(200, farm.opml().encode(), "text/x-opml")
                self._send(404, b"not found", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str | None,
                      etag: str | None = None, modified: str | None = None) -> None:
                self.send_response(status)
                if ctype:
                    self.send_header("Content-Type", ctype)
                if etag:
                    self.send_header("ETag", etag)
                if modified:
                    self.send_header("Last-Modified", modified)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD" and status != 304:
                    self.wfile.write(body)

        addresses = ["127.0.0.1"] + sorted({host_of(i, self.hosts) for i in range(self.n_feeds)}
                                           - {"127.0.0.1"})
        self.servers = _bind_all(addresses, port, Handler)
        self.server = self.servers[0]
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        with self.lock:
            for feed in self.feeds:
                self._render(feed)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="farm")
        self._thread.start()
        return self

    def _serve(self) -> None:
        """One accept loop over every listening socket (a thread per connection
        after that, as ThreadingHTTPServer does)."""
        with selectors.DefaultSelector() as sel:
            for srv in self.servers:
                sel.register(srv, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select(0.2):
                    key.fileobj._handle_request_noblock()  # type: ignore[union-attr]

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None
        for srv in self.servers:
            srv.server_close()
        self.servers = []

    def __enter__(self) -> Farm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_opml(self, path: Path) -> Path:
        path.write_text(self.opml(), encoding="utf-8")
        return path


def _bind_all(addresses: list[str], port: int,
              handler: type[BaseHTTPRequestHandler]) -> list[ThreadingHTTPServer]:
    """A server on every address, all on one port (the first free one when
    ``port`` is 0: tried again when another address has that port taken)."""
    for _ in range(50):
        servers: list[ThreadingHTTPServer] = []
        try:
            for addr in addresses:
                srv = _Server((addr, servers[0].server_address[1] if servers else port),
                              handler)
                servers.append(srv)
            return servers
        except OSError as e:
            for srv in servers:
                srv.server_close()
            if e.errno != errno.EADDRINUSE or port != 0:
                raise
    raise OSError(errno.EADDRINUSE, "no port free on every farm address")


def main() -> None:
    p = argparse.ArgumentParser(description="Serve a local feed farm.")
    p.add_argument("--feeds", type=int, default=200)
    p.add_argument("--items", type=int, default=30)
    p.add_argument("--port", type=int, default=8800)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--no-validators", action="store_true")
    p.add_argument("--window", type=int, default=None,
                   help="keep each feed at its newest N items as items are added")
    p.add_argument("--hosts", type=int, default=1,
                   help=f"spread the feeds over this many loopback addresses (<= {MAX_HOSTS})")
    args = p.parse_args()
    farm = Farm(args.feeds, args.items, latency=args.latency,
                validators=not args.no_validators, window=args.window,
                hosts=args.hosts).serve(args.port)
    print(f"farm: {args.feeds} feeds x {args.items} items on {farm.hosts} hosts "
          f"at {farm.base}/farm.opml", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        farm.stop()


if __name__ == "__main__":
    main()
