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
import logging
import math
import os
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from aggregator.config import SUMMARIZERS
from aggregator.errors import OPMLError
from aggregator.types import Subscription

log = logging.getLogger("aggregator.opml")

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


def _secret_pair(name: str, value: str) -> bool:
    name = name.strip().lower().replace("-", "_")
    return (name in SECRET_PARAMS or name.endswith(_SECRET_SUFFIXES)
            or looks_random(value) or looks_random(name))


_HEX_ID = re.compile(r"[0-9A-Fa-f]+")
_WORD_SEPARATORS = re.compile(r"[-_.~]+")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")


def _secret_segment(segment: str) -> bool:
    """A path segment that reads like a token: a long hex id or UUID
    (``7f3a9c2e...``), or a random-looking run between separators
    (``/feeds/dGhpcyBpcyBh.../rss``); a slug of words and a date is not one."""
    segment = unquote(segment)
    hex_id = _EXTENSION.sub("", segment).replace("-", "")
    if len(hex_id) >= 16 and _HEX_ID.fullmatch(hex_id):
        return looks_random(hex_id)
    return looks_random(segment) and any(
        looks_random(part) for part in _WORD_SEPARATORS.split(segment))


def is_private(url: str, marked: bool = False) -> bool:
    """Whether a feed's URL must never be published: marked so in feeds.opml,
    or carrying credentials (``user:pass@``) or what looks like a token in its
    query or fragment (a parameter named like ``token``/``key``/``sig``..., or
    a long random-looking value) or in a segment of its path (a long hex id, a
    UUID, a random-looking run of letters and digits)."""
    if marked:
        return True
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return True  # can't tell what it carries: don't show it
    if "@" in parts.netloc or "%40" in parts.netloc.lower():
        return True
    for piece in (parts.query, parts.fragment):
        pairs = parse_qsl(piece, keep_blank_values=True)
        if any(_secret_pair(name, value) for name, value in pairs):
            return True
    return any(_secret_segment(seg) for seg in parts.path.split("/") if seg)


def _pieces(url: str) -> set[str]:
    """The parts of a URL that may be its secret: credentials, path segments,
    query names and values, the fragment (those of 4 characters or more)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return set()
    found = set(re.split(r"[:@]", unquote(parts.netloc.rpartition("@")[0])))
    found |= {unquote(seg) for seg in parts.path.split("/")}
    for piece in (parts.query, parts.fragment):
        for name, value in parse_qsl(piece, keep_blank_values=True):
            found |= {name, value}
    found.add(unquote(parts.fragment))
    return {p for p in found if len(p.strip()) >= 4}


def _credentials(url: str) -> set[str]:
    try:
        userinfo = urlsplit(url.strip()).netloc.rpartition("@")[0]
    except ValueError:
        return set()
    return {p for p in re.split(r"[:@]", unquote(userinfo)) if len(p) >= 4}


def reveals(text: str | None, *urls: str | None, name: bool = False) -> bool:
    """Whether ``text``, shown for a private feed, gives away any of ``urls``.
    A site link (the default) reveals them when it carries a secret itself or
    holds any credential, path segment, query value or fragment of theirs (4
    characters or more): a link into the feed's own folder goes, erring towards
    hiding. A name (``name=True``) reveals them when it holds a URL (a feed
    named after its own address, before or after a move), or their credentials
    or a token-like piece of them; ordinary words shared with the path stay."""
    if not text:
        return False
    plain = unquote(text)
    if name:
        if "://" in plain:
            return True
        secret = set()
        for url in filter(None, urls):
            secret |= _credentials(url)
            secret |= {p for p in _pieces(url) if looks_random(p) or _secret_segment(p)}
        return any(p in plain for p in secret)
    if is_private(plain.strip()):
        return True
    try:  # the host is shown anyway: only what follows it is compared
        parts = urlsplit(plain.strip())
        rest = plain if not parts.netloc else plain.split(parts.netloc, 1)[1]
    except ValueError:
        rest = plain
    return any(p in rest for url in urls if url for p in _pieces(url))


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
    name = (outline.get("summarizer") or "").strip().lower()
    if name and name not in SUMMARIZERS:
        log.warning("%s: unknown summarizer %r ignored; known: %s",
                    _url(outline), name, ", ".join(SUMMARIZERS))
        return None
    return name or None


MAX_FOLDER_DEPTH = 16  # folders nested deeper add no more levels to a category


def _walk(node: ET.Element, folders: tuple[str, ...]) -> Iterator[Subscription]:
    """Feed outlines in document order with their folders; iterative, so a list
    nested 100,000 deep is no RecursionError."""
    stack: list[tuple[Iterator[ET.Element], tuple[str, ...]]] = [
        (iter(node.findall("outline")), folders)]
    while stack:
        children, folders = stack[-1]
        outline = next(children, None)
        if outline is None:
            stack.pop()
            continue
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
            inner = folders + ((name,) if name and len(folders) < MAX_FOLDER_DEPTH else ())
            stack.append((iter(outline.findall("outline")), inner))


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


LOCK_TIMEOUT = 30.0  # seconds an edit waits for the lock before giving up


def _open_lock(lock: Path) -> int:
    """The lock file's descriptor, never through a symlink: opened with O_CREAT by
    root in a shared directory, a planted link would create or open a file anywhere."""
    flags = os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | flags, 0o644)
    except PermissionError:  # another user's lock file: reading it is enough for flock
        return os.open(lock, os.O_RDONLY | flags)


@contextmanager
def locked(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the advisory lock of ``path`` (flock on ``<path>.lock``; the list
    itself is replaced by a rename, so a lock on it would be on the old file).
    Waits up to ``timeout`` seconds (``LOCK_TIMEOUT``) for another holder, then
    raises OPMLError: a hung process must not hang every edit behind it."""
    lock = lock_path(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(lock)
    except OSError as e:
        if lock.is_symlink():
            raise OPMLError(f"cannot lock {path}: {lock} is a symlink; remove it") from e
        raise OPMLError(f"cannot lock {path}: {e.strerror} ({lock})") from e
    try:
        _acquire(fd, path, LOCK_TIMEOUT if timeout is None else timeout)
        yield
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, path: Path, timeout: float) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    # Held: try again every few milliseconds, then every 0.1 s, until the deadline
    # (a blocking flock can't be given a timeout, nor cut short from another thread).
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OPMLError(
                    f"{path} is locked by another process (waited {timeout:g} s for "
                    f"{lock_path(path)}); try again, or find the process holding it "
                    f"(fuser {lock_path(path)})") from None
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.1)


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


def add(root: ET.Element, sub: Subscription, *, present: set[str] | None = None) -> bool:
    """Add ``sub`` unless its URL is already there; True when added. ``present``:
    the URLs already in ``root``, kept up to date (``merge`` passes one, so a long
    list is not searched once per feed)."""
    if present is None:
        present = {_url(o) for _, o in _outlines(root)}
    if sub.url in present:
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
    present.add(sub.url)
    return True


def remove(root: ET.Element, url: str) -> bool:
    found = False
    for parent, outline in list(_outlines(root)):
        if _url(outline) == url:
            parent.remove(outline)
            found = True
    return found


def rename(root: ET.Element, old: str, new: str) -> bool:
    """Point the outline of ``old`` at ``new`` (a permanent redirect). A private
    feed stays private: when ``old`` carried its secret in a way ``is_private``
    sees and ``new`` carries it in a way it may not, the outline is marked."""
    found = False
    for _, outline in _outlines(root):
        if _url(outline) == old:
            outline.attrib.pop("xmlurl", None)
            outline.set("xmlUrl", new)
            if is_private(old) and not _flag(outline, PRIVATE_ATTR):
                outline.set(PRIVATE_ATTR, "true")
            found = True
    return found


def merge(root: ET.Element, subs: Iterable[Subscription]) -> list[Subscription]:
    """Add every new subscription; returns those added."""
    present = {_url(o) for _, o in _outlines(root)}
    return [s for s in subs if add(root, s, present=present)]
