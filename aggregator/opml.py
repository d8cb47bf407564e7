"""The subscription list in and out: feeds.opml is the source of truth for what
to follow. Folders (outlines without xmlUrl) become categories; nested folders
join with " / ". Edits keep the rest of the file as it was and replace it
atomically, so a reader (or a person with an editor) never sees half a file.
Every read-modify-write (``edit``) holds an advisory lock on a sidecar file,
``feeds.opml.lock``, so the CLI and the daemon never lose each other's edits.

A subscription is private (``is_private``) when its outline says
``private="true"`` or its URL carries credentials or a token: the published
outputs never show its URL.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from aggregator.errors import OPMLError
from aggregator.types import Subscription

FETCH_ARTICLES_ATTR = "fetchArticles"  # per-feed switch: "false" turns article fetching off
PRIVATE_ATTR = "private"  # "true": the feed's URL is never published
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}

T = TypeVar("T")

# --- private subscriptions ----------------------------------------------------------

# Query parameters that carry a secret, compared lower-case with "-" read as "_";
# a name ending in "_token", "_key", ... counts too (e.g. "private_token").
SECRET_PARAMS = frozenset({
    "token", "key", "apikey", "api_key", "auth", "access_token", "secret", "sig",
    "signature", "password", "pass", "passwd", "pwd", "session", "sid", "auth_token",
    "private_token", "client_secret", "hash",
})
_SECRET_SUFFIXES = ("_token", "_key", "_secret", "_password", "_sig", "_signature", "_auth")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-.~+/=%]+")


def looks_random(value: str) -> bool:
    """A value that reads like a token rather than a word or a number: 16 or
    more token characters mixing letters and digits, with the spread of
    characters of random text (hex, base64, a UUID)."""
    if len(value) < 16 or not _TOKEN_CHARS.fullmatch(value):
        return False
    if not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
        return False
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return entropy >= 3.0


def is_private(url: str, marked: bool = False) -> bool:
    """Whether a feed's URL must never be published: marked so in feeds.opml,
    or carrying credentials (``user:pass@``) or what looks like a token in its
    query (a parameter named like ``token``/``key``/``sig``..., or a long
    random-looking value)."""
    if marked:
        return True
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return True  # can't tell what it carries: don't show it
    if "@" in parts.netloc:
        return True
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        name = name.strip().lower().replace("-", "_")
        if name in SECRET_PARAMS or name.endswith(_SECRET_SUFFIXES):
            return True
        if looks_random(value) or looks_random(name):
            return True
    return False


def _flag(outline: ET.Element, attr: str) -> bool | None:
    value = (outline.get(attr) or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def parse_bytes(data: bytes, source: str = "OPML") -> ET.Element:
    try:
        root = SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True)
    except DefusedXmlException as e:
        raise OPMLError(f"{source}: refused unsafe XML ({type(e).__name__})") from e
    except ET.ParseError as e:
        raise OPMLError(f"{source}: not well-formed XML: {e}") from e
    if root.tag != "opml" or root.find("body") is None:
        raise OPMLError(f"{source}: not an OPML document (no <opml><body>)")
    return root


def _url(outline: ET.Element) -> str:
    """An outline's feed URL, as every reader spells the attribute."""
    return (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()


def _summarizer(outline: ET.Element) -> str | None:
    """An outline's ``summarizer`` attribute, when it names a method (else ignored)."""
    import logging

    from aggregator.config import SUMMARIZERS

    name = (outline.get("summarizer") or "").strip().lower()
    if name and name not in SUMMARIZERS:
        logging.getLogger("aggregator.opml").warning("%s: unknown summarizer %r ignored; known: %s",
                    _url(outline), name, ", ".join(SUMMARIZERS))
        return None
    return name or None


def _walk(node: ET.Element, folders: tuple[str, ...]) -> Iterator[Subscription]:
    for outline in node.findall("outline"):
        url = _url(outline)
        name = (outline.get("title") or outline.get("text") or "").strip() or None
        if url:
            flag = (outline.get(FETCH_ARTICLES_ATTR) or "").strip().lower()
            yield Subscription(
                url=url,
                title=name,
                category=" / ".join(folders) or None,
                html_url=(outline.get("htmlUrl") or "").strip() or None,
                fetch_articles=None if not flag else flag not in _FALSE,
                private=bool(_flag(outline, PRIVATE_ATTR)),
                summarizer=_summarizer(outline),
            )
        else:
            yield from _walk(outline, folders + ((name,) if name else ()))


def subscriptions(root: ET.Element) -> list[Subscription]:
    """Every feed in document order, the first outline winning for a URL seen twice."""
    seen: set[str] = set()
    out = []
    body = root.find("body")
    assert body is not None
    for sub in _walk(body, ()):
        if sub.url not in seen:
            seen.add(sub.url)
            out.append(sub)
    return out


def read(path: Path) -> list[Subscription]:
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise OPMLError(f"subscription list not found: {path}") from e
    except OSError as e:
        raise OPMLError(f"cannot read {path}: {e.strerror}") from e
    return subscriptions(parse_bytes(data, str(path)))


def load_tree(path: Path) -> ET.Element:
    if not path.exists():
        return new_document()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OPMLError(f"cannot read {path}: {e.strerror}") from e
    return parse_bytes(data, str(path))


def new_document(title: str = "aggregator subscriptions") -> ET.Element:
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    ET.SubElement(root, "body")
    return root


def to_bytes(root: ET.Element) -> bytes:
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"


def write(path: Path, root: ET.Element) -> None:
    """Replace ``path`` atomically (temp file in the same directory, fsync, rename)."""
    data = to_bytes(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OPMLError(f"cannot write {path}: {e.strerror}") from e


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the advisory lock of ``path`` (flock on ``<path>.lock``; the list
    itself is replaced by a rename, so a lock on it would be on the old file)."""
    lock = lock_path(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:  # another user's lock file: reading it is enough for flock
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OPMLError(f"cannot lock {path}: {e.strerror} ({lock})") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def edit(path: Path, change: Callable[[ET.Element], T]) -> T:
    """Read, change and write ``path`` under its lock: ``change`` edits the tree
    in place and returns a true value when there is something to write."""
    with locked(path):
        tree = load_tree(path)
        result = change(tree)
        if result:
            write(path, tree)
    return result


def build(subs: Iterable[Subscription], title: str = "aggregator subscriptions") -> ET.Element:
    """A fresh document for ``subs``, one folder per category."""
    root = new_document(title)
    for sub in subs:
        add(root, sub)
    return root


def _folder(body: ET.Element, category: str | None) -> ET.Element:
    node = body
    for part in [p.strip() for p in (category or "").split("/") if p.strip()]:
        for child in node.findall("outline"):
            if not _url(child) and (child.get("title") or child.get("text")) == part:
                node = child
                break
        else:
            node = ET.SubElement(node, "outline", text=part, title=part)
    return node


def _outlines(root: ET.Element) -> Iterator[tuple[ET.Element, ET.Element]]:
    """(parent, outline) for every feed outline."""
    for parent in root.iter():
        for child in parent.findall("outline"):
            if _url(child):
                yield parent, child


def add(root: ET.Element, sub: Subscription) -> bool:
    """Add ``sub`` unless its URL is already there; True when added."""
    if any(_url(o) == sub.url for _, o in _outlines(root)):
        return False
    body = root.find("body")
    assert body is not None
    name = sub.title or sub.url
    attrs = {"type": "rss", "text": name, "title": name, "xmlUrl": sub.url}
    if sub.html_url:
        attrs["htmlUrl"] = sub.html_url
    if sub.fetch_articles is not None:
        attrs[FETCH_ARTICLES_ATTR] = "true" if sub.fetch_articles else "false"
    if sub.private:
        attrs[PRIVATE_ATTR] = "true"
    ET.SubElement(_folder(body, sub.category), "outline", attrs)
    return True


def remove(root: ET.Element, url: str) -> bool:
    found = False
    for parent, outline in list(_outlines(root)):
        if _url(outline) == url:
            parent.remove(outline)
            found = True
    return found


def rename(root: ET.Element, old: str, new: str) -> bool:
    """Point the outline of ``old`` at ``new`` (a permanent redirect)."""
    found = False
    for _, outline in _outlines(root):
        if _url(outline) == old:
            outline.attrib.pop("xmlurl", None)
            outline.set("xmlUrl", new)
            found = True
    return found


def merge(root: ET.Element, subs: Iterable[Subscription]) -> list[Subscription]:
    """Add every new subscription; returns those added."""
    return [s for s in subs if add(root, s)]
