"""Shared test set-up."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Under CI=true a test whose tool or data is missing fails instead of skipping:
# .ci/run installs everything the suite needs, so a skip there means a broken
# set-up, not a machine without a browser. A plain `make test` keeps the skips,
# each with its reason. Only a test marked `opt_in` (it needs something no
# package registry offers, and says so) may still skip under CI.
CI = os.environ.get("CI", "").lower() == "true"


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail") \
            and item.get_closest_marker("opt_in") is None:
        report.outcome = "failed"
        reason = _skip_reason(report.longrepr)
        report.longrepr = f"skipped under CI=true, where it must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI=true: {_skip_reason(report.longrepr)}"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that runs the CLI in-process configures the "aggregator" logger with a
    handler on its captured stderr; put the loggers back so later tests don't write
    to a closed stream."""
    saved = {}
    for name in ("aggregator", "apscheduler"):
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A command line as a new user runs it: no AGGREGATOR_* variables from the
    machine, and the working directory a fresh one (``pytestmark =
    pytest.mark.usefixtures("clean_env")`` in the files of CLI tests)."""
    for name in [k for k in os.environ if k.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
