"""The subscription list in and out: feeds.opml is the source of truth for what
to follow. Folders (outlines without xmlUrl) become categories; nested folders
join with " / ". Edits keep the rest of the file as it was and replace it
atomically, so a reader (or a person with an editor) never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from aggregator.errors import OPMLError
from aggregator.types import Subscription

FETCH_ARTICLES_ATTR = "fetchArticles"  # per-feed switch: "false" turns article fetching off


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
                fetch_articles=None if not flag else flag not in {"false", "no", "0", "off"},
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
