"""Pure rules of search: what a user types -> an FTS5 query; "2d" -> a timedelta;
a date -> "19h ago". No database, no clock (``now`` is passed in).

The query language is a web search box's, not FTS5's: every word is quoted
before SQLite sees it, so ``C++``, ``"unbalanced``, ``NEAR(`` or ``AND`` are
words to look for, never syntax that SQLite rejects.

    plane crash          both words (in any of title, text, Context, article)
    "plane crash"        the phrase
    crash OR collision   either (OR in capitals, between two terms)
    crash*               a word starting with "crash"

Words are matched after stemming (porter) and folding case and accents, so
``crashes`` finds "crash" and ``zurich`` finds "Zürich".
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from aggregator.errors import SearchError

_TERM = re.compile(r'"([^"]*)"(\*?)|(\S+)')
_SINCE = re.compile(r"\s*(\d{1,6})\s*([mhdw])\s*", re.I)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _has_token(text: str) -> bool:
    """Whether the tokenizer finds a word in it: unicode61 keeps letters and
    digits (and private-use characters) and splits on everything else."""
    return any(ch.isalnum() for ch in text)


def _phrase(text: str, prefix: bool) -> str:
    return '"' + text.replace('"', '""') + '"' + ("*" if prefix else "")


def fts_query(text: str) -> str:
    """The FTS5 MATCH expression for what a user typed; SearchError when it
    holds nothing to look for (``+++``, ``""``)."""
    terms: list[str | None] = []  # None: an OR between two terms
    for m in _TERM.finditer(text):
        quoted, star, bare = m.group(1), m.group(2), m.group(3)
        if bare is not None:
            if bare == "OR":
                terms.append(None)
                continue
            star = "*" if bare.endswith("*") and _has_token(bare) else ""
            quoted = bare[:-1] if star else bare
            quoted = quoted.replace('"', " ")  # a stray quote: "unbalanced
        if _has_token(quoted):
            terms.append(_phrase(quoted.strip(), bool(star)))
    # OR between two terms; elsewhere (first, last, twice) it is the word "or"
    ops = {i for i, t in enumerate(terms) if t is None and 0 < i < len(terms) - 1
           and terms[i - 1] is not None and terms[i + 1] is not None}
    groups: list[list[str]] = []
    join = False
    for i, t in enumerate(terms):
        if i in ops:
            join = True
            continue
        word = _phrase("OR", False) if t is None else t
        if join:
            groups[-1].append(word)
        else:
            groups.append([word])
        join = False
    if not groups:
        raise SearchError(f"nothing to search for in {text.strip()[:80]!r} "
                          "(no letters or digits)")
    return " AND ".join(g[0] if len(g) == 1 else "(" + " OR ".join(g) + ")" for g in groups)


def parse_since(text: str) -> timedelta:
    """``30m``, ``12h``, ``2d``, ``1w``: how far back."""
    m = _SINCE.fullmatch(text)
    if not m:
        raise SearchError(f"--since: {text!r} is not a duration like 30m, 12h, 2d or 1w")
    return timedelta(**{_UNITS[m.group(2).lower()]: int(m.group(1))})


def age(when: datetime, now: datetime) -> str:
    """How long ago, the way a news page says it: ``now``, ``5m ago``,
    ``19h ago``, ``3d ago``; a date in the future (a feed's clock) is ``now``."""
    seconds = (now - when).total_seconds()
    if seconds < 60:
        return "now"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"
