"""The command line: parses arguments, calls the stages, formats results. No logic."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from aggregator import __version__, config, opml
from aggregator.errors import AggregatorError, DiscoveryError, OPMLError, StorageError
from aggregator.types import Subscription

log = logging.getLogger("aggregator")


class _Parser(argparse.ArgumentParser):
    """argparse that names the closest command or option to a typo."""

    def error(self, message: str) -> NoReturn:
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            guess = config.closest(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
            if guess:
                message += f"; did you mean '{guess}'?"
        m = re.search(r"unrecognized arguments: (-\S+)", message)
        if m:
            options = [o for a in self._actions for o in a.option_strings]
            guess = config.closest(m.group(1).split("=")[0], options)
            if guess:
                message += f"; did you mean {guess}?"
        super().error(message)


def _global_options(p: argparse.ArgumentParser, default: Any = None) -> None:
    """The options every command takes, before it or after it. After it they
    default to SUPPRESS, so they don't hide the same option given before it."""
    p.add_argument("--config", type=Path, metavar="FILE", default=default,
                   help="TOML config file (default: $AGGREGATOR_CONFIG or ./aggregator.toml)")
    p.add_argument("--db", type=Path, metavar="FILE", default=default,
                   help="SQLite database file")
    p.add_argument("--feeds", type=Path, metavar="FILE", default=default,
                   help="subscription list (OPML)")
    p.add_argument("--output", type=Path, metavar="DIR", default=default,
                   help="directory for published files")
    p.add_argument("-v", "--verbose", action="store_true",
                   default=False if default is None else default, help="log debug messages")


def _cmd(sub: Any, name: str, help: str, example: str) -> argparse.ArgumentParser:
    c: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="example:\n  " + example,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(c.add_argument_group("global options (also before the command)"),
                    default=argparse.SUPPRESS)  # type: ignore[arg-type]
    return c


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="aggregator",
        description="Follow news feeds, store every item in SQLite, summarise each story "
        "and publish one feed.",
        epilog="example:\n  aggregator update --all && aggregator feeds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"aggregator {__version__}")
    _global_options(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = _cmd(sub, "update", "Poll the feeds once: sync subscriptions, fetch due feeds, store "
             "new items, summarise and publish.", "aggregator update --all")
    c.add_argument("--all", action="store_true", help="poll every feed, due or not")
    c.add_argument("--no-articles", action="store_true",
                   help="don't fetch linked article pages")
    c.add_argument("--no-summaries", action="store_true", help="don't summarise new items")
    c.add_argument("--no-stories", action="store_true",
                   help="don't cluster new items into stories")
    c.add_argument("--no-publish", action="store_true", help="don't write the output files")

    c = _cmd(sub, "run", "Run the daemon: poll on schedule, summarise, publish and serve "
             "until SIGTERM/SIGINT; SIGHUP reloads config and feeds.opml.",
             "aggregator --feeds feeds.opml run")
    c.add_argument("--no-serve", action="store_true", help="don't start the HTTP server")

    c = _cmd(sub, "feeds", "List every subscription with its polling state; --revive polls "
             "a gone (HTTP 410) or failing feed again.",
             "aggregator feeds --revive https://example.com/feed.xml")
    c.add_argument("--revive", metavar="URL",
                   help="bring this feed back to active polling: state reset, errors "
                   "cleared, due now")
    c.add_argument("--json", action="store_true",
                   help="one JSON object per feed and line, every column")

    c = _cmd(sub, "add", "Subscribe to a feed (or to the feed a web page links to) in "
             "feeds.opml and the database.",
             "aggregator add https://www.bbc.co.uk/news --category News")
    c.add_argument("url", help="feed or web page; without a scheme, https:// is tried")
    c.add_argument("--title", help="name shown for the feed")
    c.add_argument("--category", help="OPML folder / category")
    c.add_argument("--private", action="store_true",
                   help="never publish the feed's URL (marks the outline private=\"true\")")
    c.add_argument("--check", action="store_true",
                   help="refuse a URL that does not answer now (by default it is subscribed "
                   "with a warning and polled by the next update)")

    c = _cmd(sub, "remove", "Unsubscribe: remove the feed from feeds.opml; its stored items "
             "stay in the database.", "aggregator remove https://example.com/feed.xml")
    c.add_argument("url", metavar="URL|TITLE",
                   help="the feed's URL (scheme and host in any case) or its title")

    c = _cmd(sub, "import", "Merge an OPML file or URL from any feed reader into feeds.opml.",
             "aggregator import ~/Downloads/subscriptions.opml")
    c.add_argument("source", metavar="FILE|URL")

    _cmd(sub, "export", "Print the subscriptions as OPML on stdout.",
         "aggregator export > my-feeds.opml")

    c = _cmd(sub, "summarize", "Summarise plain-text or HTML files (a .txt file's first line "
             "is its title and is not summarised).",
             "aggregator summarize --json article.txt page.html")
    c.add_argument("files", nargs="+", type=Path, metavar="FILE")
    c.add_argument("--json", action="store_true", help="one JSON object per line")
    c.add_argument("--language", help="language of the texts, e.g. en, de (default: guess)")
    c.add_argument("--summarizer", metavar="NAME",
                   help=f"summary method: {', '.join(config.SUMMARIZERS)} "
                        "(default: the summarizer setting)")

    c = _cmd(sub, "stories", "List the stories (items clustered across feeds) with their "
             "sources, most sources first.", "aggregator stories --since 1d --min-sources 2")
    c.add_argument("--since", default="1d", type=_age,
                   help="stories seen within this long: 30m, 12h, 2d (default 1d)")
    c.add_argument("--min-sources", type=int, default=2, metavar="N",
                   help="only stories with at least N feeds (default 2)")
    c.add_argument("--json", action="store_true", help="one JSON object per story")

    c = _cmd(sub, "publish", "Write the output files from the database now.",
             "aggregator --output public publish")

    c = _cmd(sub, "search", "Find stored items by words of their title, text, Context or "
             "article, newest first (words are ANDed; \"a phrase\", OR, prefix*).",
             "aggregator search plane crash --since 2d")
    c.add_argument("query", nargs="+", metavar="WORD", help="words to look for")
    c.add_argument("--since", metavar="AGE",
                   help="only items of the last 30m, 12h, 2d, 1w ...")
    c.add_argument("--limit", type=int, default=50, metavar="N",
                   help="at most N items (default 50)")
    c.add_argument("--json", action="store_true", help="one JSON object per line")

    c = _cmd(sub, "prune", "Delete items older than keep_days and article text older than "
             "keep_article_text_days, except what a reader can still see; --dry-run counts.",
             "aggregator prune --dry-run")
    c.add_argument("--dry-run", action="store_true",
                   help="change nothing: show what would go, in all and per feed")

    _cmd(sub, "vacuum", "Rewrite the database file to its smallest size and switch it to "
         "incremental vacuum (needs the file alone: stop the daemon; as much free disk as "
         "the file).", "aggregator vacuum")

    c = _cmd(sub, "refetch", "Fetch an item's article page again (same guards as the "
             "daemon) and summarise it from what comes.",
             "aggregator refetch https://example.com/news/story.html")
    c.add_argument("url", nargs="?", metavar="URL", help="the item's link")
    c.add_argument("--item", type=int, metavar="ID", help="the item's id (items.id)")

    c = _cmd(sub, "resummarize", "Write the summaries anew (e.g. after changing the "
             "summarizer), for one feed and/or the items of a recent period.",
             "aggregator resummarize --feed https://example.com/feed.xml --since 2d")
    c.add_argument("--feed", metavar="URL", help="only this feed's items")
    c.add_argument("--since", type=_age, metavar="AGE",
                   help="only items dated within this long: 30m, 12h, 2d, 1w")

    c = _cmd(sub, "datasette", "Open the database in Datasette, read-only, while the daemon "
             "writes it: documented columns, canned queries, search. Anyone who can reach "
             "the port reads every column (private feed URLs too).",
             "aggregator datasette --port 8001")
    c.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    c.add_argument("--port", type=int, default=8001, help="port to listen on (8001)")

    c = _cmd(sub, "serve", "Serve the output directory over HTTP.",
             "aggregator serve --host 127.0.0.1 --port 8080")
    c.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    c.add_argument("--port", type=int, help="port to listen on (default 8080)")
    return p


def _settings(args: argparse.Namespace) -> config.Settings:
    flags = {"db": args.db, "feeds": args.feeds, "output": args.output}
    if args.command == "datasette":  # its own --host/--port, not the server's settings
        pass
    elif getattr(args, "host", None):
        flags["host"] = args.host
    if getattr(args, "port", None) and args.command != "datasette":
        flags["port"] = args.port
    if getattr(args, "no_articles", False):
        flags["fetch_articles"] = False
    if getattr(args, "no_summaries", False):
        flags["summaries"] = False
    if getattr(args, "no_stories", False):
        flags["stories"] = False
    if getattr(args, "no_publish", False):
        flags["publish"] = False
    if getattr(args, "no_serve", False):
        flags["serve"] = False
    if args.verbose:
        flags["log_level"] = "DEBUG"
    return config.load(args.config, flags=flags)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, config.Settings], int] = COMMANDS[args.command]
    for warning in config.env_warnings():
        print(f"aggregator: warning: {warning}", file=sys.stderr)
    try:
        settings = _settings(args)
        _setup_logging(settings.log_level)
        return handler(args, settings)
    except AggregatorError as e:
        print(f"aggregator: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aggregator: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _setup_logging(level: str) -> None:
    try:
        from aggregator.logs import setup_logging
    except ImportError:  # pragma: no cover - logs.py ships with the package
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        return
    setup_logging(level)


# --- commands ---------------------------------------------------------------------------


def cmd_update(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator import update as pipeline
    from aggregator.store import Store
    from aggregator.update import make_fetcher, poll_slack, run_pass

    # the progress line is for a person at a terminal; with -v the log lines say more
    verbose = str(settings.log_level).upper() == "DEBUG"
    show = _Progress(sys.stdout) if sys.stdout.isatty() and not verbose else None
    with Store(settings.db) as store, make_fetcher(settings) as fetcher, \
            _ProgressBeforeLogs(show):
        result = run_pass(settings, store, fetcher, all_feeds=args.all,
                          early=poll_slack(settings),
                          progress=show.step if show else None,
                          on_due=show.due if show else None)
        if show:
            show.clear()
        _print_outcomes(result.outcomes)
        summarised, status = 0, 0
        if settings.stories:
            from aggregator.stages.cluster import cluster_pending

            try:
                cluster_pending(store)
            except StorageError as e:  # the items are stored: say so, go on
                print(f"aggregator: error: stories stopped: {e}", file=sys.stderr)
                status = 1
        if settings.summaries:
            try:
                summarised = pipeline.summarize_pending(settings, store, fetcher,
                                                        counts=show.summaries if show else None)
            except StorageError as e:  # the database stopped taking writes: publish anyway
                if show:
                    show.clear()
                print(f"aggregator: error: summaries stopped: {e}", file=sys.stderr)
                status = 1
            if show:
                show.clear()
        published = []
        unpublished: AggregatorError | None = None
        if settings.publish and (result.new or result.changed or summarised or
                                 not (settings.output / "index.html").exists()):
            try:
                published = pipeline.publish_now(settings, store)
            except AggregatorError as e:  # the pass is stored: say what, then fail
                unpublished = e
            except OSError as e:
                unpublished = AggregatorError(f"cannot publish to {settings.output}: "
                                              f"{e.strerror or e}")
    print(f"{len(result.outcomes)} feeds polled: {result.new} new items, "
          f"{result.changed} changed, {result.failed} failed; {summarised} summarised"
          + (f"; published to {settings.output}" if published else ""))
    if unpublished is not None:
        print(f"aggregator: error: not published: {unpublished} (the items are stored; "
              "`aggregator publish` writes them once that is fixed)", file=sys.stderr)
        return 1
    return status


class _Progress:
    """One line on a terminal, rewritten in place, through the whole pass:
    ``polled 12/80 feeds  <url>``, then ``polled 80/80 feeds, articles 120/274,
    summarised 80/257``."""

    def __init__(self, stream: Any, width: int | None = None) -> None:
        import shutil

        self.stream = stream
        self.width = width or max(40, min(shutil.get_terminal_size().columns, 120) - 1)
        self.polled = 0
        self.due_count: int | None = None
        self.counts: Any = None
        self.shown = False
        self._lock = threading.RLock()  # log lines come from worker threads too

    def due(self, count: int) -> None:
        self.due_count = count

    def step(self, outcome: Any) -> None:
        self.polled += 1
        self._draw(outcome.url)

    def summaries(self, counts: Any) -> None:
        self.counts = counts
        self._draw()

    def line(self) -> str:
        total = self.due_count if self.due_count is not None else "?"
        parts = [f"polled {self.polled}/{total} feeds"]
        c = self.counts
        if c is not None:
            parts.append(f"articles {c.articles}/{c.articles_total}, "
                         f"summarised {c.summarised}/{c.summaries_total}")
        return ", ".join(parts)

    def _draw(self, tail: str = "") -> None:
        text = f"  {self.line()}" + (f"  {tail}" if tail else "")
        with self._lock:
            self.stream.write("\r" + text[:self.width].ljust(self.width))
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        with self._lock:
            if self.shown:
                self.stream.write("\r" + " " * self.width + "\r")
                self.stream.flush()
                self.shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        """A log line on the same terminal: the progress line makes room first
        (it is drawn again at the next step)."""
        self.clear()
        return True


class _ProgressBeforeLogs:
    """While a progress line is shown, the ``aggregator`` log handlers clear it
    before each line they write."""

    def __init__(self, show: _Progress | None) -> None:
        self.show = show
        self.handlers = list(logging.getLogger("aggregator").handlers)

    def __enter__(self) -> None:
        if self.show:
            for h in self.handlers:
                h.addFilter(self.show)

    def __exit__(self, *exc: object) -> None:
        if self.show:
            for h in self.handlers:
                h.removeFilter(self.show)


def _print_outcomes(outcomes: Sequence[Any]) -> None:
    rows = [("RESULT", "HTTP", "NEW", "CHG", "FEED")]
    for o in sorted(outcomes, key=lambda o: (o.result != "error", o.url)):
        rows.append((o.result, str(o.status or "-"), str(o.new), str(o.changed),
                     o.url + (f"  ({o.error})" if o.error else "")
                     + (f"  -> moved to {o.moved_to}" if o.moved_to else "")))
    _print_table(rows)


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1])


def _when(d: datetime | None) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if d else "-"


def _existing_db(settings: config.Settings) -> Path:
    """The database a read-only command looks at: it must exist (a mistyped
    --db would otherwise create an empty one and show nothing)."""
    if not settings.db.is_file():
        raise StorageError(f"no database at {settings.db} (check --db, or run "
                           "`aggregator update` to create it)")
    return settings.db


def cmd_feeds(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.store import Store
    from aggregator.update import utcnow

    db = _existing_db(settings)
    if args.revive:
        with Store(db) as store:
            if not store.revive_feed(args.revive, utcnow()):
                raise AggregatorError(f"no such feed: {args.revive} (see `aggregator feeds`)")
            feed = store.feed(args.revive)
        print(f"revived: {args.revive} " + ("(polled on the next pass)" if feed and feed.active
                                            else "(not in feeds.opml: `add` it to poll it)"))
        return 0
    with Store(db) as store:  # read-write, as a read-only open leaves an empty -wal behind
        feeds = store.feeds()
    if args.json:
        for f in feeds:
            print(json.dumps(_feed_json(f), ensure_ascii=False))
        return 0
    rows = [("STATE", "ITEMS", "LAST FETCH (UTC)", "HTTP", "NEXT FETCH (UTC)", "ERRS",
             "CATEGORY", "FEED")]
    for f in feeds:
        state = f.state if f.active else "removed"
        rows.append((state, str(f.item_count), _when(f.last_fetch), str(f.last_status or "-"),
                     _when(f.next_fetch) if f.active else "-", str(f.error_count),
                     f.category or "-",
                     f"{f.name} <{f.url}>" + (f"\n    last error: {f.last_error}"
                                              if f.last_error else "")))
    _print_table(rows)
    return 0


def _feed_json(feed: Any) -> dict[str, Any]:
    """A FeedRow as JSON: its fields, times as ISO-8601 UTC, its state and name."""
    import dataclasses

    out = {}
    for k, v in dataclasses.asdict(feed).items():
        out[k] = v.astimezone(UTC).isoformat(timespec="seconds") if isinstance(v, datetime) else v
    out["name"] = feed.name
    return out


def _edit_subscriptions(settings: config.Settings, change: Callable[[opml.Document], Any],
                        then: Callable[[Any], None] | None = None) -> Any:
    """Change feeds.opml under its lock (read, change and atomic replace, so a
    concurrent edit by the daemon or another command is never lost; the file
    keeps its formatting), then bring the database in line, and ``then`` store
    what else the change brought."""
    from aggregator.store import Store
    from aggregator.update import sync_subscriptions, utcnow

    result = opml.edit_document(settings.feeds, change)
    with Store(settings.db) as store:
        sync_subscriptions(settings, store, utcnow())
        if then is not None:
            then(store)
    return result


def cmd_add(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator import discover
    from aggregator.update import make_fetcher

    url, guessed = discover.typed_url(args.url)
    with make_fetcher(settings) as fetcher:
        try:
            found = discover.feed_url(fetcher, url, check=args.check or guessed)
        except DiscoveryError as e:
            if guessed:  # a guess is kept only when it works
                raise DiscoveryError(f"no scheme: did you mean {url}? ({e})") from e
            raise
    # a URL typed with its token that led elsewhere: the feed found is private too
    private = args.private or (found.url != url and opml.is_private(url))
    sub = Subscription(url=found.url, title=args.title or found.title, category=args.category,
                       private=private)
    added = _edit_subscriptions(settings, lambda doc: doc.add(sub),
                                then=lambda store: _keep_first_fetch(settings, store, found))
    if found.problem:
        print(f"aggregator: warning: {found.problem}; subscribed anyway, polled by the next "
              "update (--check refuses a feed that does not answer)", file=sys.stderr)
    items = f" ({len(found.parsed.items)} items stored)" if added and found.parsed else ""
    print(f"{'added' if added else 'already subscribed'}: {found.url}{items}")
    return 0


def _keep_first_fetch(settings: config.Settings, store: Any, found: Any) -> None:
    """The fetch that found a new feed counts as its first poll."""
    from aggregator.update import record_first_fetch

    feed = store.feed(found.url)
    if found.result is None or feed is None or feed.last_fetch:
        return  # not fetched, or a feed we had already
    record_first_fetch(settings, store, feed, found.result, found.parsed)


def cmd_remove(args: argparse.Namespace, settings: config.Settings) -> int:
    removed: list[str] = []

    def change(doc: opml.Document) -> bool:
        urls = doc.find(args.url)
        if len(urls) > 1:  # a title shared by several feeds: don't guess
            raise OPMLError(f"{args.url.strip()!r} names {len(urls)} feeds: "
                            + ", ".join(urls) + "; remove one by its URL")
        removed[:] = [u for u in urls if doc.remove(u)]
        return bool(removed)

    _edit_subscriptions(settings, change)
    if not removed:
        raise OPMLError(f"not subscribed: {args.url.strip()} (see `aggregator feeds`)")
    print(f"removed: {removed[0]} (its items stay in the database)")
    return 0


def cmd_import(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.discover import problem
    from aggregator.errors import FetchError
    from aggregator.fetch import PAGE_ACCEPT
    from aggregator.guard import trusted_origin
    from aggregator.update import make_fetcher

    source = args.source
    remote = source.startswith(("http://", "https://"))
    if remote:
        with make_fetcher(settings) as fetcher:
            try:
                res = fetcher.get(source, accept="text/x-opml, application/xml, " + PAGE_ACCEPT,
                                  trusted=trusted_origin(source))
            except FetchError as e:
                raise OPMLError(problem(source, e)) from e
        data = res.body or b""
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise OPMLError(f"cannot read {source}: {e.strerror}") from e
    subs = opml.subscriptions(opml.parse_bytes(data, source))
    junk = [s for s in subs if not s.url.lower().startswith(("http://", "https://"))]
    for sub in junk:  # file:, data:, javascript: ... nothing the fetcher would ever read
        print(f"aggregator: warning: not importing {sub.url[:200]!r}: not an http(s) URL",
              file=sys.stderr)
    subs = [s for s in subs if s.url.lower().startswith(("http://", "https://"))]
    if remote:
        # A list from the network is somebody else's choice: a feed in it that names an
        # internal address (which feeds.opml would trust) is not imported, unless it is
        # the very origin the user typed.
        origin = trusted_origin(source)
        refused = [s for s in subs if trusted_origin(s.url) not in (None, origin)]
        for sub in refused:
            print(f"aggregator: warning: not importing {sub.url}: a list fetched from "
                  f"{source} may not subscribe to an internal address", file=sys.stderr)
        subs = [s for s in subs if trusted_origin(s.url) in (None, origin)]
    added = _edit_subscriptions(settings, lambda doc: doc.merge(subs))
    print(f"imported {len(added)} new feeds ({len(subs) - len(added)} already followed)")
    return 0


def cmd_export(args: argparse.Namespace, settings: config.Settings) -> int:
    subs = opml.read(settings.feeds)
    sys.stdout.write(opml.to_bytes(opml.build(subs)).decode("utf-8"))
    return 0


def cmd_summarize(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.errors import ConfigError
    from aggregator.summarize import check_language, summarize_file

    method = (args.summarizer or settings.summarizer).strip().lower()
    if method not in config.SUMMARIZERS:
        raise ConfigError(f"--summarizer: unknown method {args.summarizer!r}; "
                          f"known: {', '.join(config.SUMMARIZERS)}")
    try:
        check_language(args.language)
    except ValueError as e:
        raise ConfigError(f"--language: {e}") from e
    status = 0
    for path in args.files:
        try:
            refusal = _not_text(path.read_bytes()[:1 << 16])
            if refusal:
                print(f"aggregator: error: {path}: {refusal}; not summarised", file=sys.stderr)
                status = 1
                continue
            summary = summarize_file(path, language=args.language, summarizer=method)
        except OSError as e:
            print(f"aggregator: error: {path}: {e.strerror}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps({"file": str(path), "context": list(summary.context),
                              "points": list(summary.points), "method": summary.method},
                             ensure_ascii=False))
        else:
            print(f"== {path} ({summary.method})\nContext:\n"
                  + textwrap.fill(" ".join(summary.context) or "(no usable text)", 78)
                  + "\nDive deeper:")
            for point in summary.points:
                print(textwrap.fill(point, 78, initial_indent="  • ", subsequent_indent="    "))
            print()
    return status


_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
          (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
          (b"\x1f\x8b", "gzip data"), (b"RIFF", "a RIFF (WebP, WAV, AVI) file"),
          (b"\x7fELF", "a program"))
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_CHARSET = re.compile(rb"""(?:charset|encoding)\s*=\s*["']?([A-Za-z0-9._-]+)""", re.I)


def _not_text(head: bytes) -> str | None:
    """Why the start of a file is no text to summarise, or None: a known binary
    format, NUL bytes, or bytes that are neither UTF-8 nor in a declared
    charset and read like noise in Windows-1252 (control characters, or
    mostly non-ASCII letters, where Latin-1 prose has a few accents)."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"{what}, not text"
    for bom, codec in _BOMS:  # UTF-16 holds NUL bytes: its mark says it is text
        if head.startswith(bom):
            return _control_noise(head[len(bom):].decode(codec, errors="replace"))
    if b"\x00" in head:
        return "binary data (NUL bytes), not text"
    try:
        return _control_noise(head.decode("utf-8"))
    except UnicodeDecodeError as e:
        if e.start > len(head) - 4:  # a character cut by the 64 KiB read
            return _control_noise(head[:e.start].decode("utf-8"))
    m = _CHARSET.search(head[:4096])
    if m:
        import codecs

        try:
            codecs.lookup(m.group(1).decode("ascii"))
            return None
        except LookupError:
            pass
    text = head.decode("cp1252", errors="replace")
    controls = sum(c < " " and c not in "\t\n\r\f" or c == "\ufffd" for c in text)
    foreign = sum(c > "\x7f" for c in text)
    if controls > len(text) / 100 or foreign > len(text) * 0.3:
        return "not UTF-8 text and no charset declared (it reads as noise)"
    return None


def _control_noise(text: str) -> str | None:
    """Why decoded text is no text: mostly control characters (binary data that
    happens to be valid UTF-8), or None."""
    controls = sum(c < " " and c not in "\t\n\r\f" or c == "\ufffd" for c in text)
    return "binary data (control characters), not text" if controls > len(text) / 100 else None


def _age(text: str) -> timedelta:
    """``30m``, ``12h``, ``2d``, ``1w`` as a duration (argparse type)."""
    from aggregator.errors import SearchError
    from aggregator.search import parse_since

    try:
        return parse_since(text.strip())
    except SearchError as e:
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (e.g. 30m, 12h, 2d)") from e


def cmd_stories(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.store import Store
    from aggregator.update import utcnow

    db = _existing_db(settings)
    with Store(db) as store:
        found = store.stories(since=utcnow() - args.since, min_sources=args.min_sources)
    if args.json:
        for story in found:
            print(json.dumps(story, ensure_ascii=False))
        return 0
    if not found:
        print(f"no stories with {args.min_sources}+ sources in that time")
    for story in found:
        print(f"[{story['id']}] {story['title'] or '(untitled)'}  "
              f"({story['source_count']} sources, {story['item_count']} items, "
              f"last {story['last_seen'][:16].replace('T', ' ')} UTC)")
        for item in story["items"]:
            print(f"    {item['source']}: {item['title'] or '-'}"
                  + (f" <{item['url']}>" if item["url"] else ""))
    return 0


def cmd_publish(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator import update as pipeline
    from aggregator.store import Store

    with Store(settings.db) as store:
        paths = pipeline.publish_now(settings, store)
    print(f"published {len(paths)} files to {settings.output}")
    return 0


def cmd_search(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator import search
    from aggregator.store import Store
    from aggregator.update import utcnow

    text = " ".join(args.query)
    match = search.fts_query(text)
    now = utcnow()
    since = now - search.parse_since(args.since) if args.since else None
    if args.limit < 1:
        raise AggregatorError("--limit: give a number of items, 1 or more")
    with Store(_existing_db(settings)) as store:  # read-write: see cmd_feeds
        entries = store.search(match, since=since, limit=args.limit)
    for e in entries:
        when = e.published or e.updated or e.first_seen
        context = " ".join(e.summary_context)
        if args.json:
            print(json.dumps({"id": e.item_id, "title": e.title, "url": e.url,
                              "source": e.feed_title, "category": e.category,
                              "date": when.astimezone(UTC).isoformat(timespec="seconds"),
                              "age": search.age(when, now), "context": context or None},
                             ensure_ascii=False))
            continue
        print(f"{search.age(when, now)}  {e.feed_title}  {e.title or '(untitled)'}")
        if context:
            print(textwrap.fill(context, 78, initial_indent="    ", subsequent_indent="    ",
                                max_lines=3, placeholder=" …"))
        if e.url:
            print(f"    {e.url}")
    if not entries and not args.json:
        print(f"no items match {text!r}" + (f" since {args.since}" if args.since else ""),
              file=sys.stderr)
    return 0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def cmd_prune(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.stages.prune import prune
    from aggregator.store import Store
    from aggregator.update import utcnow

    with Store(_existing_db(settings)) as store:
        report = prune(settings, store, now=utcnow(), dry_run=args.dry_run)
        names = {f.id: f.name for f in store.feeds()}
    cut = report.cutoffs
    verb = "would delete" if report.dry_run else "deleted"
    print(f"{verb} {report.items} items"
          + (f" dated before {_when(cut.items_before)} UTC" if cut.items_before else
             " (keep_days = 0: items are kept forever)")
          + f", and the article text of {report.texts} more"
          + (f" dated before {_when(cut.text_before)} UTC" if cut.text_before else "")
          + f"; kept {report.kept} old items a reader can still see")
    feeds = sorted(set(report.items_by_feed) | set(report.texts_by_feed),
                   key=lambda i: (-report.items_by_feed.get(i, 0), names.get(i, "")))
    if feeds:
        rows = [("ITEMS", "TEXTS", "FEED")]
        rows += [(str(report.items_by_feed.get(i, 0)), str(report.texts_by_feed.get(i, 0)),
                  names.get(i, str(i))) for i in feeds]
        _print_table(rows)
    if not report.dry_run:
        print(f"database {_size(report.size_before)} -> {_size(report.size_after)}")
        if not report.incremental:
            print("the file is not in incremental-vacuum mode yet, so freed pages are reused "
                  "but the file does not shrink: run `aggregator vacuum` once")
    return 0


def cmd_vacuum(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.store import Store

    with Store(_existing_db(settings)) as store:
        before = store.size()
        store.vacuum()
        after = store.size()
    print(f"vacuumed {settings.db}: {_size(before)} -> {_size(after)}")
    return 0


def cmd_refetch(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.stages.rework import refetch
    from aggregator.store import Store
    from aggregator.update import make_fetcher, utcnow

    if (args.url is None) == (args.item is None):
        raise AggregatorError("refetch: give an item's URL or --item ID (one of them)")
    with Store(_existing_db(settings)) as store:
        if args.item is not None:
            ids = [args.item] if store.work_items([args.item]) else []
            what = f"item {args.item}"
        else:
            ids = store.item_ids_by_url(args.url)
            what = f"item with the URL {args.url}"
        if not ids:
            raise AggregatorError(f"no {what} (see `aggregator search`, or items.id)")
        with make_fetcher(settings) as fetcher:
            done = refetch(settings, store, fetcher, ids, utcnow())
        for r in done:
            print(f"item {r.item_id}: article {r.article}; "
                  + ("summarised again" if r.summarised else "summary unchanged")
                  + (f"  <{r.url}>" if r.url else ""))
        _publish_if(settings, store, any(r.summarised for r in done))
    return 0 if all(r.article == "ok" for r in done) else 1


def cmd_resummarize(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.stages.rework import resummarize
    from aggregator.store import Store
    from aggregator.update import utcnow

    now = utcnow()
    with Store(_existing_db(settings)) as store:
        feed_id = None
        if args.feed is not None:
            feed = store.feed(args.feed)
            if feed is None:
                raise AggregatorError(f"no such feed: {args.feed} (see `aggregator feeds`)")
            feed_id = feed.id
        n = resummarize(settings, store, now=now, feed_id=feed_id,
                        since=now - args.since if args.since else None)
        print(f"{n} items summarised again")
        _publish_if(settings, store, n > 0)
    return 0


def _publish_if(settings: config.Settings, store: Any, changed: bool) -> None:
    from aggregator import update as pipeline

    if settings.publish and changed:
        paths = pipeline.publish_now(settings, store)
        print(f"published to {settings.output} ({len(paths)} files changed)")


def cmd_datasette(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator import browse

    db = _existing_db(settings)
    if not browse.is_loopback(args.host):
        print(f"aggregator: warning: Datasette on {args.host} shows every column to anyone "
              "who can reach it, private feed URLs included", file=sys.stderr)
    print(f"aggregator: Datasette on http://{args.host}:{args.port}/ reading {db} "
          "(read-only); Ctrl-C stops", flush=True)
    return browse.serve(db, host=args.host, port=args.port)


def cmd_serve(args: argparse.Namespace, settings: config.Settings) -> int:
    import signal
    import threading
    from datetime import timedelta

    from aggregator.serve import make_server
    from aggregator.store import Store

    stalled_after = timedelta(minutes=settings.stalled_after)

    def health() -> tuple[bool, str]:
        """Healthy while the database shows a recent successful fetch."""
        with Store(settings.db, readonly=True) as store:
            last = store.status()["last_success"]
        if last is None:
            return False, "no successful update yet"
        ok = datetime.now(UTC) - last < stalled_after
        return ok, f"last successful update {last.isoformat(timespec='seconds')}"

    metrics = None
    if settings.metrics:  # the database's figures; no pass runs here to count
        from aggregator.metrics import Metrics

        metrics = Metrics(settings.db, counting=False).render
    with make_server(settings.output, settings.host, settings.port,
                     health=health if settings.db.exists() else None,
                     stalled_after=stalled_after, metrics=metrics) as server:
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        print(f"aggregator: serving {settings.output} on {server.url}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


def cmd_run(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.daemon import Daemon

    return Daemon(settings, config_file=args.config, flags=_flags(args)).run()


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags of this invocation, re-applied on every SIGHUP reload."""
    flags: dict[str, Any] = {"db": args.db, "feeds": args.feeds, "output": args.output}
    if getattr(args, "no_serve", False):
        flags["serve"] = False
    if args.verbose:
        flags["log_level"] = "DEBUG"
    return flags


COMMANDS: dict[str, Callable[[argparse.Namespace, config.Settings], int]] = {
    "update": cmd_update,
    "run": cmd_run,
    "feeds": cmd_feeds,
    "add": cmd_add,
    "remove": cmd_remove,
    "import": cmd_import,
    "export": cmd_export,
    "summarize": cmd_summarize,
    "stories": cmd_stories,
    "publish": cmd_publish,
    "search": cmd_search,
    "prune": cmd_prune,
    "vacuum": cmd_vacuum,
    "refetch": cmd_refetch,
    "resummarize": cmd_resummarize,
    "datasette": cmd_datasette,
    "serve": cmd_serve,
}

__all__ = ["main", "build_parser", "DiscoveryError"]
