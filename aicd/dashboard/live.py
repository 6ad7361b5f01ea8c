"""Pages followed live: one poller per watched thing (a delivery, the list with its filters), shared by every
browser that watches it, polling Temporal on the server and handing each change to the subscribers, which
push it to their browsers as server-sent events. A poller stops when its last subscriber leaves, and a
delivery's poller once the delivery has ended (its subscribers get the last picture, then the end)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any

log = logging.getLogger("aicd.dashboard")

Snapshot = Any
# Returns the latest snapshot and whether it is final (nothing will change any more).
Producer = Callable[[], Awaitable[tuple[Snapshot, bool]]]


class _Watch:
    def __init__(self, produce: Producer, poll_s: float, fingerprint: Callable[[Snapshot], Hashable]) -> None:
        self.produce = produce
        self.poll_s = poll_s
        self.fingerprint = fingerprint
        self.subscribers: set[asyncio.Queue[Snapshot]] = set()
        self.latest: Snapshot | None = None
        self.final = False
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        last: Hashable = None
        failures = 0
        while self.subscribers and not self.final:
            try:
                snapshot, final = await self.produce()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Temporal unreachable for a moment: keep the page, try again
                failures += 1
                if failures == 1:
                    log.warning("dashboard: cannot refresh a live page: %s", error)
                await asyncio.sleep(min(self.poll_s * 2**failures, 30.0))
                continue
            key = self.fingerprint(snapshot)
            if key != last or final:
                last = key
                self.latest = snapshot
                self.final = final
                for queue in list(self.subscribers):
                    _offer(queue, snapshot)
            if not self.final:
                await asyncio.sleep(self.poll_s)


def _offer(queue: asyncio.Queue[Snapshot], snapshot: Snapshot) -> None:
    """Latest wins: a slow browser gets the newest picture, not every one in between."""
    with contextlib.suppress(asyncio.QueueEmpty):
        queue.get_nowait()
    queue.put_nowait(snapshot)


class Hub:
    def __init__(self, poll_s: float) -> None:
        self.poll_s = poll_s
        self._watches: dict[Hashable, _Watch] = {}

    async def follow(
        self,
        key: Hashable,
        produce: Producer,
        fingerprint: Callable[[Snapshot], Hashable],
        heartbeat_s: float | None = None,
    ) -> AsyncIterator[tuple[Snapshot | None, bool]]:
        """Each change of the watched thing as (snapshot, final), starting with the latest known; (None,
        False) after `heartbeat_s` without a change (so a stream can say it is alive)."""
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _Watch(produce, self.poll_s, fingerprint)
        queue: asyncio.Queue[Snapshot] = asyncio.Queue(maxsize=1)
        watch.subscribers.add(queue)
        if watch.latest is not None:
            _offer(queue, watch.latest)
        if not watch.final and (watch.task is None or watch.task.done()):
            watch.task = asyncio.create_task(watch.run(), name=f"aicd-dashboard-watch-{key}")
        try:
            while True:
                try:
                    snapshot = await asyncio.wait_for(queue.get(), heartbeat_s)
                except TimeoutError:
                    yield None, False
                    continue
                final = watch.final and snapshot is watch.latest
                yield snapshot, final
                if final:
                    return
        finally:
            watch.subscribers.discard(queue)
            if not watch.subscribers:
                if watch.task is not None:
                    watch.task.cancel()
                if self._watches.get(key) is watch:
                    del self._watches[key]

    async def close(self) -> None:
        tasks = [watch.task for watch in self._watches.values() if watch.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._watches.clear()
