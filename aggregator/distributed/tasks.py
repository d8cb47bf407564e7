"""The two tasks a worker runs, and the messages they send back.

``aggregator.poll(task_json, limits_json)``: one feed's conditional fetch and parse
(``update.poll_feed``), its ``PollResult`` published on ``aggregator.results``.
``aggregator.extract(task_json, settings_json)``: one item's article fetch,
extraction and summary (``stages.summaries.work_article``), published the same way.

A task first counts its delivery in Redis (``INCR aggregator:attempts:...``): a
message comes back when its worker died under it (``reject_on_worker_lost``) or sat
on it past the visibility timeout, so a feed or page that kills its worker every time
would loop for ever; from the 4th delivery on the task reports an error instead of
doing the work. A poll task then tells the coordinator it started (``started``:
feed_id, poll_seq, the worker that holds it), so ``aggregator feeds`` can name it.

The task returns nothing: the result is a message on the results queue, published
persistent before the task's own message is acknowledged (``acks_late``), so a worker
killed in between sends it twice at worst, and the coordinator's fence drops the copy.
Raw bodies never cross the broker: only parsed items (and only new or changed ones,
when the coordinator sent the feed's known keys) and article text.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from aggregator.distributed import signing
from aggregator.distributed.app import RESULTS_QUEUE

log = logging.getLogger("aggregator.worker")

MAX_DELIVERIES = 3
ATTEMPTS_TTL = 2 * 24 * 3600  # s a delivery counter is kept
GAVE_UP = "the task stopped its worker {n} times; not tried again until its next poll"

RESULTS_EXCHANGE = Exchange(RESULTS_QUEUE, type="direct", durable=True)
RESULTS = Queue(RESULTS_QUEUE, RESULTS_EXCHANGE, routing_key=RESULTS_QUEUE, durable=True)

# per worker process (a prefork child): made on first use, after the fork
_local: dict[str, Any] = {}
_lock = threading.Lock()


def worker_settings(settings: Any) -> dict[str, Any]:
    """What a worker needs of the coordinator's settings: fetch limits and the
    article rules (JSON-safe)."""
    from aggregator.daemon import FETCH_SETTINGS

    names = (*FETCH_SETTINGS, "fetch_articles", "min_content_words", "summarizer")
    out = {name: getattr(settings, name) for name in names}
    out["allow_private"] = list(out["allow_private"])
    return out


def _settings(values: dict[str, Any]) -> Any:
    from aggregator.config import Settings

    known = {k: v for k, v in values.items() if k in Settings.__dataclass_fields__}
    if "allow_private" in known:
        known["allow_private"] = tuple(known["allow_private"])
    return Settings().replace(**known)


def _fetcher(values: dict[str, Any]) -> Any:
    """One Fetcher per process and set of limits (a reload may change them)."""
    key = "fetcher:" + json.dumps({k: values.get(k) for k in sorted(values)}, sort_keys=True)
    with _lock:
        fetcher = _local.get(key)
        if fetcher is None:
            from aggregator.daemon import FETCH_SETTINGS
            from aggregator.update import make_fetcher

            for old in [k for k in _local if k.startswith("fetcher:")]:
                _local.pop(old).close()
            fetcher = _local[key] = make_fetcher(
                _settings({k: v for k, v in values.items() if k in FETCH_SETTINGS}))
        return fetcher


def _redis(app: Celery) -> Any:
    with _lock:
        client = _local.get("redis")
        if client is None or _local.get("redis_pid") != os.getpid():
            import redis

            client = _local["redis"] = redis.Redis.from_url(app.conf.broker_url)
            _local["redis_pid"] = os.getpid()
        return client


def deliveries(app: Celery, key: str) -> int:
    """This delivery's number (1 on the first), counted in Redis; 1 when Redis cannot
    be asked (the task is then done rather than dropped)."""
    try:
        pipe = _redis(app).pipeline()
        pipe.incr(f"aggregator:attempts:{key}")
        pipe.expire(f"aggregator:attempts:{key}", ATTEMPTS_TTL)
        return int(pipe.execute()[0])
    except Exception as e:  # noqa: BLE001 - counting is a guard, not the work
        log.warning("cannot count the deliveries of %s: %s", key, e)
        return 1


UNSIGNED = ("tasks are not signed: set task_key (or task_key_file) to the same secret on "
            "the coordinator and every worker, or anyone who can write to the broker can "
            "make the workers fetch any address")


def task_payload(task_json: Any, values: Any) -> dict[str, Any]:
    """What a task's signature covers: the task and the settings sent with it."""
    return {"task": task_json, "settings": values}


def log_id(value: Any) -> str:
    """An id from an unverified task for the log: a number, or "?"."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
    return str(value) if ok else "?"


def accepted(key: str, purpose: str, task_json: Any, values: Any, sig: Any) -> bool:
    """The task may be done: no key (nothing is signed), or its signature is good.
    A bad one is one warning naming the feed or item id, no other content."""
    if not key or signing.verify(key, purpose, task_payload(task_json, values), sig):
        return True
    t = task_json if isinstance(task_json, dict) else {}
    if purpose == "task:poll":
        what = f"feed {log_id(t.get('feed_id'))}"
    else:
        item = t.get("item")
        what = f"item {log_id(item.get('id') if isinstance(item, dict) else None)}"
    log.warning("%s: %s task with a %s signature dropped, nothing fetched", what,
                purpose[5:], "missing" if sig is None else "bad")
    return False


def publish(app: Celery, body: dict[str, Any]) -> None:
    """One message on the results queue, persistent, retried while Redis is away
    (the task's own message stays unacknowledged meanwhile); signed with the
    app's task key when it has one."""
    key = getattr(app, "aggregator_task_key", "")
    if key:
        body = signing.signed_body(key, body)
    with app.producer_or_acquire() as producer:
        producer.publish(body, exchange=RESULTS_EXCHANGE, routing_key=RESULTS_QUEUE,
                         serializer="json", delivery_mode=2, declare=[RESULTS],
                         retry=True, retry_policy={"max_retries": None, "interval_start": 0.5,
                                                   "interval_step": 1, "interval_max": 5})


def holder(hostname: str | None) -> str:
    """The lease holder's name: the worker's node name and the process's id."""
    return f"{hostname or 'worker'}:{os.getpid()}"


def run_poll(app: Celery, task_json: dict[str, Any], limits_json: dict[str, Any],
             hostname: str | None) -> dict[str, Any]:
    """The body of ``aggregator.poll``; returns the result it published."""
    from aggregator.update import poll_feed, utcnow
    from aggregator.wire import PollResult, PollTask, WireError

    task = PollTask.from_json(task_json)
    me = holder(hostname)
    n = deliveries(app, f"{task.feed_id}:{task.poll_seq}")
    if n > MAX_DELIVERIES:
        result = PollResult.failed(task, WireError("AggregatorError", GAVE_UP.format(n=n - 1)),
                                   worker=me)
        log.error("feed %s: %s", task.url, GAVE_UP.format(n=n - 1))
    else:
        publish(app, {"kind": "started", "feed_id": task.feed_id, "poll_seq": task.poll_seq,
                      "worker": me})
        result = poll_feed(_fetcher(limits_json), task, utcnow())
        if getattr(result, "worker", None) is None:
            from dataclasses import replace

            result = replace(result, worker=me)
    body = {"kind": "poll", "result": result.to_json()}
    publish(app, body)
    return body


def run_extract(app: Celery, task_json: dict[str, Any], settings_json: dict[str, Any],
                hostname: str | None) -> dict[str, Any]:
    """The body of ``aggregator.extract``; returns the result it published."""
    from aggregator.stages.summaries import ArticleWork, item_from_json, work_article
    from aggregator.update import utcnow

    item = item_from_json(task_json["item"])
    me = holder(hostname)
    n = deliveries(app, f"item:{item.id}:{task_json['dispatch']}")
    if n > MAX_DELIVERIES:
        log.error("item %d (%s): %s", item.id, item.url, GAVE_UP.format(n=n - 1))
        work = ArticleWork.gave_up(item, GAVE_UP.format(n=n - 1))
    else:
        work = work_article(_settings(settings_json), _fetcher(settings_json), item, utcnow())
    body = {"kind": "extract", "dispatch": task_json["dispatch"], "result": work.to_json(),
            "worker": me}
    publish(app, body)
    return body


def register(app: Celery, key: str = "") -> None:
    """The tasks, by the names the coordinator sends; with ``key``, only signed
    tasks are done and every message sent back is signed."""
    app.aggregator_task_key = key  # type: ignore[attr-defined]

    @app.task(name="aggregator.poll", bind=True)
    def poll(self: Any, task_json: dict[str, Any], limits_json: dict[str, Any],
             sig: str | None = None) -> None:
        if accepted(key, "task:poll", task_json, limits_json, sig):
            run_poll(self.app, task_json, limits_json, self.request.hostname)

    @app.task(name="aggregator.extract", bind=True)
    def extract(self: Any, task_json: dict[str, Any], settings_json: dict[str, Any],
                sig: str | None = None) -> None:
        if accepted(key, "task:extract", task_json, settings_json, sig):
            run_extract(self.app, task_json, settings_json, self.request.hostname)
