"""The distributed runtime: Celery workers do the fetching, parsing, extraction and
summarising; one coordinator process owns the SQLite file and is its only writer.

    coordinator --claim_due--> aggregator.poll queue --worker: update.poll_feed-->
        aggregator.results queue --coordinator: update.apply_poll (fenced), then ack

    coordinator --pending_summaries--> aggregator.extract queue --worker:
        stages.summaries.work_article--> aggregator.results --apply_article, then ack

Only the ``coordinator`` and ``worker`` commands import this package (and with it
Celery, kombu and redis-py): ``aggregator run`` and every other command never do.
Delivery is at least once everywhere (``acks_late``, ``reject_on_worker_lost``,
results acknowledged after their commit); every write is idempotent and fenced by the
feed's ``poll_seq``, so a message delivered twice changes nothing the second time.
"""
