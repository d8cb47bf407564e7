"""Commands of the distributed mode: coordinator and worker. Celery, kombu and redis-py
are imported only when one of them runs (``aggregator[distributed]``)."""

from __future__ import annotations

import argparse
import importlib.util

from aggregator import config
from aggregator.cli.operations import _flags
from aggregator.errors import ConfigError


def _broker(settings: config.Settings) -> str:
    if not settings.broker:
        raise ConfigError("no broker: give --broker redis://HOST:PORT/DB or set broker "
                          "(AGGREGATOR_BROKER)")
    if not settings.broker.startswith(("redis://", "rediss://", "redis+socket://")):
        raise ConfigError(f"broker must be a redis:// URL, not {settings.broker!r}")
    if importlib.util.find_spec("celery") is None:
        raise ConfigError("distributed mode needs Celery: pip install 'aggregator[distributed]'")
    return settings.broker


def cmd_coordinator(args: argparse.Namespace, settings: config.Settings) -> int:
    broker = _broker(settings)
    from aggregator.distributed.coordinator import Coordinator

    flags = _flags(args)
    if getattr(args, "broker", None):
        flags["broker"] = args.broker
    return Coordinator(settings, broker=broker, config_file=args.config, flags=flags).run()


def cmd_worker(args: argparse.Namespace, settings: config.Settings) -> int:
    broker = _broker(settings)
    from aggregator.distributed.worker import run_worker

    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    return run_worker(broker, args.role, concurrency=args.concurrency,
                      visibility_timeout=settings.visibility_timeout,
                      log_level=settings.log_level)
