"""Pure rules of static HTTP serving: which file a request target names, its
content type, conditional requests and content negotiation. No sockets, no
threads: serve.py does the I/O.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_LINES = 64
GZIP_OVER = 256  # smaller bodies grow when gzipped
CACHE_BUDGET = 32 * 1024 * 1024  # bytes of file bodies kept in memory
ALLOW = "GET, HEAD"

# Feeds by name first (anywhere in the tree), then by suffix.
_TYPES_BY_NAME = {
    "rss.xml": "application/rss+xml; charset=utf-8",
    "atom.xml": "application/atom+xml; charset=utf-8",
    "feed.json": "application/feed+json; charset=utf-8",
}
_TYPES_BY_SUFFIX = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".xsl": "text/xsl; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
}
_DEFAULT_TYPE = "application/octet-stream"

# No script may ever run from this origin. Not sent on XML: a browser applies
# CSP to a feed's <?xml-stylesheet?> too, and a publisher may use one.
CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def content_type(name: str) -> str:
    """The Content-Type for a file name, from a fixed table (not /etc/mime.types)."""
    if name in _TYPES_BY_NAME:
        return _TYPES_BY_NAME[name]
    return _TYPES_BY_SUFFIX.get(os.path.splitext(name)[1].lower(), _DEFAULT_TYPE)


def compressible(ctype: str) -> bool:
    base = ctype.split(";", 1)[0]
    return base.startswith("text/") or base.endswith(("xml", "json"))


def is_xml(ctype: str) -> bool:
    base = ctype.split(";", 1)[0]
    return base.endswith("xml") or base == "text/xsl"


# --- request target -> file -------------------------------------------------


class Refused(Exception):
    """A request target that maps to no file; args[0] is the status to answer."""


def split_target(target: str) -> tuple[list[str], bool]:
    """Request target -> (decoded path segments, ends with '/').

    Raises Refused(400) for targets no honest client sends (dot segments,
    encoded slashes, control characters, bad UTF-8, no leading '/') and
    Refused(404) for dotfiles and empty segments. The absolute-form
    (``http://host/path``) is accepted as RFC 9112 3.2.2 requires; the
    host is ignored.
    """
    if target[:8].lower().startswith(("http://", "https://")):
        rest = target.split("/", 3)
        target = "/" + (rest[3] if len(rest) > 3 else "")
    if not target.startswith("/"):
        raise Refused(HTTPStatus.BAD_REQUEST)
    path = target.split("?", 1)[0].split("#", 1)[0]
    raw = path.split("/")[1:]
    trailing = raw[-1] == ""
    if trailing:
        raw.pop()
    segments: list[str] = []
    for part in raw:
        if part == "":
            raise Refused(HTTPStatus.NOT_FOUND)
        try:
            seg = unquote(part, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise Refused(HTTPStatus.BAD_REQUEST) from None
        if seg in (".", "..") or "/" in seg or "\\" in seg:
            raise Refused(HTTPStatus.BAD_REQUEST)
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in seg):
            raise Refused(HTTPStatus.BAD_REQUEST)
        if seg.startswith("."):
            raise Refused(HTTPStatus.NOT_FOUND)
        segments.append(seg)
    return segments, trailing


def _inside(path: str, root: str) -> bool:
    """True when path is root or below it, through no dot-named component."""
    if path == root:
        return True
    return not any(p.startswith(".") for p in os.path.relpath(path, root).split(os.sep))


def resolve(root: Path, segments: list[str], trailing: bool) -> str | None:
    """Segments -> the real path of a regular file inside root, or None.

    Symlinks are followed, then the result must still lie inside the real
    root and name no dotfile; a directory yields its index.html. Returns
    "" for a directory asked for without its trailing slash (the caller
    redirects). The root is resolved on every call so that swapping it
    (a symlink to the latest release) takes effect at once.
    """
    try:
        real_root = os.path.realpath(root, strict=True)
        real = os.path.realpath(os.path.join(real_root, *segments), strict=True)
        if not _inside(real, real_root):
            return None
        st = os.stat(real)
        if stat.S_ISDIR(st.st_mode):
            index = os.path.realpath(os.path.join(real, "index.html"), strict=True)
            if not _inside(index, real_root) or not stat.S_ISREG(os.stat(index).st_mode):
                return None
            return index if trailing or not segments else ""
        if trailing or not stat.S_ISREG(st.st_mode):
            return None
        return real
    except (OSError, ValueError):  # missing, loop, name too long, ...
        return None


# --- conditional requests and content negotiation ---------------------------

_ETAG_RE = re.compile(r'(?:W/)?"([^"]*)"')


def none_match(values: list[str], etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2)."""
    opaque = etag.removeprefix("W/")
    for value in values:
        if value.strip() == "*":
            return True
        if any(f'"{tag}"' == opaque for tag in _ETAG_RE.findall(value)):
            return True
    return False


def not_modified_since(value: str, mtime: float) -> bool:
    try:
        since = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False  # an invalid date is ignored (RFC 9110 13.1.3)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return int(mtime) <= since.timestamp()


def accepts_gzip(value: str | None) -> bool:
    """True when Accept-Encoding allows gzip (explicitly or by '*', q > 0)."""
    if not value:
        return False
    qs: dict[str, float] = {}
    for item in value.split(","):
        coding, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        qs[coding.strip().lower()] = q
    for name in ("gzip", "x-gzip"):
        if name in qs:
            return qs[name] > 0
    return qs.get("*", 0.0) > 0
