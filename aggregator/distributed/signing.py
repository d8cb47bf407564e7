"""HMAC-SHA256 signatures of the messages that cross the broker (pure: no I/O).

Anyone who can write to Redis can put a message on a queue. Signed, a task is done
and a result applied only when it was made by a holder of ``task_key``: the
coordinator signs the tasks it sends, the workers the messages they send back.

    signature = "v1:" + hex(HMAC-SHA256(key, purpose + "\\n" + canonical(payload)))

``canonical`` is JSON with sorted keys, no whitespace and only ASCII, so both
ends compute it over the same bytes whatever order or escapes the wire used.
The purpose (``task:poll``, ``task:extract``, ``result``) is part of what is
signed: a signed result cannot be replayed as a task, nor a poll task as an
extract task. A signature covers the whole payload: a task's settings (its
``allow_private`` among them) as much as its URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

PURPOSES = frozenset({"task:poll", "task:extract", "result"})
VERSION = "v1:"


def canonical(payload: Any) -> bytes:
    """The bytes a signature is computed over. JSON's own types only (as decoded
    from the wire): a float that is not finite, or any other type, is a ValueError
    or TypeError, never a signature."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _mac(key: str | bytes, purpose: str, payload: Any) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown signing purpose {purpose!r}")
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not raw:
        raise ValueError("an empty key signs nothing")
    return hmac.new(raw, purpose.encode("ascii") + b"\n" + canonical(payload),
                    hashlib.sha256).hexdigest()


def sign(key: str | bytes, purpose: str, payload: Any) -> str:
    """The signature of ``payload`` for ``purpose`` under ``key``."""
    return VERSION + _mac(key, purpose, payload)


def verify(key: str | bytes, purpose: str, payload: Any, signature: Any) -> bool:
    """True only when ``signature`` is ``sign(key, purpose, payload)``; anything
    else (missing, not a string, a payload that cannot be encoded) is False."""
    if not isinstance(signature, str) or not signature.isascii() \
            or not signature.startswith(VERSION):
        return False
    try:
        expected = _mac(key, purpose, payload)
    except (TypeError, ValueError, RecursionError):
        return False
    return hmac.compare_digest(expected, signature[len(VERSION):])


def signed_body(key: str | bytes, body: dict[str, Any]) -> dict[str, Any]:
    """A results-queue message with its signature (``sig``) added."""
    return {**body, "sig": sign(key, "result", body)}


def verify_body(key: str | bytes, body: Any) -> bool:
    """A results-queue message (a dict) whose ``sig`` signs the rest of it."""
    if not isinstance(body, dict):
        return False
    rest = {k: v for k, v in body.items() if k != "sig"}
    return verify(key, "result", rest, body.get("sig"))
