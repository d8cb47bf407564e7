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

    for heading in ("figure", "aggregator", "reader", "floor", "agg/reader", "target"):
        assert heading in proc.stdout
    data = json.loads(out.read_text())
    figures = {f["name"].strip(): f for f in data["figures"]}
    for name in ("cold ingest", "warm poll (all 304)", "incremental (+1 item/feed)",
                 "requests per feed per poll", "full pipeline cold",
                 "publish, 300 items in DB", "daemon peak RSS, 5 feeds",
                 "daemon idle CPU, 5 feeds"):
        assert name in figures, sorted(figures)
        assert figures[name]["aggregator"] is not None, name
    for name in ("cold ingest", "warm poll (all 304)", "incremental (+1 item/feed)"):
        assert figures[name]["reader"] > 0 and figures[name]["floor"] > 0
        assert figures[name]["ratio_reader"] is not None

    # the same work by every contestant: 15 items, then one more per feed
    samples = data["raw"]["ingest"]["samples"]
    for tool in ("aggregator", "reader"):
        by_phase = {s["phase"]: s for s in samples if s["tool"] == tool}
        assert by_phase["cold"]["entries"] == 15
        assert by_phase["incremental"]["entries"] == 20
        assert by_phase["warm"]["conditional"] == 5  # validators were sent back
    # the aggregator's polite-client promise, counted by the farm
    assert figures["requests per feed per poll"]["aggregator"] == 1
    assert figures["requests per feed per poll"]["met"] is True

    pipeline = data["raw"]["pipeline"]["runs"][0]
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
