"""What an all-304 pass costs at start-up: ``aggregator update`` on unchanged
feeds starts no other process (the parse pool waits for a body to parse) and
never imports the parsing, extraction, summarising or publishing libraries,
nor the async libraries httpcore would pull in. Measured on the process tree
(bench/tree.py), against a real farm on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from bench.farm import Farm
from bench.harness import aggregator_cmd, bench_env, run_process, write_opml

HEAVY = ("feedparser", "sumy", "numpy", "lxml", "trafilatura", "jinja2", "nh3",
         "multiprocessing", "trio", "anyio", "click", "xml.sax", "tomllib", "difflib",
         # the stages a poll of 304s has nothing for: parsing, clustering (every
         # item has its story), summaries, publishing
         "aggregator.parse", "aggregator.stories", "aggregator.stages.cluster",
         "aggregator.stages.summaries", "aggregator.summarize", "aggregator.extract",
         "aggregator.publish")


def test_an_all_304_pass_starts_no_process_and_imports_nothing_heavy(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"  # the CLI, then a look at what it imported
    probe.write_text(
        "import sys, runpy\n"
        "sys.argv = ['aggregator', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('aggregator', run_name='__main__')\n"
        "except SystemExit as e:\n"
        f"    heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "    print('IMPORTED', ' '.join(heavy), file=sys.stderr)\n"
        "    raise\n")
    env = bench_env(workers=8, per_host=8, parse_processes=2)
    with Farm(feeds=45, items=2).serve() as farm:  # over PARSE_POOL_MIN_FEEDS
        opml = write_opml(tmp_path / "feeds.opml", farm.urls())
        cmd = aggregator_cmd(tmp_path / "a.db", opml, tmp_path / "out", "update", "--all",
                             "--no-articles", "--no-summaries", "--no-publish")
        cold = run_process(cmd, env=env, cwd=tmp_path)
        assert cold.returncode == 0, cold.stderr[-2000:]
        if len(os.sched_getaffinity(0)) >= 2:  # the pool only runs with two cores
            assert any("forkserver" in c for c in cold.commands), cold.commands
        warm = run_process([sys.executable, str(probe), *cmd[3:]], env=env, cwd=tmp_path)
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert "45 feeds polled: 0 new items" in warm.stdout + warm.stderr
    assert warm.processes == 1 and warm.commands == (), warm.commands
    imported = [ln.strip() for ln in warm.stderr.splitlines() if ln.startswith("IMPORTED")]
    assert imported == ["IMPORTED"], imported


def test_trio_and_click_stay_importable_after_httpx_loads_without_them() -> None:
    code = ("import sys, aggregator.fetch, httpx\n"
            "print('trio' in sys.modules, 'anyio' in sys.modules, 'click' in sys.modules)\n"
            "with httpx.Client() as c: pass\n"
            "import importlib.util\n"
            "for name in ('trio', 'anyio', 'click'):\n"
            "    if importlib.util.find_spec(name):\n"
            "        __import__(name)\n"
            "        assert name in sys.modules\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], env=bench_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "False", "ok"]
    assert importlib.util.find_spec("httpcore") is not None
