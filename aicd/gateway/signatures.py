"""Request authenticity: GitHub's HMAC signature, GitLab's token, Slack's signed timestamp, and a memory of
recent delivery IDs against replays. Every comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict

SLACK_MAX_AGE_S = 5 * 60


def sign_github(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_refusal(secret: str, body: bytes, header: str | None) -> str | None:
    """Why the request is refused (missing/bad signature), or None when the signature is GitHub's."""
    if not header:
        return "missing X-Hub-Signature-256"
    if not header.startswith("sha256="):
        return "unsupported signature scheme"
    if not hmac.compare_digest(sign_github(secret, body).encode(), header.encode()):
        return "bad signature"
    return None


def gitlab_refusal(expected: str, header: str | None) -> str | None:
    if not header:
        return "missing X-Gitlab-Token"
    if not hmac.compare_digest(expected.encode(), header.encode()):
        return "bad token"
    return None


def sign_slack(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Slack-Signature` value Slack sends: v0= HMAC-SHA256 over `v0:{timestamp}:{body}`."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slack_refusal(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, now: float | None = None
) -> str | None:
    """Why a Slack request is refused, or None. Timestamps more than five minutes away (either way) are
    refused so a captured request cannot be replayed later."""
    if not timestamp or not signature:
        return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
    try:
        sent = int(timestamp)
    except ValueError:
        return "malformed timestamp"
    if abs((now if now is not None else time.time()) - sent) > SLACK_MAX_AGE_S:
        return "stale timestamp"
    if not hmac.compare_digest(sign_slack(secret, timestamp, body).encode(), signature.encode()):
        return "bad signature"
    return None


class ReplayCache:
    """Events (GitHub delivery IDs, GitLab idempotency keys) that started or found a delivery, and the Slack
    requests accepted, in the last `ttl_s` seconds (at most `max_size`, oldest dropped first). GitHub signs no timestamp, so this only narrows
    the window; the delivery ID (one per push event) is what makes a replayed push harmless."""

    def __init__(self, ttl_s: float = 24 * 3600.0, max_size: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, key: str, now: float | None = None) -> bool:
        """Whether `key` was remembered within the TTL."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            return key in self._seen

    def remember(self, key: str, now: float | None = None) -> None:
        """Remember an event that started or found a delivery; an event that was ignored or failed is not
        remembered, so the sender's redelivery (after a fixed spec, say) is handled again."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            self._seen[key] = now
            self._seen.move_to_end(key)

    def first_time(self, key: str, now: float | None = None) -> bool:
        """Remember `key`; whether it was new (checked and remembered at once, so of two copies of one request
        sent together only one is new)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            if key in self._seen:
                return False
            self._seen[key] = now
            return True

    def _expire(self, now: float) -> None:
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at <= self.ttl_s and len(self._seen) < self.max_size:
                break
            del self._seen[oldest]
