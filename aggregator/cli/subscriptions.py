"""Commands on the subscriptions: feeds, add, remove, import, export."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aggregator import config, opml
from aggregator.cli.output import _existing_db, _print_table, _when
from aggregator.errors import AggregatorError, DiscoveryError, OPMLError
from aggregator.types import Subscription

log = logging.getLogger("aggregator")


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
    now = utcnow()
    for f in feeds:
        state = f.state if f.active else "removed"
        rows.append((state, str(f.item_count), _when(f.last_fetch), str(f.last_status or "-"),
                     _when(f.next_fetch) if f.active else "-", str(f.error_count),
                     f.category or "-",
                     f"{f.name} <{f.url}>" + _lease(f, now)
                     + (f"\n    last error: {f.last_error}" if f.last_error else "")))
    _print_table(rows)
    return 0


def _lease(feed: Any, now: datetime) -> str:
    """A claimed feed's lease and who holds it: being polled, or (expired) left
    by a poll that never answered, to be claimed again."""
    if feed.lease_until is None:
        return ""
    holder = feed.lease_holder or "?"
    if feed.lease_until <= now:
        return f"\n    lease expired {_when(feed.lease_until)} (held by {holder})"
    return f"\n    leased until {_when(feed.lease_until)} by {holder}"


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
