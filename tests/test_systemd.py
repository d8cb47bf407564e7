"""The shipped systemd units: systemd's own checkers accept them, the sandbox scores <= 1.5,
the files agree on paths, and Python with our dependencies runs under MemoryDenyWriteExecute."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from aggregator import config

PROJECT = Path(__file__).resolve().parents[1]
SYSTEMD = PROJECT / "systemd"
SERVICES = ["aggregator.service", "aggregator-update.service"]
UNITS = [*SERVICES, "aggregator-update.timer"]
BINARY = "/usr/local/bin/aggregator"
MAX_EXPOSURE = 1.5

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze absent (Debian package 'systemd' provides it)"
)


def unit(name: str) -> dict[str, dict[str, str]]:
    """A unit file as section -> key -> value; a repeated key's values are joined by newlines."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current[key] = current[key] + "\n" + value if key in current else value
    return sections


def sandbox_lines(name: str) -> list[str]:
    """The [Service] lines from User= on: user, directories and sandbox."""
    text = (SYSTEMD / name).read_text().split("[Service]", 1)[1].split("[Install]", 1)[0]
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return lines[next(i for i, line in enumerate(lines) if line.startswith("User=")) :]


def run_analyze(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


def assert_hardened(name: str, *also: str) -> None:
    """``systemd-analyze security`` rates the unit at most MAX_EXPOSURE, and the checks
    that matter most (and ``also``) pass outright, not averaged away."""
    result = run_analyze("security", "--offline=true", "--no-pager", SYSTEMD / name)
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("systemd-analyze older than 252 has no --offline")
    assert result.returncode == 0, result.stderr
    m = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", result.stdout)
    assert m, result.stdout
    assert float(m.group(1)) <= MAX_EXPOSURE, result.stdout
    for check in [
        "User=/DynamicUser=",
        "NoNewPrivileges=",
        "CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "SystemCallFilter=~@privileged",
        "MemoryDenyWriteExecute=",
        "ProtectSystem=",
        "RestrictAddressFamilies=~AF_PACKET",
        *also,
    ]:
        line = next(line for line in result.stdout.splitlines() if check in line)
        assert line.lstrip().startswith("✓"), line


@needs_analyze
@pytest.mark.parametrize("name", SERVICES)
def test_security_exposure_at_most_1_5(name: str) -> None:
    assert_hardened(name)


@needs_analyze
def test_verify_prints_nothing(tmp_path: Path) -> None:
    """`systemd-analyze verify` also checks that ExecStart= exists and is executable, and the
    CLI is not installed here: verify copies whose /usr/local/bin/aggregator is replaced by a
    real executable in tmp_path, every other line unchanged."""
    stub = tmp_path / "aggregator"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for name in UNITS:
        original = (SYSTEMD / name).read_text()
        copy = re.sub(
            rf"^ExecStart={re.escape(BINARY)} ", f"ExecStart={stub} ", original, flags=re.M
        )
        assert copy.count(str(stub)) == (1 if name.endswith(".service") else 0)
        (tmp_path / name).write_text(copy)
    result = run_analyze("verify", "--man=no", *UNITS, cwd=tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
def test_verify_is_live(tmp_path: Path) -> None:
    """The check above can fail: a typo in a unit is reported."""
    (tmp_path / "typo.service").write_text("[Service]\nExecStart=/bin/true\nProtectSytem=strict\n")
    result = run_analyze("verify", "--man=no", "typo.service", cwd=tmp_path)
    assert "Unknown key 'ProtectSytem'" in result.stdout + result.stderr


def test_daemon_and_oneshot_share_user_paths_and_sandbox() -> None:
    assert sandbox_lines("aggregator.service") == sandbox_lines("aggregator-update.service")


def test_daemon_settings() -> None:
    s = unit("aggregator.service")["Service"]
    assert s["Type"] == "notify"
    assert s["NotifyAccess"] == "main"
    assert s["ExecStart"] == f"{BINARY} --config /etc/aggregator/aggregator.toml run"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["Restart"] == "on-failure"
    assert int(s["TimeoutStopSec"]) <= 10
    assert int(s["WatchdogSec"]) > 0
    oneshot = unit("aggregator-update.service")["Service"]
    assert oneshot["Type"] == "oneshot"
    assert oneshot["ExecStart"] == f"{BINARY} --config /etc/aggregator/aggregator.toml update"


def test_timer_runs_the_oneshot() -> None:
    t = unit("aggregator-update.timer")["Timer"]
    assert t["OnCalendar"] == "*:0/30"
    assert t["Persistent"] == "true"
    assert (SYSTEMD / "aggregator-update.service").exists()  # the timer's default Unit=


def test_example_config_paths_are_writable_by_the_service() -> None:
    """Every path the example config writes is one the sandbox makes writable."""
    s = unit("aggregator.service")["Service"]
    config = tomllib.loads((SYSTEMD / "aggregator.toml").read_text())
    state = Path("/var/lib") / s["StateDirectory"]
    writable = [state, *(Path(p.lstrip("-")) for p in s["ReadWritePaths"].split())]
    assert Path(config["db"]).parent == state
    assert Path(config["feeds"]).parent == state  # rewritten on `add` and 301: not under /etc
    assert Path(config["output"]) in writable
    conf_path = s["ExecStart"].split("--config ", 1)[1].split()[0]
    assert Path(conf_path).parent == Path("/etc") / s["ConfigurationDirectory"]
    assert 1024 < config["port"] < 65536  # no CAP_NET_BIND_SERVICE in the bounding set


def test_example_config_loads() -> None:
    """The shipped example is valid for the real config loader (unknown keys are errors)."""
    settings = config.load(SYSTEMD / "aggregator.toml", env={})
    assert settings.db == Path("/var/lib/aggregator/aggregator.db")
    assert settings.feeds == Path("/var/lib/aggregator/feeds.opml")
    assert settings.output == Path("/srv/aggregator")
    assert (settings.interval, settings.serve, settings.port) == (30, True, 8080)


def test_nginx_snippet_proxies_healthz_to_the_daemon_of_the_example() -> None:
    """The README's nginx snippet sends /healthz to the address the example daemon serves."""
    settings = config.load(SYSTEMD / "aggregator.toml", env={})
    readme = (SYSTEMD.parent / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"location = /healthz \{ proxy_pass (http://[^;]+); \}", readme)
    assert targets, "README's nginx snippet has no /healthz location"
    assert settings.serve
    for target in targets:
        assert target.rstrip("/") == f"http://{settings.host}:{settings.port}"
    assert f"{settings.host}:{settings.port}" in (SYSTEMD / "aggregator.service").read_text()


@needs_analyze
@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles must run as root to chown")
@pytest.mark.skipif(
    not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")),
    reason="systemd-sysusers/systemd-tmpfiles absent (Debian package 'systemd')",
)
def test_sysusers_and_tmpfiles_make_the_user_and_public_dir(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nwww-data:x:33:\n")
    for tool, conf in [
        ("systemd-sysusers", "aggregator.sysusers"),
        ("systemd-tmpfiles", "aggregator.tmpfiles"),
    ]:
        args = [tool, f"--root={root}", str(SYSTEMD / conf)]
        if tool == "systemd-tmpfiles":
            args.insert(1, "--create")
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
    user = next(
        line
        for line in (root / "etc/passwd").read_text().splitlines()
        if line.startswith("aggregator:")
    )
    _, _, uid, gid, _, home, shell = user.split(":")
    assert (home, shell) == ("/var/lib/aggregator", "/usr/sbin/nologin")
    st = (root / "srv/aggregator").stat()
    assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == ("0o2750", int(uid), 33)


# The child applies the sandbox to itself, proves it is on, then does a little of everything
# the service does. argv: mode, JSON list of allowed syscalls (or "null"), db path, feed URL.
SANDBOXED_WORKLOAD = r"""
import ctypes, errno, json, mmap, os, sys
mode, allowed, db_path, feed_url = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    print("skip: kernel without PR_SET_MDWE (Linux < 6.3)"); sys.exit(0)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("fail: MDWE not enforced"); sys.exit(1)
except PermissionError:
    pass
if allowed is not None:
    try:
        sc = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        print("skip: libseccomp.so.2 absent (Debian package libseccomp2)"); sys.exit(0)
    sc.seccomp_init.restype = ctypes.c_void_p
    sc.seccomp_init.argtypes = [ctypes.c_uint32]
    sc.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    sc.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    sc.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = sc.seccomp_init(0x00050000 | errno.EPERM)  # SCMP_ACT_ERRNO(EPERM): SystemCallErrorNumber=
    for name in allowed:
        nr = sc.seccomp_syscall_resolve_name(name.encode())
        if nr >= 0 and sc.seccomp_rule_add(ctx, 0x7FFF0000, nr, 0) < 0:  # SCMP_ACT_ALLOW
            print("fail: cannot add", name); sys.exit(1)
    if sc.seccomp_load(ctx) != 0:
        print("fail: seccomp_load"); sys.exit(1)
    try:  # @resources is filtered out: this harmless call must now fail
        os.sched_setaffinity(0, os.sched_getaffinity(0))
        print("fail: syscall filter not enforced"); sys.exit(1)
    except PermissionError:
        pass

if "ProcSubset" in mode:  # ProcSubset=pid, ProtectProc=invisible
    assert not os.path.exists("/proc/cpuinfo"), "fail: /proc not restricted"

import sqlite3, threading, time
import feedparser, httpx, sqlite_utils, jinja2, nh3, trafilatura
import numpy, sumy.summarizers.lsa, sumy.summarizers.text_rank
from apscheduler.schedulers.background import BackgroundScheduler
import aggregator.cli, aggregator.daemon, aggregator.update, aggregator.publish
import aggregator.summarize, aggregator.extract, aggregator.fetch, aggregator.store

body = httpx.get(feed_url, timeout=10).content
assert feedparser.parse(body).entries[0].title == "sandboxed"
db = sqlite_utils.Database(db_path)
db.enable_wal()
db["t"].insert({"a": 1})
assert db.execute("select count(*) from t").fetchone() == (1,)
ran = threading.Event()
sched = BackgroundScheduler()
sched.add_job(ran.set)
sched.start()
assert ran.wait(10)
sched.shutdown()
assert jinja2.Template("{{ a|e }}").render(a="<b>") == "&lt;b&gt;"
assert nh3.clean("<script>x</script><b>y</b>") == "<b>y</b>"
html = "<html><body><article><p>" + "A sentence about feeds. " * 40 + "</p></article></body></html>"
assert "feeds" in (trafilatura.extract(html) or "")
assert numpy.linalg.svd(numpy.eye(3))[1].sum() == 3.0
print("ok")
"""

RSS = (
    "<?xml version='1.0'?><rss version='2.0'><channel><title>t</title>"
    "<item><title>sandboxed</title><link>http://x/</link></item></channel></rss>"
)


def expand_syscalls(group: str) -> set[str]:
    """A systemd syscall group as plain syscall names, nested groups resolved."""
    out = run_analyze("syscall-filter", group).stdout.splitlines()
    names: set[str] = set()
    for line in out[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        names |= expand_syscalls(item) if item.startswith("@") else {item}
    return names


def allowed_syscalls(name: str) -> set[str]:
    """The unit's SystemCallFilter=: the first (allow) list minus every ~ list."""
    first, *rest = unit(name)["Service"]["SystemCallFilter"].split("\n")
    assert not first.startswith("~")
    allowed = set().union(*(expand_syscalls(g) for g in first.split()))
    for line in rest:
        assert line.startswith("~")
        allowed -= set().union(*(expand_syscalls(g) for g in line[1:].split()))
    return allowed


PROC_SUBSET = (
    'mount -o remount,subset=pid,hidepid=invisible /proc && exec "$@"'  # what ProcSubset= mounts
)


@pytest.mark.parametrize(
    "sandbox",
    [
        "MemoryDenyWriteExecute",
        "MemoryDenyWriteExecute+SystemCallFilter",
        "MemoryDenyWriteExecute+SystemCallFilter+ProcSubset",
    ],
)
def test_python_and_dependencies_run_in_the_sandbox(
    sandbox: str, tmp_path: Path, httpserver: HTTPServer
) -> None:
    """MemoryDenyWriteExecute= breaks programs that make W+X memory (JITs, some ctypes
    callbacks); SystemCallFilter= breaks those that need a filtered call. Without a service
    manager here, the child applies both itself: Linux >= 6.3 has prctl(PR_SET_MDWE), and
    libseccomp loads the unit's own allow list with SystemCallErrorNumber=EPERM; as root,
    unshare(1) gives it a /proc mounted the way ProcSubset=pid + ProtectProc=invisible do."""
    prefix: list[str] = []
    if "ProcSubset" in sandbox:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("needs root and unshare (util-linux) to mount a private /proc")
        prefix = ["unshare", "--mount", "--pid", "--fork", "--mount-proc"]
        prefix += ["sh", "-c", PROC_SUBSET, "sh"]
    if "SystemCallFilter" in sandbox:
        if ANALYZE is None:
            pytest.skip("systemd-analyze absent: cannot expand the unit's syscall groups")
        syscalls = allowed_syscalls("aggregator.service")
        assert {"sched_setaffinity", "setrlimit", "reboot", "mount"}.isdisjoint(syscalls)
        assert {"read", "openat", "connect", "clone3", "futex", "fsync"} <= syscalls
        allowed: list[str] | None = sorted(syscalls)
    else:
        allowed = None
    httpserver.expect_request("/feed.xml").respond_with_data(
        RSS, content_type="application/rss+xml"
    )
    args = [sandbox, json.dumps(allowed), str(tmp_path / "t.db"), httpserver.url_for("/feed.xml")]
    result = subprocess.run(
        [*prefix, sys.executable, "-c", SANDBOXED_WORKLOAD, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=PROJECT,
    )
    if result.stdout.startswith("skip: "):
        pytest.skip(result.stdout.strip()[6:])
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr[-3000:]
