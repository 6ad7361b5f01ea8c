"""Waiting in tests for something a loopback stand-in or a repository will show."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def poll_until(
    predicate: Callable[[], Any], timeout: float, what: Callable[[], str], interval: float = 0.05
) -> Any:
    """`predicate()`'s first truthy value, polled every `interval`; after `timeout` seconds an
    AssertionError saying `what()` (what was seen instead)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout:g}s; {what()}")
        await asyncio.sleep(interval)
