"""Rules rewritten to cost less, pinned to what they were: the same answers,
every one checked (no timing here; bench/ measures)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from aggregator import opml


def _xml_char(code: int) -> bool:
    """XML 1.0's Char production."""
    return (code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
            or 0x10000 <= code <= 0x10FFFF)


def test_not_xml_is_every_code_point_xml_cannot_hold_and_nothing_else() -> None:
    everything = "".join(map(chr, range(0x110000)))
    found = {ord(c) for c in opml._NOT_XML.findall(everything)}
    assert found == {code for code in range(0x110000) if not _xml_char(code)}
    # the complement spelling it replaced (10-25 ms to compile) finds the same
    old = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
    assert old.findall(everything) == opml._NOT_XML.findall(everything)


# --- the parse pool's forkserver, started early for a pass of new feeds -------------

def _opml(path: Path, n: int) -> Path:
    outlines = "".join(f'<outline text="f{i}" xmlUrl="http://127.0.0.1:9/{i}.xml"/>'
                       for i in range(n))
    path.write_text(f'<opml version="2.0"><body>{outlines}</body></opml>', encoding="utf-8")
    return path


def test_no_parser_process_is_started_for_feeds_already_fetched(tmp_path: Path) -> None:
    """A poll of known feeds (304s) must start no process: nothing to parse."""
    from multiprocessing import forkserver

    from aggregator import pools

    feeds = _opml(tmp_path / "feeds.opml", 200)
    before = forkserver._forkserver._forkserver_pid
    assert not pools.prestart_parsers(feeds, 200, -1, ("aggregator.parse",))
    assert not pools.prestart_parsers(feeds, 200 - pools.PARSE_POOL_MIN_FEEDS + 1, -1, ())
    assert not pools.prestart_parsers(_opml(tmp_path / "few.opml", 39), 0, -1, ())
    assert not pools.prestart_parsers(feeds, 0, 0, ())  # parse_processes = 0: none
    assert not pools.prestart_parsers(tmp_path / "missing.opml", 0, -1, ())
    assert forkserver._forkserver._forkserver_pid == before


def test_a_pass_of_new_feeds_starts_the_forkserver_before_its_first_fetch(
        tmp_path: Path) -> None:
    """In a process of its own (the forkserver is one per process): 40 new
    subscriptions start it, with the parser preloaded, and it is alive."""
    feeds = _opml(tmp_path / "feeds.opml", 40)
    code = (
        "import os, sys\n"
        "from multiprocessing import forkserver\n"
        "from aggregator import pools\n"
        f"started = pools.prestart_parsers(__import__('pathlib').Path({str(feeds)!r}), 0, -1,\n"
        "                                  pools.parse_preload(False))\n"
        "if len(os.sched_getaffinity(0)) < 2:  # one core: no parse pool, no server\n"
        "    assert not started; print('one core'); sys.exit(0)\n"
        "assert started\n"
        "pid = forkserver._forkserver._forkserver_pid\n"
        "assert pid and os.waitpid(pid, os.WNOHANG) == (0, 0)\n"
        "assert forkserver._forkserver._preload_modules == ['aggregator.parse']\n"
        "print('started')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("started", "one core")
