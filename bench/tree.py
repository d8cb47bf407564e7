"""Run one command and measure its whole process tree, children included:

    python -m bench.tree REPORT.json -- CMD [ARG ...]

A process's own rusage (``wait4``) leaves out every process it did not wait
for itself: the aggregator's parse pool is forked by a forkserver, which the
aggregator never waits for, so its CPU went uncounted. This wrapper makes
itself a *child subreaper* (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``): every
descendant orphaned on the way (the forkserver, its workers) is re-parented to
it, it waits for them all, and ``getrusage(RUSAGE_CHILDREN)`` then holds the
CPU time of the whole tree. Memory is sampled from ``/proc`` every
``INTERVAL`` seconds: the sum over the tree of each process's PSS (shared
pages divided among the processes sharing them, so a forkserver's children
are not counted twice) and of RSS; the largest single process's exact peak
RSS comes from the rusage too.

The report (JSON) holds: ``wall`` (from start to the command's own exit, the
time a user waits), ``cpu`` (user + system of every process in the tree),
``cpu_main`` (the command's process alone, as wait4 gave it before),
``peak_pss_mb`` / ``peak_rss_sum_mb`` (tree sums, sampled), ``max_rss_mb``
(the largest process), ``processes`` (how many were seen) and ``commands``
(the first arguments of each one below the command), ``linger`` (how
long descendants outlived the command), ``returncode``. The wrapper's own
start-up and sampling are outside every figure. stdin, stdout and stderr are
the command's.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

INTERVAL = 0.02
LINGER = 15.0  # descendants still there this long after the command: killed
PR_SET_CHILD_SUBREAPER = 36


def _subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return False


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc/PID/task/TID/children."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in kB; (0, 0) once it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return pss, rss


def _name(pid: int) -> str:
    """A short name for a process: its first arguments."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in args[:4])[:120]


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    report, cmd = Path(argv[0]), argv[2:]
    reaper = _subreaper()
    me = os.getpid()
    seen: dict[int, str] = {}
    peak_pss = peak_rss = 0

    def sample() -> None:
        nonlocal peak_pss, peak_rss
        pids = descendants(me)
        for pid in pids:
            if pid not in seen:
                seen[pid] = _name(pid)
        pss = rss = 0
        for pid in pids:
            a, b = memory_kb(pid)
            pss, rss = pss + a, rss + b
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)

    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    main_status = None
    main_usage = None
    while main_status is None:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            main_status, main_usage = status, usage
            break
        time.sleep(INTERVAL)  # first, so the fork before exec isn't what is sampled
        sample()
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(main_status)
    # the orphans (re-parented here) and any child still running: wait for all
    deadline = time.perf_counter() + LINGER
    while True:
        try:
            pid, _, _ = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            continue
        if time.perf_counter() > deadline:
            for p in descendants(me):
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
            deadline = float("inf")
        sample()
        time.sleep(INTERVAL)
    linger = time.perf_counter() - start - wall
    tree = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert main_usage is not None
    out = {
        "wall": wall,
        "cpu": tree.ru_utime + tree.ru_stime,
        "cpu_main": main_usage.ru_utime + main_usage.ru_stime,
        "max_rss_mb": tree.ru_maxrss / 1024,
        "peak_pss_mb": peak_pss / 1024,
        "peak_rss_sum_mb": peak_rss / 1024,
        "processes": len(set(seen) | {proc.pid}),
        "commands": sorted({v for k, v in seen.items() if k != proc.pid}),
        "linger": linger,
        "subreaper": reaper,
        "returncode": proc.returncode,
    }
    report.write_text(json.dumps(out))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
