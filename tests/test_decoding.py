"""Content-Encoding undone under the size cap: what we decode (and ask for),
what we refuse, and the peak memory of a real fetch of compression bombs,
measured in a child process (ru_maxrss) against a hostile server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from hostile_servers import RawServer, answers, rss

from aggregator.errors import DecodingError, TooLargeError
from aggregator.fetch import ACCEPT_ENCODING, STEP, Fetcher, Limits, _codings, _decode
from aggregator.guard import trusted_origin

ROOT = Path(__file__).resolve().parents[1]
FEED = rss("Compressed", *[(f"item {n}", f"http://127.0.0.1/{n}") for n in range(200)])
LIMITS = Limits(connect_timeout=0.5, timeout=5.0, max_bytes=64 * 1024, user_agent="t")


def deflate(data: bytes, raw: bool = False) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15 if raw else 15)
    return c.compress(data) + c.flush()


def decode(body: bytes, header: str, cap: int = 1 << 20, step: int = 0) -> bytes:
    chunks = [body[i:i + step] for i in range(0, len(body), step)] if step else [body]
    return b"".join(_decode(chunks, _codings(header), cap))


@pytest.mark.parametrize(("header", "encode"), [
    ("", lambda b: b),
    ("identity", lambda b: b),
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("GZIP", gzip.compress),
    ("deflate", deflate),  # zlib-wrapped, as the RFC says
    ("deflate", lambda b: deflate(b, raw=True)),  # raw, as some servers send it
    ("gzip, gzip", lambda b: gzip.compress(gzip.compress(b))),
    ("deflate, gzip", lambda b: gzip.compress(deflate(b))),  # applied in header order
    ("gzip, identity, deflate", lambda b: deflate(gzip.compress(b))),
    ("gzip", lambda b: gzip.compress(b[:1000]) + gzip.compress(b[1000:])),  # two members
    ("gzip", lambda b: gzip.compress(b) + b"\0\0trailing junk"),  # ignored, as browsers do
])
@pytest.mark.parametrize("step", [0, 1, 7, 4096])
def test_codings_are_decoded_in_any_chunking(header: str, encode, step: int) -> None:  # type: ignore[no-untyped-def]
    assert decode(encode(FEED), header, step=step) == FEED


def test_empty_body_with_an_encoding() -> None:
    assert decode(b"", "gzip") == b""
    assert decode(b"", "deflate") == b""


def test_cap_is_exact_for_every_layer() -> None:
    body = b"x" * 10_000
    assert decode(gzip.compress(body), "gzip", cap=10_000) == body
    with pytest.raises(TooLargeError, match="10000 bytes once gzip is decoded"):
        decode(gzip.compress(body + b"y"), "gzip", cap=10_000)
    # the middle layer counts too: a huge gzip stream inside a tiny outer one
    inner = gzip.compress(os.urandom(20_000))  # incompressible: inner stream > cap
    with pytest.raises(TooLargeError):
        decode(gzip.compress(inner), "gzip, gzip", cap=10_000)


def test_no_layer_produces_more_than_a_step_before_it_is_counted() -> None:
    pieces = list(_decode([gzip.compress(bytes(10 * STEP))], ["gzip"], 20 * STEP))
    assert len(pieces) >= 10 and max(map(len, pieces)) <= STEP


@pytest.mark.parametrize(("header", "message"), [
    ("gzip, gzip, gzip", "refused 3 stacked content encodings"),
    ("gzip,deflate,gzip,deflate", "refused 4 stacked"),
    ("br", "unsupported content encoding 'br'"),
    ("zstd", "unsupported content encoding 'zstd'"),
    ("compress", "unsupported content encoding 'compress'"),
    ("gzip, bogus", "unsupported content encoding 'bogus'"),
])
def test_refused_encodings(header: str, message: str) -> None:
    with pytest.raises(DecodingError, match=message):
        _codings(header)


def test_corrupt_data_is_a_decoding_error() -> None:
    with pytest.raises(DecodingError, match="bad gzip data"):
        decode(b"\x1f\x8b\x08\x00garbage-garbage-garbage", "gzip")
    with pytest.raises(DecodingError, match="bad deflate data"):
        decode(b"\xff\xff\xff\xff not deflate", "deflate")


def test_we_ask_only_for_what_we_decode_and_decode_what_we_get() -> None:
    assert ACCEPT_ENCODING == "gzip, deflate"
    body = gzip.compress(deflate(FEED))
    handler = answers(body, headers=[("Content-Encoding", "deflate, gzip")])
    with RawServer(handler) as server, Fetcher(LIMITS) as fetcher:
        res = fetcher.get(server.url(), trusted=trusted_origin(server.url()))
    assert res.body == FEED
    asked = server.requests[0].decode("latin-1").lower()
    assert "\r\naccept-encoding: gzip, deflate\r\n" in asked


@pytest.mark.parametrize(("header", "error"), [
    ("gzip, gzip, gzip", "DecodingError"), ("br", "DecodingError")])
def test_fetch_refuses_what_it_cannot_decode(header: str, error: str) -> None:
    handler = answers(b"\x1f\x8b whatever", headers=[("Content-Encoding", header)])
    with RawServer(handler) as server, Fetcher(LIMITS) as fetcher:
        with pytest.raises(DecodingError, match="content encoding"):
            fetcher.get(server.url(), trusted=trusted_origin(server.url()))


# --- bombs, measured --------------------------------------------------------------------


@functools.cache
def zeros_gzip(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join([*(c.compress(block) for _ in range(size >> 20)), c.flush()])


@functools.cache
def zeros_deflate(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 15)
    block = bytes(1 << 20)
    return b"".join([*(c.compress(block) for _ in range(size >> 20)), c.flush()])


# The child's peak is read from /proc/self/status VmHWM, reset just before the
# bomb (clear_refs "5"); ru_maxrss would not do: Linux carries it over from the
# parent across fork and exec. tracemalloc's peak (Python allocations, every
# decoded byte among them) is a second, platform-independent measure.
CHILD = textwrap.dedent("""
    import json, sys, tracemalloc
    from aggregator.errors import FetchError
    from aggregator.fetch import Fetcher, Limits
    from aggregator.guard import trusted_origin

    def status_kb(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

    warm, url = sys.argv[1], sys.argv[2]
    tracemalloc.start()
    with Fetcher(Limits(connect_timeout=2.0, timeout=30.0)) as fetcher:  # the default cap
        fetcher.get(warm, trusted=trusted_origin(warm))  # every import a fetch needs
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        before = status_kb("VmRSS")
        tracemalloc.reset_peak()
        traced = tracemalloc.get_traced_memory()[0]
        try:
            res = fetcher.get(url, trusted=trusted_origin(url))
            outcome = f"ok {len(res.body or b'')}"
        except FetchError as e:
            outcome = f"{type(e).__name__}: {e}"
        peak = status_kb("VmHWM")
        traced_peak = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"outcome": outcome, "rss_delta_kb": peak - before,
                      "traced_delta_kb": (traced_peak - traced) // 1024}))
""")
MB = 1024 * 1024


def bomb(kind: str) -> tuple[bytes, str]:
    if kind == "gzip-of-gzip":
        return gzip.compress(zeros_gzip(256 * MB), 9), "gzip, gzip"
    if kind == "deflate":
        return zeros_deflate(256 * MB), "deflate"
    if kind == "three layers":
        return gzip.compress(gzip.compress(zeros_gzip(256 * MB), 9), 9), "gzip, gzip, gzip"
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "error"), [
    ("gzip-of-gzip", "TooLargeError"),
    ("deflate", "TooLargeError"),
    ("three layers", "DecodingError"),
])
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_compression_bombs_stay_under_64_mb(kind: str, error: str) -> None:
    """256 MB of zeros behind a body of a few KB: the fetch fails with a clear
    error and the process's peak memory grows by less than 64 MB (the body
    itself may take up to the 10 MB cap, twice while it is joined)."""
    body, header = bomb(kind)
    assert len(body) < 300 * 1024
    warm = gzip.compress(FEED)

    def handler(server: RawServer, conn, request: bytes) -> None:  # type: ignore[no-untyped-def]
        if request.startswith(b"GET /warm"):
            answers(warm, headers=[("Content-Encoding", "gzip")])(server, conn, request)
        else:
            answers(body, headers=[("Content-Encoding", header)])(server, conn, request)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with RawServer(handler) as server:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, server.url("/warm"), server.url("/bomb")],
            capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["outcome"].startswith(error), report
    assert report["rss_delta_kb"] < 64 * 1024, report
    assert report["traced_delta_kb"] < 64 * 1024, report


def test_many_concatenated_gzip_members_are_refused() -> None:
    """Attack: 10 MB of empty 20-byte gzip members, half a million of them, cost
    2.3 s of CPU (one decompressor each) where 10 MB of gzip costs 0.05 s. A
    few members decode; past MAX_MEMBERS the body is refused."""
    from aggregator.fetch import MAX_MEMBERS

    size = -(-len(FEED) // MAX_MEMBERS)
    pieces = [FEED[i:i + size] for i in range(0, len(FEED), size)]
    assert len(pieces) <= MAX_MEMBERS
    few = b"".join(map(gzip.compress, pieces))
    assert decode(few, "gzip", step=4096) == FEED
    empty = gzip.compress(b"", mtime=0)
    with pytest.raises(DecodingError, match=f"more than {MAX_MEMBERS} concatenated gzip"):
        decode(empty * (MAX_MEMBERS + 1), "gzip")
    with pytest.raises(DecodingError, match="concatenated gzip"):
        decode(empty * 500_000, "gzip", step=65536)
