"""The aggregator's benchmarks, one entry point (``make bench``):

    python -m bench                     # the full run: 200 x 30 feeds, 5 repeats, ...
    python -m bench --tiny              # 5 x 3 feeds, 1 repeat: checks the bench runs
    python -m bench --only ingest,publish --repeats 3

Starts a local feed farm (bench/farm.py) in a process of its own, then:

    ingest    cold / warm / incremental polls by the aggregator, lemon24/reader,
              a minimal script (httpx + feedparser) and the floor (a client that
              only downloads the bodies), taking turns (bench/compare.py). The
              "cold ingest" row is the aggregator's --no-stories pass (reader
              clusters no stories: like for like); "cold ingest + stories" is
              the pass as a user runs it, a row of its own with no reader target
    novalidators  the warm poll again, against a server that sends no validators
    pipeline  ``aggregator update --all`` from scratch: feeds, article pages,
              summaries, stories, publishing; items per second
    clustering  the stories stage's speed (bench/stories.py owns it)
    publish   ``publish_now`` with 100,000 items in the database (bench/publishing.py)
    daemon    ``aggregator run`` on 1000 feeds: peak RSS, CPU while idle
              (bench/daemon_probe.py)

Every command is measured as a whole process tree (bench/tree.py): wall time,
CPU time and peak memory of the command and every process under it (the
aggregator's parse pool included). ingest, novalidators and pipeline run in two
settings, each reported: ``equal`` (the aggregator at reader's concurrency:
8 workers, 8 per host, the farm on one host) and ``defaults`` (the shipped
8 workers, 2 per host, the farm's feeds spread over 100 loopback hosts).

Prints the medians, the ratios to reader and to the floor and the targets with
PASS / MISS as a table, and writes it all to bench/results/bench.json.
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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.harness import FarmProcess, load_average, median

RESULTS = Path(__file__).resolve().parent / "results" / "bench.json"
PARTS = ("ingest", "novalidators", "pipeline", "clustering", "publish", "daemon")
SETTINGS = ("equal", "defaults")


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
    minimal: float | None = None

    @property
    def ratio_reader(self) -> float | None:
        return _ratio(self.aggregator, self.reader)

    @property
    def ratio_floor(self) -> float | None:
        return _ratio(self.aggregator, self.floor)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "aggregator": _r(self.aggregator),
                "reader": _r(self.reader), "minimal": _r(self.minimal),
                "floor": _r(self.floor), "ratio_reader": _r(self.ratio_reader),
                "ratio_floor": _r(self.ratio_floor), "target": self.target,
                "met": self.met, "verdict": _verdict(self.met), "note": self.note}


def _verdict(met: bool | None) -> str:
    return "-" if met is None else "PASS" if met else "MISS"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 1000 else f"{x:.0f}"


def table(figures: Sequence[Figure]) -> str:
    head = ("figure", "unit", "aggregator", "reader", "minimal", "floor", "agg/reader",
            "agg/floor", "target", "met")
    rows = [head]
    for f in figures:
        rows.append((f.name, f.unit, _fmt(f.aggregator), _fmt(f.reader), _fmt(f.minimal),
                     _fmt(f.floor), _fmt(f.ratio_reader, 2), _fmt(f.ratio_floor, 2),
                     f.target, _verdict(f.met)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- the parts ------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> list[Any]:
    from bench.compare import settings

    table = settings(args.workers, args.hosts)
    return [table[name] for name in args.settings]


def _tag(setting: Any) -> str:
    return f"[{setting.name}: {setting.workers}/{setting.per_host}, {setting.hosts}h]"


def run_ingest(args: argparse.Namespace, work: Path, say: Callable[[str], None],
               ) -> tuple[list[Figure], dict[str, Any]]:
    figures: list[Figure] = []
    raw: dict[str, Any] = {"feeds": args.feeds, "items": args.items, "repeats": args.repeats,
                           "workers": args.workers, "latency": args.latency}
    for i, setting in enumerate(_settings(args)):
        say(f"ingest, {setting.name}: {setting.label}")
        figs, data = _ingest_one(args, work / f"ingest-{setting.name}", say, setting,
                                 startup=i == 0)
        figures += figs
        raw[setting.name] = {"setting": setting.label, **data}
    return figures, raw


def _ingest_one(args: argparse.Namespace, work: Path, say: Callable[[str], None],
                setting: Any, *, startup: bool) -> tuple[list[Figure], dict[str, Any]]:
    from bench.compare import TOOLS, Ingest

    with FarmProcess(args.feeds, args.items, latency=args.latency, window=args.items,
                     hosts=setting.hosts) as farm:
        ingest = Ingest(farm, work, workers=setting.workers, per_host=setting.per_host)
        phases = ("startup", "cold", "warm", "incremental") if startup else \
            ("cold", "warm", "incremental")
        for r in range(args.repeats):
            say(f"  repeat {r + 1}/{args.repeats}")
            ingest.repeat(r, lambda m: say("    " + m), phases=phases)

    def med(tool: str, phase: str, attr: str = "wall") -> float | None:
        return median([getattr(s.run, attr) for s in ingest.of(tool, phase)])

    def row(name: str, unit: str, phase: str, attr: str = "wall", *, stories: bool = False,
            **kw: Any) -> Figure:
        """A figure for every contestant; the aggregator's cold one is its
        --no-stories run (like for like with reader) unless ``stories``."""
        v = {t: med(t, phase, attr) for t in TOOLS}
        if phase == "cold" and not stories:
            v["aggregator"] = med("aggregator-nostories", phase, attr)
        return Figure(name, unit, v["aggregator"], v["reader"], v["floor"],
                      minimal=v["minimal"], **kw)

    tag = _tag(setting)
    # like for like: reader clusters no stories, so the row set beside it is
    # the cold pass with --no-stories (fetch, parse, store, search index)
    cold, warm = row("x", "s", "cold"), row("x", "s", "warm")
    with_stories = row("x", "s", "cold", stories=True)
    figures = [
        replace(cold, name=f"cold ingest {tag}", target="<= 0.5x reader",
                met=_le(cold.ratio_reader, 0.5),
                note="update --all --no-articles --no-summaries --no-publish --no-stories: "
                     "the work reader does too (fetch, parse, store, search index)"),
        replace(with_stories, name=f"cold ingest + stories {tag}",
                target="none (reader has no stories)",
                note="the same cold pass with the stories stage, as a user runs it; "
                     "reader clusters nothing, so no target against it"),
        replace(warm, name=f"warm poll, all 304 {tag}", target="<= 0.5x reader",
                met=_le(warm.ratio_reader, 0.5),
                note="a whole process: start-up and imports count"),
        row(f"incremental, +1 item/feed {tag}", "s", "incremental", target="none set"),
    ]
    if startup:
        figures.append(row("  start-up (imports only)", "s", "startup",
                           note="a process that only imports what the contestant needs; "
                                f"python -c pass: {_fmt(med('python', 'startup'))} s wall, "
                                f"{_fmt(med('python', 'startup', 'cpu'))} s CPU"))
    phases = ("cold", "warm", "incremental")
    for phase in phases:
        figures.append(row(f"  {phase}: CPU, all processes {tag}", "s", phase, "cpu",
                           note="user + system of the whole process tree, the parse pool "
                                "and its forkserver included (bench/tree.py)"
                           if phase == "cold" else ""))
    figures.append(row(f"  cold: CPU, main process only {tag}", "s", "cold", "cpu_main",
                       note="what wait4 on the command alone reports (the old figure)"))
    figures.append(row(f"  cold + stories: CPU, all processes {tag}", "s", "cold", "cpu",
                       stories=True))
    for phase in phases:
        figures.append(row(f"  {phase}: peak memory, all processes {tag}", "MB", phase,
                           "peak_mb",
                           note="sum of PSS over the process tree, sampled every 20 ms"
                           if phase == "cold" else ""))
    for phase in ("cold", "warm"):
        v = {t: median([s.traffic["farm_cpu"] for s in ingest.of(t, phase)]) for t in TOOLS}
        figures.append(Figure(f"  {phase}: the farm's CPU serving it {tag}", "s",
                              v["aggregator"], v["reader"], v["floor"], minimal=v["minimal"],
                              note="the farm process's CPU during each run: the cost of "
                                   "serving, outside every contestant's figures"
                              if phase == "cold" else ""))
    polls = {t: ingest.of(t, "warm") + ingest.of(t, "incremental") for t in TOOLS}
    per_feed = {t: max((s.traffic["max_per_feed"] for s in polls[t]), default=None)
                for t in TOOLS}
    all_one = all(s.traffic["requests"] == s.traffic["feeds"] == args.feeds
                  and s.traffic["conditional"] == args.feeds for s in polls["aggregator"])
    figures.append(Figure(f"requests per feed per poll {tag}", "max", per_feed["aggregator"],
                          per_feed["reader"], per_feed["floor"], "1, conditional", all_one,
                          "warm + incremental polls; every one conditional"
                          if all_one else "NOT all conditional", minimal=per_feed["minimal"]))
    return figures, {"samples": [{"tool": s.tool, "phase": s.phase, **s.as_dict()}
                                 for s in ingest.samples]}


def run_novalidators(args: argparse.Namespace, work: Path, say: Callable[[str], None],
                     ) -> tuple[list[Figure], dict[str, Any]]:
    """A server that sends no ETag / Last-Modified: every poll is a full
    download; the aggregator skips parsing a body identical to the last one."""
    from bench.compare import TOOLS, Ingest

    repeats = max(1, min(args.repeats, 3))
    figures: list[Figure] = []
    raw: dict[str, Any] = {"repeats": repeats}
    for setting in _settings(args):
        with FarmProcess(args.feeds, args.items, latency=args.latency, validators=False,
                         window=args.items, hosts=setting.hosts) as farm:
            ingest = Ingest(farm, work / f"novalidators-{setting.name}",
                            workers=setting.workers, per_host=setting.per_host,
                            no_stories=False)
            for r in range(repeats):
                say(f"no validators, {setting.name}: repeat {r + 1}/{repeats}")
                ingest.repeat(r, lambda m: say("  " + m), phases=("cold", "warm"),
                              validators=False)
        v = {t: median([s.run.wall for s in ingest.of(t, "warm")]) for t in TOOLS}
        cpu = {t: median([s.run.cpu for s in ingest.of(t, "warm")]) for t in TOOLS}
        tag = _tag(setting)
        figures += [Figure(f"warm poll, no validators (200s) {tag}", "s", v["aggregator"],
                           v["reader"], v["floor"], minimal=v["minimal"],
                           note="the server sends no validators: every feed downloaded "
                                "again, unchanged"),
                    Figure(f"  CPU, all processes {tag}", "s", cpu["aggregator"],
                           cpu["reader"], cpu["floor"], minimal=cpu["minimal"])]
        raw[setting.name] = {"setting": setting.label,
                             "samples": [{"tool": s.tool, "phase": s.phase, **s.as_dict()}
                                         for s in ingest.samples]}
    return figures, raw


PIPELINE_TARGET = 150.0  # items/s with article pages, on a 2-core machine


def run_pipeline(args: argparse.Namespace, work: Path, say: Callable[[str], None],
                 ) -> tuple[list[Figure], dict[str, Any]]:
    from bench.compare import pipeline

    figures: list[Figure] = []
    raw: dict[str, Any] = {"feeds": args.pipeline_feeds}
    for setting in _settings(args):
        say(f"pipeline, {setting.name}: {setting.label}")
        with FarmProcess(args.pipeline_feeds, args.items, latency=args.latency,
                         window=args.items, hosts=setting.hosts) as farm:
            runs = pipeline(farm, work / f"pipeline-{setting.name}", args.pipeline_feeds,
                            args.pipeline_repeats, setting.workers,
                            progress=lambda m: say("  " + m), per_host=setting.per_host)
        rate = median([r.items_per_s for r in runs])
        tag = _tag(setting)
        figures += [
            Figure(f"full pipeline cold {tag}", "items/s", rate,
                   target=f">= {PIPELINE_TARGET:g}", met=_ge(rate, PIPELINE_TARGET),
                   note=f"{runs[0].items} items: feeds + article pages + extraction + "
                        "summaries + stories + publish"),
            Figure(f"  CPU, all processes {tag}", "s", median([r.run.cpu for r in runs])),
            Figure(f"  peak memory, all processes {tag}", "MB",
                   median([r.run.peak_mb for r in runs])),
        ]
        raw[setting.name] = {"setting": setting.label, "runs": [r.as_dict() for r in runs]}
    return figures, raw


STORIES_RESULTS = Path(__file__).resolve().parent / "results" / "stories.json"


def run_clustering(args: argparse.Namespace, work: Path, say: Callable[[str], None],
                   ) -> tuple[list[Figure], dict[str, Any]]:
    """The clustering stage's speed. bench/stories.py owns this figure (on ECB+
    and UCI News, with quality); here it is read back from its last results
    file, and measured on the farm's items when bench.stories exposes
    ``stage_speed``. A placeholder row says so when neither is there."""
    figures: list[Figure] = []
    raw: dict[str, Any] = {}
    if STORIES_RESULTS.exists():
        data = json.loads(STORIES_RESULTS.read_text())
        rows = [r for r in data.get("results", []) if r.get("half") == "all"]
        for r in rows:
            rate = r.get("stage_warm_items_per_s")
            figures.append(Figure(f"clustering stage, {r.get('set')} ({r.get('items')} items)",
                                  "items/s", rate, target="see bench/stories.py",
                                  note=f"from {STORIES_RESULTS.name} of {data.get('when')} "
                                       "(python -m bench.stories): warm stage, alone"))
        raw["stories_json"] = rows
    try:
        from bench.stories import stage_speed
    except ImportError:
        stage_speed = None
    if stage_speed is not None:
        from bench.compare import Ingest

        with FarmProcess(args.pipeline_feeds, args.items, window=args.items) as farm:
            ingest = Ingest(farm, work / "clustering", workers=args.workers, no_stories=False)
            ingest.reset("aggregator")
            ingest.run("aggregator", "cold")
        speed = stage_speed(ingest.path["aggregator"])
        say(f"  clustering on the farm's items: {speed}")
        rate = speed.get("stage_warm_items_per_s")
        figures.append(Figure(f"clustering stage, farm items ({farm.feeds * farm.items})",
                              "items/s", rate, target="see bench/stories.py",
                              note="bench.stories.stage_speed on the cold-ingest database"))
        raw["farm"] = speed
    if not figures:
        figures.append(Figure("clustering stage (placeholder)", "items/s", None,
                              target="see bench/stories.py",
                              note="no bench/results/stories.json and no "
                                   "bench.stories.stage_speed: run python -m bench.stories"))
    return figures, raw


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
           "pipeline": run_pipeline, "clustering": run_clustering, "publish": run_publish,
           "daemon": run_daemon}


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
    p.add_argument("--workers", type=int, default=8, help="concurrent fetches, every tool")
    p.add_argument("--hosts", type=int, default=100,
                   help="loopback hosts the farm spreads its feeds over in the 'defaults' "
                        "setting (127.0.0.2 ...; at most 250)")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help="comma-separated: equal (per_host = workers, one host; reader's "
                        "concurrency), defaults (per_host 2, many hosts)")
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
    args.feeds, args.items, args.repeats, args.hosts = 5, 3, 1, 3
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
    args.settings = [x.strip() for x in args.settings.split(",") if x.strip()]
    if not args.settings or set(args.settings) - set(SETTINGS):
        print(f"bench: --settings takes {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    if args.tiny:
        tiny(args)
    # a partial run never overwrites the full table
    partial = args.tiny or set(parts) != set(PARTS) or set(args.settings) != set(SETTINGS)
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
    notes: dict[str, str] = {}  # one line per note, under its first figure's name
    for f in figures:
        if f.note:
            notes.setdefault(f.note, f"{f.name.split(' [')[0].strip()}: {f.note}")
    notes_lines = list(notes.values())
    if notes_lines:
        print("\n" + "\n".join(notes_lines))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "figures": [f.as_dict() for f in figures],
                                   "table": text.splitlines(), "raw": raw}, indent=1) + "\n")
        print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
