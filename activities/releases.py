"""Overlapping releases of one app: when a delivery is about to make its first GitOps write, it claims the
app from the older deliveries still running (spec.concurrency).

- supersede: each older running delivery is told it was superseded; it stops at its next step boundary,
  withdraws the canaries it has in progress and ends `superseded`, and tells this one, which waits for that
  (a few minutes at most) so the withdrawal lands before its first write.
- queue: each older running delivery is asked to tell this one when it ends; this one waits.

Which deliveries are running comes from Temporal's visibility (deliveries of an app share the workflow ID
prefix `delivery-<app>-`), "older" from their start times. Visibility can lag a second behind; nothing here
has to be exact for Git to stay true: the ownership check at every write (activities/gitops.py) refuses a
write over a newer delivery's, whatever the timing. This only stops older deliveries early and tidily.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from aicd.messages import DELIVERY_WORKFLOW, NOTIFY_ON_END_SIGNAL, SUPERSEDED_SIGNAL
from aicd.plan import delivery_id
from aicd.spec.model import Concurrency

log = logging.getLogger(__name__)
_REVISION_PART = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?(-[0-9a-z]+)?")


@dataclass
class ClaimRequest:
    app: str
    delivery_id: str  # the claiming (newer) delivery
    mode: Concurrency


@dataclass
class ClaimResult:
    older: list[str] = field(default_factory=list)  # older deliveries of the app still running, oldest first
    # Those of them on the claiming delivery's task queue: served by the same workers, so a superseded one
    # withdraws its canaries soon. One on another queue (another aicd installation's) is not waited for.
    same_queue: list[str] = field(default_factory=list)


class ReleaseActivities:
    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name="claim_release")
    async def claim(self, request: ClaimRequest) -> ClaimResult:
        me = await self.client.get_workflow_handle(request.delivery_id).describe()
        mine = (me.start_time, request.delivery_id)
        prefix = delivery_id(request.app, "")
        query = (
            f"WorkflowType = '{DELIVERY_WORKFLOW}' AND ExecutionStatus = 'Running'"
            f" AND WorkflowId STARTS_WITH '{prefix}'"
        )
        older: list[tuple[object, str]] = []
        queues: dict[str, str] = {}
        async for execution in self.client.list_workflows(query):
            # `delivery-web-` also prefixes app `web-api`'s deliveries: the rest must be a revision.
            if execution.id == request.delivery_id or not _REVISION_PART.fullmatch(
                execution.id[len(prefix) :]
            ):
                continue
            if (execution.start_time, execution.id) < mine:
                older.append((execution.start_time, execution.id))
                queues[execution.id] = execution.task_queue
        # Supersede: stop, then tell this delivery at the end (it waits for the canaries' withdrawal); queue:
        # only tell it.
        signals = [SUPERSEDED_SIGNAL] if request.mode == "supersede" else []
        running = []
        for _started, other in sorted(older):  # type: ignore[type-var]
            handle = self.client.get_workflow_handle(other)
            try:
                for signal in [*signals, NOTIFY_ON_END_SIGNAL]:
                    await handle.signal(signal, request.delivery_id)
                running.append(other)
            except RPCError as error:  # it ended meanwhile: nothing to stop or wait for
                log.info("%s: %s not told (%s)", request.delivery_id, other, error)
        activity.logger.info(
            "%s claims %s from %s (%s)", request.delivery_id, request.app, running, request.mode
        )
        return ClaimResult(running, [other for other in running if queues.get(other) == me.task_queue])

    @activity.defn(name="running_deliveries")
    async def running(self, ids: list[str]) -> list[str]:
        """Those of `ids` still running (a queued delivery's safety net for a notice that never came)."""
        still = []
        for other in ids:
            try:
                description = await self.client.get_workflow_handle(other).describe()
            except RPCError:
                continue
            if description.status == WorkflowExecutionStatus.RUNNING:
                still.append(other)
        return still
