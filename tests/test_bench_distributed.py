"""bench.distributed can't rot: a tiny farm worked off the four ways (update --all, the
embedded daemon, coordinator + 1 and + 2 workers on a real redis-server), every item
stored and summarised, every figure present. Nothing here is timed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def run_bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.distributed", *args], cwd=PROJECT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None,
                    reason="redis-server absent (Debian package redis-server, from .ci/run)")
def test_smoke_run_works_off_the_farm_every_way(tmp_path: Path) -> None:
    out = tmp_path / "distributed.json"
    proc = run_bench("--feeds", "6", "--items", "2", "--hosts", "3", "--timeout", "240",
                     "--out", str(out), "--work", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for heading in ("end to end s", "items/s", "writer ms/res", "polls/core-s"):
        assert heading in proc.stdout
    data = json.loads(out.read_text())
    assert (data["feeds"], data["items_per_feed"]) == (6, 2)
    runs = {r["mode"]: r for r in data["runs"]}
    assert sorted(runs) == ["1", "2", "embedded", "update"]
    for mode, r in runs.items():
        # the same work, done in full, by everyone: one poll per feed, one page per item
        assert r["items"] == r["summarised"] == 12, (mode, r)
        assert (r["polls"], r["article_requests"]) == (6, 12), (mode, r)
        assert r["results"] == 18
        assert r["wall_s"] > 0 and r["items_per_s"] > 0
        assert r["writer_cpu_s"] > 0 and r["writer_cpu_ms_per_result"] > 0
        assert r["label"] in proc.stdout
    for mode, workers in (("1", 1), ("2", 2)):
        r = runs[mode]
        names = {f"poll{i}" for i in range(1, workers + 1)} | \
            {f"extract{i}" for i in range(1, workers + 1)}
        assert set(r["cpu"]) == names | {"coordinator", "redis"}, r["cpu"]
        assert r["poll_workers_cpu_s"] > 0 and r["extract_workers_cpu_s"] > 0
        assert r["polls_per_poll_core_s"] > 0 and r["summaries_per_extract_core_s"] > 0
        assert r["polls_done_s"] <= r["wall_s"]
        # every process stopped cleanly on SIGTERM (Celery's warm shutdown)
        assert set(r["trees"]) == names | {"coordinator"}
        assert all(t["returncode"] == 0 for t in r["trees"].values()), r["trees"]
    assert set(runs["embedded"]["cpu"]) == {"daemon"}
    assert runs["embedded"]["trees"]["daemon"]["returncode"] == 0


def test_bench_refuses_an_unknown_mode() -> None:
    proc = run_bench("--modes", "embedded,3", timeout=60)
    assert proc.returncode == 2
    assert "unknown mode(s): 3" in proc.stderr
