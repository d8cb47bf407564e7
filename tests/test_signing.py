"""Signed tasks and results (distributed/signing.py): the HMAC rules on their own, the
task_key settings, then a real redis-server, a real ``aggregator worker`` process and
a local HTTP server counting requests (a forged task fetches nothing, a signed one
does), and a coordinator's real results consumer (a forged result is not applied)."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator import config
from aggregator.distributed import signing
from aggregator.errors import ConfigError
from tests.redis_harness import (
    BASE_SETTINGS,
    REDIS_SERVER,
    Parts,
    TestFarm,
    parts,
    redis_server,
    wait_until,
)

KEY = "k3y-for-the-tests-0123456789abcdef"
OTHER = "another-key-0123456789abcdef"
PAYLOAD: dict[str, Any] = {
    "task": {"v": 1, "feed_id": 7, "url": "http://127.0.0.1:9/f.xml", "poll_seq": 3,
             "etag": None, "known": {"k1": "h1", "k2": "h2"}, "title": "Zoë — 東京"},
    "settings": {"allow_private": [], "timeout": 30.0, "max_bytes": 10485760,
                 "fetch_articles": True},
}
needs_redis = pytest.mark.skipif(REDIS_SERVER is None,
                                 reason="redis-server is not installed (.ci/run installs it)")


# --- sign and verify --------------------------------------------------------------------

def test_a_signature_verifies_for_its_key_purpose_and_payload_only() -> None:
    sig = signing.sign(KEY, "task:poll", PAYLOAD)
    assert sig.startswith("v1:") and len(sig) == 3 + 64
    assert signing.verify(KEY, "task:poll", PAYLOAD, sig)
    assert signing.verify(KEY.encode(), "task:poll", PAYLOAD, sig)  # str or bytes: the same
    assert not signing.verify(OTHER, "task:poll", PAYLOAD, sig)
    assert not signing.verify(KEY + "x", "task:poll", PAYLOAD, sig)
    for purpose in ("task:extract", "result"):  # no replay as another kind of message
        assert not signing.verify(KEY, purpose, PAYLOAD, sig)
        assert signing.sign(KEY, purpose, PAYLOAD) != sig
    with pytest.raises(ValueError):
        signing.sign(KEY, "task", PAYLOAD)
    with pytest.raises(ValueError):
        signing.sign("", "task:poll", PAYLOAD)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _changed(value: Any) -> Any:
    if value is None:
        return 0
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return ["x"]  # an empty list


def test_tampering_with_any_field_breaks_the_signature() -> None:
    sig = signing.sign(KEY, "task:poll", PAYLOAD)
    paths = list(_leaves(PAYLOAD))
    assert len(paths) >= 12
    for path in paths:
        forged = copy.deepcopy(PAYLOAD)
        node = forged
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = _changed(node[path[-1]])
        assert not signing.verify(KEY, "task:poll", forged, sig), path
    for extra in ({"allow_private": ["0.0.0.0/0"]}, {"sig": sig}):  # a field added
        forged = copy.deepcopy(PAYLOAD)
        forged["settings"].update(extra)
        assert not signing.verify(KEY, "task:poll", forged, sig), extra
    forged = copy.deepcopy(PAYLOAD)
    del forged["task"]["etag"]  # a field taken away (even one that was null)
    assert not signing.verify(KEY, "task:poll", forged, sig)
    assert not signing.verify(KEY, "task:poll", {"task": PAYLOAD["settings"],
                                                 "settings": PAYLOAD["task"]}, sig)


def test_the_wire_s_key_order_escapes_and_tuples_do_not_matter() -> None:
    sig = signing.sign(KEY, "task:poll", PAYLOAD)
    # what the other end decodes: another key order, raw UTF-8 instead of \\u escapes
    wire = json.loads(json.dumps({"settings": PAYLOAD["settings"], "task": PAYLOAD["task"]},
                                 ensure_ascii=False))
    assert signing.verify(KEY, "task:poll", wire, sig)
    with_tuple = copy.deepcopy(PAYLOAD)
    with_tuple["settings"]["allow_private"] = ()
    assert signing.verify(KEY, "task:poll", with_tuple, sig)
    assert signing.canonical(PAYLOAD).isascii()
    assert b" " not in signing.canonical({"a": 1, "b": [1, 2]})
    # non-ASCII keys and payloads sign and verify; a look-alike does not
    key = "clé-secrète-ключ-0123456789"
    sig = signing.sign(key, "result", {"title": "Zoë"})
    assert signing.verify(key, "result", {"title": "Zoë"}, sig)
    assert not signing.verify(key, "result", {"title": "Zoe\u0308"}, sig)  # e + combining
    assert not signing.verify("cle-secrete-ключ-0123456789", "result", {"title": "Zoë"}, sig)


@pytest.mark.parametrize("sig", [None, "", 12345, ["v1:00"], {"v1": "x"}, "v1:",
                                 "v1:" + "0" * 64, "v2:" + "0" * 64, "v1:é" + "0" * 63])
def test_a_missing_or_malformed_signature_is_false_never_an_error(sig: Any) -> None:
    assert not signing.verify(KEY, "task:poll", PAYLOAD, sig)


def test_a_payload_that_is_not_json_verifies_false() -> None:
    for payload in ({"x": float("nan")}, {"x": object()}, {"x": {1, 2}}):
        assert not signing.verify(KEY, "result", payload, "v1:" + "0" * 64)


def test_a_signed_results_message_carries_its_signature_beside_the_rest() -> None:
    body = {"kind": "started", "feed_id": 1, "poll_seq": 2, "worker": "poll@h:9"}
    signed = signing.signed_body(KEY, body)
    assert set(signed) == {*body, "sig"} and "sig" not in body
    assert signing.verify_body(KEY, signed)
    assert signing.verify_body(KEY, json.loads(json.dumps(signed)))
    assert not signing.verify_body(OTHER, signed)
    assert not signing.verify_body(KEY, body)
    assert not signing.verify_body(KEY, {**signed, "poll_seq": 3})
    assert not signing.verify_body(KEY, [signed])
    # a task's signature is not a result's
    assert not signing.verify_body(KEY, {**body, "sig": signing.sign(KEY, "task:poll", body)})


def test_a_worker_drops_a_bad_task_with_one_line_naming_only_its_id(
        caplog: pytest.LogCaptureFixture) -> None:
    from aggregator.distributed.tasks import accepted

    caplog.set_level(logging.INFO, logger="aggregator")
    task, values = PAYLOAD["task"], PAYLOAD["settings"]
    good = signing.sign(KEY, "task:poll", {"task": task, "settings": values})
    assert accepted(KEY, "task:poll", task, values, good)
    assert accepted("", "task:poll", task, values, None)  # no key: as before signing
    assert not accepted(KEY, "task:poll", task, values, None)
    assert not accepted(KEY, "task:extract", task, values, good)
    item = {"v": 1, "item": {"id": 42, "url": "http://127.0.0.1:9/secret-path"},
            "dispatch": "d"}
    assert not accepted(KEY, "task:extract", item, values, "v1:" + "0" * 64)
    assert not accepted(KEY, "task:poll", {"feed_id": True, "url": "x"}, values, None)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == [
        "feed 7: poll task with a missing signature dropped, nothing fetched",
        "item ?: extract task with a bad signature dropped, nothing fetched",
        "item 42: extract task with a bad signature dropped, nothing fetched",
        "feed ?: poll task with a missing signature dropped, nothing fetched",
    ], lines


# --- settings -----------------------------------------------------------------------------

def test_task_key_from_the_environment_or_a_file_never_shown(tmp_path: Path) -> None:
    settings = config.load(env={"AGGREGATOR_TASK_KEY": KEY})
    assert settings.task_key == KEY
    assert KEY not in repr(settings) and KEY not in str(settings)
    assert config.load(env={}).task_key == ""
    key_file = tmp_path / "task_key"
    key_file.write_text(f"  {KEY}\n", "utf-8")  # as `openssl rand -hex 32 >` writes it
    settings = config.load(env={"AGGREGATOR_TASK_KEY_FILE": str(key_file)})
    assert settings.task_key == KEY and KEY not in repr(settings)
    (tmp_path / "a.toml").write_text('task_key_file = "task_key"\n', "utf-8")
    assert config.load(tmp_path / "a.toml", env={}).task_key == KEY  # relative to the file
    (tmp_path / "empty").write_text("\n", "utf-8")
    assert config.load(env={"AGGREGATOR_TASK_KEY_FILE": str(tmp_path / "empty")}).task_key == ""


@pytest.mark.parametrize("env, message", [
    ({"AGGREGATOR_TASK_KEY": "short-s3cret"}, "at least 16 characters"),
    ({"AGGREGATOR_TASK_KEY": " s3cret-with-a-space-around "}, "without spaces"),
    ({"AGGREGATOR_TASK_KEY": "s3cret-0123456789abc", "AGGREGATOR_TASK_KEY_FILE": "{dir}/k"},
     "not both"),
    ({"AGGREGATOR_TASK_KEY_FILE": "{dir}/missing"}, "cannot read task_key_file"),
    ({"AGGREGATOR_TASK_KEY_FILE": "{dir}/two"}, "more than one line"),
])
def test_a_bad_task_key_is_an_error_that_does_not_show_it(
        tmp_path: Path, env: dict[str, str], message: str) -> None:
    (tmp_path / "k").write_text("s3cret-0123456789abcdef\n", "utf-8")
    (tmp_path / "two").write_text("s3cret-0123456789abcdef\ns3cret-line-two-0123\n", "utf-8")
    env = {k: v.format(dir=tmp_path) for k, v in env.items()}
    with pytest.raises(ConfigError) as e:
        config.load(env=env)
    assert message in str(e.value)
    assert "s3cret" not in str(e.value)


# --- a real worker: forged tasks fetch nothing ------------------------------------------------

@pytest.fixture
def farm() -> Iterator[TestFarm]:
    f = TestFarm(1, 2).serve()
    yield f
    f.stop()


@pytest.fixture
def cluster_parts(tmp_path: Path) -> Iterator[Parts]:
    pytest.importorskip("celery", reason="the distributed extra is not installed")
    yield from parts(tmp_path)


def _poll_task(feed_id: int, url: str) -> dict[str, Any]:
    from aggregator.wire import PollTask

    return PollTask(feed_id=feed_id, url=url, poll_seq=1).to_json()


@needs_redis
def test_a_worker_fetches_for_signed_tasks_only(tmp_path: Path, cluster_parts: Parts,
                                                farm: TestFarm) -> None:
    from kombu import Connection

    from aggregator.distributed.app import POLL_QUEUE, make_app
    from aggregator.distributed.tasks import RESULTS, task_payload, worker_settings

    key = BASE_SETTINGS["task_key"]  # the cluster's config file holds it
    cluster = cluster_parts.cluster(tmp_path / "c")
    worker = cluster.worker("poll", concurrency=1)
    cluster.wait_workers_ready(worker)
    base = f"http://127.0.0.1:{farm.port}"
    limits = worker_settings(config.Settings())

    def payload(feed_id: int, path: str, values: dict[str, Any] = limits) -> list[Any]:
        return [_poll_task(feed_id, base + path), values]

    def signed(purpose: str, args: list[Any], with_key: str = key) -> list[Any]:
        return [*args, signing.sign(with_key, purpose, task_payload(*args))]

    opened = {**limits, "allow_private": ["0.0.0.0/0", "::/0"]}
    tampered = signed("task:poll", payload(104, "/forged/tampered.xml"))
    tampered[1] = opened  # the settings swapped after signing: allow_private widened
    forged = [
        payload(101, "/forged/unsigned.xml"),
        signed("task:poll", payload(102, "/forged/other-key.xml"), with_key=OTHER),
        signed("result", payload(103, "/forged/result-sig.xml")),  # a result's, replayed
        tampered,
        signed("task:extract", payload(105, "/forged/extract-sig.xml")),
        [*payload(106, "/forged/junk-sig.xml"), {"sig": "v1:00"}],
    ]
    app = make_app(cluster_parts.redis.url, visibility_timeout=6)  # an app of our own
    try:
        for args in forged:
            app.send_task("aggregator.poll", args=args, queue=POLL_QUEUE,
                          routing_key=POLL_QUEUE)
        app.send_task("aggregator.poll", args=signed("task:poll", payload(7, "/feed/0.xml")),
                      queue=POLL_QUEUE, routing_key=POLL_QUEUE)
    finally:
        app.close()
    farm_path = farm.feed_path(0)
    wait_until(lambda: farm.count(farm_path) >= 1, 60, "the signed task's request",
               logs=[worker])
    wait_until(lambda: worker.text().count("signature dropped") >= len(forged), 30,
               "a line for every forged task", logs=[worker])
    wait_until(lambda: cluster_parts.redis.queued().get("aggregator.results", 0) >= 2, 30,
               "the signed task's messages", logs=[worker])
    with farm.lock:
        assert dict(farm.requests) == {farm_path: 1}, farm.requests  # nothing forged fetched
    text = worker.text()
    dropped = [line for line in text.splitlines() if "signature dropped" in line]
    assert len(dropped) == len(forged), text
    assert all("/forged/" not in line and "127.0.0.1" not in line for line in dropped)
    assert {line.split(": poll task")[0].rsplit(" ", 1)[-1] for line in dropped} == \
        {str(i) for i in range(101, 107)}
    assert "tasks are not signed" not in text and key not in text
    # the delivery counter is the signed task's alone: forged ones are dropped before it
    assert cluster_parts.redis.command("KEYS", "aggregator:attempts:*") == \
        ["aggregator:attempts:7:1"]
    # what the worker sent back is signed
    with Connection(cluster_parts.redis.url) as conn:
        queue = conn.SimpleQueue(RESULTS)
        bodies = []
        for _ in range(2):
            message = queue.get(timeout=10)
            bodies.append(message.payload)
            message.ack()
        queue.close()
    assert [b["kind"] for b in bodies] == ["started", "poll"]
    assert all(signing.verify_body(key, b) for b in bodies)
    assert bodies[1]["result"]["feed_id"] == 7 and bodies[1]["result"]["status"] == 200


# --- a real results consumer: forged results are not applied ---------------------------------

@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    yield from redis_server(tmp_path)


@needs_redis
def test_the_coordinator_applies_signed_results_only(
        tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from tests.test_attack12 import Consumer, result

    caplog.set_level(logging.INFO, logger="aggregator")
    consumer = Consumer(tmp_path, redis_url, task_key=KEY)
    try:
        honest = result(feed_id=1)
        tampered = signing.signed_body(KEY, result(feed_id=1))
        tampered["result"]["items"][0][1]["title"] = "Forged"
        as_task = result(feed_id=1)
        as_task["sig"] = signing.sign(KEY, "task:poll", result(feed_id=1))
        started = {"kind": "started", "feed_id": 1, "poll_seq": 1, "worker": "evil@x:1"}
        for body in (honest,  # unsigned
                     signing.signed_body(OTHER, result(feed_id=1)),
                     tampered, as_task, started,
                     {**started, "sig": signing.sign(KEY, "result", started)[:-1] + "0"},
                     signing.signed_body(OTHER, {"kind": "extract", "dispatch": "d",
                                                 "result": {"v": 1, "item_id": 1}}),
                     ["not", "a", "dict"]):
            consumer.publish(body)
        consumer.publish(signing.signed_body(KEY, result(feed_id=2)))
        consumer.wait("the signed result", lambda: consumer.feed(2)["last_status"] == 200)
        consumer.wait("every message acknowledged", consumer.queue_empty)
        feed = consumer.feed(1)
        assert feed["last_status"] is None and feed["lease_holder"] == "queued"
        assert feed["lease_until"] is not None
        assert [(i["feed_id"], i["title"]) for i in consumer.items()] == [(2, "One")]
        lines = [r.getMessage() for r in caplog.records
                 if r.name == "aggregator.coordinator" and r.levelno >= logging.WARNING]
        assert lines == [
            "results: poll message for feed 1 with a missing signature dropped",
            "results: poll message for feed 1 with a bad signature dropped",
            "results: poll message for feed 1 with a bad signature dropped",
            "results: poll message for feed 1 with a bad signature dropped",
            "results: started message for feed 1 with a missing signature dropped",
            "results: started message for feed 1 with a bad signature dropped",
            "results: extract message for item 1 with a bad signature dropped",
            "results: ? message for feed ? with a missing signature dropped",
        ], lines
    finally:
        consumer.stop()
