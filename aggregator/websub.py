"""WebSub (W3C Recommendation, https://www.w3.org/TR/websub/): tell a hub when a feed changes.

With ``websub_hub`` set, every published feed names the hub and itself (section 4,
discovery): RSS ``<atom:link rel="hub">`` beside its ``<atom:link rel="self">``, Atom
``<link rel="hub">`` beside ``<link rel="self">``, JSON Feed ``hubs`` beside
``feed_url``. After a publish, each feed whose bytes changed is announced to the hub:
one ``POST`` per feed, form-encoded ``hub.mode=publish&hub.url=<feed URL>`` (section 7
leaves the ping's form to the hub; this is the one hubs take, from PubSubHubbub 0.4).

Never in the publish's way: pings go to one background thread per hub, which sends what
is queued (a URL queued twice before it is sent goes once), tries a failed ping again
(``TRIES`` in all, waiting ``BACKOFF`` s, doubling), gives up on a hub that answers 4xx
(other than 429: asking again gets the same answer), and logs one line per batch that
failed, naming how many and why. A process exiting waits for pings in flight at most
``EXIT_WAIT`` s. The hub is operator configuration, so no address guard applies (it may
be a hub on the same machine), but only an http(s) URL without credentials or a
token is accepted (config.py, ``hub_problem``): every published feed names it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from lxml import etree

log = logging.getLogger("aggregator.websub")

ATOM_NS = "http://www.w3.org/2005/Atom"
FEED_NAMES = ("rss.xml", "atom.xml", "feed.json")
TRIES = 3
BACKOFF = 1.0  # s before the second try; doubled for each further one
TIMEOUT = 5.0  # s for one ping
BATCH_BUDGET = 30.0  # s for one batch of pings, retries included; the rest count as failed
EXIT_WAIT = 3.0  # s a process exiting waits for pings in flight


def _unfit(c: str) -> bool:
    """A space, a control character, or one XML cannot carry (lxml refuses it)."""
    n = ord(c)
    return (c.isspace() or n < 32 or 0x7F <= n <= 0x9F or 0xD800 <= n <= 0xDFFF
            or n in (0xFFFE, 0xFFFF))


def valid_hub(url: str) -> bool:
    """An absolute http(s) URL with a host, no spaces or control characters."""
    if not url or any(_unfit(c) for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is no number
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def hub_problem(url: str) -> str | None:
    """Why ``url`` can't be the hub (config.py's message), or None. Every published
    feed names the hub, so it must not carry credentials or a token."""
    if not valid_hub(url):
        return "websub_hub must be an http(s) URL"
    from aggregator.opml import is_private

    parts = urlsplit(url)
    if is_private(urlunsplit((parts.scheme, parts.netloc, "", parts.query, parts.fragment))):
        return ("websub_hub carries credentials or a token, and every published feed names "
                "it: give the hub's public URL")
    return None


# --- the links in the feeds ----------------------------------------------------------


def rss_links(channel: etree._Element, hub: str | None) -> None:
    """``<atom:link rel="hub">`` in an RSS channel (its rel="self" is there already)."""
    if hub:
        from lxml import etree

        etree.SubElement(channel, f"{{{ATOM_NS}}}link", {"href": hub, "rel": "hub"})


def atom_links(feed: etree._Element, hub: str | None) -> None:
    if hub:
        from lxml import etree

        etree.SubElement(feed, f"{{{ATOM_NS}}}link", {"rel": "hub", "href": hub})


def json_hubs(hub: str) -> list[dict[str, str]]:
    return [{"type": "WebSub", "url": hub}]


def changed_feeds(changed: Iterable[Path], out_dir: Path, base_url: str) -> list[str]:
    """The public URLs of the feeds among the files a publish changed."""
    urls = []
    root = Path(out_dir)
    if not base_url.endswith("/"):
        base_url += "/"
    for path in changed:
        if path.name not in FEED_NAMES:
            continue
        try:
            rel = Path(path).relative_to(root)
        except ValueError:
            continue
        urls.append(base_url + "/".join(quote(p) for p in rel.parts))
    return sorted(urls)


# --- the pings -----------------------------------------------------------------------


class Pinger:
    """One hub's queue and the thread that works it off."""

    def __init__(self, hub: str, user_agent: str = "aggregator") -> None:
        self.hub = hub
        self.user_agent = user_agent
        self._pending: dict[str, None] = {}  # insertion-ordered set
        self._cond = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None

    def ping(self, urls: Iterable[str]) -> None:
        with self._cond:
            for u in urls:
                self._pending[u] = None
            if not self._pending:
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="aggregator-websub",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """Until nothing is queued or being sent, or ``timeout`` s; True when idle."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    if not self._cond.wait(60.0) and not self._pending:
                        self._thread = None  # idle a minute: the next ping starts a new one
                        return
                batch = list(self._pending)
                self._pending.clear()
                self._busy = True
            try:
                self._send(batch)
            except Exception as e:  # a bug here must not kill later pings
                log.error("WebSub hub %s: %d ping(s) not sent: internal error: %s: %s",
                          self.hub, len(batch), type(e).__name__, e)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, batch: list[str]) -> None:
        import httpx

        deadline = time.monotonic() + BATCH_BUDGET
        errors: dict[str, str] = {}
        left = batch
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False,
                          headers={"User-Agent": self.user_agent}) as client:
            for attempt in range(TRIES):
                if attempt:
                    pause = BACKOFF * 2 ** (attempt - 1)
                    if time.monotonic() + pause >= deadline:
                        break
                    time.sleep(pause)
                retry: list[str] = []
                for url in left:
                    if time.monotonic() >= deadline:
                        errors.setdefault(url, "out of time")
                        continue
                    again, error = _post(client, self.hub, url)
                    if error is None:
                        errors.pop(url, None)
                        continue
                    errors[url] = error
                    if again:
                        retry.append(url)
                left = retry
                if not left:
                    break
        if errors:
            reasons = sorted(set(errors.values()))
            log.warning("WebSub hub %s: %d of %d ping(s) failed after up to %d tries: %s",
                        self.hub, len(errors), len(batch), TRIES, "; ".join(reasons)[:300])


def _post(client: Any, hub: str, url: str) -> tuple[bool, str | None]:
    """(worth trying again, error or None)."""
    import httpx

    try:
        resp = client.post(hub, data={"hub.mode": "publish", "hub.url": url})
    except httpx.HTTPError as e:
        return True, f"{type(e).__name__}: {e}"[:200]
    if 200 <= resp.status_code < 300:
        return False, None
    again = resp.status_code >= 500 or resp.status_code == 429
    return again, f"HTTP {resp.status_code}"


_PINGERS: dict[str, Pinger] = {}
_LOCK = threading.Lock()


def pinger(hub: str, user_agent: str = "aggregator") -> Pinger:
    with _LOCK:
        p = _PINGERS.get(hub)
        if p is None:
            p = _PINGERS[hub] = Pinger(hub, user_agent)
        return p


def announce(hub: str | None, changed: Iterable[Path], out_dir: Path, base_url: str,
             user_agent: str = "aggregator") -> list[str]:
    """Queue a ping for every feed among ``changed``; returns their URLs. Never raises
    for the hub's sake and never waits for it."""
    if not hub:
        return []
    urls = changed_feeds(changed, out_dir, base_url)
    if urls:
        pinger(hub, user_agent).ping(urls)
    return urls


def wait_all(timeout: float = EXIT_WAIT) -> bool:
    """Wait (at most ``timeout`` s in all) for every hub's pings in flight."""
    deadline = time.monotonic() + timeout
    with _LOCK:
        pingers = list(_PINGERS.values())
    return all([p.wait(max(0.0, deadline - time.monotonic())) for p in pingers])


atexit.register(wait_all)
