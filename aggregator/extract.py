"""Article page -> main text.

Feed items often carry only a one-sentence teaser. When that is too short to
summarise, the daemon fetches the linked page (fetch.py) and hands the HTML
here. This module is pure: it never touches the network or the disk. Bytes
and str are always parsed as a document (lxml ``document_fromstring``) and
trafilatura gets the tree, so a page whose body is "/etc/passwd" or a URL is
that text, never a file or a fetch.

    bytes --decode_html--> str --parse (lxml, no network, no entities)-->
    tree --trafilatura--> lines --drop the headline--> paragraphs

The extractor (trafilatura with its fallbacks, comments off) was chosen by
measurement: see bench/extraction.py and bench/results/extraction.json.
"""

from __future__ import annotations

import codecs
import logging
import re
import unicodedata
from typing import Any, Final

import lxml.html
import trafilatura
from lxml import etree

__all__ = [
    "MAX_HTML_CHARS",
    "MIN_MAIN_TEXT_CHARS",
    "decode_html",
    "extract_main_text",
    "html_to_text",
]

log = logging.getLogger("aggregator.extract")

#: Below this many characters the "main text" is a teaser, a cookie notice or a
#: paywall stub, not an article: the shortest article body in the Zyte benchmark
#: is 369 characters (trafilatura's shortest answer there: 427), while the 112
#: teasers in the BBC feeds are at most 266 characters (bench/extraction.py
#: measures all three).
MIN_MAIN_TEXT_CHARS: Final = 300

#: Pages longer than this (characters, after decoding) lose their scripts,
#: styles, SVG and comments, and are then cut to it, so one huge page costs
#: bounded time: trafilatura's time grows faster than linearly with text
#: (2 s for 2 MB of bare paragraphs, 8 s for 4.4 MB). The largest real article
#: page in the test data is 1.4 MB, most of it scripts.
MAX_HTML_CHARS: Final = 2_000_000
#: Bytes beyond this are not even decoded.
_MAX_INPUT_BYTES: Final = 4 * MAX_HTML_CHARS

#: How far into the page to look for <meta charset>, as browsers do (HTML spec
#: prescan: 1024 bytes; many real pages put it later, after long <script>s).
_SNIFF_BYTES: Final = 8192

_META_CHARSET = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE
)
_XML_DECL_CHARSET = re.compile(
    rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9_.:\-]+)""", re.IGNORECASE
)
# Codecs that are "text encodings" to Python but never a web page's charset.
_NOT_WEB_CODECS: Final = frozenset(
    {
        "idna",
        "punycode",
        "raw-unicode-escape",
        "unicode-escape",
        "undefined",
        "mbcs",
        "oem",
        "utf-7",
        "charmap",
    }
)
_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# lxml refuses str input that starts with an XML declaration naming an encoding.
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*>", re.IGNORECASE)
# A DOCTYPE with an internal subset (entity declarations): the HTML parser never
# expands them, but would show the subset's tail "]>" as text.
_DOCTYPE_SUBSET = re.compile(r"<!DOCTYPE[^>\[]*\[.*?\]\s*>", re.IGNORECASE | re.DOTALL)
# What an oversized page can lose before it is cut.
_BULKY = re.compile(
    r"<(script|style|svg|noscript|template)\b[^>]*>.*?</\1\s*>|<!--.*?-->",
    re.IGNORECASE | re.DOTALL,
)
# Characters libxml2 rejects or that never belong in text.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_SPACES = re.compile(r"\s+")

# One parser for every page: HTML mode never loads a DTD or expands external
# entities; no_network forbids any fetch libxml2 might still try.
_PARSER: Final = lxml.html.HTMLParser(
    no_network=True,
    remove_comments=True,
    remove_pis=True,
    huge_tree=False,
    collect_ids=False,
    default_doctype=False,
)

# The trafilatura settings the benchmark picked (see module docstring).
_TRAFILATURA_OPTIONS: Final[dict[str, Any]] = {
    "include_comments": False,
    "include_tables": True,
    "include_images": False,
    "include_links": False,
    "include_formatting": False,
    "with_metadata": False,
    "output_format": "txt",
    "deduplicate": False,
}


def decode_html(data: bytes, declared: str | None = None) -> str:
    """Bytes of a page -> text, for pages whose charset may be missing or wrong.

    Order: byte-order mark; valid UTF-8 (a cp1252 page is almost never valid
    UTF-8, so this beats a wrong declaration); the declared charset (HTTP
    header, then <meta>/<?xml?>); mostly-UTF-8 with a few stray bytes; cp1252.
    """
    for bom, bom_codec in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(bom_codec, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for name in (declared, _sniff_charset(data[:_SNIFF_BYTES])):
        encoding = _web_codec(name)
        if encoding is None or encoding == "utf-8":
            continue
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            log.debug("page declared %s but does not decode as it", name)
    as_utf8 = data.decode("utf-8", errors="replace")
    bad = as_utf8.count("\ufffd")
    good = sum(1 for ch in as_utf8 if ch > "\x7f") - bad
    if good > bad:
        return as_utf8
    return data.decode("cp1252", errors="replace")


def _sniff_charset(head: bytes) -> str | None:
    match = _XML_DECL_CHARSET.match(head) or _META_CHARSET.search(head)
    return match.group(1).decode("ascii") if match else None


def _web_codec(name: str | None) -> str | None:
    """A declared charset name -> Python text codec, following the WHATWG labels
    where they differ (latin-1 and ascii mean windows-1252; a <meta> can't
    honestly say UTF-16). None for unknown labels and for Python-only codecs
    (rot13, unicode_escape, ...)."""
    if not name:
        return None
    try:
        info = codecs.lookup(name.strip().strip("\"'"))
    except LookupError:
        return None
    codec = info.name.replace("_", "-")
    if not getattr(info, "_is_text_encoding", True) or codec in _NOT_WEB_CODECS:
        return None
    if codec in ("latin-1", "iso8859-1", "ascii"):
        return "cp1252"
    if codec.startswith(("utf-16", "utf-32")) or codec == "utf-8-sig":
        return "utf-8"
    return codec


def _as_text(html: str | bytes, encoding: str | None) -> str:
    if isinstance(html, bytes):
        if len(html) > _MAX_INPUT_BYTES:
            log.debug("page of %d bytes cut to %d", len(html), _MAX_INPUT_BYTES)
            html = html[:_MAX_INPUT_BYTES]
        text = decode_html(html, encoding)
    else:
        text = html[: 4 * _MAX_INPUT_BYTES]
    if len(text) > MAX_HTML_CHARS:
        text = _BULKY.sub(" ", text)
        if len(text) > MAX_HTML_CHARS:
            log.debug("page of %d characters cut to %d", len(text), MAX_HTML_CHARS)
            text = text[:MAX_HTML_CHARS]
    text = _XML_DECL.sub("", text, count=1)
    text = _DOCTYPE_SUBSET.sub("<!DOCTYPE html>", text, count=1)
    return _CONTROL_CHARS.sub("", text)


def _parse(text: str) -> lxml.html.HtmlElement | None:
    if not text.strip():
        return None
    try:
        return lxml.html.document_fromstring(text, parser=_PARSER)
    except (etree.ParserError, ValueError) as e:
        log.debug("unparsable HTML: %s", e)
        return None


def extract_main_text(
    html: str | bytes,
    url: str | None = None,
    *,
    encoding: str | None = None,
    min_chars: int = MIN_MAIN_TEXT_CHARS,
) -> str | None:
    """The article's main text, paragraphs separated by blank lines, without
    the headline; None when the page yields too little to be an article.

    ``encoding`` is the charset from the HTTP Content-Type header, if any.
    ``url`` only helps trafilatura's heuristics; nothing is fetched.
    ``min_chars`` is the cut-off below which the answer is None.
    """
    text = _main_text(html, url, encoding, _TRAFILATURA_OPTIONS)
    if not text or len(text) < min_chars:
        log.debug("main text of %s too short (%d chars)", url or "a page", len(text))
        return None
    return text


def _main_text(
    html: str | bytes, url: str | None, encoding: str | None, options: dict[str, Any]
) -> str:
    """Main text with no cut-off ("" when nothing); bench/extraction.py calls
    it with other trafilatura options to compare settings."""
    tree = _parse(_as_text(html, encoding))
    if tree is None:
        return ""
    titles = _title_candidates(tree)
    # trafilatura drops scripts and styles itself, but keeps <template> text.
    etree.strip_elements(tree, *_NEVER_TEXT, with_tail=False)
    try:
        raw = trafilatura.extract(tree, url=url, **options)
    except Exception:  # a bug in the extractor must not stop the daemon
        log.warning("trafilatura failed on %s", url or "a page", exc_info=True)
        return ""
    paragraphs = [
        line for line in (_SPACES.sub(" ", ln).strip() for ln in (raw or "").splitlines()) if line
    ]
    while paragraphs and _norm(paragraphs[0]) in titles:
        paragraphs.pop(0)
    return "\n\n".join(paragraphs)


_TITLE_SEPARATORS = re.compile(r"\s+[|\-–—:·•»]+\s+")


def _title_candidates(tree: lxml.html.HtmlElement) -> frozenset[str]:
    """Normalised forms of the page's headline, to drop it from the body."""
    found: list[str] = []
    for h1 in tree.iter("h1"):
        found.append(h1.text_content())
    for meta in tree.iter("meta"):
        key = (meta.get("property") or meta.get("name") or "").lower()
        if key in ("og:title", "twitter:title"):
            found.append(meta.get("content") or "")
    for title in tree.iter("title"):
        whole = title.text_content()
        found.append(whole)
        found.extend(_TITLE_SEPARATORS.split(whole))
    return frozenset(n for n in map(_norm, found) if len(n) > 8)


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    return _SPACES.sub(" ", text).strip(" \"'.")


# --- plain text of any HTML (item content, or a whole page as a fallback) ---

_SKIP_TAGS: Final = frozenset(
    {
        "script", "style", "noscript", "template", "head", "title", "svg", "math",
        "iframe", "object", "embed", "canvas", "select", "option", "button",
        "input", "textarea", "audio", "video", "source", "track", "map", "area",
    }
)  # fmt: skip
# Elements whose content is never article text (a subset of _SKIP_TAGS).
_NEVER_TEXT: Final = (
    "script", "style", "noscript", "template", "svg", "math", "iframe",
    "object", "embed", "canvas", "select", "textarea",
)  # fmt: skip
_BLOCK_TAGS: Final = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "center",
        "dd", "details", "dialog", "div", "dl", "dt", "fieldset", "figcaption",
        "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hgroup", "hr", "html", "legend", "li", "main", "nav", "ol", "p", "pre",
        "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul",
    }
)  # fmt: skip
_CELL_TAGS: Final = frozenset({"td", "th"})
_INLINE_SPACE = re.compile(r"[^\S\n]+")


def html_to_text(html: str | bytes) -> str:
    """All visible text of an HTML document or fragment, one paragraph per
    block element, separated by blank lines; scripts, styles and forms dropped.

    The simple fallback: no boilerplate removal, so use it on item content
    (already the article, or a teaser), not on whole pages.
    """
    root = _parse(_as_text(html, None))
    if root is None:
        return ""
    blocks: list[str] = []
    current: list[str] = []

    def flush() -> None:
        joined = "".join(current)
        current.clear()
        lines = (_INLINE_SPACE.sub(" ", ln).strip() for ln in joined.split("\n"))
        block = "\n".join(ln for ln in lines if ln)
        if block:
            blocks.append(block)

    # Iterative walk: broken pages nest deeply; recursion would hit limits.
    stack: list[tuple[etree._Element, bool]] = [(root, False)]
    while stack:
        el, closing = stack.pop()
        tag = el.tag if isinstance(el.tag, str) else ""
        if closing:
            if tag in _BLOCK_TAGS:
                flush()
            elif tag in _CELL_TAGS:
                current.append(" ")
            if el.tail:
                current.append(_SPACES.sub(" ", el.tail))
            continue
        if not tag or tag in _SKIP_TAGS or el.get("hidden") is not None:
            if el.tail:  # comments, PIs and skipped elements keep their tail
                current.append(_SPACES.sub(" ", el.tail))
            continue
        if tag in _BLOCK_TAGS:
            flush()
        if tag == "br":
            current.append("\n")
        if el.text:
            if tag == "pre":
                current.append(el.text)
            else:
                current.append(_SPACES.sub(" ", el.text))
        stack.append((el, True))
        stack.extend((child, False) for child in reversed(el))
    flush()
    return "\n\n".join(blocks)
