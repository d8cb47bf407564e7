"""Commands of the distributed mode: coordinator and worker. Celery, kombu and redis-py
are imported only when one of them runs (``aggregator[distributed]``)."""

from __future__ import annotations

import argparse
import importlib.util

from aggregator import config
from aggregator.cli.operations import _flags
from aggregator.distributed import safe_url, scrub
from aggregator.errors import BrokerError, ConfigError

BROKER_WAIT = 10.0  # s a command waits at start for the broker to answer


def _broker(settings: config.Settings) -> str:
    if not settings.broker:
        raise ConfigError("no broker: give --broker redis://HOST:PORT/DB or set broker "
                          "(AGGREGATOR_BROKER)")
    if not settings.broker.startswith(("redis://", "rediss://", "redis+socket://")):
        raise ConfigError(f"broker must be a redis:// URL, not {safe_url(settings.broker)!r}")
    if importlib.util.find_spec("celery") is None:
        raise ConfigError("distributed mode needs Celery: pip install 'aggregator[distributed]'")
    check_broker(settings.broker)
    return settings.broker


def check_broker(url: str, wait: float = BROKER_WAIT) -> None:
    """The broker answers a PING within ``wait`` seconds, else a BrokerError naming
    it (without its password): a command started against a wrong URL, a stopped
    Redis or a bad password says so and exits 1 instead of retrying silently."""
    import time

    import redis

    deadline = time.monotonic() + wait
    while True:
        client = None
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=min(5.0, wait),
                                          socket_timeout=min(5.0, wait))
            client.ping()
            return
        except (redis.AuthenticationError, redis.ResponseError, ValueError) as e:
            raise BrokerError(f"broker {safe_url(url)} refused us: "
                              f"{scrub(str(e), url)}") from None
        except redis.RedisError as e:
            if time.monotonic() >= deadline:
                raise BrokerError(f"cannot reach the broker {safe_url(url)}: "
                                  f"{scrub(str(e), url)}") from None
            time.sleep(0.5)
        finally:
            if client is not None:
                client.close()


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
                      log_level=settings.log_level, task_key=settings.task_key)
