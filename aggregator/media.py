"""Enclosures and Media RSS: the rules for what an item's media files are, in and out.

Pure: no network, no disk, no database. The daemon never fetches an enclosure's URL;
it only stores what the feed said and says it again in every output format.

    in:   RSS <enclosure url length type>, Atom <link rel="enclosure" href length type>
          (feedparser gives both as ``entry.enclosures``), media:content (url fileSize
          type medium), media:thumbnail (url), JSON Feed attachments (url mime_type
          size_in_bytes)
    out:  RSS 2.0 one <enclosure> per item (the spec allows one): the first audio or
          video file, else the first other enclosure; media:thumbnail for the first
          thumbnail. Atom: <link rel="enclosure" href type length> for each enclosure and
          media:content. JSON Feed: ``attachments`` (url, mime_type, size_in_bytes) for
          the same, and the first thumbnail as the item's ``image``.

Rules, applied where a value enters (``from_feedparser``, ``from_json_feed``) and again
where it leaves (``for_output``): only absolute http(s) URLs (no javascript:, data:,
file:); a length is ASCII digits between 1 and ``MAX_LENGTH`` bytes, anything else
(negative, 10^30, "abc", 0) is absent; a type is a ``type/subtype`` token, lower-cased;
at most ``MAX_PER_ITEM`` files per item, each URL once (media:content often repeats the
enclosure: the first mention wins).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from aggregator import clean
from aggregator.types import Enclosure

MAX_PER_ITEM = 10
MAX_LENGTH = 2**40  # 1 TiB: no podcast episode is larger; larger is a lie
MAX_TYPE_CHARS = 100
KINDS = ("enclosure", "content", "thumbnail")
MEDIA_NS = "http://search.yahoo.com/mrss/"
# what RSS 2.0 requires when the feed did not say (RSS Advisory Board: length 0 if unknown)
UNKNOWN_TYPE = "application/octet-stream"

_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_DIGITS = re.compile(r"[0-9]{1,16}")
# the types a file name says, for media:thumbnail (which names none) and RSS's required type
_BY_SUFFIX = {
    "mp3": "audio/mpeg", "m4a": "audio/mp4", "aac": "audio/aac", "ogg": "audio/ogg",
    "oga": "audio/ogg", "opus": "audio/opus", "flac": "audio/flac", "wav": "audio/wav",
    "mp4": "video/mp4", "m4v": "video/mp4", "webm": "video/webm", "mov": "video/quicktime",
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
    "webp": "image/webp", "avif": "image/avif", "pdf": "application/pdf",
}  # fmt: skip
_MEDIUM = {"audio": "audio/", "video": "video/", "image": "image/"}


def length(value: Any) -> int | None:
    """A byte count: ASCII digits (an int from JSON), 1..MAX_LENGTH; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        n = int(value.strip())
    else:
        return None
    return n if 0 < n <= MAX_LENGTH else None


def mime_type(value: Any) -> str | None:
    """``type/subtype`` (parameters dropped), lower-case, or None."""
    if not isinstance(value, str):
        return None
    value = value.split(";", 1)[0].strip().lower()
    return value if len(value) <= MAX_TYPE_CHARS and _TYPE.fullmatch(value) else None


def guess_type(url: str) -> str | None:
    """The type a URL's file name suffix says (a fixed table: the same on every machine)."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    name = path.rsplit("/", 1)[-1]
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _BY_SUFFIX.get(suffix)


def enclosure(url: Any, type_: Any = None, size: Any = None, kind: str = "enclosure",
              base: str | None = None) -> Enclosure | None:
    """One checked enclosure, or None when its URL is not an http(s) URL."""
    checked = clean.web_url(url, base) if isinstance(url, str) else None
    if checked is None or kind not in KINDS:
        return None
    return Enclosure(url=checked, type=mime_type(type_), length=length(size), kind=kind)


def _bounded(found: Iterable[Enclosure | None]) -> tuple[Enclosure, ...]:
    out: list[Enclosure] = []
    seen: set[str] = set()
    for e in found:
        if e is None or e.url in seen:
            continue
        seen.add(e.url)
        out.append(e)
        if len(out) >= MAX_PER_ITEM:
            break
    return tuple(out)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value[:50] if isinstance(v, dict)] if isinstance(value, list) else []


def from_feedparser(entry: Any, base: str | None = None) -> tuple[Enclosure, ...]:
    """An entry's enclosures, media:content and media:thumbnail, in that order."""

    def found() -> Iterable[Enclosure | None]:
        for e in _dicts(entry.get("enclosures")):
            yield enclosure(e.get("href") or e.get("url"), e.get("type"), e.get("length"),
                            "enclosure", base)
        for m in _dicts(entry.get("media_content")):
            type_ = mime_type(m.get("type"))
            medium = _MEDIUM.get(str(m.get("medium") or "").lower())
            if type_ is None and medium:  # medium="image" with no type: guess from the name
                guessed = guess_type(str(m.get("url") or ""))
                type_ = guessed if guessed and guessed.startswith(medium) else None
            yield enclosure(m.get("url"), type_, m.get("filesize"), "content", base)
        for t in _dicts(entry.get("media_thumbnail")):
            url = t.get("url")
            yield enclosure(url, guess_type(url) if isinstance(url, str) else None, None,
                            "thumbnail", base)

    return _bounded(found())


def from_json_feed(item: dict[str, Any], base: str | None = None) -> tuple[Enclosure, ...]:
    """A JSON Feed item's attachments, then its ``image`` as a thumbnail."""

    def found() -> Iterable[Enclosure | None]:
        for a in _dicts(item.get("attachments")):
            yield enclosure(a.get("url"), a.get("mime_type"), a.get("size_in_bytes"),
                            "enclosure", base)
        image = item.get("image")
        if isinstance(image, str):
            yield enclosure(image, guess_type(image), None, "thumbnail", base)

    return _bounded(found())


def for_output(found: Sequence[Enclosure],
               check_url: Callable[[str | None], str | None]) -> tuple[Enclosure, ...]:
    """The stored enclosures checked once more on their way out (``check_url``:
    publish.safe_url, which also percent-encodes), lengths and types again."""
    out = []
    for e in found:
        url = check_url(e.url)
        if url and e.kind in KINDS:
            out.append(Enclosure(url, mime_type(e.type), length(e.length), e.kind))
    return _bounded(out)


def files(found: Sequence[Enclosure]) -> list[Enclosure]:
    """The media files proper (enclosures and media:content), not the thumbnails."""
    return [e for e in found if e.kind != "thumbnail"]


def thumbnail(found: Sequence[Enclosure]) -> Enclosure | None:
    return next((e for e in found if e.kind == "thumbnail"), None)


def rss_choice(found: Sequence[Enclosure]) -> Enclosure | None:
    """RSS 2.0 allows one <enclosure>: the first audio or video file, else the first file."""
    media = files(found)
    for e in media:
        kind = e.type or guess_type(e.url) or ""
        if kind.startswith(("audio/", "video/")):
            return e
    return media[0] if media else None


def rss_attributes(e: Enclosure) -> dict[str, str]:
    """RSS requires all three: an unknown length is 0, an unknown type is guessed or
    application/octet-stream."""
    return {"url": e.url, "length": str(e.length or 0),
            "type": e.type or guess_type(e.url) or UNKNOWN_TYPE}


def atom_attributes(e: Enclosure) -> dict[str, str]:
    out = {"rel": "enclosure", "href": e.url}
    kind = e.type or guess_type(e.url)
    if kind:
        out["type"] = kind
    if e.length:
        out["length"] = str(e.length)
    return out


def json_attachments(found: Sequence[Enclosure]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for e in files(found):
        a: dict[str, Any] = {"url": e.url, "mime_type": e.type or guess_type(e.url)
                             or UNKNOWN_TYPE}
        if e.length:
            a["size_in_bytes"] = e.length
        out.append(a)
    return out
