"""The HTML: the news page of a feed or category and the page of one story (Jinja2
templates beside the package, autoescaped, no JavaScript, nothing from other sites).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import jinja2
from markupsafe import Markup

from aggregator.publish.text import STORY_DIR, TEMPLATES, dateline, rfc3339
from aggregator.publish.views import _Item

# ----------------------------------------------------------------------------- HTML


@cache
def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(TEMPLATES)
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)  # fmt: skip


@cache
def _style() -> tuple[Markup, str]:
    """The page's CSS and its CSP hash (the page allows no other style and no script)."""
    css = (TEMPLATES / "style.css").read_text(encoding="utf-8")
    digest = hashlib.sha256(css.encode("utf-8")).digest()
    return Markup(css), "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@dataclass(frozen=True)
class FeedCounts:
    """How the subscriptions of a page stand: said on a page with no story yet."""

    feeds: int = 0
    failing: int = 0  # the last fetch failed (or the feed is gone)
    unpolled: int = 0  # never fetched yet

    def __add__(self, other: FeedCounts) -> FeedCounts:
        return FeedCounts(self.feeds + other.feeds, self.failing + other.failing,
                          self.unpolled + other.unpolled)  # fmt: skip


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def empty_reason(counts: FeedCounts | None) -> tuple[str, str | None]:
    """Why a page has no story, and the command that shows more: ("9 feeds, 9 failing",
    "aggregator feeds"). ("", None) when the counts are not known."""
    if counts is None:
        return "", None
    if counts.feeds == 0:  # none subscribed, or feeds.opml not read into the database yet
        return "no feeds in the database", "aggregator update"
    parts = [_plural(counts.feeds, "feed")]
    if counts.unpolled:
        parts.append("none polled yet" if counts.unpolled == counts.feeds
                     else f"{counts.unpolled} not polled yet")  # fmt: skip
    if counts.unpolled < counts.feeds:
        parts.append(f"{counts.failing} failing")
    command = "aggregator update" if counts.unpolled == counts.feeds else "aggregator feeds"
    return ", ".join(parts), command


def render_page(
    items: Sequence[_Item],
    categories: Sequence[Mapping[str, object]],
    *,
    title: str,
    site_title: str | None = None,
    root: str = "",
    current: str | None = None,
    includes: Sequence[str] = (),
    counts: FeedCounts | None = None,
    sources: Mapping[int, int] | None = None,
) -> bytes:
    """The news page of the whole site (``root`` "") or of one category (``current``, its
    slug; ``root`` "../../"): the same template, links relative to the page.
    ``sources``: story id -> its number of sources, for the stories that have a page."""
    css, csp = _style()[0], _csp()
    sources = sources or {}
    stories = [
        {"item": i, "when": dateline(i.published), "iso": rfc3339(i.published),
         "page": f"{root}{STORY_DIR}/{i.story}.html" if i.story in sources else None,
         "sources": _plural(sources[i.story], "source") if i.story in sources else None}
        for i in items
    ]
    reason, command = empty_reason(counts) if not items else ("", None)
    page = _environment().get_template("index.html")
    text = page.render(title=title, site_title=site_title or title, css=css, csp=csp,
                       stories=stories, categories=categories, root=root, current=current,
                       includes=includes, empty_reason=reason, empty_command=command)  # fmt: skip
    return text.encode("utf-8")


def _csp() -> str:
    return (f"default-src 'none'; style-src {_style()[1]}; img-src 'none'; "
            "base-uri 'none'; form-action 'none'")


def _line(item: _Item, page: str | None = None) -> dict[str, object]:
    """One story in a list: its title linking ``page`` (else the original), source, date."""
    return {"item": item, "href": page or item.url, "when": dateline(item.published),
            "iso": rfc3339(item.published)}


def render_story_page(
    item: _Item,
    members: Sequence[_Item],
    latest: Sequence[_Item],
    *,
    site_title: str,
    sources: int,
    related: Sequence[_Item] = (),
) -> bytes:
    """``story/<id>.html``: the story's newest item (profile line, date, title linking the
    original, Context, Dive deeper), then Latest News (``latest``: other stories, each
    linking its own page) and Related Stories: ``members`` (the story's other items,
    under "Other sources") and ``related`` (other stories on the same topic, each by its
    newest item, linking its page (``page``) or else its original)."""
    page = _environment().get_template("story.html")
    text = page.render(
        title=f"{item.title} · {site_title}", site_title=site_title, css=_style()[0],
        csp=_csp(), story=_line(item), sources=_plural(sources, "source"),
        latest=[_line(i, f"{i.story}.html") for i in latest],
        others=[_line(m) for m in members], related=[_line(r, r.page) for r in related])
    return text.encode("utf-8")


