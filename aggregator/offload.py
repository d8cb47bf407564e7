"""What the pipeline's worker processes are asked to do: a feed document's
parse, an article page's main text, an item's summary. Pure functions named by
this light module, so a worker process unpickling a task imports only what
the task needs (feedparser, trafilatura, sumy), never the fetcher or the
store; the caller imports none of them while the workers do the work.
"""

from __future__ import annotations

from datetime import datetime

from aggregator.types import ParsedFeed, Summary

#: what the worker processes' forkserver imports once, for every worker
PRELOAD = ("aggregator.extract", "aggregator.summarize")


def parse(body: bytes, headers: dict[str, str], url: str, now: datetime) -> ParsedFeed:
    """``parse.parse`` of a fetched feed document."""
    from aggregator.parse import parse as parse_feed

    return parse_feed(body, headers, url, now)


def main_text(body: bytes, url: str, encoding: str | None) -> str | None:
    """``extract.extract_main_text`` of a fetched page."""
    from aggregator.extract import extract_main_text

    return extract_main_text(body, url, encoding=encoding)


def summary(text: str, language: str | None, title: str | None, summarizer: str) -> Summary:
    """``summarize.summarize`` of an item's text."""
    from aggregator.summarize import summarize

    return summarize(text, language=language, title=title, summarizer=summarizer)
