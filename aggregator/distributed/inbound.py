"""What the coordinator takes from the broker, made safe again before it is stored.

A worker cleans what it parses (clean.py, media.py: HTML through nh3, titles plain
text, links http(s) only, bounded strings and dates); a result is then JSON on Redis,
and whoever can write there can hand the coordinator any JSON. The coordinator is
the only writer of the database, so it applies the same rules once more to every
item and feed field it stores: feed content can never bring script, a
``javascript:``/``data:`` link, a date from the far future or an unbounded string
into the database, whatever a worker or the broker sent. The rules are idempotent:
an honest worker's values come out as they went in (its content hashes still hold).

Pure: no network, no disk, no clock (``now`` is given).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from aggregator import clean, media
from aggregator.types import Enclosure, ParsedItem
from aggregator.wire import PollResult

#: An item key is a guid, a link or a digest (decide.assign_keys): never longer.
MAX_KEY_CHARS = clean.MAX_ID_CHARS + clean.MAX_URL_CHARS
MAX_WARNING_CHARS = 1000


def _when(value: datetime | None, now: datetime) -> datetime | None:
    """An instant between 1970 and a day from now (a naive one is UTC), else none."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value.year < clean.FIRST_YEAR or value - clean.FUTURE_SLACK > now:
        return None
    return value


def _enclosures(found: tuple[Enclosure, ...]) -> tuple[Enclosure, ...]:
    out: list[Enclosure] = []
    for e in found[: media.MAX_PER_ITEM]:
        checked = media.enclosure(e.url, e.type, e.length, e.kind)
        if checked is not None and checked.url not in {o.url for o in out}:
            out.append(checked)
    return tuple(out)


def item(it: ParsedItem, now: datetime) -> ParsedItem:
    """One item as parse.py would have made it: the same rules, applied again."""
    content = clean.sanitize(it.content)
    text = it.content_text[: clean.MAX_CONTENT_CHARS] if it.content_text else None
    return replace(
        it,
        guid=clean.identifier(it.guid),
        url=clean.web_url(it.url),
        title=clean.plain(it.title),
        author=clean.plain(it.author, clean.MAX_AUTHOR_CHARS),
        published=_when(it.published, now),
        updated=_when(it.updated, now),
        content=content,
        content_text=text,  # plain text: escaped wherever it is shown
        categories=clean.categories(it.categories[: clean.MAX_CATEGORY_TERMS]),
        language=clean.language(it.language),
        enclosures=_enclosures(it.enclosures),
    )


def result(res: PollResult, now: datetime) -> PollResult:
    """A poll result from the broker, checked: its items and the feed's fields
    cleaned again, no more items than a document keeps, keys bounded; a moved
    feed's new URL an http(s) URL or no move. ValueError for a result that no
    honest worker sends (too many items, an endless key)."""
    if len(res.items) > clean.MAX_ITEMS or len(res.document_keys or ()) > clean.MAX_ITEMS:
        raise ValueError(f"wire: more than {clean.MAX_ITEMS} items in one result")
    keys = [k for k, _, _ in res.items] + list(res.document_keys or ())
    if any(len(k) > MAX_KEY_CHARS or not k for k in keys):
        raise ValueError("wire: an item key that is empty or too long")
    meta = res.parsed_meta
    if meta is not None:
        title, site_url, language, ttl, warning = meta
        meta = (clean.plain(title), clean.web_url(site_url), clean.language(language),
                clean.ttl_minutes(ttl) if ttl is not None else None,
                clean.plain(warning, MAX_WARNING_CHARS))
    return replace(
        res,
        parsed_meta=meta,
        items=tuple((k, item(it, now), h[:128]) for k, it, h in res.items),
        permanent_url=clean.web_url(res.permanent_url),
        final_url=clean.web_url(res.final_url),
        name=clean.plain(res.name) or "",
        last_error=res.last_error[:1000] if res.last_error else res.last_error,
        worker=clean.plain(res.worker, 200),
    )


def holder(name: object) -> str:
    """A worker's name as a lease holder (shown by ``aggregator feeds``): printable
    ASCII only, bounded, so a hostile name cannot write to an operator's terminal."""
    text = "".join(c for c in str(name)[:200] if c.isascii() and c.isprintable())
    return text.strip() or "worker"


MAX_SUMMARY_PARTS = 50
MAX_SUMMARY_CHARS = 5000


def article_work(d: object) -> dict[str, object]:
    """An extract result's JSON, shaped as ``ArticleWork.to_json`` writes it (strings
    where text goes, lists of strings for a summary, a finite time), else ValueError:
    a summary point that is no text would reach every published file."""

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise ValueError(f"wire: bad extract result {what}")

    need(isinstance(d, dict) and d.get("v") == 1, "version")
    assert isinstance(d, dict)
    item_id = d.get("item_id")
    need(isinstance(item_id, int) and not isinstance(item_id, bool)
         and 0 <= item_id < 2**63, "item_id")
    need(isinstance(d.get("content_hash"), str) and len(d["content_hash"]) <= 128,
         "content_hash")
    a, m, seconds = d.get("article"), d.get("summary"), d.get("seconds")
    if a is not None:
        need(isinstance(a, dict) and isinstance(a.get("status"), str)
             and len(a["status"]) <= 1000, "article status")
        need(a.get("text") is None or isinstance(a.get("text"), str), "article text")
    if m is not None:
        need(isinstance(m, dict) and isinstance(m.get("method"), str)
             and len(m["method"]) <= 100, "summary method")
        for part in ("context", "points"):
            values = m.get(part)
            need(isinstance(values, list) and len(values) <= MAX_SUMMARY_PARTS
                 and all(isinstance(v, str) and len(v) <= MAX_SUMMARY_CHARS for v in values),
                 f"summary {part}")
    need(seconds is None or (isinstance(seconds, int | float) and not isinstance(seconds, bool)
                             and 0 <= seconds < 1e9), "seconds")
    return d
