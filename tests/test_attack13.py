"""Attacks on the media, metrics, retention, WebSub and Datasette code (attack13).

Every server is a real one on 127.0.0.1; host names go through the fake resolver."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpcore
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator import browse, config, retention
from aggregator.cli import main
from aggregator.config import Settings
from aggregator.errors import ConfigError
from aggregator.metrics import Metrics, status_label
from aggregator.stages.prune import prune
from aggregator.store import Store
from aggregator.types import Subscription
from aggregator.update import publish_now
from bench.retention import START, fill_day
from tests.hostile_servers import (
    RawServer,
    answers,
    fake_dns,
    local_httpserver,
    one_pass,
    rows,
    rss,
    settings_for,
    write_opml,
)
from tests.test_operator import FIRST, page

MEDIA_NS = "http://search.yahoo.com/mrss/"


def _podcast(base: str, title: str, enclosure: str, thumbnail: str,
             link: str | None = None) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<rss version="2.0" xmlns:media="{MEDIA_NS}"><channel><title>Members</title>'
        "<link>http://127.0.0.1/</link><description>d</description>"
        f"<item><title>{title}</title><link>{link or f'{base}/episodes/{title}'}</link>"
        f"<guid>{title}</guid><description>The first episode.</description>"
        f'<enclosure url="{enclosure}" length="1234" type="audio/mpeg"/>'
        f'<media:thumbnail url="{thumbnail}"/></item></channel></rss>\n').encode()


def _published(out: Path) -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file()}


def test_a_private_feeds_enclosures_never_publish_its_token(tmp_path: Path) -> None:
    """Attack: a private podcast (token in its URL, or marked private) whose
    enclosure and thumbnail URLs carry the same token, as member podcasts do;
    the token must reach no output file. A public feed's enclosures still go out."""
    with local_httpserver() as server:
        base = server.url_for("/").rstrip("/")
        server.expect_request("/members.xml").respond_with_data(
            _podcast(base, "one", f"{base}/media/one.mp3?token=SECRETTOKEN1",
                     f"{base}/art/SECRETTOKEN1/one.jpg"), content_type="application/rss+xml")
        server.expect_request("/club-9f8e7d6c5b4a/rss").respond_with_data(
            _podcast(base, "two", f"{base}/club-9f8e7d6c5b4a/two.mp3",
                     f"{base}/thumbs/two.jpg?sig=a8F3kQ9zLm2Xw7Rt"),
            content_type="application/rss+xml")
        server.expect_request("/public.xml").respond_with_data(
            _podcast(base, "three", f"{base}/public/three.mp3", f"{base}/public/three.jpg"),
            content_type="application/rss+xml")
        s = settings_for(tmp_path, publish=True, base_url="http://127.0.0.1:8080/")
        write_opml(s, [f"{base}/members.xml?token=SECRETTOKEN1",
                       Subscription(f"{base}/club-9f8e7d6c5b4a/rss", private=True),
                       f"{base}/public.xml"])
        result = one_pass(s)
        assert result.failed == 0, result.outcomes
        with Store(s.db) as store:
            publish_now(s, store)
    files = _published(s.output)
    for secret in ("SECRETTOKEN1", "9f8e7d6c5b4a", "a8F3kQ9zLm2Xw7Rt", "token=", "sig="):
        leaks = sorted(str(p.relative_to(s.output)) for p, t in files.items() if secret in t)
        assert leaks == [], f"{secret!r} published in {leaks}"
    feed = json.loads(files[s.output / "feed.json"])
    by_title = {i["title"]: i for i in feed["items"]}
    assert set(by_title) == {"one", "two", "three"}  # the episodes are published
    assert "attachments" not in by_title["one"] and "image" not in by_title["one"]
    assert "attachments" not in by_title["two"] and "image" not in by_title["two"]
    assert by_title["three"]["image"] == f"{base}/public/three.jpg"
    assert by_title["three"]["attachments"] == [{"url": f"{base}/public/three.mp3",
                                                 "mime_type": "audio/mpeg",
                                                 "size_in_bytes": 1234}]


def test_a_private_feeds_item_links_never_publish_its_token(tmp_path: Path) -> None:
    """Attack: a private feed whose item links carry its own token (a member site's
    signed article links). The entry is published without that link (its story page
    stands in); an ordinary link of the same feed and a public feed's links go out."""
    with local_httpserver() as server:
        base = server.url_for("/").rstrip("/")
        server.expect_request("/members.xml").respond_with_data(
            _podcast(base, "one", f"{base}/media/one.mp3", f"{base}/art/one.jpg",
                     link=f"{base}/read/one?token=SECRETTOKEN1"),
            content_type="application/rss+xml")
        server.expect_request("/public.xml").respond_with_data(
            _podcast(base, "three", f"{base}/public/three.mp3", f"{base}/public/three.jpg"),
            content_type="application/rss+xml")
        s = settings_for(tmp_path, publish=True, base_url="http://127.0.0.1:8080/")
        write_opml(s, [f"{base}/members.xml?token=SECRETTOKEN1", f"{base}/public.xml"])
        result = one_pass(s)
        assert result.failed == 0, result.outcomes
        with Store(s.db) as store:
            publish_now(s, store)
    files = _published(s.output)
    leaks = sorted(str(p.relative_to(s.output)) for p, t in files.items() if "SECRETTOKEN1" in t)
    assert leaks == []
    by_title = {i["title"]: i for i in json.loads(files[s.output / "feed.json"])["items"]}
    assert set(by_title) == {"one", "three"}
    assert "SECRETTOKEN1" not in by_title["one"].get("url", "")
    assert by_title["three"]["url"] == f"{base}/episodes/three"


# --- retention ------------------------------------------------------------------------


@pytest.mark.parametrize("damaged", ["not json", "", "[1, 2", '{"a": 1}', "null", '"7"'])
def test_a_damaged_latest_document_neither_stops_prune_nor_loses_its_feeds_items(
        tmp_path: Path, damaged: str) -> None:
    """Attack: feeds.latest_items holds something that is no JSON list (a damaged
    file, a hand edit). json_each raised "malformed JSON" on it, so the daily prune
    failed every day; a JSON value that is no list protected nothing. Either way the
    feed now counts as one whose document is not known: its newest items stay."""
    subs = [Subscription(f"http://feed{k}.example/rss", f"Feed {k}", "News") for k in range(2)]
    with Store(tmp_path / "x.db") as store:
        history: dict[str, list[Any]] = {}
        for day in range(40):
            fill_day(store, day, subs, 4, history, article_words=20)
        feed_id = store.feed(subs[0].url).id  # type: ignore[union-attr]
        newest = [r[0] for r in store.conn.execute(
            "SELECT id FROM items WHERE feed_id = ? ORDER BY sort_date DESC, id DESC LIMIT ?",
            (feed_id, retention.UNKNOWN_DOCUMENT_KEEP))]
        store.conn.execute("UPDATE feeds SET latest_items = ? WHERE id = ?", (damaged, feed_id))
        settings = Settings(keep_days=5, keep_article_text_days=2, max_entries=3,
                            category_max_entries=3)
        report = prune(settings, store, now=START + timedelta(days=40))
        assert report.items > 0
        left = {r[0] for r in store.conn.execute("SELECT id FROM items WHERE feed_id = ?",
                                                 (feed_id,))}
        assert set(newest) <= left
        # the other feed's document still protects exactly its own items
        other = store.feed(subs[1].url).id  # type: ignore[union-attr]
        (doc,) = store.conn.execute("SELECT latest_items FROM feeds WHERE id = ?",
                                    (other,)).fetchone()
        assert set(json.loads(doc)) <= {r[0] for r in store.conn.execute(
            "SELECT id FROM items WHERE feed_id = ?", (other,))}


# --- /metrics ---------------------------------------------------------------------------


def test_hostile_status_codes_do_not_grow_the_metrics_series(tmp_path: Path) -> None:
    """Attack: feeds answering made-up statuses (299, 600, 777, 999: HTTP lets any
    three digits through) made one aggregator_polls_total series per code, up to
    ~800 per result for as long as the daemon runs. A registered status keeps its
    number; any other is counted by its class."""
    codes = ["299 Odd", "600 Odd", "777 Odd", "999 Odd", "404 Not Found", "500 Oops"]
    servers = [RawServer(answers(b"<rss version='2.0'><channel><title>t</title></channel>"
                                 b"</rss>", status=c)) for c in codes]
    try:
        s = settings_for(tmp_path)
        write_opml(s, [sv.url(f"/f{k}.xml") for k, sv in enumerate(servers)])
        result = one_pass(s)
    finally:
        for sv in servers:
            sv.close()
    assert sorted(o.status for o in result.outcomes) == [299, 404, 500, 600, 777, 999]
    m = Metrics(None)
    for outcome in result.outcomes:
        m.feed_polled(outcome)
    body, _ = m.render()
    polls = [s for f in text_string_to_metric_families(body.decode())
             for s in f.samples if s.name == "aggregator_polls_total"]
    assert sorted(s.labels["status"] for s in polls) == ["2xx", "404", "500", "6xx", "7xx",
                                                         "9xx"]
    # every code HTTP lets through: a bounded set of label values
    labels = {status_label(code) for code in range(100, 1000)}
    assert len(labels) <= 80 and "200" in labels and "429" in labels


# --- WebSub hub (operator configuration) ------------------------------------------------


@pytest.mark.parametrize("hub", ["https://publisher:s3cret-pass@hub.example/",
                                 "https://hub.example/?token=abc123",
                                 "https://hub.example/publish#key=abc123"])
def test_a_hub_url_carrying_a_secret_is_refused(hub: str) -> None:
    """Attack (on the operator): the hub URL is written into every published feed, so
    a token in its query or fragment was published to every reader; credentials made
    publish drop the hub link silently (discovery broken, pings still sent). Now the
    setting is refused with a message saying why."""
    with pytest.raises(ConfigError, match="websub_hub carries credentials or a token"):
        config.load(env={}, flags={"websub_hub": hub})


@pytest.mark.parametrize("hub", ["https://hub.example/\ufffe", "https://hub.example/\x7f",
                                 "https://hub.example/\ud800", "https://hub.example/a\x85b"])
def test_a_hub_url_xml_cannot_carry_is_refused(hub: str) -> None:
    """U+FFFE, a lone surrogate, DEL and C1 controls passed the check; publish then
    left the hub out of every feed without a word (safe_url refuses them)."""
    with pytest.raises(ConfigError, match="websub_hub must be an http"):
        config.load(env={}, flags={"websub_hub": hub})


def test_an_ordinary_hub_is_still_accepted() -> None:
    for hub in ("https://pubsubhubbub.appspot.com/", "http://127.0.0.1:8085/hub",
                "https://websub.rocks/blog/100/aBcD1234eFgH5678"):
        assert config.load(env={}, flags={"websub_hub": hub}).websub_hub == hub


# --- the Datasette launcher ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["--root", "-i"])
def test_a_database_named_like_an_option_is_opened_as_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Attack: `--db --root` (a relative file name starting with "-") reached
    Datasette's command line as its --root option: the database was not served and
    Datasette printed a URL that logs in as root; "-i" opened the file immutable."""
    pytest.importorskip("datasette", reason="datasette not installed "
                                            "(pip install 'aggregator[datasette]')")
    monkeypatch.chdir(tmp_path)
    with sqlite3.connect(name) as c:
        c.execute("CREATE TABLE t (x)")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(browse.metadata(Path(name))), encoding="utf-8")
    cmd = browse.command(Path(name), meta, host="127.0.0.1", port=8001)
    # --get answers one request in-process: no port is opened
    out = subprocess.run([*cmd, "--get", "/-/databases.json"], capture_output=True,
                         text=True, timeout=120, check=True)
    dbs = json.loads(out.stdout)
    assert [(d["name"], d["is_mutable"]) for d in dbs] == [(name, True)]
    assert "root" not in out.stderr.lower()


# --- refetch --------------------------------------------------------------------------------


ARTICLE = page(FIRST)


def test_refetch_never_reaches_an_internal_address(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack: items whose links point inside (the same host on another port, the
    metadata address, 10/8, an IPv4-mapped loopback, a name the resolver answers with
    loopback). `aggregator refetch` fetches them by hand; the address guard must hold
    as in the summaries stage: only the feed's own origin is trusted."""
    real = httpcore.SyncBackend.connect_tcp

    def connect_tcp(self: Any, host: str, port: int, *args: Any, **kw: Any) -> Any:
        assert host.startswith("127.") or host == "::1", f"test tried to connect to {host}"
        return real(self, host, port, *args, **kw)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    asked = fake_dns(monkeypatch, lambda host: ["127.0.0.1"])
    with local_httpserver() as feed_server, local_httpserver() as inside:
        inside.expect_request("/secret").respond_with_data(ARTICLE, content_type="text/html")
        inside_port = inside.port
        hostile = [f"http://127.0.0.1:{inside_port}/secret",
                   f"http://[::ffff:127.0.0.1]:{inside_port}/secret",
                   f"http://internal.example:{inside_port}/secret",
                   f"http://127.0.0.2:{feed_server.port}/story",
                   "http://169.254.169.254/latest/meta-data/",
                   "http://10.1.2.3/admin"]
        own = feed_server.url_for("/story")
        feed_server.expect_request("/story").respond_with_data(ARTICLE, content_type="text/html")
        feed_server.expect_request("/feed.xml").respond_with_data(
            rss("Harbour", *[(f"Story {k}", u) for k, u in enumerate([own, *hostile])]),
            content_type="application/rss+xml")
        s = settings_for(tmp_path)
        write_opml(s, [feed_server.url_for("/feed.xml")])
        assert one_pass(s).failed == 0
        common = ["--feeds", str(s.feeds), "--db", str(s.db), "--output", str(tmp_path / "o")]
        assert main([*common, "refetch", own]) == 0  # its own origin: fine
        for url in hostile:
            assert main([*common, "refetch", url]) == 1, url
        inside_hits = list(inside.log)
        statuses = {r["url"]: r["article_status"]
                    for r in rows(s, "SELECT url, article_status FROM items")}
    assert inside_hits == []
    for url in hostile:
        assert statuses[url].startswith("failed: BlockedAddressError"), (url, statuses[url])
    assert statuses[own] == "ok"
    assert "internal.example" in asked


def test_an_old_item_a_poll_sees_again_during_prune_is_not_deleted(tmp_path: Path) -> None:
    """Race (held): prune works out what a reader sees once, at its start; a poll that
    then finds an old item in its feed again (another connection, between two of
    prune's batches) writes it into the feed's latest document, and the check inside
    each batch's transaction keeps it, and its article text."""
    subs = [Subscription("http://feed0.example/rss", "Feed 0", "News")]
    with Store(tmp_path / "x.db") as store:
        history: dict[str, list[Any]] = {}
        for day in range(40):
            fill_day(store, day, subs, 4, history, article_words=20)
        old = [r[0] for r in store.conn.execute("SELECT id FROM items ORDER BY sort_date, id")]
        target = old[len(old) // 3]  # in a later batch than the first
        polled = []

        def poll_between_batches() -> None:
            if polled:
                return
            with Store(tmp_path / "x.db") as poller, poller.transaction() as c:
                (doc,) = c.execute("SELECT latest_items FROM feeds").fetchone()
                c.execute("UPDATE feeds SET latest_items = ?",
                          (json.dumps(sorted({*json.loads(doc), target})),))
            polled.append(True)

        settings = Settings(keep_days=5, keep_article_text_days=2, max_entries=3,
                            category_max_entries=3)
        report = prune(settings, store, now=START + timedelta(days=40), batch=10,
                       progress=poll_between_batches)
        assert polled and report.items > 30
        (kept,) = store.conn.execute("SELECT count(*) FROM items WHERE id = ? AND "
                                     "article_text IS NOT NULL", (target,)).fetchone()
        assert kept == 1
        older = old[:len(old) // 3]  # the items before it went, as they should
        marks = ",".join("?" * len(older))
        assert store.conn.execute(f"SELECT count(*) FROM items WHERE id IN ({marks})",
                                  older).fetchone() == (0,)


# --- the fetch path's speed-ups (lazy TLS context, cached guard rules, _exchange) -------
#
# Attacks on 1a23b18, e766ed8 and c8094e9, each compared with what httpx.Client.stream
# and httpx's default TLS context did before them. The certificates in tests/data (valid
# to 2126): tls-ca.pem signs tls-feeds.pem (feeds.example and 127.0.0.1); tls-self.pem is
# self-signed for the same names.

import socket  # noqa: E402
import ssl  # noqa: E402
import threading  # noqa: E402
import tracemalloc  # noqa: E402
import urllib.parse  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import certifi  # noqa: E402

from aggregator import fetch, guard  # noqa: E402
from aggregator.errors import BlockedAddressError, FetchError, NetworkError  # noqa: E402
from aggregator.fetch import Fetcher, Limits  # noqa: E402
from aggregator.guard import Guard, trusted_origin  # noqa: E402
from tests.hostile_servers import head  # noqa: E402

DATA = Path(__file__).parent / "data"
TLS_FEED = b"<rss version='2.0'><channel><title>t</title></channel></rss>"
NAMES = Guard.parse(["feeds.example", "other.example", "a.example", "sub.a.example",
                     "b.example"])
CA_SUBJECT_HASH = "481181d4"  # `openssl x509 -noout -subject_hash -in tests/data/tls-ca.pem`
QUICK = Limits(timeout=5, connect_timeout=3, user_agent="t", guard=NAMES)


def _loopback_dns(monkeypatch: Any) -> list[str]:
    return fake_dns(monkeypatch, lambda host: ["127.0.0.1"])


@contextmanager
def _tls_server(name: str) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 with tests/data/tls-<name>.pem; yields its port."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(DATA / f"tls-{name}.pem", DATA / f"tls-{name}.key")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(32)
    sock.settimeout(0.05)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def one(conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                tls.sendall(head(headers=[("Content-Length", str(len(TLS_FEED))),
                                          ("Connection", "close")]) + TLS_FEED)
        except (OSError, ssl.SSLError):
            pass  # the client refused our certificate: what most tests want
        finally:
            conn.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=one, args=(conn,), daemon=True)
            threads.append(t)
            t.start()

    accepter = threading.Thread(target=accept, daemon=True)
    accepter.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        accepter.join(2)
        sock.close()
        for t in threads:
            t.join(2)


def _get(url: str) -> int:
    with Fetcher(QUICK) as fetcher:
        return fetcher.get(url, trusted=trusted_origin(url)).status


def test_tls_refuses_a_self_signed_or_unknown_certificate_even_on_a_trusted_origin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Held: the lazy context verifies from its first handshake on; a trusted
    origin (127.0.0.1) or allow_private opens the address, never the certificate."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    _loopback_dns(monkeypatch)
    with _tls_server("self") as port:
        with pytest.raises(NetworkError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(f"https://127.0.0.1:{port}/feed.xml")
        with pytest.raises(NetworkError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(f"https://feeds.example:{port}/feed.xml")  # allow_private lists it
    with _tls_server("feeds") as port:  # signed by a CA nobody trusts
        with pytest.raises(NetworkError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(f"https://127.0.0.1:{port}/feed.xml")


def test_ssl_cert_file_and_dir_choose_the_trust_anchors_as_httpx_did(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hole (1a23b18): httpx's transport honoured SSL_CERT_FILE / SSL_CERT_DIR
    (its trust_env); the lazy context read certifi's bundle whatever they said,
    so a private CA (an intranet's feeds) stopped working. Host names are still
    checked against the certificate."""
    _loopback_dns(monkeypatch)
    capath = tmp_path / "certs"
    capath.mkdir()
    with _tls_server("feeds") as port:
        monkeypatch.setenv("SSL_CERT_FILE", str(DATA / "tls-ca.pem"))
        assert _get(f"https://127.0.0.1:{port}/feed.xml") == 200
        assert _get(f"https://feeds.example:{port}/feed.xml") == 200
        with pytest.raises(NetworkError, match="Hostname mismatch|CERTIFICATE_VERIFY_FAILED"):
            _get(f"https://other.example:{port}/feed.xml")  # the wrong name
        monkeypatch.delenv("SSL_CERT_FILE")
        # SSL_CERT_DIR: OpenSSL looks a CA up by its subject hash (what c_rehash writes)
        (capath / f"{CA_SUBJECT_HASH}.0").write_bytes((DATA / "tls-ca.pem").read_bytes())
        monkeypatch.setenv("SSL_CERT_DIR", str(capath))
        assert _get(f"https://feeds.example:{port}/feed.xml") == 200
        monkeypatch.delenv("SSL_CERT_DIR")
        with pytest.raises(NetworkError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(f"https://feeds.example:{port}/feed.xml")  # certifi's bundle again


def test_the_lazy_context_has_every_setting_of_httpx_default_context() -> None:
    """Held on this Python; a latent hole fixed: from Python 3.13 on
    create_default_context also sets VERIFY_X509_STRICT and PARTIAL_CHAIN,
    which the lazy context did not."""
    with Fetcher(QUICK) as fetcher:
        ctx = fetcher._client._transport._pool._ssl_context  # type: ignore[attr-defined]
        default = ssl.create_default_context(cafile=certifi.where())
        for attr in ("protocol", "options", "verify_flags", "verify_mode", "check_hostname",
                     "minimum_version", "maximum_version", "post_handshake_auth",
                     "hostname_checks_common_name", "security_level", "keylog_filename"):
            assert getattr(ctx, attr) == getattr(default, attr), attr
        assert ctx.get_ciphers() == default.get_ciphers()


def test_the_first_handshakes_racing_on_many_threads_all_verify(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Held: twelve threads make the context's first handshake at once; every one
    waits for the whole bundle (none handshakes with a half-loaded store, none
    passes without one), with or without the CA that signed the server."""
    for trusted_ca, expected in ((True, "200"), (False, "NetworkError")):
        if trusted_ca:
            monkeypatch.setenv("SSL_CERT_FILE", str(DATA / "tls-ca.pem"))
        else:
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
            monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        results: list[str] = []
        with _tls_server("feeds") as port, Fetcher(
                Limits(timeout=10, connect_timeout=10, user_agent="t")) as fetcher:
            url = f"https://127.0.0.1:{port}/feed.xml"
            start = threading.Barrier(12)

            def one(start: threading.Barrier = start, url: str = url,
                    results: list[str] = results) -> None:
                start.wait()
                try:
                    results.append(str(fetcher.get(url, trusted=trusted_origin(url)).status))
                except FetchError as e:
                    results.append(type(e).__name__)

            threads = [threading.Thread(target=one) for _ in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        assert results == [expected] * 12, (trusted_ca, results)


def test_sslkeylogfile_is_honoured_as_before(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """Held: as create_default_context, the key log is written where
    SSLKEYLOGFILE says (read when the Fetcher is made), and only then."""
    monkeypatch.setenv("SSL_CERT_FILE", str(DATA / "tls-ca.pem"))
    log = tmp_path / "keys.log"
    with _tls_server("feeds") as port:
        assert _get(f"https://127.0.0.1:{port}/feed.xml") == 200
        assert not log.exists()
        monkeypatch.setenv("SSLKEYLOGFILE", str(log))
        assert _get(f"https://127.0.0.1:{port}/feed.xml") == 200
    assert b"CLIENT_" in log.read_bytes() or b"SECRET" in log.read_bytes()


def _routes(table: dict[str, list[tuple[str, str]]]) -> Any:
    def handler(server: RawServer, conn: socket.socket, request: bytes) -> None:
        path = request.split(b" ")[1].decode()
        extra = table.get(path, [])
        status = "302 Found" if any(k == "Location" for k, _ in extra) else "200 OK"
        body = TLS_FEED if status == "200 OK" else b""
        conn.sendall(head(status, headers=[("Content-Length", str(len(body))), *extra]) + body)
    return handler


def _sent(server: RawServer, host: str, path: str) -> list[str]:
    """The headers (lower-case names) of each request for host + path."""
    out = []
    for req in server.requests:
        lines = req.decode("latin-1").split("\r\n")
        if lines[0].split(" ")[1] == path and f"host: {host}" in req.decode("latin-1").lower():
            out.append("\n".join(lines[1:]).lower())
    return out


def test_url_credentials_go_as_basic_auth_to_their_own_origin_as_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Hole (c8094e9): httpx.Client sent a URL's ``user:pass@`` as Basic auth (the
    README's private feeds with credentials); _exchange dropped it, so such feeds
    got 401. Now as before: sent to the URL's host, again on a same-origin
    relative redirect (urljoin keeps the credentials), never to another host a
    redirect names."""
    _loopback_dns(monkeypatch)
    with RawServer(_routes({})) as server, Fetcher(QUICK) as fetcher:
        port = server.port
        server.handler = _routes({"/r": [("Location", "/feed.xml")],
                                  "/away": [("Location", f"http://b.example:{port}/feed.xml")],
                                  "/feed.xml": []})
        url = f"http://user:p%40ss@127.0.0.1:{port}/feed.xml"
        fetcher.get(url, trusted=trusted_origin(url))
        fetcher.get(f"http://user:pw@a.example:{port}/r")
        fetcher.get(f"http://user:pw@a.example:{port}/away")
        fetcher.get(f"http://127.0.0.1:{port}/feed.xml",
                    trusted=trusted_origin(f"http://127.0.0.1:{port}/feed.xml"))
    first, plain = _sent(server, f"127.0.0.1:{port}", "/feed.xml")
    assert "authorization: basic dxnlcjpwqhnz" in first  # user:p@ss
    assert "authorization" not in plain
    assert all(b"user:" not in r and b"p%40ss" not in r for r in server.requests)
    r, redirected = _sent(server, f"a.example:{port}", "/r") + _sent(
        server, f"a.example:{port}", "/feed.xml")
    assert "authorization: basic dxnlcjpwdw==" in r and "authorization: basic" in redirected
    assert all("authorization" not in h for h in _sent(server, f"b.example:{port}",
                                                        "/feed.xml"))


def test_cookies_stay_with_their_host_and_scheme_as_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Held: _exchange keeps the client's jar and policy. A cookie goes back to
    the host that set it (a redirect hop's too), never to a parent, a sibling or
    another site it names in Domain=, and a Secure one never over http."""
    _loopback_dns(monkeypatch)
    with RawServer(_routes({
        "/host": [("Set-Cookie", "host=1; Path=/")],
        "/other-site": [("Set-Cookie", "other=1; Domain=b.example; Path=/")],
        "/tld": [("Set-Cookie", "tld=1; Domain=example; Path=/")],
        "/secure": [("Set-Cookie", "sec=1; Secure; Path=/")],
        "/hop": [("Set-Cookie", "hop=1; Path=/"), ("Location", "/plain")],
    })) as server, Fetcher(QUICK) as fetcher:
        port = server.port
        for path in ("/host", "/other-site", "/tld", "/secure", "/hop"):
            fetcher.get(f"http://sub.a.example:{port}{path}")
        for host in ("sub.a.example", "a.example", "b.example"):
            fetcher.get(f"http://{host}:{port}/plain")
        fetcher.get(f"http://127.0.0.1:{port}/plain",
                    trusted=trusted_origin(f"http://127.0.0.1:{port}/plain"))
    own = _sent(server, f"sub.a.example:{port}", "/plain")
    assert own and all("cookie: host=1; hop=1" in h for h in own)
    assert all("sec=1" not in h and "other=1" not in h and "tld=1" not in h for h in own)
    for host in ("a.example", "b.example", "127.0.0.1"):
        assert all("cookie" not in h for h in _sent(server, f"{host}:{port}", "/plain")), host


def test_proxy_variables_are_ignored_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Held: the client had trust_env=False and the transport no proxy, so
    HTTP_PROXY and friends never routed a fetch (through them the address guard
    would check the proxy, not the target); _exchange uses the same transport."""
    _loopback_dns(monkeypatch)
    with RawServer(answers(TLS_FEED)) as target, RawServer(answers(TLS_FEED)) as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        with Fetcher(QUICK) as fetcher:
            fetcher.get(target.url(), trusted=trusted_origin(target.url()))
            fetcher.get(target.url(host="a.example"))
    assert len(target.requests) == 2 and proxy.requests == []


@pytest.mark.parametrize("tail", ["/a\r\nX-Injected: 1", "/a\nX-Injected: 1", "/a\x00b",
                                  "\r\nX-Injected: 1/"])
def test_a_url_with_control_characters_sends_nothing(tail: str) -> None:
    """Held: httpx refuses the URL before a byte is sent (a FetchError, not a
    crash); no header can be smuggled into the request."""
    with RawServer(answers(TLS_FEED)) as server, Fetcher(QUICK) as fetcher:
        url = f"http://127.0.0.1:{server.port}{tail}"
        with pytest.raises(FetchError):
            fetcher.get(url, trusted=trusted_origin(url))
    assert server.requests == []


def test_hostile_redirects_cannot_grow_the_guards_memo_without_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Hole (e766ed8): the memo was bounded in entries only, and a Location may
    be 100 kB (httpcore's head limit): a server answering every request with a
    redirect to another long host name left 1024 + 4096 of them in memory for
    the life of the process (500 MB). Now only short arguments are kept."""
    long_host = "x" * 20_000

    def handler(server: RawServer, conn: socket.socket, request: bytes) -> None:
        n = request.split(b" ")[1].decode().strip("/")
        conn.sendall(head("302 Found", headers=[
            ("Location", f"http://{long_host}{n}.a.example/"), ("Content-Length", "0")]))

    def loopback(host: str, port: int, *args: Any, **kw: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    # a long name resolving inside (fake_dns would keep every name asked)
    monkeypatch.setattr(fetch, "getaddrinfo", loopback)
    with RawServer(handler) as server, Fetcher(Limits(timeout=5, connect_timeout=3,
                                                      user_agent="t")) as fetcher:
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for n in range(60):
                url = f"http://127.0.0.1:{server.port}/{n}"
                with pytest.raises((BlockedAddressError, NetworkError)):
                    fetcher.get(url, trusted=trusted_origin(url))
            urllib.parse.urlsplit.cache_clear()  # the stdlib's own memo (128 entries)
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 1_000_000, grown  # 60 x 2 x 20 kB = 2.4 MB when kept


def test_the_memo_answers_as_the_rules_whatever_the_guard_or_resolver_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Held: normalize_host and origin_of depend on their argument alone (no
    setting, no DNS), so a remembered answer is never stale; asked with every
    spelling, each answer is the uncached one, before and after a Guard that
    lists the name and a resolver that answers something else."""
    spellings = ["Example.ORG.", "127.0.0.1", "[0:0::1]", "0:0::1", "LOCALHOST.", "127.1",
                 "xn--bcher-kva.example", "a" * 300]
    for host in spellings:
        assert guard.normalize_host(host) == guard._normalize_host(host)
    Guard.parse(["example.org", "10.0.0.0/8"])
    _loopback_dns(monkeypatch)
    for host in spellings:
        assert guard.normalize_host(host) == guard._normalize_host(host)
        url = f"http://{host if ':' not in host or host.startswith('[') else '[' + host + ']'}/x"
        try:
            uncached = guard._origin_of(url)
        except ValueError:
            with pytest.raises(ValueError):
                guard.origin_of(url)
            continue
        assert guard.origin_of(url) == uncached
        assert guard.origin_of(url) == uncached  # the remembered answer
    assert guard.trusted_origin("http://127.1/") is None  # still a name, cached or not
