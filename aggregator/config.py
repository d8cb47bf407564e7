"""Settings from defaults < TOML file < AGGREGATOR_* environment < command-line flags.

No I/O beyond reading the config file. Keys are flat, e.g. ``interval = 30``;
the environment spells them upper-case with a prefix: ``AGGREGATOR_INTERVAL=30``.
A list is a TOML array, or comma-separated in the environment:
``AGGREGATOR_ALLOW_PRIVATE=10.0.0.0/8,intranet.example``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aggregator import __version__
from aggregator.errors import ConfigError
from aggregator.guard import Guard

ENV_PREFIX = "AGGREGATOR_"
# Summary methods (aggregator.summarizers): ours, the lead, and sumy's.
SUMMARIZERS = (
    "default", "lead", "lexrank", "lsa", "textrank", "luhn", "edmundson", "kl", "sumbasic",
    "reduction",
)  # fmt: skip
DEFAULT_CONFIG = Path("aggregator.toml")


@dataclass(frozen=True)
class Settings:
    # where things are
    db: Path = Path("data/aggregator.db")
    feeds: Path = Path("feeds.opml")
    output: Path = Path("public")
    # polling (minutes)
    interval: float = 30.0
    min_interval: float = 5.0
    max_interval: float = 1440.0
    jitter: float = 0.1  # fraction of the interval added at random
    # HTTP client
    connect_timeout: float = 10.0
    timeout: float = 30.0  # whole request, body included
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    workers: int = 8  # concurrent fetches overall
    per_host: int = 2  # concurrent fetches per host
    # parser processes for big passes; -1: one per core for `update`, none in the daemon
    parse_processes: int = -1
    # how long a claimed feed stays claimed (seconds): no other pass or worker polls
    # it meanwhile; after it, the claim may be swept and the feed claimed again
    lease_seconds: float = 900.0
    user_agent: str = (
        f"aggregator/{__version__} (+https://github.com/aggregator/aggregator; feed aggregator)"
    )
    # networks (CIDR) and host names that may be internal addresses, e.g.
    # ["10.0.0.0/8", "intranet.example"]; besides these only a feed URL naming an
    # IP address or localhost may reach an internal address (its own origin)
    allow_private: tuple[str, ...] = ()
    # articles and summaries
    fetch_articles: bool = True
    summaries: bool = True
    stories: bool = True  # cluster stored items into stories (after storing)
    min_content_words: int = 120  # shorter item content -> fetch the article
    summarizer: str = "default"  # one of SUMMARIZERS; a feed's outline may name its own
    # publishing
    publish: bool = True
    title: str = "aggregator"
    base_url: str = ""  # public URL of `output`; unset: public_url(host, port)
    max_entries: int = 100
    category_max_entries: int = 30  # per category feed
    websub_hub: str = ""  # a WebSub hub to name in every feed and ping on change (websub.py)
    # serving
    serve: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    stalled_after: float = 180.0  # minutes without a successful update -> /healthz 503
    # retention (days; 0 keeps forever): items, and their article text and HTML
    keep_days: int = 90
    keep_article_text_days: int = 14
    metrics: bool = True  # Prometheus metrics at /metrics (metrics.py)
    # distributed mode (aggregator coordinator / worker): the Redis broker, e.g.
    # "redis://127.0.0.1:6379/0"; tasks in flight at most; seconds before the broker
    # hands an unacknowledged task to another worker (shorter than lease_seconds)
    broker: str = ""
    max_in_flight: int = 200
    visibility_timeout: float = 600.0
    # the secret the coordinator signs its tasks with and the workers their results
    # (HMAC-SHA256, distributed/signing.py): the same on every machine, or read from
    # task_key_file (a systemd credential). Empty: nothing is signed (a warning at start).
    # Never logged nor shown (repr=False).
    task_key: str = field(default="", repr=False)
    task_key_file: Path | None = None
    # logging
    log_level: str = "INFO"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in fields(Settings)}


_PATH_OR_NONE = frozenset({"task_key_file"})
MIN_TASK_KEY = 16  # characters a task_key has at least


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = Path if name in _PATH_OR_NONE else type(getattr(Settings(), name))
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(f"not an integer: {value!r}")
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(f"not a number: {value!r}")
            return float(value)
        if issubclass(kind, Path):
            return Path(os.path.expanduser(str(value)))
        if kind is tuple:
            if isinstance(value, str):
                value = value.split(",")
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, str) for v in value):
                raise ValueError(f"not a list of strings: {value!r}")
            return tuple(v.strip() for v in value if v.strip())
        return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {name}: {e}") from e


MAX_LEASE_SECONDS = 7 * 24 * 3600  # a claim (or a task's visibility) at most


def _check(settings: Settings) -> Settings:
    problems = []
    for name in ("interval", "min_interval", "max_interval", "connect_timeout", "timeout",
                 "stalled_after", "jitter", "lease_seconds"):
        if not math.isfinite(getattr(settings, name)):
            problems.append(f"{name} must be a finite number")
    for name in ("interval", "min_interval", "connect_timeout", "timeout", "stalled_after"):
        if getattr(settings, name) <= 0:
            problems.append(f"{name} must be positive")
    if max(settings.lease_seconds, settings.visibility_timeout) > MAX_LEASE_SECONDS:
        problems.append(f"lease_seconds and visibility_timeout must be at most "
                        f"{MAX_LEASE_SECONDS} (a week)")
    if not settings.lease_seconds > settings.timeout:
        problems.append("lease_seconds must be longer than timeout (a poll must end "
                        "within its lease)")
    if settings.max_redirects < 0:
        problems.append("max_redirects must be 0 or more")
    if settings.max_entries < 1 or settings.category_max_entries < 0:
        problems.append("max_entries must be at least 1, category_max_entries 0 or more")
    if not 0 <= settings.port <= 65535:
        problems.append("port must be between 0 and 65535")
    if settings.min_interval > settings.max_interval:
        problems.append("min_interval is larger than max_interval")
    if settings.workers < 1 or settings.per_host < 1:
        problems.append("workers and per_host must be at least 1")
    if not 0 <= settings.jitter <= 1:
        problems.append("jitter must be between 0 and 1")
    for name in ("keep_days", "keep_article_text_days"):
        if not 0 <= getattr(settings, name) <= 36500:
            problems.append(f"{name} must be a number of days from 1 to 36500, "
                            "or 0 (keep forever)")
    if settings.max_in_flight < 1:
        problems.append("max_in_flight must be at least 1")
    if not (math.isfinite(settings.visibility_timeout) and settings.visibility_timeout > 0):
        problems.append("visibility_timeout must be a positive number of seconds")
    if settings.max_bytes < 1024:
        problems.append("max_bytes must be at least 1024")
    if not settings.base_url:
        settings = settings.replace(base_url=public_url(settings.host, settings.port))
    if settings.summarizer.strip().lower() not in SUMMARIZERS:
        problems.append(f"summarizer: unknown method {settings.summarizer!r}; "
                        f"known: {', '.join(SUMMARIZERS)}")
    if not settings.base_url.startswith(("http://", "https://")):
        problems.append("base_url must be an http(s) URL")
    if settings.websub_hub:
        from aggregator.websub import hub_problem

        if (problem := hub_problem(settings.websub_hub.strip())) is not None:
            problems.append(problem)
    if settings.task_key and (len(settings.task_key) < MIN_TASK_KEY
                              or settings.task_key != settings.task_key.strip()):
        problems.append(f"task_key must be at least {MIN_TASK_KEY} characters, without "
                        "spaces around it (e.g. the output of: openssl rand -hex 32)")
    try:
        Guard.parse(settings.allow_private)
    except ValueError as e:
        problems.append(f"allow_private: {e}")
    if problems:
        raise ConfigError("; ".join(problems))
    if settings.summarizer != settings.summarizer.strip().lower():
        settings = settings.replace(summarizer=settings.summarizer.strip().lower())
    if not settings.base_url.endswith("/"):
        settings = settings.replace(base_url=settings.base_url + "/")
    if settings.websub_hub != settings.websub_hub.strip():
        settings = settings.replace(websub_hub=settings.websub_hub.strip())
    return settings


def closest(word: str, names: Iterable[str]) -> str | None:
    """The name ``word`` was most likely meant to be (a typo), if any is close."""
    import difflib  # only for a name that is wrong: not at every start-up

    found = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
    return found[0] if found else None


def _did_you_mean(name: str) -> str:
    guess = closest(name, _FIELDS)
    return f" (did you mean {guess}?)" if guess else ""


# AGGREGATOR_* variables that are not settings but are read on purpose
OTHER_ENV = frozenset({"CONFIG", "FUZZ_CORPUS", "FUZZ_SCALE", "FAULT"})


def env_warnings(env: Mapping[str, str] | None = None) -> list[str]:
    """One line for each ``AGGREGATOR_*`` variable that names no setting (a
    typo would otherwise be ignored without a word), with the closest name."""
    env = os.environ if env is None else env
    known = {n.upper() for n in _FIELDS} | OTHER_ENV
    out = []
    for name in sorted(k for k in env if k.startswith(ENV_PREFIX)
                       and k[len(ENV_PREFIX):] not in known):
        guess = closest(name[len(ENV_PREFIX):].upper(), known)
        out.append(f"${name} is not a setting; ignored"
                   + (f" (did you mean ${ENV_PREFIX}{guess}?)" if guess else ""))
    return out


def public_url(host: str, port: int) -> str:
    """The address of the built-in server, for the self links when ``base_url`` is not
    set: ``http://{host}:{port}/``. A wildcard listen address is no address to visit, so
    ``0.0.0.0`` (or empty) stands for 127.0.0.1 and ``::`` for [::1]; an IPv6 literal is
    bracketed; port 80 is left out."""
    host = host.strip().strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}/" if port == 80 else f"http://{host}:{port}/"


def read_file(path: Path) -> dict[str, Any]:
    import tomllib  # only when there is a file to read: not at every start-up

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    except UnicodeDecodeError as e:  # TOML is UTF-8: a binary or Latin-1 file
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text ({e.reason} "
                          f"at byte {e.start})") from e
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): "
                          + ", ".join(name + _did_you_mean(name) for name in unknown))
    base = path.parent
    out = {k: _coerce(k, v, str(path)) for k, v in data.items()}
    # relative paths in a config file are relative to the file
    for k, v in out.items():
        if isinstance(v, Path) and not v.is_absolute():
            out[k] = base / v
    return out


def load(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the layers. ``config_file`` None means ``$AGGREGATOR_CONFIG`` or
    ``./aggregator.toml`` when present; an explicitly named file must exist."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    if config_file is None and DEFAULT_CONFIG.is_file():
        config_file = DEFAULT_CONFIG
    if config_file is not None:
        values.update(read_file(config_file))
    for name in _FIELDS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _coerce(name, raw, f"${ENV_PREFIX}{name.upper()}")
    for name, value in (flags or {}).items():
        if value is not None:
            if name not in _FIELDS:
                raise ConfigError(f"unknown setting: {name}{_did_you_mean(name)}")
            values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    if values.get("task_key_file") is not None:
        if values.get("task_key"):
            raise ConfigError("set task_key or task_key_file, not both")
        values["task_key"] = read_key_file(values["task_key_file"])
    return _check(Settings(**values))


def read_key_file(path: Path) -> str:
    """The task key in ``path`` (one line, spaces around it dropped); an empty file
    is no key. Errors name the file, never what it holds."""
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError as e:
        raise ConfigError(f"cannot read task_key_file {path}: {e.strerror}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"task_key_file {path}: not UTF-8 text") from None
    key = text.strip()
    if len(key.splitlines()) > 1:
        raise ConfigError(f"task_key_file {path}: more than one line")
    return key
