"""Deliveries in flight by phase, counted where the truth is: Temporal's visibility store.

A worker only holds the deliveries it happens to have cached, so it cannot count them itself; the
`AicdPhase` search attribute every delivery keeps up to date can. Each worker counts the running deliveries
of its task queue per phase every `interval_s` (one count query per phase) and exports the numbers as
gauges; several workers report the same numbers, so dashboards and alerts aggregate them with `max`.
Running deliveries without the search attribute (a server where it is not registered) count as `unknown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from temporalio.client import Client

from aicd import search
from aicd.observability.metrics import IN_FLIGHT_PHASES, AicdMetrics

log = logging.getLogger(__name__)

DELIVERY_WORKFLOW = "DeliveryWorkflow"
DEFAULT_INTERVAL_S = 15.0


class DeliveryCensus:
    def __init__(
        self, client: Client, metrics: AicdMetrics, task_queue: str, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.task_queue = task_queue
        self.interval_s = interval_s
        self._warned = False

    def _query(self, phase: str | None) -> str:
        running = f"WorkflowType = '{DELIVERY_WORKFLOW}' AND ExecutionStatus = 'Running' AND TaskQueue = '{self.task_queue}'"
        return running if phase is None else f"{running} AND {search.PHASE.name} = '{phase}'"

    async def count(self) -> dict[str, int]:
        """Running deliveries of the task queue by phase (`unknown`: without the phase attribute)."""
        total = (await self.client.count_workflows(self._query(None))).count
        counts: dict[str, int] = {}
        try:
            for phase in IN_FLIGHT_PHASES[:-1]:
                counts[phase] = (await self.client.count_workflows(self._query(phase))).count
        except Exception as error:  # the search attribute is not registered: only the total is known
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot count deliveries by %s (register the search attribute): %s",
                    search.PHASE.name,
                    error,
                )
            counts = {}
        counts["unknown"] = max(total - sum(counts.values()), 0)
        return counts

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.metrics.census(await self.count())
            except Exception as error:  # Temporal unreachable: keep the last numbers, try again
                log.warning("cannot count deliveries in flight: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
