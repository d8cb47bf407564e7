"""The aggregator's benchmarks, one entry point (``make bench``):

    python -m bench                     # the full run: 200 x 30 feeds, 5 repeats, ...
    python -m bench --tiny              # 5 x 3 feeds, 1 repeat: checks the bench runs
    python -m bench --only ingest,publish --repeats 3

Starts a local feed farm (bench/farm.py) in a process of its own, then:

    ingest    cold / warm / incremental polls by the aggregator, lemon24/reader
              and a bare httpx + feedparser script (the floor), taking turns,
              each timed as a whole process (bench/compare.py)
    novalidators  the warm poll again, against a server that sends no validators
    pipeline  ``aggregator update --all`` from scratch: feeds, article pages,
              summaries, publishing; items per second
    publish   ``publish_now`` with 100,000 items in the database (bench/publishing.py)
    daemon    ``aggregator run`` on 1000 feeds: peak RSS, CPU while idle
              (bench/daemon_probe.py)

Prints the medians, the ratios to reader and to the floor and the targets as a
table, and writes it all to bench/results/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.harness import FarmProcess, load_average, median

RESULTS = Path(__file__).resolve().parent / "results" / "bench.json"
PARTS = ("ingest", "novalidators", "pipeline", "publish", "daemon")


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    aggregator: float | None
    reader: float | None = None
    floor: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio_reader(self) -> float | None:
        return _ratio(self.aggregator, self.reader)

    @property
    def ratio_floor(self) -> float | None:
        return _ratio(self.aggregator, self.floor)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "aggregator": _r(self.aggregator),
                "reader": _r(self.reader), "floor": _r(self.floor),
                "ratio_reader": _r(self.ratio_reader), "ratio_floor": _r(self.ratio_floor),
                "target": self.target, "met": self.met, "note": self.note}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 1000 else f"{x:.0f}"


def table(figures: Sequence[Figure]) -> str:
    head = ("figure", "unit", "aggregator", "reader", "floor", "agg/reader", "agg/floor",
            "target", "met")
    rows = [head]
    for f in figures:
        met = "-" if f.met is None else "yes" if f.met else "NO"
        rows.append((f.name, f.unit, _fmt(f.aggregator), _fmt(f.reader), _fmt(f.floor),
                     _fmt(f.ratio_reader, 2), _fmt(f.ratio_floor, 2), f.target, met))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- the parts ------------------------------------------------------------------------


def run_ingest(args: argparse.Namespace, work: Path, say: Callable[[str], None],
               ) -> tuple[list[Figure], dict[str, Any]]:
    from bench.compare import TOOLS, Ingest

    with FarmProcess(args.feeds, args.items, latency=args.latency,
                     window=args.items) as farm:
        ingest = Ingest(farm, work / "ingest", workers=args.workers)
        for r in range(args.repeats):
            say(f"ingest: repeat {r + 1}/{args.repeats}")
            ingest.repeat(r, lambda m: say("  " + m))

    def med(tool: str, phase: str, attr: str = "wall") -> float | None:
        return median([getattr(s.run, attr) for s in ingest.of(tool, phase)])

    cold = {t: med(t, "cold") for t in TOOLS}
    warm = {t: med(t, "warm") for t in TOOLS}
    inc = {t: med(t, "incremental") for t in TOOLS}
    figures = [
        Figure("cold ingest", "s", cold["aggregator"], cold["reader"], cold["floor"],
               "<= 0.6x reader",
               _le(_ratio(cold["aggregator"], cold["reader"]), 0.6)),
        Figure("warm poll (all 304)", "s", warm["aggregator"], warm["reader"], warm["floor"],
               "<= 0.5x reader, <= 1.3x floor",
               _both(_le(_ratio(warm["aggregator"], warm["reader"]), 0.5),
                     _le(_ratio(warm["aggregator"], warm["floor"]), 1.3))),
        Figure("incremental (+1 item/feed)", "s", inc["aggregator"], inc["reader"],
               inc["floor"]),
    ]
    start = {t: med(t, "startup") for t in TOOLS}
    figures.append(Figure("  start-up (imports only)", "s", start["aggregator"],
                          start["reader"], start["floor"],
                          note="a process that only imports what the contestant needs"))
    phases = ("cold", "warm", "incremental")
    for phase in phases:
        cpu = {t: med(t, phase, "cpu") for t in TOOLS}
        figures.append(Figure(f"  {phase}: CPU time", "s", cpu["aggregator"], cpu["reader"],
                              cpu["floor"],
                              note="user + system of the process and the children it "
                                   "waited for (wait4)" if phase == "cold" else ""))
    for phase in phases:
        rss = {t: med(t, phase, "max_rss_mb") for t in TOOLS}
        figures.append(Figure(f"  {phase}: peak RSS", "MB", rss["aggregator"], rss["reader"],
                              rss["floor"]))
    polls = {t: ingest.of(t, "warm") + ingest.of(t, "incremental") for t in TOOLS}
    per_feed = {t: max((s.traffic["max_per_feed"] for s in polls[t]), default=None)
                for t in TOOLS}
    all_one = all(s.traffic["requests"] == s.traffic["feeds"] == args.feeds
                  and s.traffic["conditional"] == args.feeds for s in polls["aggregator"])
    figures.append(Figure("requests per feed per poll", "max", per_feed["aggregator"],
                          per_feed["reader"], per_feed["floor"], "1, conditional", all_one,
                          "warm + incremental polls; every one conditional"
                          if all_one else "NOT all conditional"))
    raw = {"feeds": args.feeds, "items": args.items, "repeats": args.repeats,
           "workers": args.workers, "latency": args.latency,
           "samples": [{"tool": s.tool, "phase": s.phase, **s.as_dict()}
                       for s in ingest.samples]}
    return figures, raw


def run_novalidators(args: argparse.Namespace, work: Path, say: Callable[[str], None],
                     ) -> tuple[list[Figure], dict[str, Any]]:
    """A server that sends no ETag / Last-Modified: every poll is a full
    download; the aggregator skips parsing a body identical to the last one."""
    from bench.compare import TOOLS, Ingest

    repeats = max(1, min(args.repeats, 3))
    with FarmProcess(args.feeds, args.items, latency=args.latency, validators=False,
                     window=args.items) as farm:
        ingest = Ingest(farm, work / "novalidators", workers=args.workers)
        for r in range(repeats):
            say(f"no validators: repeat {r + 1}/{repeats}")
            ingest.repeat(r, lambda m: say("  " + m), phases=("cold", "warm"),
                          validators=False)
    warm = {t: median([s.run.wall for s in ingest.of(t, "warm")]) for t in TOOLS}
    cpu = {t: median([s.run.cpu for s in ingest.of(t, "warm")]) for t in TOOLS}
    figures = [Figure("warm poll, no validators (200s)", "s", warm["aggregator"],
                      warm["reader"], warm["floor"],
                      note="the server sends no validators: every feed downloaded again, "
                           "unchanged"),
               Figure("  CPU time", "s", cpu["aggregator"], cpu["reader"], cpu["floor"])]
    return figures, {"repeats": repeats,
                     "samples": [{"tool": s.tool, "phase": s.phase, **s.as_dict()}
                                 for s in ingest.samples]}


def run_pipeline(args: argparse.Namespace, work: Path, say: Callable[[str], None],
                 ) -> tuple[list[Figure], dict[str, Any]]:
    from bench.compare import pipeline

    with FarmProcess(args.pipeline_feeds, args.items, latency=args.latency,
                     window=args.items) as farm:
        runs = pipeline(farm, work / "pipeline", args.pipeline_feeds, args.pipeline_repeats,
                        args.workers, progress=lambda m: say("  " + m))
    rate = median([r.items_per_s for r in runs])
    fig = Figure("full pipeline cold", "items/s", rate, target=">= 80",
                 met=_ge(rate, 80),
                 note=f"{runs[0].items} items: feeds + article pages + summaries + publish")
    return [fig], {"feeds": args.pipeline_feeds, "runs": [r.as_dict() for r in runs]}


def run_publish(args: argparse.Namespace, work: Path, say: Callable[[str], None],
                ) -> tuple[list[Figure], dict[str, Any]]:
    from bench.publishing import measure

    res = measure(work / "publish", args.publish_items, args.publish_repeats)
    say(f"  publish: {res['median']:.3f} s median ({res['reads_median']:.3f} s of queries)")
    label = f"publish, {args.publish_items:,} items in DB"
    return [Figure(label, "s", res["median"], target="< 0.5", met=_lt(res["median"], 0.5),
                   note=f"of which database reads {res['reads_median']:.3f} s")], res


def run_daemon(args: argparse.Namespace, work: Path, say: Callable[[str], None],
               ) -> tuple[list[Figure], dict[str, Any]]:
    from bench.daemon_probe import probe

    with FarmProcess(args.daemon_feeds, args.items, latency=args.latency,
                     window=args.items) as farm:
        res = probe(farm, work / "daemon", busy_window=args.daemon_busy,
                    idle_window=args.daemon_idle, workers=args.workers,
                    progress=lambda m: say("  " + m))
    n = args.daemon_feeds
    return [
        Figure(f"daemon peak RSS, {n} feeds", "MB", res["peak_rss_mb"], target="< 150",
               met=_lt(res["peak_rss_mb"], 150),
               note=f"first pass {res['first_pass_s']} s, then {args.daemon_busy:g} s of "
                    f"summaries; with child processes {res['peak_rss_with_children_mb']} MB"),
        Figure(f"daemon idle CPU, {n} feeds", "%", res["idle_cpu_percent"], target="< 1",
               met=_lt(res["idle_cpu_percent"], 1.0),
               note=f"over {res['idle_window_s']} s between polls"),
    ], res


def _le(x: float | None, limit: float) -> bool | None:
    return None if x is None else x <= limit


def _lt(x: float | None, limit: float) -> bool | None:
    return None if x is None else x < limit


def _ge(x: float | None, limit: float) -> bool | None:
    return None if x is None else x >= limit


def _both(a: bool | None, b: bool | None) -> bool | None:
    return None if a is None or b is None else a and b


RUNNERS = {"ingest": run_ingest, "novalidators": run_novalidators,
           "pipeline": run_pipeline, "publish": run_publish, "daemon": run_daemon}


# --- the command ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true",
                   help="5 feeds x 3 items, 1 repeat, tiny publish and daemon runs; "
                        "not timed, only checks that every part still runs")
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts to run (default: {','.join(PARTS)})")
    p.add_argument("--feeds", type=int, default=200)
    p.add_argument("--items", type=int, default=30, help="items per feed")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workers", type=int, default=8, help="concurrent fetches, both tools")
    p.add_argument("--latency", type=float, default=0.0, help="farm latency per request (s)")
    p.add_argument("--pipeline-feeds", type=int, default=100)
    p.add_argument("--pipeline-repeats", type=int, default=3)
    p.add_argument("--publish-items", type=int, default=100_000)
    p.add_argument("--publish-repeats", type=int, default=5)
    p.add_argument("--daemon-feeds", type=int, default=1000)
    p.add_argument("--daemon-busy", type=float, default=60.0,
                   help="seconds the busy daemon runs on after its first pass")
    p.add_argument("--daemon-idle", type=float, default=65.0,
                   help="seconds of idle CPU measurement")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON results file (default bench/results/bench.json; "
                        "none with --tiny or --only)")
    p.add_argument("--work", type=Path, default=None,
                   help="scratch directory (default: a temporary one, removed after)")
    return p


def tiny(args: argparse.Namespace) -> None:
    args.feeds, args.items, args.repeats = 5, 3, 1
    args.pipeline_feeds, args.pipeline_repeats = 5, 1
    args.publish_items, args.publish_repeats = 300, 1
    args.daemon_feeds, args.daemon_busy, args.daemon_idle = 5, 1.0, 2.0


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("aggregator", "reader", "feedparser", "httpx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"bench: unknown part(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.tiny:
        tiny(args)
    # a partial run never overwrites the full table
    partial = args.tiny or set(args.only.split(",")) != set(PARTS)
    out = args.out if args.out is not None else (None if partial else RESULTS)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    work = args.work or Path(tempfile.mkdtemp(prefix="aggregator-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load_before = load_average()
    figures: list[Figure] = []
    raw: dict[str, Any] = {}
    try:
        for part in parts:
            say(f"== {part}")
            figs, data = RUNNERS[part](args, work, say)
            figures += figs
            raw[part] = data
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    meta = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "tiny": args.tiny, "cpus": os.cpu_count(), "machine": platform.machine(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_average()],
        "seconds": round(time.monotonic() - started, 1), "versions": _versions(),
    }
    text = table(figures)
    print(f"aggregator bench: {args.feeds} feeds x {args.items} items, {args.repeats} "
          f"repeats, {args.workers} workers; load {meta['load_before'][0]:.2f} -> "
          f"{meta['load_after'][0]:.2f}; {meta['seconds']} s")
    print(text)
    notes = [f"{f.name.strip()}: {f.note}" for f in figures if f.note]
    if notes:
        print("\n" + "\n".join(notes))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "figures": [f.as_dict() for f in figures],
                                   "table": text.splitlines(), "raw": raw}, indent=1) + "\n")
        print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
