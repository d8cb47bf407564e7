"""Commands that read: summarize (files), stories, search, publish."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import textwrap
from datetime import UTC

from aggregator import config
from aggregator.cli.output import _existing_db
from aggregator.errors import AggregatorError

log = logging.getLogger("aggregator")


_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
          (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
          (b"\x1f\x8b", "gzip data"), (b"RIFF", "a RIFF (WebP, WAV, AVI) file"),
          (b"\x7fELF", "a program"))
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_CHARSET = re.compile(rb"""(?:charset|encoding)\s*=\s*["']?([A-Za-z0-9._-]+)""", re.I)



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
