"""Steady loopback traffic through the local targets' proxies, so canary metrics have data to judge.

    gen = LoadGenerator(lambda: reconciler.proxy_urls().values(), rate=30)   # follows targets as they appear
    gen.start(); ...; gen.stop(); gen.stats()

    python -m aicd.dev.loadgen --url http://127.0.0.1:8080 --rate 30 --duration 10

Requests are fired on a fixed schedule (open loop, like real users: a slow canary does not slow the
arrivals down), with a cap on requests in flight so a hanging target cannot pile up unbounded work; requests
over the cap are counted as dropped. Only loopback URLs are accepted: this must never load anything real.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from aicd.network import is_loopback

log = logging.getLogger("aicd.dev.loadgen")

Targets = Iterable[str] | Callable[[], Iterable[str]]


def require_loopback(url: str) -> str:
    if not is_loopback(urlsplit(url).hostname or "") or urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"load generator only sends to loopback http(s) URLs, not {url!r}")
    return url.rstrip("/")


@dataclass
class LoadStats:
    sent: int = 0
    dropped: int = 0  # not sent: too many requests already in flight
    failed: int = 0  # no HTTP response (connection refused, timeout)
    by_status: Counter[int] = field(default_factory=Counter)
    by_version: Counter[str] = field(default_factory=Counter)  # from the demo app's X-Version header
    # 5xx answered by the app itself, by version: the release's own errors. A 5xx without X-Version came
    # from the proxy (no answer from the app in time): the machine, not the release.
    errors_by_version: Counter[str] = field(default_factory=Counter)


class LoadGenerator:
    def __init__(
        self,
        targets: Targets,
        rate: float = 30.0,
        *,
        path: str = "/",
        timeout: float = 2.0,
        max_in_flight: int = 64,
    ) -> None:
        """`rate` requests per second to each target; `targets` is a list of base URLs or a callable
        returning them (re-read every second)."""
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if callable(targets):
            self._source: Callable[[], Iterable[str]] = targets
        else:
            fixed = list(targets)
            self._source = lambda: fixed
        self.rate = rate
        self._path = path if path.startswith("/") else f"/{path}"
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._stats = LoadStats()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._targets = self._read_targets(strict=True)

    def _read_targets(self, strict: bool = False) -> list[str]:
        urls = []
        for url in self._source():
            try:
                urls.append(require_loopback(url))
            except ValueError:
                if strict:
                    raise
                log.warning("load generator: skipping non-loopback target %s", url)
        return urls

    def start(self) -> LoadGenerator:
        if self._thread is not None:
            raise RuntimeError("load generator already started")
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="aicd-loadgen", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> LoadStats:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.stats()

    def stats(self) -> LoadStats:
        with self._stats_lock:
            s = self._stats
            return LoadStats(
                s.sent,
                s.dropped,
                s.failed,
                Counter(s.by_status),
                Counter(s.by_version),
                Counter(s.errors_by_version),
            )

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _run(self) -> None:
        limits = httpx.Limits(
            max_connections=self._max_in_flight, max_keepalive_connections=self._max_in_flight
        )
        in_flight: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=self._timeout, trust_env=False, limits=limits) as client:
            interval = 1.0 / self.rate
            next_tick = time.monotonic()
            next_refresh = next_tick + 1.0
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_refresh:
                    try:
                        self._targets = self._read_targets()
                    except Exception:
                        log.exception("load generator: reading targets failed")
                    next_refresh = now + 1.0
                for url in self._targets:
                    if len(in_flight) >= self._max_in_flight:
                        with self._stats_lock:
                            self._stats.dropped += 1
                        continue
                    task = asyncio.create_task(self._one(client, url + self._path))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                # Absolute schedule, so the rate does not drift; skip ticks we are late for.
                next_tick += interval
                if next_tick < time.monotonic():
                    next_tick = time.monotonic() + interval
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            if in_flight:
                with contextlib.suppress(Exception):
                    await asyncio.wait(in_flight, timeout=self._timeout)
                for task in in_flight:
                    task.cancel()

    async def _one(self, client: httpx.AsyncClient, url: str) -> None:
        try:
            response = await client.get(url)
        except httpx.HTTPError:
            with self._stats_lock:
                self._stats.sent += 1
                self._stats.failed += 1
            return
        with self._stats_lock:
            self._stats.sent += 1
            self._stats.by_status[response.status_code] += 1
            version = response.headers.get("x-version", "?")
            self._stats.by_version[version] += 1
            if response.status_code >= 500 and version != "?":
                self._stats.errors_by_version[version] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aicd.dev.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", required=True, help="loopback base URL (repeatable)")
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second per URL")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until interrupted)")
    args = parser.parse_args(argv)
    try:
        generator = LoadGenerator(args.url, rate=args.rate)
    except ValueError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    generator.start()
    try:
        if args.duration > 0:
            time.sleep(args.duration)
        else:
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    stats = generator.stop()
    print(
        json.dumps(
            {
                "sent": stats.sent,
                "dropped": stats.dropped,
                "failed": stats.failed,
                "by_status": {str(k): v for k, v in stats.by_status.items()},
                "by_version": dict(stats.by_version),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
