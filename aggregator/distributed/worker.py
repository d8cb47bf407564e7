"""``aggregator worker``: a Celery prefork worker on one role's queue.

Stateless: it holds no database, only a Fetcher per process. Any number may run on
any machine against the same broker. SIGTERM is Celery's warm shutdown: no new task
is taken, the ones running finish and are acknowledged, and the messages prefetched
but not started go back to Redis when the connection closes. A second SIGTERM (or
SIGQUIT) is a cold shutdown: the running tasks' messages stay unacknowledged and come
back after the visibility timeout.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from aggregator.distributed.app import QUEUES, make_app
from aggregator.distributed.tasks import UNSIGNED, register

log = logging.getLogger("aggregator.worker")


# processes per core by default: a poll mostly waits on the network (a real fetch takes
# 0.3-1 s, its parse about 10 ms), an article is fetched, then extracted and summarised
PER_CORE = {"poll": 4, "extract": 2}


def default_concurrency(role: str) -> int:
    return PER_CORE[role] * (os.cpu_count() or 1)


def run_worker(broker: str, role: str, *, concurrency: int | None, visibility_timeout: float,
               log_level: str = "INFO", task_key: str = "") -> int:
    """Run the worker until it is stopped; its exit status. With ``task_key`` it
    does only the tasks signed with it and signs what it sends back."""
    from celery.signals import worker_ready

    app = make_app(broker, visibility_timeout=visibility_timeout)
    register(app, task_key)
    if not task_key:
        log.warning(UNSIGNED)
    queue = QUEUES[role]
    n = concurrency or default_concurrency(role)

    def ready(sender: Any = None, **_: Any) -> None:
        log.info("worker %s ready: queue %s, %d processes",
                 getattr(sender, "hostname", role), queue, n)

    worker_ready.connect(ready, weak=False)
    debug = str(log_level).upper() == "DEBUG"
    # one line per task and per request is -v's business: the aggregator's own
    # lines (ready, a feed's errors) are enough at INFO
    logging.getLogger("aggregator").propagate = False  # its own handler: not twice
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
    argv = ["worker", "--queues", queue, "--hostname", f"{role}@%h", "--pool", "prefork",
            "--concurrency", str(n), "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--loglevel", "DEBUG" if debug else "WARNING"]
    try:
        app.worker_main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
