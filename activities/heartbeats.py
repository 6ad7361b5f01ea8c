"""Heartbeats for activities whose work blocks (Git, HTTP clients without asyncio): the blocking part runs
in a thread while the activity keeps heartbeating, so a short heartbeat timeout notices a dead worker in
seconds without failing slow but healthy work."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import TypeVar

from temporalio import activity

HEARTBEAT_EVERY_S = 2.0

R = TypeVar("R")
T = TypeVar("T")


async def in_thread_with_heartbeats(work: Callable[[R, Callable[[str], None]], T], request: R) -> T:
    """`work(request, heartbeat)` in a thread; `heartbeat(detail)` may be called from that thread. The
    heartbeats in between repeat the last detail (Temporal keeps the last one: `aicd status` shows it)."""
    latest = ["working"]
    beat = heartbeat_from_thread()

    def remembered(detail: str) -> None:
        latest[0] = detail
        beat(detail)

    task = asyncio.ensure_future(asyncio.to_thread(work, request, remembered))
    while True:
        done, _pending = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
        if done:
            return task.result()
        if activity.in_activity():
            activity.heartbeat(latest[0])


def heartbeat_from_thread() -> Callable[[str], None]:
    """A heartbeat callable usable from a worker thread of the running activity."""
    if not activity.in_activity():
        return lambda _detail: None
    context = contextvars.copy_context()  # the activity's context, so heartbeat knows which activity
    loop = asyncio.get_running_loop()

    def beat(detail: str) -> None:
        loop.call_soon_threadsafe(activity.heartbeat, detail, context=context)

    return beat
