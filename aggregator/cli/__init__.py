"""The command line: parses arguments, calls the stages, formats results. No logic.

This module holds the parser and `main`; the commands live by what they work on:
``subscriptions`` (feeds, add, remove, import, export), ``reading`` (summarize, stories,
search, publish), ``operations`` (update, run, serve, prune, vacuum, refetch, resummarize,
datasette); ``output`` formats what they print."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from aggregator import __version__, config
from aggregator.cli.distributed import cmd_coordinator, cmd_worker
from aggregator.cli.operations import (
    cmd_datasette,
    cmd_prune,
    cmd_refetch,
    cmd_resummarize,
    cmd_run,
    cmd_serve,
    cmd_update,
    cmd_vacuum,
)
from aggregator.cli.output import _age
from aggregator.cli.reading import cmd_publish, cmd_search, cmd_stories, cmd_summarize
from aggregator.cli.subscriptions import cmd_add, cmd_export, cmd_feeds, cmd_import, cmd_remove
from aggregator.errors import AggregatorError, DiscoveryError

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

    c = _cmd(sub, "coordinator", "Run the distributed daemon: the only writer of the "
             "database; sends feeds and articles to workers through Redis, applies their "
             "results, publishes and serves as run does.",
             "aggregator coordinator --broker redis://127.0.0.1:6379/0")
    c.add_argument("--broker", metavar="URL",
                   help="Redis URL of the broker (default: the broker setting)")
    c.add_argument("--no-serve", action="store_true", help="don't start the HTTP server")

    c = _cmd(sub, "worker", "Run a distributed worker: polls feeds (role poll) or fetches, "
             "extracts and summarises articles (role extract) for a coordinator.",
             "aggregator worker --broker redis://127.0.0.1:6379/0 --role poll")
    c.add_argument("--broker", metavar="URL",
                   help="Redis URL of the broker (default: the broker setting)")
    c.add_argument("--role", required=True, choices=("poll", "extract"),
                   help="which queue to work on")
    c.add_argument("--concurrency", type=int, metavar="N",
                   help="worker processes (default: 4 per core for poll, which waits "
                        "on the network; 2 per core for extract)")

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
    if getattr(args, "broker", None):
        flags["broker"] = args.broker
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


COMMANDS: dict[str, Callable[[argparse.Namespace, config.Settings], int]] = {
    "update": cmd_update,
    "run": cmd_run,
    "coordinator": cmd_coordinator,
    "worker": cmd_worker,
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
