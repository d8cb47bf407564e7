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
import time
import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
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
    """Replace ``path`` atomically with ``root`` written anew."""
    write_bytes(path, to_bytes(root))


def write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically (temp file in the same directory, fsync, rename)."""
    import tempfile  # with shutil, bz2, lzma: for a write only, not for every read

    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
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
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        where = f" (its directory {path.parent} is not writable)" if tmp is None else ""
        raise OPMLError(f"cannot write {path}: {e.strerror or e}{where}") from e


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


LOCK_TIMEOUT = 30.0  # seconds an edit waits for the lock before giving up


def _open_lock(lock: Path) -> int:
    """The lock file's descriptor, never through a symlink: opened with O_CREAT by
    root in a shared directory, a planted link would create or open a file anywhere."""
    flags = os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | flags, 0o644)
    except PermissionError as denied:  # another user's lock file: reading it is enough
        try:
            return os.open(lock, os.O_RDONLY | flags)
        except FileNotFoundError:  # no lock file, and none may be made: say why
            raise denied from None


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
        raise OPMLError(f"cannot write {path}: cannot create its lock file {lock}: "
                        f"{e.strerror or e}") from e
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


def load_document(path: Path) -> Document:
    if not path.exists():
        return Document(None, str(path))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OPMLError(f"cannot read {path}: {e.strerror}") from e
    return Document(data, str(path))


def edit_document(path: Path, change: Callable[[Document], T]) -> T:
    """Read, change and write ``path`` under its lock: ``change`` edits the
    document in place and returns a true value when there is something to write.
    The file keeps its formatting: see ``Document``."""
    with locked(path):
        doc = load_document(path)
        result = change(doc)
        if result:
            write_bytes(path, doc.to_bytes())
    return result


def edit(path: Path, change: Callable[[ET.Element], T]) -> T:
    """``edit_document`` for a change made on the tree (the file is written anew)."""

    def on_tree(doc: Document) -> T:
        result = change(doc.root)
        if result:
            doc.data = None
        return result

    return edit_document(path, on_tree)


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


def url_key(url: str) -> str:
    """A URL as compared for "is this the same feed": surrounding whitespace
    dropped, scheme and host lower-case (they are case-insensitive; the path
    and query are not, so they are kept as written)."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = userinfo + at + hostport.lower()
    return parts._replace(scheme=parts.scheme.lower(), netloc=netloc).geturl()


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


# What XML 1.0 cannot hold, even as a character reference (controls, lone
# surrogates such as argv's undecodable bytes, U+FFFE/U+FFFF): written into
# feeds.opml, it would leave a file nothing can read. Spelled as the excluded
# ranges, not as the complement of the allowed ones ("[^\t\n\r\x20-\ud7ff...]",
# the same set): that one took 10-25 ms to compile, at every start-up.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(sub: Subscription) -> Subscription:
    """``sub`` with the characters XML cannot hold dropped from what it writes."""

    def clean(value: str | None) -> str | None:
        return _NOT_XML.sub("", value) if value is not None else None

    return replace(sub, url=clean(sub.url) or "", title=clean(sub.title),
                   category=clean(sub.category), html_url=clean(sub.html_url))


def add(root: ET.Element, sub: Subscription, *, present: set[str] | None = None) -> bool:
    """Add ``sub`` unless its URL (compared as ``url_key`` does) is already there;
    True when added. ``present``: the ``url_key``s already in ``root``, kept up to
    date (``merge`` passes one, so a long list is not searched once per feed).
    Characters XML cannot hold are dropped (``xml_safe``)."""
    sub = xml_safe(sub)
    if present is None:
        present = {url_key(_url(o)) for _, o in _outlines(root)}
    key = url_key(sub.url)
    if key in present:
        return False
    body = root.find("body")
    assert body is not None
    ET.SubElement(_folder(body, sub.category), "outline", _attrs(sub))
    present.add(key)
    return True


def _attrs(sub: Subscription) -> dict[str, str]:
    name = sub.title or sub.url
    attrs = {"type": "rss", "text": name, "title": name, "xmlUrl": sub.url}
    if sub.html_url:
        attrs["htmlUrl"] = sub.html_url
    if sub.fetch_articles is not None:
        attrs[FETCH_ARTICLES_ATTR] = "true" if sub.fetch_articles else "false"
    if sub.private:
        attrs[PRIVATE_ATTR] = "true"
    return attrs


def find(root: ET.Element, key: str) -> list[str]:
    """The URLs of the feeds ``key`` names: its URL (scheme and host in any case,
    whitespace around it ignored) or else its title (case and spacing ignored).
    A key written as a URL names no title: an untitled feed's title is its URL,
    and its path in another case is another feed."""
    urls = [_url(o) for _, o in _outlines(root)]
    wanted = url_key(key)
    by_url = [u for u in urls if url_key(u) == wanted]
    if by_url or "://" in key:
        return list(dict.fromkeys(by_url))
    name = _name_key(key)
    return list(dict.fromkeys(
        _url(o) for _, o in _outlines(root)
        if name and name in {_name_key(o.get("title") or ""), _name_key(o.get("text") or "")}))


def remove(root: ET.Element, url: str) -> bool:
    """Remove every outline of ``url`` (compared as ``url_key`` does)."""
    found = False
    key = url_key(url)
    for parent, outline in list(_outlines(root)):
        if url_key(_url(outline)) == key:
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
    present = {url_key(_url(o)) for _, o in _outlines(root)}
    return [s for s in subs if add(root, s, present=present)]


# --- editing the file as text --------------------------------------------------------

MERGE_AS_TEXT = 50  # a longer import is written anew: each text edit re-reads the file


class Document:
    """feeds.opml as its bytes and its tree. An edit changes both: the bytes by
    inserting or cutting whole lines, so the file keeps its formatting,
    comments and quoting, and a ``git diff`` after ``add`` shows one new line.
    Where the bytes can't be edited that way (a folder with no outline in it
    yet, outlines sharing one line, a UTF-16 file) the file is written anew
    from the tree, as ``to_bytes`` does."""

    def __init__(self, data: bytes | None, source: str = "OPML") -> None:
        self.root = parse_bytes(data, source) if data is not None else new_document()
        self.data = data  # None: write the tree anew

    def to_bytes(self) -> bytes:
        return self.data if self.data is not None else to_bytes(self.root)

    def add(self, sub: Subscription) -> bool:
        sub = xml_safe(sub)
        if not add(self.root, sub):
            return False
        if self.data is not None:
            self.data = self._checked(_insert_text(self.data, sub))
        return True

    def merge(self, subs: Iterable[Subscription]) -> list[Subscription]:
        subs = list(subs)
        if len(subs) <= MERGE_AS_TEXT:
            return [s for s in subs if self.add(s)]
        added = merge(self.root, subs)  # a long list: one tree edit, written anew
        if added:
            self.data = None
        return added

    def find(self, key: str) -> list[str]:
        return find(self.root, key)

    def remove(self, url: str) -> bool:
        if not remove(self.root, url):
            return False
        if self.data is not None:
            self.data = self._checked(_cut_text(self.data, url_key(url)))
        return True

    def _checked(self, data: bytes | None) -> bytes | None:
        """The edited bytes if they say what the tree says, else None."""
        if data is None:
            return None
        try:
            same = subscriptions(parse_bytes(data)) == subscriptions(self.root)
        except OPMLError:
            return None
        return data if same else None


@dataclass
class _Span:
    """Where an element sits in the bytes: ``start`` at its ``<``, ``end`` just
    after its end tag (or its ``/>``)."""

    tag: str
    attrs: dict[str, str]
    start: int
    end: int = -1
    children: list[_Span] = field(default_factory=list)

    @property
    def url(self) -> str:
        return (self.attrs.get("xmlUrl") or self.attrs.get("xmlurl") or "").strip()


def _spans(data: bytes) -> _Span | None:
    """The element tree with byte positions (expat reports them; ElementTree
    doesn't). ``data`` has been through ``parse_bytes`` already, which refuses
    entities, so this second parse expands nothing."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        return None  # UTF-16: byte positions of ASCII text don't hold
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Span] = []
    top: list[_Span] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        span = _Span(tag, attrs, parser.CurrentByteIndex)
        (stack[-1].children if stack else top).append(span)
        stack.append(span)

    def end(tag: str) -> None:
        span = stack.pop()
        at = parser.CurrentByteIndex
        # expat reports an end tag at its "</", an empty element's end after its "/>"
        span.end = data.index(b">", at) + 1 if data.startswith(b"</", at) else at

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except (expat.ExpatError, ValueError):
        return None
    return top[0] if top else None


def _encoding(data: bytes) -> str:
    m = re.match(rb"\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._-]+)", data)
    return m.group(1).decode("ascii").lower() if m else "utf-8"


def _indent(data: bytes, at: int) -> bytes | None:
    """The whitespace before ``at`` on its line; None when text precedes it."""
    line = data.rfind(b"\n", 0, at) + 1
    lead = data[line:at]
    return lead if not lead.strip() else None


# what xml.sax.saxutils.escape does with these entities, without importing
# xml.sax (and urllib.request with it) for one function: & first
_ATTR_ESCAPES = (("&", "&amp;"), (">", "&gt;"), ("<", "&lt;"), ('"', "&quot;"),
                 ("\n", "&#10;"), ("\r", "&#13;"), ("\t", "&#9;"))


def _escape(value: str) -> str:
    """``value`` as the text of a double-quoted XML attribute."""
    for raw, entity in _ATTR_ESCAPES:
        value = value.replace(raw, entity)
    return value


def _insert_text(data: bytes, sub: Subscription) -> bytes | None:
    """``data`` with ``sub``'s outline on a new line after the last outline of
    its folder (and the folders it needs, indented like their siblings)."""
    root = _spans(data)
    body = next((c for c in root.children if c.tag == "body"), None) if root else None
    if body is None:
        return None
    node, parts = body, [p.strip() for p in (sub.category or "").split("/") if p.strip()]
    while parts:
        folder = next((c for c in node.children if c.tag == "outline" and not c.url
                       and (c.attrs.get("title") or c.attrs.get("text")) == parts[0]), None)
        if folder is None:
            break
        node, parts = folder, parts[1:]
    if not node.children:
        return None
    last = node.children[-1]
    indent, outer = _indent(data, last.start), _indent(data, node.start)
    if indent is None or outer is None:
        return None
    step = indent[len(outer):] if indent.startswith(outer) and indent != outer else b"  "
    close = b" />" if data[last.end - 3:last.end] == b" />" else b"/>"
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    charset = _encoding(data)
    codec = "utf-8" if charset in ("utf-8", "utf8") else "ascii"

    def line(depth: int, text: str) -> bytes:
        return indent + step * depth + text.encode(codec, "xmlcharrefreplace")

    lines = [line(i, f'<outline text="{_escape(p)}" title="{_escape(p)}">')
             for i, p in enumerate(parts)]
    attrs = " ".join(f'{k}="{_escape(v)}"' for k, v in _attrs(sub).items())
    lines.append(line(len(parts), f"<outline {attrs}") + close)
    lines += [line(i, "</outline>") for i in reversed(range(len(parts)))]
    return data[:last.end] + newline + newline.join(lines) + data[last.end:]


def _cut_text(data: bytes, key: str) -> bytes | None:
    """``data`` without the outlines of the feed ``key``, each with its line."""
    root = _spans(data)
    if root is None:
        return None
    found: list[_Span] = []

    def walk(span: _Span) -> None:
        for child in span.children:
            if child.tag == "outline" and child.url and url_key(child.url) == key:
                found.append(child)  # its children (if any) go with it
            else:
                walk(child)

    walk(root)
    for span in sorted(found, key=lambda s: s.start, reverse=True):
        start, end = span.start, span.end
        lead = _indent(data, start)
        rest = len(data[end:]) - len(data[end:].lstrip(b" \t"))
        if lead is not None and data[end + rest:end + rest + 1] in (b"\n", b"\r"):
            start -= len(lead)
            end += rest + (2 if data[end + rest:end + rest + 2] == b"\r\n" else 1)
        data = data[:start] + data[end:]
    return data
