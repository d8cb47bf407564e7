"""aggregator-update.timer and `interval = 30`: every feed is polled at every pass.

The timer starts `aggregator update` at :00 and :30 plus a random delay
(RandomizedDelaySec=5min, fixed per machine by FixedRandomDelay=) and systemd's
AccuracySec=1min; the pass itself takes a while (here ~2 min of simulated time).
A feed polled at one pass is due `interval` minutes later plus up to 10 % jitter,
so without slack it just misses the next pass and is polled hourly. These tests
run a simulated day of timer firings (a hand-moved clock) of real passes against
a real HTTP server on 127.0.0.1 and a real SQLite file.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hostile_servers import Clock, local_httpserver, rss, settings_for, write_opml
from werkzeug import Request, Response

from aggregator.store import Store
from aggregator.update import make_fetcher, poll_slack, run_pass

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
PERIOD = timedelta(minutes=30)  # OnCalendar=*:0/30
RANDOM_DELAY = 300.0  # RandomizedDelaySec=5min, s
ACCURACY = 60.0  # AccuracySec=1min, s
FEEDS = 12
STEP = timedelta(seconds=5)  # simulated time one clock reading costs: a pass takes ~2 min


class PassClock(Clock):
    """Time moves on a little at every reading, so a pass has a length and the
    feeds it polls last are fetched minutes after the first."""

    def __call__(self) -> datetime:
        self.now += STEP
        return self.now


def _serve_feeds(server) -> list[str]:
    body = rss("Timer", ("one", "http://127.0.0.1/1"))

    def handler(request: Request) -> Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304, headers={"ETag": '"v1"'})
        return Response(body, content_type="application/rss+xml", headers={"ETag": '"v1"'})

    urls = []
    for n in range(FEEDS):
        server.expect_request(f"/feed{n}.xml").respond_with_handler(handler)
        urls.append(server.url_for(f"/feed{n}.xml"))
    return urls


def _simulate(tmp_path: Path, firings: list[datetime], *, slack: bool = True,
              seed: int = 3) -> tuple[dict[str, list[datetime]], timedelta]:
    """Run one real `update` pass (no summaries, no publishing) at each firing;
    returns every feed's poll times and the slack the passes used."""
    tmp_path.mkdir(exist_ok=True)
    s = settings_for(tmp_path, interval=30.0, min_interval=5.0, jitter=0.1)
    early = poll_slack(s) if slack else timedelta(0)
    polls: dict[str, list[datetime]] = {}
    rng = random.Random(seed)
    with local_httpserver() as server:
        urls = _serve_feeds(server)
        write_opml(s, urls)
        clock = PassClock(firings[0])
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            for when in firings:
                assert when >= clock.now, "a pass ran past the next firing"
                clock.now = when
                run_pass(s, store, fetcher, clock=clock, rng=rng, early=early)
                for url in urls:
                    last = store.feed(url).last_fetch
                    times = polls.setdefault(url, [])
                    if last is not None and (not times or last > times[-1]):
                        times.append(last)
    return polls, early


def fixed_delay_firings(days: int = 1, seed: int = 11) -> list[datetime]:
    """The timer as shipped: one random delay for the machine, plus AccuracySec."""
    rng = random.Random(seed)
    delay = timedelta(seconds=rng.uniform(0, RANDOM_DELAY))
    return [START + k * PERIOD + delay + timedelta(seconds=rng.uniform(0, ACCURACY))
            for k in range(days * 48)]


def _gaps(times: list[datetime]) -> list[timedelta]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_the_slack_rule() -> None:
    """interval x jitter + 2 x min_interval, at most half the interval."""
    s = settings_for(Path("/nonexistent"), interval=30.0, min_interval=5.0, jitter=0.1)
    assert poll_slack(s) == timedelta(minutes=13)
    assert poll_slack(s.replace(jitter=0.0)) == timedelta(minutes=10)
    assert poll_slack(s.replace(interval=60.0)) == timedelta(minutes=16)
    assert poll_slack(s.replace(interval=20.0)) == timedelta(minutes=10)  # half of 20
    assert poll_slack(s.replace(interval=1.0, min_interval=1.0)) == timedelta(seconds=30)


def test_every_feed_is_polled_at_every_pass_of_the_timer(tmp_path: Path) -> None:
    firings = fixed_delay_firings()
    polls, slack = _simulate(tmp_path, firings)
    assert slack == timedelta(minutes=13)
    for url, times in polls.items():
        assert len(times) == len(firings), (url, len(times))  # 48 polls a day, not 24
        gaps = _gaps(times)
        assert max(gaps) <= PERIOD + slack, (url, max(gaps))
        assert min(gaps) >= PERIOD - timedelta(minutes=5), (url, min(gaps))


def test_without_the_slack_the_timer_polls_hourly(tmp_path: Path) -> None:
    """What the slack fixes (and what makes the test above able to fail)."""
    firings = fixed_delay_firings()
    polls, _ = _simulate(tmp_path, firings, slack=False)
    for url, times in polls.items():
        assert len(times) <= len(firings) // 2 + 1, (url, len(times))
        assert max(_gaps(times)) > timedelta(minutes=55)


def test_a_new_random_delay_at_every_firing_misses_no_pass(tmp_path: Path) -> None:
    """A timer without FixedRandomDelay= (systemd < 247, or an edited copy) draws a new
    delay of up to 5 min at every firing: two passes can start 24 min apart, or 36. The
    slack still catches every pass."""
    for seed in (5, 6):
        rng = random.Random(seed)
        firings = [START + k * PERIOD
                   + timedelta(seconds=rng.uniform(0, RANDOM_DELAY) + rng.uniform(0, ACCURACY))
                   for k in range(48)]
        polls, slack = _simulate(tmp_path / str(seed), firings)
        for url, times in polls.items():
            assert len(times) == len(firings), (seed, url, len(times))
            assert max(_gaps(times)) <= PERIOD + slack, (seed, url)


def test_the_slack_never_polls_a_feed_sooner_than_min_interval(tmp_path: Path) -> None:
    """With `interval = 8` the slack is 4 min: 4 min after a poll the feed is due
    within the slack, yet it waits until min_interval (5 min) has passed."""
    s = settings_for(tmp_path, interval=8.0, min_interval=5.0, jitter=0.0)
    assert poll_slack(s) == timedelta(minutes=4)  # half of 8
    with local_httpserver() as server:
        server.expect_request("/feed.xml").respond_with_data(
            rss("Short", ("one", "http://127.0.0.1/1")), content_type="application/rss+xml")
        url = server.url_for("/feed.xml")
        write_opml(s, [url])
        clock = Clock(START)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            def polled() -> int:
                return len(run_pass(s, store, fetcher, clock=clock, early=poll_slack(s))
                           .outcomes)

            assert polled() == 1
            clock.advance(minutes=4)
            assert store.feed(url).next_fetch <= clock.now + poll_slack(s)  # inside the slack
            assert polled() == 0  # but polled only 4 minutes ago
            clock.advance(seconds=59)
            assert polled() == 0
            clock.advance(seconds=1)  # 5 minutes after the poll
            assert polled() == 1


def test_the_slack_is_for_update_only(tmp_path: Path) -> None:
    """run_pass without ``early`` (the daemon, which looks every min_interval/4)
    polls only what is due."""
    s = settings_for(tmp_path, interval=30.0, min_interval=5.0, jitter=0.0)
    with local_httpserver() as server:
        urls = _serve_feeds(server)[:2]
        write_opml(s, urls)
        clock = Clock(START)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            assert len(run_pass(s, store, fetcher, clock=clock).outcomes) == 2
            clock.advance(minutes=25)
            assert run_pass(s, store, fetcher, clock=clock).outcomes == []
            assert len(run_pass(s, store, fetcher, clock=clock,
                                early=poll_slack(s)).outcomes) == 2
