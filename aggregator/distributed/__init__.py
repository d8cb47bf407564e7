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

from urllib.parse import urlsplit


def safe_url(url: str) -> str:
    """A broker URL without its password, for logs, errors and status lines."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(an invalid URL)"
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
        if port:
            netloc += f":{port}"
        return parts._replace(netloc=netloc).geturl()
    return url


def scrub(text: str, url: str) -> str:
    """``text`` (an error's message) with the URL's password, if any, masked."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text
