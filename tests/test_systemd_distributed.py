"""The distributed mode's units (aggregator-coordinator.service, aggregator-worker@.service):
systemd's own checkers accept them, the sandbox scores as the daemon's does, the coordinator
is the daemon with another command, a worker cannot reach the state, and Celery's pieces run
under the worker's MemoryDenyWriteExecute= and system call filter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aggregator import config
from tests.test_systemd import (
    BINARY,
    PROJECT,
    SANDBOXED_WORKLOAD,
    SYSTEMD,
    allowed_syscalls,
    assert_hardened,
    needs_analyze,
    run_analyze,
    sandbox_lines,
    unit,
)

COORDINATOR = "aggregator-coordinator.service"
WORKER = "aggregator-worker@.service"
INSTANCES = ["aggregator-worker@poll.service", "aggregator-worker@extract.service"]
CONF = "/etc/aggregator/aggregator.toml"


def hardening(name: str) -> list[str]:
    """The sandbox proper: the [Service] lines from IPAddressDeny= on."""
    lines = sandbox_lines(name)
    return lines[next(i for i, line in enumerate(lines) if line.startswith("IPAddressDeny=")) :]


@needs_analyze
@pytest.mark.parametrize("name", [COORDINATOR, *INSTANCES])
def test_security_exposure_at_most_1_5(name: str) -> None:
    """A template's instance is rated from the template beside it, %i filled in."""
    assert_hardened(name, "PrivateTmp=")


@needs_analyze
def test_verify_prints_nothing(tmp_path: Path) -> None:
    """As in test_systemd: copies whose CLI is a real executable. The template is verified
    itself and through each instance (a link named like the instance, as systemd finds it)."""
    stub = tmp_path / "aggregator"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for name in (COORDINATOR, WORKER):
        original = (SYSTEMD / name).read_text()
        copy = re.sub(
            rf"^ExecStart={re.escape(BINARY)} ", f"ExecStart={stub} ", original, flags=re.M
        )
        assert copy.count(str(stub)) == 1
        (tmp_path / name).write_text(copy)
    for instance in INSTANCES:
        (tmp_path / instance).symlink_to(WORKER)
    result = run_analyze("verify", "--man=no", COORDINATOR, WORKER, *INSTANCES, cwd=tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
def test_verify_reads_the_template_through_an_instance(tmp_path: Path) -> None:
    """The check above can fail for the worker: a typo in the template, verified through an
    instance's link, is reported."""
    (tmp_path / "typo@.service").write_text(
        "[Service]\nExecStart=/bin/true --role %i\nProtectSytem=strict\n"
    )
    (tmp_path / "typo@poll.service").symlink_to("typo@.service")
    result = run_analyze("verify", "--man=no", "typo@poll.service", cwd=tmp_path)
    assert "Unknown key 'ProtectSytem'" in result.stdout + result.stderr


def test_coordinator_is_the_daemon_with_another_command() -> None:
    """Same user, directories and sandbox; notify, watchdog and reload as the daemon; it
    replaces the daemon (Conflicts=) and starts after a local broker."""
    assert sandbox_lines(COORDINATOR) == sandbox_lines("aggregator.service")
    c, d = unit(COORDINATOR), unit("aggregator.service")
    s = c["Service"]
    assert s["ExecStart"] == f"{BINARY} --config {CONF} coordinator"
    for key in ("Type", "NotifyAccess", "ExecReload", "Restart", "WatchdogSec"):
        assert s[key] == d["Service"][key], key
    assert (s["Type"], s["ExecReload"]) == ("notify", "/bin/kill -HUP $MAINPID")
    assert int(s["TimeoutStopSec"]) <= 10
    assert c["Unit"]["Conflicts"] == "aggregator.service"
    assert "redis-server.service" in c["Unit"]["After"].split()
    assert "Requires" not in c["Unit"]  # the broker may be on another machine
    assert c["Install"] == d["Install"]


def test_worker_instance_is_the_role_and_shutdown_is_warm() -> None:
    w = unit(WORKER)
    s = w["Service"]
    assert s["ExecStart"] == f"{BINARY} --config {CONF} worker --role %i"
    assert "%i" in w["Unit"]["Description"]
    # SIGTERM to Celery's main process alone (warm shutdown: running tasks finish), SIGKILL
    # to what is left after the stop timeout, which outlasts one request's whole timeout
    assert s["KillMode"] == "mixed"
    assert s["KillSignal"] == "SIGTERM"
    stop = s["TimeoutStopSec"]
    seconds = int(stop[:-3]) * 60 if stop.endswith("min") else int(stop)
    assert seconds > 2 * config.Settings().timeout
    assert s["Type"] == "exec"  # Celery sends no sd_notify
    assert "WatchdogSec" not in s and "NotifyAccess" not in s
    assert "redis-server.service" in w["Unit"]["After"].split()
    assert w["Install"]["WantedBy"] == "multi-user.target"


def test_unit_commands_are_the_cli_s() -> None:
    """The real parser takes both ExecStart= lines, and the worker's instances are exactly
    the roles it accepts."""
    from aggregator.cli import build_parser

    parser = build_parser()
    coordinator = unit(COORDINATOR)["Service"]["ExecStart"].split()[1:]
    args = parser.parse_args(coordinator)
    assert (args.command, args.config) == ("coordinator", Path(CONF))
    worker = unit(WORKER)["Service"]["ExecStart"].split()[1:]
    for instance in INSTANCES:
        role = instance.split("@", 1)[1].removesuffix(".service")
        args = parser.parse_args([role if a == "%i" else a for a in worker])
        assert (args.command, args.role, args.config) == ("worker", role, Path(CONF))
    with pytest.raises(SystemExit):
        parser.parse_args([a.replace("%i", "stories") for a in worker])


def test_worker_is_stateless_and_as_hardened_as_the_daemon() -> None:
    """The sandbox proper is the daemon's, line for line; but no state directory, nothing
    writable, and every path of the example config's state hidden."""
    assert hardening(WORKER) == hardening("aggregator.service")
    s = unit(WORKER)["Service"]
    assert (s["User"], s["Group"]) == ("aggregator", "aggregator")
    assert "StateDirectory" not in s and "ReadWritePaths" not in s
    assert s["ProtectSystem"] == "strict"
    hidden = [Path(p.lstrip("-")) for p in s["InaccessiblePaths"].split()]
    example = tomllib.loads((SYSTEMD / "aggregator.toml").read_text())
    for key in ("db", "feeds", "output"):
        path = Path(example[key])
        assert any(path == h or h in path.parents for h in hidden), (key, path)
    daemon = unit("aggregator.service")["Service"]
    assert Path("/var/lib") / daemon["StateDirectory"] in hidden
    assert all(Path(p) in hidden for p in daemon["ReadWritePaths"].split())
    assert s["ConfigurationDirectory"] == daemon["ConfigurationDirectory"]


def test_example_config_names_the_distributed_settings(tmp_path: Path) -> None:
    """The example's commented distributed lines, uncommented, load with the real loader
    and say what the comments say."""
    text = (SYSTEMD / "aggregator.toml").read_text()
    lines = [m.group(1) for m in re.finditer(r"^# ((?:broker|max_in_flight) = .+)$", text, re.M)]
    assert len(lines) == 2, lines
    assert "broker" not in tomllib.loads(text)  # off by default: embedded mode
    sample = tomllib.loads("\n".join(lines))
    assert sample == {"broker": "redis://127.0.0.1:6379/0", "max_in_flight": 200}
    (tmp_path / "distributed.toml").write_text("\n".join(lines) + "\n")
    settings = config.load(tmp_path / "distributed.toml", env={})
    assert (settings.broker, settings.max_in_flight) == ("redis://127.0.0.1:6379/0", 200)
    assert config.Settings().max_in_flight == 200  # the example shows the default
    assert not config.Settings().broker  # unset: embedded mode


CELERY_WORKLOAD = SANDBOXED_WORKLOAD.split("import sqlite3, threading, time", 1)[0] + r"""
import billiard, kombu, redis
from celery import Celery
from billiard.pool import Pool
import aggregator.cli, aggregator.update

pool = Pool(2)  # Celery's prefork pool: fork, pipes, semaphores
assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
pool.terminate()
pool.join()
app = Celery("sandboxed", broker="memory://")
app.conf.task_serializer = "json"
with kombu.Connection("memory://") as conn:
    queue = conn.SimpleQueue("aggregator.results")
    queue.put({"feed_id": 1, "poll_seq": 2})
    msg = queue.get(timeout=5)
    assert msg.payload == {"feed_id": 1, "poll_seq": 2}
    msg.ack()
    queue.close()
print("ok")
"""


@needs_analyze
def test_celery_runs_in_the_worker_sandbox(tmp_path: Path) -> None:
    """The worker's own allow list, loaded by the child with libseccomp (EPERM for the
    rest), plus MemoryDenyWriteExecute (prctl PR_SET_MDWE, Linux >= 6.3): Celery's prefork
    pool and kombu's messaging still work. (test_systemd's workload covers the rest of the
    dependencies under the same filter, which is the daemon's.)"""
    syscalls = allowed_syscalls(WORKER)
    assert syscalls == allowed_syscalls("aggregator.service")
    args = ["MemoryDenyWriteExecute+SystemCallFilter", json.dumps(sorted(syscalls)),
            str(tmp_path / "unused.db"), "http://127.0.0.1:9/unused"]
    result = subprocess.run(
        [sys.executable, "-c", CELERY_WORKLOAD, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=PROJECT,
    )
    if result.stdout.startswith("skip: "):
        pytest.skip(result.stdout.strip()[6:])
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr[-3000:]
