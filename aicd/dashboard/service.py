"""The dashboard's data: deliveries from Temporal's visibility, a delivery's status from its status query
(or, when no worker answers, from its history), the digests of its histories, its commits from Git; and the
human actions, sent through aicd.client like every other way in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from aicd import client as deliveries
from aicd import search
from aicd.dashboard.gitops import CommitInfo, GitOpsReader
from aicd.dashboard.history import DeliveryDigest, HistoryStore, RolloutDigest
from aicd.dashboard.settings import DashboardSettings
from aicd.dashboard.views import (
    DeliveryRow,
    DeliveryView,
    build_view,
    duration_text,
    status_from_history,
    trigger_text,
)
from aicd.messages import DeliveryStatus, HumanAction, LaterCommit
from aicd.people import Roster
from aicd.plan import DELIVERY_ID, DeliveryPlan
from aicd.steering import plan_approvers

log = logging.getLogger("aicd.dashboard")

STATUS_QUERY_TIMEOUT_S = 5.0
GIT_WAIT_S = 2.0  # a page does not wait longer for Git; the read goes on and the next refresh has it
LIST_LIMIT = 100


class NotFound(Exception):
    pass


class DashboardService:
    def __init__(self, settings: DashboardSettings, client: Callable[[], Awaitable[Client]]) -> None:
        self.settings = settings
        self._client = client
        self._history: HistoryStore | None = None
        self.gitops = GitOpsReader()
        self._triggers: dict[tuple[str, str], str] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._reads = asyncio.Semaphore(8)  # first reads of many deliveries' triggers: a few at a time

    async def client(self) -> Client:
        return await self._client()

    async def history(self) -> HistoryStore:
        if self._history is None:
            self._history = HistoryStore(await self.client())
        return self._history

    # --- the list ---------------------------------------------------------------------------------------

    async def rows(
        self, app: str | None, phase: str | None, running: bool, limit: int = LIST_LIMIT
    ) -> list[DeliveryRow]:
        client = await self.client()
        summaries = await deliveries.list_delivery_summaries(
            client, app, phase=phase, running_only=running, limit=limit
        )
        now = datetime.now(UTC)
        triggers = await asyncio.gather(*(self._trigger(s.delivery_id, s.run_id) for s in summaries))
        rows = []
        for summary, trigger in zip(summaries, triggers, strict=True):
            end = summary.closed or now
            rows.append(
                DeliveryRow(
                    delivery_id=summary.delivery_id,
                    app=summary.app,
                    revision=_revision(summary.delivery_id, summary.app),
                    trigger=trigger,
                    phase=summary.phase or ("pending" if summary.state == "running" else summary.state),
                    stage=summary.stage,
                    state=summary.state,
                    started=summary.started,
                    closed=summary.closed,
                    duration=duration_text((end - summary.started).total_seconds()),
                )
            )
        return rows

    async def _trigger(self, delivery_id: str, run_id: str) -> str:
        """Who started it: from the first event of its history (read once per run, it never changes)."""
        key = (delivery_id, run_id)
        if key not in self._triggers:
            client = await self.client()
            digest = DeliveryDigest()
            try:
                async for event in client.get_workflow_handle(
                    delivery_id, run_id=run_id
                ).fetch_history_events(page_size=1):
                    await digest.feed([event], client.data_converter)
                    break
            except RPCError:
                return "-"
            self._triggers[key] = trigger_text(None, digest)
        return self._triggers[key]

    # --- one delivery -------------------------------------------------------------------------------------

    async def view(self, delivery_id: str) -> DeliveryView:
        if not DELIVERY_ID.fullmatch(delivery_id):
            raise NotFound(delivery_id)
        client = await self.client()
        try:
            described = await client.get_workflow_handle(delivery_id).describe()
        except RPCError as error:
            if "not found" in str(error).lower():
                raise NotFound(delivery_id) from None
            raise
        if described.workflow_type != "DeliveryWorkflow":
            raise NotFound(delivery_id)
        running = described.status == WorkflowExecutionStatus.RUNNING
        history = await self.history()
        digest = await history.delivery(delivery_id, described.run_id, described.history_length)
        status, source = await self._status(
            client, delivery_id, digest, described.typed_search_attributes.get(search.PHASE) or ""
        )
        rollouts = await self._rollouts(history, digest)
        plan = digest.input.plan if digest.input else None
        if plan:
            infos = await self._commit_infos(plan, status)
        else:
            infos = {}
        return build_view(
            status,
            digest,
            {target: rollout.looks for target, rollout in rollouts.items()},
            infos,
            steps={target: rollout.steps for target, rollout in rollouts.items()},
            now=datetime.now(UTC),
            commit_template=self.settings.commit_url,
            status_source=source,
            running=running,
        )

    async def _status(
        self, client: Client, delivery_id: str, digest: DeliveryDigest, phase: str
    ) -> tuple[DeliveryStatus, str]:
        try:
            status = await asyncio.wait_for(
                deliveries.get_status(client, delivery_id), STATUS_QUERY_TIMEOUT_S
            )
            return status, "query"
        except (deliveries.ActionRefused, RPCError, TimeoutError) as error:
            log.info(
                "dashboard: status query of %s not answered (%s): reading its history", delivery_id, error
            )
            return status_from_history(digest, phase), "history"

    async def _rollouts(self, history: HistoryStore, digest: DeliveryDigest) -> dict[str, RolloutDigest]:
        """Each started target's rollout: its analysis looks, and its step commits (the timeline's steps)."""
        started = [child for child in digest.children.values() if child.run_id]
        found = await asyncio.gather(*(history.rollout(child.workflow_id, child.run_id) for child in started))
        return {child.target: rollout for child, rollout in zip(started, found, strict=True)}

    async def _commit_infos(self, plan: DeliveryPlan, status: DeliveryStatus) -> dict[str, CommitInfo]:
        """What Git says of the delivery's commits; and into `status`, which of them its branch no longer
        holds and the later commits that changed its targets' files."""
        shas = status.commits()
        if not shas:
            return {}

        async def read() -> tuple[dict[str, CommitInfo], tuple[list[str], dict[str, list[LaterCommit]]]]:
            infos = await self.gitops.infos(plan.gitops_repo, shas)
            since = await self.gitops.branch_since(plan.gitops_repo, plan.gitops_branch, status)
            return infos, since

        task = asyncio.ensure_future(read())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        with contextlib.suppress(TimeoutError):
            infos, (status.off_branch, status.changed_since) = await asyncio.wait_for(
                asyncio.shield(task), GIT_WAIT_S
            )
            return infos
        return {}

    async def plan(self, delivery_id: str) -> DeliveryPlan:
        """The delivery's plan (from the first event of its history)."""
        client = await self.client()
        try:
            described = await client.get_workflow_handle(delivery_id).describe()
        except RPCError:
            raise NotFound(delivery_id) from None
        if described.workflow_type != "DeliveryWorkflow":
            raise NotFound(delivery_id)
        digest = await (await self.history()).delivery(
            delivery_id, described.run_id, described.history_length
        )
        if digest.input is None:
            raise NotFound(delivery_id)
        return digest.input.plan

    async def approvers(self, delivery_id: str) -> Roster:
        """Everyone listed as an approver in any stage of the delivery, read through its people."""
        return plan_approvers(await self.plan(delivery_id))

    async def act(self, delivery_id: str, kind: str, action: HumanAction) -> str:
        """Send a human action (ActionRefused: the workflow's validator said no, or the delivery is gone)."""
        return await deliveries.send_action(await self.client(), delivery_id, kind, action)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()


def _revision(delivery_id: str, app: str) -> str:
    prefix = f"delivery-{app}-" if app else ""
    if not prefix or not delivery_id.startswith(prefix):
        return ""
    return delivery_id[len(prefix) :].split("-", 1)[0]
