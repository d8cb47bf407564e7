"""HTTP server for the published output directory.

The output directory is the whole site: publish.py writes it, this module only
reads it. The standard library's ``ThreadingHTTPServer`` is enough (a handful
of static files, a few clients) and brings no dependency; what it lacks is
added here:

- a path is mapped to a file only through checked, decoded segments: no ``..``,
  no encoded ``/`` or ``\\``, no NUL or control characters, no dotfiles, no
  symlink that resolves outside the directory, no directory listing ever;
- strong ETags from a hash of the content (an identical re-publish keeps its
  ETag, so feed readers keep getting 304) and a different ETag for the gzip
  variant (RFC 9110 8.8.3), Last-Modified, If-None-Match / If-Modified-Since;
- limits: request line 8 KiB, headers 16 KiB / 64 lines, one deadline for the
  whole request head (slowloris), a cap on open connections, a write timeout;
- ``/healthz`` for monitors, JSON, 503 when updates have stalled;
- ``/metrics`` for Prometheus when a metrics source is given (metrics.py), else 404;
- one DEBUG line per request on ``aggregator.serve``; nothing on stderr.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import socket
import socketserver
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aggregator.errors import ConfigError
from aggregator.httprules import (  # noqa: F401 - re-exported for callers
    ALLOW,
    CACHE_BUDGET,
    CSP,
    GZIP_OVER,
    MAX_HEADER_BYTES,
    MAX_HEADER_LINES,
    MAX_REQUEST_LINE,
    Refused,
    accepts_gzip,
    compressible,
    content_type,
    is_xml,
    none_match,
    not_modified_since,
    resolve,
    split_target,
)

log = logging.getLogger("aggregator.serve")

HealthCheck = Callable[[], tuple[bool, str]]
MetricsSource = Callable[[], tuple[bytes, str]]  # (body, content type)

# --- file bodies, hashed once per version ------------------------------------


class _Body:
    """One version of a file (keyed by inode, size and times) and its gzip twin."""

    __slots__ = ("data", "etag", "_gz", "_gz_etag")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.etag = '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'
        self._gz: bytes | None = None
        self._gz_etag = self.etag[:-1] + '-gzip"'

    def gzipped(self) -> tuple[bytes, str]:
        if self._gz is None:  # a race computes it twice; same bytes (mtime=0)
            self._gz = gzip.compress(self.data, compresslevel=6, mtime=0)
        return self._gz, self._gz_etag


class _BodyCache:
    """Bodies by file version, in insertion order; the oldest go first."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._used = 0
        self._items: dict[tuple[Any, ...], _Body] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> _Body | None:
        return self._items.get(key)

    def put(self, key: tuple[Any, ...], body: _Body) -> None:
        with self._lock:
            if key in self._items or len(body.data) > self._budget // 4:
                return
            self._items[key] = body
            self._used += len(body.data)
            while self._used > self._budget:  # a replaced file's old versions age out
                self._used -= len(self._items.pop(next(iter(self._items))).data)


# --- health --------------------------------------------------------------------


def output_dir_health(out_dir: Path, stalled_after: timedelta) -> tuple[bool, str]:
    """Health from the output directory alone, for when no daemon tells us.

    The last update is the newest mtime of a top-level, non-dot regular file
    (the feeds and index.html publish rewrites each pass; its temp files are
    dotfiles and don't count). Stalled when older than ``stalled_after``.
    """
    newest: float | None = None
    try:
        with os.scandir(out_dir) as it:
            for e in it:
                if not e.name.startswith(".") and e.is_file(follow_symlinks=False):
                    mtime = e.stat(follow_symlinks=False).st_mtime
                    newest = mtime if newest is None else max(newest, mtime)
    except OSError as e:
        return False, f"cannot read output directory {out_dir}: {e.strerror or e}"
    if newest is None:
        return False, f"nothing published yet in {out_dir}"
    age = time.time() - newest
    when = datetime.fromtimestamp(newest, UTC).isoformat(timespec="seconds")
    limit = stalled_after.total_seconds()
    if age > limit:
        return False, f"last update {when}, {age:.0f} s ago (stalled after {limit:.0f} s)"
    return True, f"last update {when}, {age:.0f} s ago"


# --- the server ------------------------------------------------------------------


@dataclass
class _Conn:
    sock: socket.socket
    thread: threading.Thread | None = None
    idle: bool = True  # waiting for a request: safe to cut on stop


class _LineTooLong(Exception):
    pass


class StaticServer(ThreadingHTTPServer):
    """Serves one output directory; see make_server()."""

    daemon_threads = True
    block_on_close = False  # server_close() drains connections itself
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        out_dir: Path,
        *,
        health: HealthCheck | None,
        metrics: MetricsSource | None = None,
        max_age: int,
        stalled_after: timedelta,
        timeout: float,
        max_connections: int,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.out_dir = Path(out_dir)
        self.health = health
        self.metrics = metrics
        self.max_age = max_age
        self.stalled_after = stalled_after
        self.timeout_s = timeout
        self.stopping = False
        self.bodies = _BodyCache(CACHE_BUDGET)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._conns: dict[socket.socket, _Conn] = {}
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def url(self) -> str:
        host = f"[{self.server_name}]" if ":" in self.server_name else self.server_name
        return f"http://{host}:{self.server_port}/"

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.stopping or not self._slots.acquire(blocking=False):
            log.debug("connection limit reached; dropping %s", client_address[0])
            self.shutdown_request(request)
            return
        conn = _Conn(request)
        t = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="aggregator-serve-conn",
            daemon=True,
        )
        conn.thread = t
        with self._lock:
            self._conns[request] = conn
        try:
            t.start()
        except BaseException:
            self._forget(request)
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._forget(request)

    def _forget(self, request: Any) -> None:
        with self._lock:
            known = self._conns.pop(request, None) is not None
        if known:
            self._slots.release()

    def conn_state(self, request: Any) -> _Conn | None:
        with self._lock:
            return self._conns.get(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended: %r", client_address[0], exc)
        else:
            log.error("error serving %s", client_address[0], exc_info=True)

    def server_close(self, grace: float = 2.0) -> None:
        """Close the listener, then the connections: idle ones at once, busy
        ones after they finish or ``grace`` seconds."""
        self.stopping = True
        super().server_close()
        deadline = time.monotonic() + grace
        while True:
            with self._lock:
                conns = list(self._conns.values())
            if not conns:
                return
            late = time.monotonic() >= deadline
            for c in conns:
                if c.idle or late:
                    try:
                        c.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            if late:
                for c in conns:
                    if c.thread is not None:
                        c.thread.join(0.5)
                return
            time.sleep(0.02)


class _Handler(BaseHTTPRequestHandler):
    server: StaticServer
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"  # so error replies always get a status line
    server_version = "aggregator"
    disable_nagle_algorithm = True  # headers and body leave at once

    def version_string(self) -> str:
        return "aggregator"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.timeout_s)
        self._status = 0
        self._sent = 0

    # -- reading the request head within one deadline ---------------------------

    def _read_line(self, limit: int, deadline: float) -> bytes:
        """One line, at most ``limit`` bytes, all of it before ``deadline``.

        peek() does at most one read of the socket, each bounded by the time
        left, so a client trickling bytes can't keep us past the deadline.
        """
        buf = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request head too slow")
            self.connection.settimeout(left)
            chunk = self.rfile.peek(1)  # type: ignore[attr-defined]
            if not chunk:
                return bytes(buf)
            room = max(limit, 0) + 1 - len(buf)
            nl = chunk.find(b"\n", 0, room)
            if nl >= 0:
                buf += self.rfile.read(nl + 1)
                return bytes(buf)
            buf += self.rfile.read(min(len(chunk), room))
            if len(buf) > limit:
                raise _LineTooLong

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and not self.server.stopping:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        state = self.server.conn_state(self.request)
        self._status, self._sent, self.command, self.requestline = 0, 0, "", ""
        self.request_version = "HTTP/1.1"
        deadline = time.monotonic() + self.server.timeout_s
        try:
            try:
                line = self._read_line(MAX_REQUEST_LINE, deadline)
                if line in (b"\r\n", b"\n"):  # one stray CRLF is allowed (RFC 9112 2.2)
                    line = self._read_line(MAX_REQUEST_LINE, deadline)
                if state is not None:
                    state.idle = False
                if not line:
                    self.close_connection = True
                    return
                self.raw_requestline = line
                self.requestline = line.decode("iso-8859-1").rstrip("\r\n")
                head = self._read_head(deadline)
            except _LineTooLong:
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if head is None:  # headers too big, or the client went away mid-head
                return
            self.connection.settimeout(self.server.timeout_s)
            if len(line.split()) != 3:  # also refuses HTTP/0.9
                self.send_error(HTTPStatus.BAD_REQUEST)
                return
            sock_file, self.rfile = self.rfile, io.BytesIO(head)
            try:
                ok = self.parse_request()
            finally:
                self.rfile = sock_file
            if not ok:
                return
            self._dispatch()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True
        finally:
            if state is not None:
                state.idle = True
            if self._status:
                log.debug(
                    "%s %r %d %d",
                    self.client_address[0],
                    self.requestline,
                    self._status,
                    self._sent,
                )

    def _read_head(self, deadline: float) -> bytes | None:
        lines: list[bytes] = []
        total = 0
        while True:
            try:
                line = self._read_line(MAX_HEADER_BYTES - total, deadline)
            except _LineTooLong:
                line = b""
                total = MAX_HEADER_BYTES + 1
            else:
                if not line:
                    self.close_connection = True
                    return None
                total += len(line)
                lines.append(line)
                if line in (b"\r\n", b"\n"):
                    return b"".join(lines)
            if total > MAX_HEADER_BYTES or len(lines) > MAX_HEADER_LINES:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                return None

    # -- responses ------------------------------------------------------------------

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self._status = int(code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _common_headers(self, ctype: str) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if not is_xml(ctype):
            self.send_header("Content-Security-Policy", CSP)
        if ctype.startswith("text/html"):
            self.send_header("X-Frame-Options", "DENY")

    def _simple(
        self,
        status: HTTPStatus,
        body: bytes,
        ctype: str = "text/plain; charset=utf-8",
        extra: tuple[tuple[str, str], ...] = (),
        cache: str = "no-store",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self._common_headers(ctype)
        for name, value in extra:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self._sent = len(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors (also from parse_request): short text, then close.

        The stdlib puts ``message`` (which may quote the request) in the
        status line and an HTML page in the body; we send neither.
        """
        status = HTTPStatus(code)
        self.close_connection = True
        self._simple(status, f"{status.value} {status.phrase}\n".encode())

    def _error(self, status: HTTPStatus, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self._simple(status, f"{status.value} {status.phrase}\n".encode(), extra=extra)

    def _dispatch(self) -> None:
        if self.command not in ("GET", "HEAD"):
            self.close_connection = True  # we never read a body; don't parse it as a request
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, (("Allow", ALLOW),))
            return
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or self.headers.get(
            "Transfer-Encoding"
        ):
            self.close_connection = True
        try:
            segments, trailing = split_target(self.path)
        except Refused as e:
            self._error(e.args[0])
            return
        if segments == ["healthz"] and not trailing:
            self._health()
            return
        if segments == ["metrics"] and not trailing:
            self._metrics()
            return
        found = resolve(self.server.out_dir, segments, trailing)
        if found is None:
            self._error(HTTPStatus.NOT_FOUND)
        elif found == "":
            location = "/" + "/".join(quote(s) for s in segments) + "/"
            self._simple(
                HTTPStatus.MOVED_PERMANENTLY,
                f"{location}\n".encode(),
                extra=(("Location", location),),
                cache=f"public, max-age={self.server.max_age}",
            )
        else:
            self._file(found)

    def _health(self) -> None:
        check = self.server.health
        try:
            if check is None:
                ok, detail = output_dir_health(self.server.out_dir, self.server.stalled_after)
            else:
                ok, detail = check()
        except Exception:
            log.exception("health check failed")
            ok, detail = False, "health check failed"
        doc = {
            "status": "ok" if ok else "stalled",
            "detail": detail,
            "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        body = (json.dumps(doc) + "\n").encode()
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        self._simple(status, body, "application/json; charset=utf-8")

    def _metrics(self) -> None:
        source = self.server.metrics
        if source is None:  # metrics = false: no such page (not even a file of that name)
            self._error(HTTPStatus.NOT_FOUND)
            return
        try:
            body, ctype = source()
        except Exception:
            log.exception("metrics failed")
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        self._simple(HTTPStatus.OK, body, ctype)

    def _file(self, path: str) -> None:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except OSError:
            self._error(HTTPStatus.NOT_FOUND)
            return
        with open(fd, "rb", closefd=True) as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._error(HTTPStatus.NOT_FOUND)
                return
            # A new inode (atomic replace) or new size/times is a new version.
            key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            body = self.server.bodies.get(key)
            if body is None:
                body = _Body(f.read())
                self.server.bodies.put(key, body)
        ctype = content_type(os.path.basename(path))
        vary = compressible(ctype)
        gzip_ok = vary and len(body.data) > GZIP_OVER
        if gzip_ok and accepts_gzip(self.headers.get("Accept-Encoding")):
            data, etag = body.gzipped()
            self._respond(etag, st.st_mtime, ctype, data, vary, "gzip")
        else:
            self._respond(body.etag, st.st_mtime, ctype, body.data, vary)

    def _respond(
        self,
        etag: str,
        mtime: float,
        ctype: str,
        data: bytes,
        vary: bool,
        encoding: str | None = None,
    ) -> None:
        inm = self.headers.get_all("If-None-Match")
        if inm:
            fresh = none_match(inm, etag)
        else:
            ims = self.headers.get_all("If-Modified-Since") or []
            fresh = len(ims) == 1 and not_modified_since(ims[0], mtime)
        self.send_response(HTTPStatus.NOT_MODIFIED if fresh else HTTPStatus.OK)
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", formatdate(mtime, usegmt=True))
        self.send_header("Cache-Control", f"public, max-age={self.server.max_age}")
        if vary:
            self.send_header("Vary", "Accept-Encoding")
        if not fresh:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            if encoding:
                self.send_header("Content-Encoding", encoding)
            self._common_headers(ctype)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not fresh and self.command != "HEAD":
            self.wfile.write(data)
            self._sent = len(data)


def make_server(
    out_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    health: HealthCheck | None = None,
    metrics: MetricsSource | None = None,
    max_age: int = 60,
    stalled_after: timedelta = timedelta(hours=3),
    timeout: float = 10.0,
    max_connections: int = 64,
) -> StaticServer:
    """A server for ``out_dir``, bound and listening, not yet serving.

    ``health`` returns (healthy, one-line detail naming the last successful
    update); without it /healthz looks at the output directory's files (see
    output_dir_health). ``metrics`` answers /metrics (Prometheus text and its
    content type); without it /metrics is 404. ``timeout`` bounds the request head and each write.
    Call serve_forever(); stop with shutdown() from another thread, then
    server_close(). port=0 picks a free port (see server_address / url).
    """
    try:
        return StaticServer(
            (host, port),
            out_dir,
            health=health,
            metrics=metrics,
            max_age=max_age,
            stalled_after=stalled_after,
            timeout=timeout,
            max_connections=max_connections,
        )
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


class ServerHandle:
    """A server running on a daemon thread; stop() ends it."""

    def __init__(self, server: StaticServer, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread
        self._stopped = False

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def server_address(self) -> tuple[Any, ...]:
        return tuple(self.server.server_address)

    @property
    def port(self) -> int:
        """The bound port (the one picked when port=0 was asked)."""
        return self.server.server_port

    def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, finish busy requests (up to ``grace`` s), close all."""
        if self._stopped:
            return
        self._stopped = True
        self.server.stopping = True
        self.server.shutdown()
        self.server.server_close(grace)
        self.thread.join(grace + 1)


def serve_in_thread(
    out_dir: Path, host: str = "127.0.0.1", port: int = 8080, **kwargs: Any
) -> ServerHandle:
    """make_server() and serve_forever() on a daemon thread (for `aggregator run`)."""
    server = make_server(out_dir, host, port, **kwargs)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="aggregator-serve",
        daemon=True,
    )
    thread.start()
    log.info("serving %s at %s", out_dir, server.url)
    return ServerHandle(server, thread)
