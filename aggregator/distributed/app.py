"""The Celery application both sides share: JSON only, late acknowledgements, one
task prefetched per worker process, no result backend, no countdowns or ETAs.

Why these settings (Celery 5.x on kombu's Redis transport):

- ``task_acks_late``: a task's message is acknowledged after the task returned, so a
  worker killed mid-task leaves it unacknowledged in Redis (kombu's ``unacked`` hash);
  kombu hands it out again once it is ``visibility_timeout`` seconds old.
- ``task_reject_on_worker_lost``: when a prefork child dies (SIGKILL, OOM) the parent
  rejects the message with requeue, and kombu puts it back at the head of its queue at
  once (no wait for the visibility timeout). A task that kills its worker every time
  would loop: the tasks count their deliveries in Redis and give up after 3 (tasks.py).
- ``worker_prefetch_multiplier = 1``: a worker holds no more tasks than it has
  processes, so a slow worker does not sit on work another could do.
- results go back as plain messages on ``aggregator.results`` (tasks.py), never
  through a result backend: the coordinator acknowledges each only after its commit.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

POLL_QUEUE = "aggregator.poll"
EXTRACT_QUEUE = "aggregator.extract"
RESULTS_QUEUE = "aggregator.results"
QUEUES = {"poll": POLL_QUEUE, "extract": EXTRACT_QUEUE}


def transport_options(visibility_timeout: float) -> dict[str, Any]:
    """kombu's Redis transport options for every connection we make (tasks, results).

    ``unacked_restore_throttle = 1`` makes each look for messages to restore a real
    one: kombu by default scans only every 10th time (every ~100 s in a worker's
    event loop), far longer than a short visibility timeout."""
    vt = float(visibility_timeout)
    return {
        "visibility_timeout": vt,
        "unacked_restore_throttle": 1,
        "unacked_restore_interval": max(1.0, min(10.0, vt / 4)),
    }


def make_app(broker_url: str, *, visibility_timeout: float) -> Celery:
    """The Celery app for ``broker_url`` (a ``redis://`` URL); the tasks are
    registered on it by ``tasks.register``."""
    app = Celery("aggregator", broker=broker_url, set_as_current=False)
    direct = Exchange("aggregator", type="direct")
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_store_errors_even_if_ignored=False,
        broker_transport_options=transport_options(visibility_timeout),
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_default_queue=POLL_QUEUE,
        task_queues=[Queue(POLL_QUEUE, direct, routing_key=POLL_QUEUE),
                     Queue(EXTRACT_QUEUE, direct, routing_key=EXTRACT_QUEUE)],
        task_routes={"aggregator.poll": {"queue": POLL_QUEUE, "routing_key": POLL_QUEUE},
                     "aggregator.extract": {"queue": EXTRACT_QUEUE,
                                            "routing_key": EXTRACT_QUEUE}},
        task_create_missing_queues=False,
        enable_utc=True,
        timezone="UTC",
    )
    return app
