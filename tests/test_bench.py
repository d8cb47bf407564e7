"""The benchmarks can't rot: ``python -m bench --tiny`` runs every part end to
end (farm in its own process, aggregator, reader, the floor script, the full
pipeline, publishing, the daemon) on 5 feeds x 3 items and writes its table.
Nothing here is timed: the figures only have to exist and the work be done."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def run_bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=PROJECT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_tiny_bench_runs_every_part_and_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_bench("--tiny", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]

    for heading in ("figure", "aggregator", "reader", "minimal", "floor", "agg/reader",
                    "target", "met"):
        assert heading in proc.stdout
    data = json.loads(out.read_text())
    figures = {f["name"].strip(): f for f in data["figures"]}
    equal, defaults = "[equal: 8/8, 1h]", "[defaults: 8/2, 3h]"
    for tag in (equal, defaults):  # every run reported in both settings
        for name in ("cold ingest", "warm poll, all 304", "incremental, +1 item/feed",
                     "requests per feed per poll", "full pipeline cold",
                     "cold: CPU, all processes", "cold: peak memory, all processes"):
            assert f"{name} {tag}" in figures, sorted(figures)
            assert figures[f"{name} {tag}"]["aggregator"] is not None, name
        for name in ("cold ingest", "warm poll, all 304", "incremental, +1 item/feed"):
            f = figures[f"{name} {tag}"]
            assert f["reader"] > 0 and f["minimal"] > 0 and f["floor"] > 0, f
            assert f["ratio_reader"] is not None
        # each target beside its figure, with an honest verdict
        for name, target in (("cold ingest", "<= 0.5x reader"),
                             ("warm poll, all 304", "<= 0.5x reader")):
            f = figures[f"{name} {tag}"]
            assert f["target"] == target
            assert f["verdict"] == ("PASS" if f["ratio_reader"] <= 0.5 else "MISS")
        # like for like: the row set beside reader is the --no-stories pass; the
        # pass with the stories stage is a row of its own, with no reader target
        cold = figures[f"cold ingest {tag}"]
        with_stories = figures[f"cold ingest + stories {tag}"]
        assert "--no-stories" in cold["note"]
        assert with_stories["aggregator"] > 0 and with_stories["met"] is None
        assert with_stories["target"] == "none (reader has no stories)"
        assert with_stories["verdict"] == "-"
        pipe = figures[f"full pipeline cold {tag}"]
        assert pipe["target"] == ">= 150"
        assert pipe["verdict"] == ("PASS" if pipe["aggregator"] >= 150 else "MISS")
    for name in ("publish, 300 items in DB", "daemon peak RSS, 5 feeds",
                 "daemon idle CPU, 5 feeds"):
        assert name in figures, sorted(figures)
        assert figures[name]["aggregator"] is not None, name
    assert any(name.startswith("clustering stage") for name in figures), sorted(figures)
    for verdict in ("PASS", "MISS"):  # printed beside the targets
        if any(f["verdict"] == verdict for f in figures.values()):
            assert verdict in proc.stdout

    ingest = data["raw"]["ingest"]
    assert ingest["equal"]["setting"] == "8 workers, 8 per host, 1 host"
    assert ingest["defaults"]["setting"] == "8 workers, 2 per host, 3 hosts"
    for setting in ("equal", "defaults"):
        samples = ingest[setting]["samples"]
        # the same work by every contestant: 15 items, then one more per feed
        for tool in ("aggregator", "reader"):
            by_phase = {s["phase"]: s for s in samples if s["tool"] == tool}
            assert by_phase["cold"]["entries"] == 15
            assert by_phase["incremental"]["entries"] == 20
            assert by_phase["warm"]["conditional"] == 5  # validators were sent back
        floor = {s["phase"]: s for s in samples if s["tool"] == "floor"}
        assert floor["cold"]["requests"] == floor["cold"]["feeds"] == 5
        assert floor["warm"]["conditional"] == 5
        for s in samples:  # measured as a process tree, the farm's serving beside it
            if s["phase"] != "startup":
                assert s["processes"] >= 1 and s["peak_mb"] > 0 and s["cpu"] > 0, s
                assert s["cpu"] >= s["cpu_main"] and s["farm_cpu"] >= 0, s
        nostories = [s for s in samples if s["tool"] == "aggregator-nostories"]
        assert nostories and nostories[0]["entries"] == 15
        # the cold ingest row is that run's wall time (one repeat: its median)
        tag = {"equal": equal, "defaults": defaults}[setting]
        assert figures[f"cold ingest {tag}"]["aggregator"] == round(nostories[0]["wall"], 4)
        stories = [s for s in samples if s["tool"] == "aggregator" and s["phase"] == "cold"]
        assert figures[f"cold ingest + stories {tag}"]["aggregator"] == \
            round(stories[0]["wall"], 4)
    # the aggregator's polite-client promise, counted by the farm
    assert figures[f"requests per feed per poll {equal}"]["aggregator"] == 1
    assert figures[f"requests per feed per poll {defaults}"]["met"] is True
    assert "python -c pass" in figures["start-up (imports only)"]["note"]

    for setting in ("equal", "defaults"):
        pipeline = data["raw"]["pipeline"][setting]["runs"][0]
        assert pipeline["items"] == pipeline["summarised"] == 15
        assert pipeline["article_requests"] == 15
    assert data["raw"]["publish"]["items"] == 300 and data["raw"]["publish"]["files"] > 0
    daemon = data["raw"]["daemon"]
    assert daemon["exit_code"] == 0 and daemon["idle_exit_code"] == 0
    assert daemon["items"] == 15 and daemon["idle_requests"] == 0


def test_bench_refuses_an_unknown_part() -> None:
    proc = run_bench("--only", "ingest,nonsense", timeout=60)
    assert proc.returncode == 2
    assert "unknown part(s): nonsense" in proc.stderr
    proc = run_bench("--settings", "equal,fast", timeout=60)
    assert proc.returncode == 2
    assert "--settings takes equal, defaults" in proc.stderr


def test_tree_counts_the_cpu_of_a_forkserver_pool(tmp_path: Path) -> None:
    """The parse pool's case: workers forked by a forkserver the command never
    waits for. wait4 on the command alone misses their CPU; bench.tree doesn't."""
    from bench.harness import run_process

    script = tmp_path / "pool.py"
    script.write_text(
        "import multiprocessing as mp\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(2, mp_context=mp.get_context('forkserver'))\n"
        "    print(sum(pool.map(sum, [range(3_000_000)] * 4)))\n"
        "    pool.shutdown(wait=False)\n")
    run = run_process([sys.executable, str(script)], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(4 * sum(range(3_000_000)))
    assert run.processes >= 4  # the command, the forkserver, two workers
    assert any("forkserver" in c for c in run.commands), run.commands
    # the sums ran in the workers: most of the tree's CPU is not the command's
    assert run.cpu > 2 * run.cpu_main, run
    assert run.peak_mb > 0 and run.rss_sum_mb >= run.max_rss_mb > 0


def test_farm_spreads_feeds_over_loopback_hosts() -> None:
    """Each host its own listening socket on one port; article links stay on
    the feed's host (its trusted origin)."""
    import urllib.request

    from bench.farm import Farm

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with Farm(feeds=6, items=2, hosts=3).serve() as farm:
        urls = farm.urls()
        hosts = [u.split("/")[2].split(":")[0] for u in urls]
        assert hosts == ["127.0.0.2", "127.0.0.3", "127.0.0.4"] * 2
        assert len({u.split("/")[2].split(":")[1] for u in urls}) == 1
        for i, url in enumerate(urls):
            with opener.open(url, timeout=10) as resp:
                body = resp.read().decode()
            assert f"Farm feed {i}" in body
            assert f"<link>http://{hosts[i]}:{farm.port}/article/{i}/" in body
        with opener.open(f"{farm.base}/farm.opml", timeout=10) as resp:
            assert urls[5] in resp.read().decode()
        counted = farm.stats()["requests"]
        assert {p: n for p, n in counted.items() if p.startswith("/feed/")} == {
            f"/feed/{i}.xml": 1 for i in range(6)}

