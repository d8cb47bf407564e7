"""The command line: parses arguments, calls the stages, formats results. No logic."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aggregator import __version__, config, opml
from aggregator.errors import AggregatorError, DiscoveryError, OPMLError, StorageError
from aggregator.types import Subscription

log = logging.getLogger("aggregator")


def _cmd(sub: Any, name: str, help: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="example:\n  " + example,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aggregator",
        description="Follow news feeds, store every item in SQLite, summarise each story "
        "and publish one feed.",
        epilog="example:\n  aggregator update --all && aggregator feeds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"aggregator {__version__}")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML config file (default: $AGGREGATOR_CONFIG or ./aggregator.toml)")
    p.add_argument("--db", type=Path, metavar="FILE", help="SQLite database file")
    p.add_argument("--feeds", type=Path, metavar="FILE", help="subscription list (OPML)")
    p.add_argument("--output", type=Path, metavar="DIR", help="directory for published files")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = _cmd(sub, "update", "Poll the feeds once: sync subscriptions, fetch due feeds, store "
             "new items, summarise and publish.", "aggregator update --all")
    c.add_argument("--all", action="store_true", help="poll every feed, due or not")
    c.add_argument("--no-articles", action="store_true",
                   help="don't fetch linked article pages")
    c.add_argument("--no-summaries", action="store_true", help="don't summarise new items")
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

    c = _cmd(sub, "add", "Subscribe to a feed (or to the feed a web page links to) in "
             "feeds.opml and the database.",
             "aggregator add https://www.bbc.co.uk/news --category News")
    c.add_argument("url")
    c.add_argument("--title", help="name shown for the feed")
    c.add_argument("--category", help="OPML folder / category")
    c.add_argument("--private", action="store_true",
                   help="never publish the feed's URL (marks the outline private=\"true\")")

    c = _cmd(sub, "remove", "Unsubscribe: remove the feed from feeds.opml; its stored items "
             "stay in the database.", "aggregator remove https://example.com/feed.xml")
    c.add_argument("url")

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

    c = _cmd(sub, "publish", "Write the output files from the database now.",
             "aggregator --output public publish")

    c = _cmd(sub, "serve", "Serve the output directory over HTTP.",
             "aggregator serve --host 127.0.0.1 --port 8080")
    c.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    c.add_argument("--port", type=int, help="port to listen on (default 8080)")
    return p


def _settings(args: argparse.Namespace) -> config.Settings:
    flags = {"db": args.db, "feeds": args.feeds, "output": args.output}
    if getattr(args, "host", None):
        flags["host"] = args.host
    if getattr(args, "port", None):
        flags["port"] = args.port
    if getattr(args, "no_articles", False):
        flags["fetch_articles"] = False
    if getattr(args, "no_summaries", False):
        flags["summaries"] = False
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
    from aggregator.update import make_fetcher, run_pass

    with Store(settings.db) as store, make_fetcher(settings) as fetcher:
        show = _Progress(sys.stdout)
        result = run_pass(settings, store, fetcher, all_feeds=args.all,
                          progress=show.step if sys.stdout.isatty() else None)
        show.done()
        _print_outcomes(result.outcomes)
        summarised, status = 0, 0
        if settings.summaries:
            try:
                summarised = pipeline.summarize_pending(settings, store, fetcher)
            except StorageError as e:  # the database stopped taking writes: publish anyway
                print(f"aggregator: error: summaries stopped: {e}", file=sys.stderr)
                status = 1
        published = []
        if settings.publish and (result.new or result.changed or summarised or
                                 not (settings.output / "index.html").exists()):
            try:
                published = pipeline.publish_now(settings, store)
            except OSError as e:
                raise AggregatorError(f"cannot publish to {settings.output}: "
                                      f"{e.strerror or e}") from e
    print(f"{len(result.outcomes)} feeds polled: {result.new} new items, "
          f"{result.changed} changed, {result.failed} failed; {summarised} summarised"
          + (f"; published to {settings.output}" if published else ""))
    return status


class _Progress:
    """A one-line progress bar on a terminal."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.count = 0

    def step(self, outcome: Any) -> None:
        self.count += 1
        self.stream.write(f"\r  polled {self.count} feeds  {outcome.url[:60]:<60}")
        self.stream.flush()

    def done(self) -> None:
        if self.count:
            self.stream.write("\r" + " " * 80 + "\r")


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


def cmd_feeds(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.store import Store

    with Store(settings.db) as store:
        from aggregator.update import sync_subscriptions, utcnow

        sync_subscriptions(settings, store, utcnow())
        if args.revive:
            if not store.revive_feed(args.revive, utcnow()):
                raise AggregatorError(f"no such feed: {args.revive} (see `aggregator feeds`)")
            feed = store.feed(args.revive)
            print(f"revived: {args.revive} " + ("(polled on the next pass)" if feed and feed.active
                                                else "(not in feeds.opml: `add` it to poll it)"))
            return 0
        feeds = store.feeds()
    rows = [("STATE", "ITEMS", "LAST FETCH", "HTTP", "NEXT FETCH", "ERRS", "CATEGORY", "FEED")]
    for f in feeds:
        state = f.state if f.active else "removed"
        rows.append((state, str(f.item_count), _when(f.last_fetch), str(f.last_status or "-"),
                     _when(f.next_fetch) if f.active else "-", str(f.error_count),
                     f.category or "-",
                     f"{f.name} <{f.url}>" + (f"\n    last error: {f.last_error}"
                                              if f.last_error else "")))
    _print_table(rows)
    return 0


def _edit_subscriptions(settings: config.Settings, change: Callable[[Any], Any]) -> Any:
    """Change feeds.opml under its lock (read, change and atomic replace, so a
    concurrent edit by the daemon or another command is never lost), then bring
    the database in line."""
    from aggregator.store import Store
    from aggregator.update import sync_subscriptions, utcnow

    result = opml.edit(settings.feeds, change)
    with Store(settings.db) as store:
        sync_subscriptions(settings, store, utcnow())
    return result


def cmd_add(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator import discover
    from aggregator.update import make_fetcher

    with make_fetcher(settings) as fetcher:
        url, title = discover.feed_url(fetcher, args.url)
    # a URL typed with its token that led elsewhere: the feed found is private too
    private = args.private or (url != args.url and opml.is_private(args.url))
    sub = Subscription(url=url, title=args.title or title, category=args.category,
                       private=private)
    added = _edit_subscriptions(settings, lambda tree: opml.add(tree, sub))
    print(f"{'added' if added else 'already subscribed'}: {url}")
    return 0


def cmd_remove(args: argparse.Namespace, settings: config.Settings) -> int:
    removed = _edit_subscriptions(settings, lambda tree: opml.remove(tree, args.url))
    if not removed:
        raise OPMLError(f"not subscribed: {args.url}")
    print(f"removed: {args.url} (its items stay in the database)")
    return 0


def cmd_import(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.fetch import PAGE_ACCEPT
    from aggregator.guard import trusted_origin
    from aggregator.update import make_fetcher

    source = args.source
    remote = source.startswith(("http://", "https://"))
    if remote:
        with make_fetcher(settings) as fetcher:
            res = fetcher.get(source, accept="text/x-opml, application/xml, " + PAGE_ACCEPT,
                              trusted=trusted_origin(source))
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
    subs = [s for s in subs if s not in junk]
    if remote:
        # A list from the network is somebody else's choice: a feed in it that names an
        # internal address (which feeds.opml would trust) is not imported, unless it is
        # the very origin the user typed.
        origin = trusted_origin(source)
        refused = [s for s in subs if trusted_origin(s.url) not in (None, origin)]
        for sub in refused:
            print(f"aggregator: warning: not importing {sub.url}: a list fetched from "
                  f"{source} may not subscribe to an internal address", file=sys.stderr)
        subs = [s for s in subs if s not in refused]
    added = _edit_subscriptions(settings, lambda tree: opml.merge(tree, subs))
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


def cmd_publish(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator import update as pipeline
    from aggregator.store import Store

    with Store(settings.db) as store:
        paths = pipeline.publish_now(settings, store)
    print(f"published {len(paths)} files to {settings.output}")
    return 0


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

    with make_server(settings.output, settings.host, settings.port,
                     health=health if settings.db.exists() else None,
                     stalled_after=stalled_after) as server:
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
    "publish": cmd_publish,
    "serve": cmd_serve,
}

__all__ = ["main", "build_parser", "DiscoveryError"]
