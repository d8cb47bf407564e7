"""aggregator.serve: a real server on 127.0.0.1 (port 0) over a temporary output
directory, asked with httpx, and with raw sockets where httpx would tidy the path."""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

from aggregator.errors import ConfigError
from aggregator.serve import ServerHandle, accepts_gzip, make_server, serve_in_thread, split_target

SECRET = "TOP-SECRET-OUTSIDE"
# Bigger than the gzip threshold, so the gzip variant exists.
RSS = (
    '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
    + ("<item><title>Caf\u00e9 news</title></item>" * 40)
    + "</channel></rss>\n"
)
FILES = {
    "index.html": "<!doctype html><title>All news</title><p>front page</p>\n",
    "rss.xml": RSS,
    "atom.xml": '<feed xmlns="http://www.w3.org/2005/Atom"><title>a</title></feed>\n',
    "feed.json": '{"version": "https://jsonfeed.org/version/1.1", "items": []}\n',
    "feeds.opml": '<opml version="2.0"><body><outline xmlUrl="http://x/"/></body></opml>\n',
    "style.css": "body { color: #222 }\n",
    "logo.png": "\x89PNG not really",
    "category/world/index.html": "<!doctype html><title>World</title>\n",
    "category/world/atom.xml": '<feed xmlns="http://www.w3.org/2005/Atom"><title>w</title></feed>\n',
    "category/empty/atom.xml": '<feed xmlns="http://www.w3.org/2005/Atom"><title>e</title></feed>\n',
    ".hidden": SECRET,
    "category/.tmp-atom.xml": SECRET,
}


def build_site(tmp_path: Path) -> Path:
    """out/ with the published files; outside/ beside it with a secret and
    symlinks from out/ to it."""
    out = tmp_path / "out"
    for name, text in FILES.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (out / "leak.txt").symlink_to(outside / "secret.txt")
    (out / "leakdir").symlink_to(outside, target_is_directory=True)
    (out / "alias.xml").symlink_to(out / "rss.xml")  # inside: allowed
    (out / "peek.xml").symlink_to(out / ".hidden")  # inside, but to a dotfile
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the tests that only read it."""
    return build_site(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[ServerHandle]:
    handle = serve_in_thread(site, "127.0.0.1", 0)
    yield handle
    handle.stop()


@pytest.fixture
def client(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url.rstrip("/"), follow_redirects=False) as c:
        yield c


@pytest.fixture
def own_site(tmp_path: Path) -> Path:
    """For tests that change files."""
    return build_site(tmp_path)


@pytest.fixture
def own_client(own_site: Path) -> Iterator[httpx.Client]:
    handle = serve_in_thread(own_site, "127.0.0.1", 0)
    with httpx.Client(base_url=handle.url.rstrip("/")) as c:
        yield c
    handle.stop()


def raw(server: ServerHandle, request: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are; return everything until the server closes."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def raw_get(server: ServerHandle, target: bytes) -> tuple[int, bytes]:
    reply = raw(server, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status = int(reply.split(b" ", 2)[1])
    return status, reply


# --- what a client sees -------------------------------------------------------------


def test_port_zero_picks_a_free_port(server: ServerHandle) -> None:
    port = server.server_address[1]
    assert port != 0 and server.port == port
    assert server.url == f"http://127.0.0.1:{port}/"


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/rss.xml", "application/rss+xml; charset=utf-8"),
        ("/atom.xml", "application/atom+xml; charset=utf-8"),
        ("/category/world/atom.xml", "application/atom+xml; charset=utf-8"),
        ("/feed.json", "application/feed+json; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/feeds.opml", "text/x-opml; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/logo.png", "image/png"),
    ],
)
def test_content_types(client: httpx.Client, path: str, ctype: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == ctype
    assert r.text == FILES[path.lstrip("/")]


def test_root_and_directories_serve_their_index(client: httpx.Client) -> None:
    assert client.get("/").text == FILES["index.html"]
    assert client.get("/category/world/").text == FILES["category/world/index.html"]
    r = client.get("/category/world")
    assert r.status_code == 301
    assert r.headers["location"] == "/category/world/"


def test_no_directory_listing(client: httpx.Client) -> None:
    for path in ("/category/", "/category", "/category/empty/", "/category/empty"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "world" not in r.text and "atom.xml" not in r.text


def test_file_with_trailing_slash_and_query_string(client: httpx.Client) -> None:
    assert client.get("/rss.xml/").status_code == 404
    assert client.get("/rss.xml?utm=1").text == RSS


def test_headers_on_html_and_feeds(client: httpx.Client) -> None:
    html = client.get("/")
    assert html.headers["server"] == "aggregator"
    assert html.headers["x-content-type-options"] == "nosniff"
    assert html.headers["referrer-policy"] == "no-referrer"
    csp = html.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert html.headers["cache-control"] == "public, max-age=60"
    feed = client.get("/rss.xml")
    assert feed.headers["x-content-type-options"] == "nosniff"
    assert feed.headers["server"] == "aggregator"
    assert client.get("/nope").headers["server"] == "aggregator"


# --- validators -----------------------------------------------------------------------


def test_if_none_match_gives_304_without_body(client: httpx.Client) -> None:
    first = client.get("/rss.xml", headers={"Accept-Encoding": "identity"})
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')  # strong
    assert first.headers["last-modified"]
    for inm in (etag, "W/" + etag, f'"other", {etag}', "*"):
        r = client.get("/rss.xml", headers={"If-None-Match": inm, "Accept-Encoding": "identity"})
        assert r.status_code == 304, inm
        assert r.content == b""
        assert r.headers["etag"] == etag
        assert "content-length" not in r.headers
    r = client.get("/rss.xml", headers={"If-None-Match": '"other"', "Accept-Encoding": "identity"})
    assert r.status_code == 200 and r.text == RSS


def test_if_modified_since(own_client: httpx.Client, own_site: Path) -> None:
    client, site = own_client, own_site
    mtime = 1_700_000_000
    os.utime(site / "atom.xml", (mtime, mtime))
    r = client.get("/atom.xml")
    assert r.headers["last-modified"] == formatdate(mtime, usegmt=True)
    same = client.get("/atom.xml", headers={"If-Modified-Since": formatdate(mtime, usegmt=True)})
    assert same.status_code == 304 and same.content == b""
    older = client.get(
        "/atom.xml", headers={"If-Modified-Since": formatdate(mtime - 1, usegmt=True)}
    )
    assert older.status_code == 200 and older.text == FILES["atom.xml"]
    junk = client.get("/atom.xml", headers={"If-Modified-Since": "yesterday"})
    assert junk.status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
    both = client.get(
        "/atom.xml",
        headers={"If-None-Match": '"other"', "If-Modified-Since": formatdate(mtime, usegmt=True)},
    )
    assert both.status_code == 200


def test_atomic_replace_changes_etag_identical_content_keeps_it(
    own_client: httpx.Client, own_site: Path
) -> None:
    client, site = own_client, own_site
    before = client.get("/feed.json").headers["etag"]
    tmp = site / ".feed.json.tmp"
    tmp.write_text('{"version": "https://jsonfeed.org/version/1.1", "items": [{"id": "1"}]}\n')
    os.replace(tmp, site / "feed.json")
    r = client.get("/feed.json")
    assert r.headers["etag"] != before
    assert r.json()["items"] == [{"id": "1"}]
    assert client.get("/feed.json", headers={"If-None-Match": before}).status_code == 200
    tmp.write_text(FILES["feed.json"])  # republished unchanged: same validator
    os.replace(tmp, site / "feed.json")
    assert client.get("/feed.json").headers["etag"] == before


# --- gzip --------------------------------------------------------------------------------


def test_gzip_round_trip_and_its_own_etag(client: httpx.Client, server: ServerHandle) -> None:
    plain = client.get("/rss.xml", headers={"Accept-Encoding": "identity"})
    zipped = client.get("/rss.xml", headers={"Accept-Encoding": "gzip, deflate"})
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert plain.headers["vary"] == zipped.headers["vary"] == "Accept-Encoding"
    assert zipped.text == plain.text == RSS  # httpx decoded it
    assert zipped.headers["etag"] != plain.headers["etag"]
    assert int(zipped.headers["content-length"]) < int(plain.headers["content-length"])
    # the bytes on the wire really are gzip
    reply = raw(
        server,
        b"GET /rss.xml HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    assert gzip.decompress(reply.split(b"\r\n\r\n", 1)[1]).decode() == RSS
    # each variant validates only itself
    gz_etag = zipped.headers["etag"]
    r = client.get("/rss.xml", headers={"Accept-Encoding": "gzip", "If-None-Match": gz_etag})
    assert r.status_code == 304 and r.headers["etag"] == gz_etag
    r = client.get("/rss.xml", headers={"Accept-Encoding": "identity", "If-None-Match": gz_etag})
    assert r.status_code == 200 and r.text == RSS


def test_gzip_refused_and_not_for_images(client: httpx.Client) -> None:
    assert (
        "content-encoding"
        not in client.get("/rss.xml", headers={"Accept-Encoding": "gzip;q=0"}).headers
    )
    png = client.get("/logo.png", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in png.headers and "vary" not in png.headers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("gzip", True),
        ("GZIP;q=0.5", True),
        ("gzip;q=0", False),
        ("deflate, br", False),
        ("*", True),
        ("*, gzip;q=0", False),
        ("x-gzip", True),
        ("gzip;q=nonsense", False),
    ],
)
def test_accepts_gzip(value: str | None, expected: bool) -> None:
    assert accepts_gzip(value) is expected


# --- HEAD, methods --------------------------------------------------------------------------


def test_head_same_headers_no_body(client: httpx.Client, server: ServerHandle) -> None:
    for enc in ("identity", "gzip"):
        get = client.get("/rss.xml", headers={"Accept-Encoding": enc})
        head = client.head("/rss.xml", headers={"Accept-Encoding": enc})
        assert head.status_code == 200
        drop = {"date"}
        assert {k: v for k, v in head.headers.items() if k not in drop} == {
            k: v for k, v in get.headers.items() if k not in drop
        }
    # on the wire: nothing after the blank line
    reply = raw(server, b"HEAD /rss.xml HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head_part, _, body = reply.partition(b"\r\n\r\n")
    assert b"Content-Length: " + str(len(RSS.encode())).encode() in head_part
    assert body == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"])
def test_other_methods_405(server: ServerHandle, method: str) -> None:
    reply = raw(
        server,
        method.encode() + b" /rss.xml HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    )
    assert reply.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nAllow: GET, HEAD\r\n" in reply
    assert reply.count(b"HTTP/1.1") == 1  # the body was not read as a second request


# --- nothing outside the directory ---------------------------------------------------------

TRAVERSALS = [
    b"/../outside/secret.txt",
    b"/%2e%2e/outside/secret.txt",
    b"/%2E%2E%2Foutside%2Fsecret.txt",
    b"/category/..%2f..%2foutside/secret.txt",
    b"/category/world/../../../outside/secret.txt",
    b"/..%5c..%5coutside%5csecret.txt",
    b"/%252e%252e/outside/secret.txt",
    b"/./rss.xml",
    b"//../outside/secret.txt",
    b"/rss.xml%00.html",
    b"/rss.xml\x00",
    b"/%ff%fe",
    b"http://127.0.0.1/../outside/secret.txt",
    b"outside/secret.txt",
    b"*",
    b"/.hidden",
    b"/%2ehidden",
    b"/category/.tmp-atom.xml",
    b"/leak.txt",
    b"/leakdir/secret.txt",
    b"/peek.xml",
    b"/etc/passwd",
    b"/a//rss.xml",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_refused(server: ServerHandle, target: bytes) -> None:
    status, reply = raw_get(server, target)
    assert status in (400, 404), reply
    assert SECRET.encode() not in reply
    assert b"<rss" not in reply


def test_symlink_inside_the_directory_is_served(client: httpx.Client) -> None:
    assert client.get("/alias.xml").text == RSS


def test_split_target_rules() -> None:
    assert split_target("/") == ([], True)
    assert split_target("/category/world/") == (["category", "world"], True)
    assert split_target("/caf%C3%A9.xml?x=1") == (["caf\u00e9.xml"], False)
    assert split_target("http://example.org/a/b.xml") == (["a", "b.xml"], False)
    assert split_target("HTTPS://example.org") == ([], True)


def test_absolute_form_target(server: ServerHandle) -> None:
    status, reply = raw_get(server, b"http://127.0.0.1/rss.xml")
    assert status == 200 and reply.endswith(RSS.encode())


# --- limits ------------------------------------------------------------------------------------


def test_request_line_and_header_limits(server: ServerHandle) -> None:
    long_line = raw(server, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert long_line.startswith(b"HTTP/1.1 414 ")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(100))
    too_many = raw(server, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert too_many.startswith(b"HTTP/1.1 431 ")
    big = raw(server, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 431 ")
    assert raw(server, b"GET /\r\n\r\n").startswith(b"HTTP/1.1 400 ")  # HTTP/0.9
    assert raw(server, b"GET / HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505 ")


def test_slow_client_is_cut_off(site: Path) -> None:
    handle = serve_in_thread(site, "127.0.0.1", 0, timeout=0.5)
    try:
        with socket.create_connection(handle.server_address[:2], timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\n")
            start = time.monotonic()
            closed = False
            while time.monotonic() - start < 4:
                try:
                    s.sendall(b"X")  # one byte of a header, every 0.1 s
                    s.settimeout(0.1)
                    if s.recv(1024) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except OSError:  # reset
                    closed = True
                    break
            assert closed, "server kept a trickling client past its deadline"
            assert time.monotonic() - start < 2
    finally:
        handle.stop()


def test_connection_cap(site: Path) -> None:
    handle = serve_in_thread(site, "127.0.0.1", 0, max_connections=2)
    addr = handle.server_address[:2]
    try:
        with (
            socket.create_connection(addr, timeout=5) as a,
            socket.create_connection(addr, timeout=5) as b,
        ):
            a.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert a.recv(1024).startswith(b"HTTP/1.1 200")
            b.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b.recv(1024).startswith(b"HTTP/1.1 200")
            with socket.create_connection(addr, timeout=5) as c:
                try:
                    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert c.recv(1024) == b""
                except ConnectionResetError:
                    pass
        # slots come back when the clients leave
        deadline = time.monotonic() + 3
        while True:
            try:
                if httpx.get(handle.url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        handle.stop()


def test_stop_is_prompt_with_idle_keepalive_connection(site: Path) -> None:
    handle = serve_in_thread(site, "127.0.0.1", 0)  # 10 s head timeout
    client = httpx.Client()
    assert client.get(handle.url).status_code == 200  # the connection stays open
    start = time.monotonic()
    handle.stop()
    assert time.monotonic() - start < 1.5
    assert not handle.thread.is_alive()
    client.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(handle.url, timeout=1)


def test_port_in_use_is_a_config_error(server: ServerHandle, site: Path) -> None:
    with pytest.raises(ConfigError, match="cannot listen"):
        make_server(site, "127.0.0.1", server.server_address[1])


# --- health ----------------------------------------------------------------------------------


def test_healthz_from_the_daemon(site: Path) -> None:
    state: dict[str, bool | None] = {"ok": True}

    def health() -> tuple[bool, str]:
        if state["ok"] is None:
            raise RuntimeError("boom")
        return bool(state["ok"]), "last update 2024-05-01T12:00:00+00:00"

    handle = serve_in_thread(site, "127.0.0.1", 0, health=health)
    try:
        r = httpx.get(handle.url + "healthz")
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
        assert r.json()["status"] == "ok"
        assert r.json()["detail"] == "last update 2024-05-01T12:00:00+00:00"
        state["ok"] = False
        r = httpx.get(handle.url + "healthz")
        assert r.status_code == 503 and r.json()["status"] == "stalled"
        assert httpx.head(handle.url + "healthz").status_code == 503
        state["ok"] = None  # a broken check is unhealthy, not a crash
        assert httpx.get(handle.url + "healthz").status_code == 503
    finally:
        handle.stop()


def test_healthz_from_output_dir_mtime(own_site: Path, tmp_path: Path) -> None:
    site = own_site
    handle = serve_in_thread(site, "127.0.0.1", 0, stalled_after=timedelta(hours=1))
    try:
        r = httpx.get(handle.url + "healthz")
        assert r.status_code == 200, r.text
        assert "last update" in r.json()["detail"]
        old = time.time() - 2 * 3600
        for p in site.iterdir():
            os.utime(p, (old, old), follow_symlinks=False)
        r = httpx.get(handle.url + "healthz")
        assert r.status_code == 503
        body = json.loads(r.text)
        assert body["status"] == "stalled" and "stalled after 3600 s" in body["detail"]
    finally:
        handle.stop()
    missing = serve_in_thread(tmp_path / "not-yet", "127.0.0.1", 0)
    try:
        assert httpx.get(missing.url + "healthz").status_code == 503
        assert httpx.get(missing.url).status_code == 404
    finally:
        missing.stop()


# --- logging ----------------------------------------------------------------------------------


def test_one_debug_line_per_request_and_nothing_on_stderr(
    client: httpx.Client, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level("DEBUG", logger="aggregator.serve")
    client.get("/rss.xml")
    client.get("/nope")
    deadline = time.monotonic() + 2  # the server logs after it has answered
    while time.monotonic() < deadline:
        lines = [r.getMessage() for r in caplog.records if r.name == "aggregator.serve"]
        if any("GET /nope" in m for m in lines):
            break
        time.sleep(0.02)
    assert len([m for m in lines if "GET /rss.xml" in m]) == 1
    assert any("GET /nope" in m and " 404 " in m for m in lines)
    assert capfd.readouterr().err == ""
