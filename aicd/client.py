"""Talking to deliveries through the Temporal client: start one (idempotently), send human actions, read
status, list. Shared by the CLI, the gateway and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from temporalio.client import Client, WorkflowExecution, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from aicd import plan as plans
from aicd import search
from aicd.messages import (
    DELIVERY_WORKFLOW,
    FINAL_TARGET_STATES,
    FREEZE_BOARD_ID,
    FREEZES_MEMO,
    PUSH_REFUSED,
    DeliveryInput,
    DeliveryResult,
    DeliveryStatus,
    HumanAction,
    TargetStatus,
    Trigger,
    rollout_workflow_id,
)
from aicd.plan import DeliveryPlan
from aicd.source import is_full_sha
from aicd.temporal import task_queue

if TYPE_CHECKING:
    from aicd.dashboard.gitops import GitOpsReader
    from aicd.workflows.delivery import DeliveryWorkflow

# The human actions: each is the DeliveryWorkflow update of the same name.
HumanActionKind = Literal["pause", "resume", "abort", "approve", "reject", "override", "break_glass"]
HUMAN_ACTIONS: tuple[HumanActionKind, ...] = get_args(HumanActionKind)


def _workflow() -> type[DeliveryWorkflow]:
    """The workflow class, whose methods name its updates and query; imported on first use, since it pulls in
    the types of every activity (the CLI's other commands start without them)."""
    from aicd.workflows.delivery import DeliveryWorkflow

    return DeliveryWorkflow


class ActionRefused(Exception):
    """The delivery refused the action (its validator said why), or it does not exist."""


@dataclass
class StartedDelivery:
    delivery_id: str
    started: bool  # False: an existing delivery was found; nothing new was started


MAX_REDEPLOYS = 1000
OFF_BRANCH_WAIT_S = 10.0  # how long `aicd status` waits for the GitOps repository before showing what it has


async def start_delivery(
    client: Client,
    plan: DeliveryPlan,
    trigger: Trigger,
    *,
    queue: str | None = None,
    index_search_attributes: bool = True,
) -> StartedDelivery:
    """Start the delivery of `plan` (whose revision is a full SHA: resolve it first, aicd.source).

    The delivery ID follows the trigger. A push event (`trigger.event` set) has one ID per event, so the same
    event delivered twice starts one delivery, ever. A human's request finds a running delivery of the same
    revision, or starts a new one: `delivery-<app>-<sha>`, then `-2`, `-3`... for re-deploys of a revision
    that was delivered before, so every delivery has an ID (and trailers) of its own."""
    if not is_full_sha(plan.revision):
        raise ValueError(
            f"revision {plan.revision!r} is not a full commit SHA; resolve it against the source repo first"
        )
    if trigger.event:
        candidates: Iterable[str] = [push_delivery_id(plan.app, plan.revision, trigger.event)]
    else:
        running = await _running_delivery_of(client, plan.app, plan.revision)
        if running is not None:
            return StartedDelivery(running, started=False)
        candidates = (  # made one at a time: a revision is rarely re-deployed
            plans.delivery_id(plan.app, plan.revision, str(n) if n > 1 else "")
            for n in range(1, MAX_REDEPLOYS)
        )
    candidate = ""
    for candidate in candidates:
        found = await _start(
            client, replace(plan, delivery_id=candidate), trigger, queue, index_search_attributes
        )
        if found is not None:
            return found
    # Only a push event gets here: its one delivery exists (running or ended).
    return StartedDelivery(candidate, started=False)


async def _start(
    client: Client, plan: DeliveryPlan, trigger: Trigger, queue: str | None, index_search_attributes: bool
) -> StartedDelivery | None:
    """Start under `plan.delivery_id`: the running delivery of that ID if there is one; None when a delivery
    of that ID has already ended."""
    attributes = (
        TypedSearchAttributes([SearchAttributePair(search.APP, plan.app)])
        if index_search_attributes
        else None
    )
    try:
        handle = await client.start_workflow(
            _workflow().run,
            DeliveryInput(plan, trigger, index_search_attributes),
            id=plan.delivery_id,
            task_queue=queue or task_queue(),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=attributes,
        )
    except WorkflowAlreadyStartedError:
        return None
    # USE_EXISTING hands back the running workflow; the server's response says whether this call started it.
    response = getattr(handle, "_start_workflow_response", None)
    return StartedDelivery(handle.id, started=bool(getattr(response, "started", True)))


async def _running_delivery_of(client: Client, app: str, revision: str) -> str | None:
    """A running delivery of this revision of the app, whatever started it (best effort: visibility)."""
    prefix = plans.delivery_id(app, revision)
    query = f"WorkflowType = '{DELIVERY_WORKFLOW}' AND ExecutionStatus = 'Running' AND WorkflowId STARTS_WITH '{_quote(prefix)}'"
    try:
        async for execution in client.list_workflows(query):
            rest = execution.id[len(prefix) :]
            if rest == "" or rest.startswith("-"):
                return execution.id
    except RPCError:  # a server without advanced visibility: start, or find by ID below
        return None
    return None


def push_delivery_id(app: str, revision: str, event: str) -> str:
    """The one delivery of a push event: its ID ends in a key of the event (branch, before, after)."""
    return plans.delivery_id(app, revision, hashlib.sha256(event.encode()).hexdigest()[:10])


_PUSH_KEY = re.compile(r"-[0-9a-f]{10}\Z")


async def earlier_push_delivery(
    client: Client, app: str, branch: str, revision: str, before: str, event: str
) -> str | None:
    """The delivery another push of `revision` to `branch` started, when nothing shows that the branch has
    left `revision` since; None when `event` may be a new push.

    A push's identity includes `before`, which only the sender vouches for: GitLab's token is sent as it is,
    so whoever holds it could post the head again with a new `before` and restart a delivery on-call aborted.
    A real second push of one revision follows a push away from it, which started a delivery of its own:
    so `before` must have a delivery pushed to the branch after the last one of `revision` (best effort:
    visibility lags a start by a moment, and a server without advanced visibility answers None)."""
    own = push_delivery_id(app, revision, event)
    try:
        # The cheap tests (ID, start time) first: each branch is read from a history.
        earlier = [
            execution
            async for execution in _push_started(client, app, revision)
            if execution.id != own and await _pushed_to(client, execution.id, branch)
        ]
        if not earlier:
            return None
        last = max(earlier, key=lambda execution: execution.start_time)
        if set(before) - {"0"}:
            async for execution in _push_started(client, app, before):
                if execution.start_time > last.start_time and await _pushed_to(client, execution.id, branch):
                    return None
    except (RPCError, ActionRefused):
        return None
    return last.id


async def _push_started(client: Client, app: str, revision: str) -> AsyncIterator[WorkflowExecution]:
    """The deliveries of `revision` that a push started (IDs ending in an event key), running or ended."""
    prefix = plans.delivery_id(app, revision)
    query = f"WorkflowType = '{DELIVERY_WORKFLOW}' AND WorkflowId STARTS_WITH '{_quote(prefix)}-'"
    async for execution in client.list_workflows(query):
        if _PUSH_KEY.fullmatch(execution.id[len(prefix) :]):
            yield execution


async def _pushed_to(client: Client, delivery_id: str, branch: str) -> bool:
    return (await delivery_input(client, delivery_id)).trigger.branch == branch


def handle_for(client: Client, delivery_id: str) -> WorkflowHandle[DeliveryWorkflow, DeliveryResult]:
    return client.get_workflow_handle_for(_workflow().run, delivery_id)


def _update(kind: str) -> Any:
    """The DeliveryWorkflow update method of a human action."""
    workflow = _workflow()
    updates = {
        "pause": workflow.pause,
        "resume": workflow.resume,
        "abort": workflow.abort,
        "approve": workflow.approve,
        "reject": workflow.reject,
        "override": workflow.override,
        "break_glass": workflow.break_glass,
    }
    try:
        return updates[kind]
    except KeyError:
        raise ValueError(f"unknown action {kind!r}; one of {HUMAN_ACTIONS}") from None


async def send_action(
    client: Client, delivery_id: str, kind: str, action: HumanAction, *, request_id: str | None = None
) -> str:
    """Run a human action as a workflow update; ActionRefused carries the validator's reason. `request_id`
    (one per request from a chat or a webhook) is the update's ID: the server acts on a request once per
    delivery, however many times and through whichever gateway replica it arrives - a second copy gets the
    first one's outcome."""
    update = _update(kind)
    handle = handle_for(client, delivery_id)
    try:
        result: str = await handle.execute_update(update, action, id=request_id)
        return result
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        raise ActionRefused(str(getattr(cause, "message", None) or cause or error)) from None
    except RPCError as error:
        raise ActionRefused(_rpc_reason(delivery_id, error)) from None


async def change_freeze(
    client: Client,
    kind: Literal["freeze", "unfreeze"],
    app: str,
    action: HumanAction,
    *,
    queue: str | None = None,
) -> str:
    """`aicd freeze` / `aicd unfreeze`: an update of the organisation's freeze board (started on first use);
    ActionRefused carries the board's reason (already frozen, not frozen, no reason)."""
    from aicd.workflows.freezes import FreezeBoardInput, FreezeBoardWorkflow, FreezeChange

    handle = await client.start_workflow(
        FreezeBoardWorkflow.run,
        FreezeBoardInput(),
        id=FREEZE_BOARD_ID,
        task_queue=queue or task_queue(),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
    update = FreezeBoardWorkflow.freeze if kind == "freeze" else FreezeBoardWorkflow.unfreeze
    try:
        result: str = await handle.execute_update(update, FreezeChange(action, app))
        return result
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        raise ActionRefused(str(getattr(cause, "message", None) or cause or error)) from None


async def list_freezes(client: Client) -> list[dict[str, str]]:
    try:
        board = await client.get_workflow_handle(FREEZE_BOARD_ID).describe()
    except RPCError:
        return []  # never frozen: no board yet
    freezes: list[dict[str, str]] = await board.memo_value(FREEZES_MEMO, default=[])
    return freezes


async def delivery_plan(client: Client, delivery_id: str) -> DeliveryPlan:
    """The plan a delivery runs, as it was started, whatever its spec says now; ActionRefused when there is
    no such delivery."""
    return (await delivery_input(client, delivery_id)).plan


async def delivery_input(client: Client, delivery_id: str) -> DeliveryInput:
    """A delivery's input (plan and trigger), from the first event of its history; ActionRefused when there
    is no such delivery."""
    try:
        async for event in client.get_workflow_handle(delivery_id).fetch_history_events(page_size=1):
            started = event.workflow_execution_started_event_attributes
            if started.workflow_type.name != DELIVERY_WORKFLOW or not started.input.payloads:
                break
            (delivery,) = await client.data_converter.decode(list(started.input.payloads), [DeliveryInput])
            found: DeliveryInput = delivery
            return found
    except RPCError as error:
        raise ActionRefused(_rpc_reason(delivery_id, error)) from None
    raise ActionRefused(f"no delivery {delivery_id}")


async def get_status(client: Client, delivery_id: str) -> DeliveryStatus:
    try:
        status = await handle_for(client, delivery_id).query(_workflow().status_query)
    except RPCError as error:
        raise ActionRefused(_rpc_reason(delivery_id, error)) from None
    if not status.terminal:
        await _live_targets(client, status)
        status.retrying = await _retrying(client, status)
    return status.in_delivery_order()


async def read_branch_since(
    client: Client, status: DeliveryStatus, reader: GitOpsReader | None = None
) -> None:
    """What the GitOps branch says now of a delivery's commits: `status.off_branch` (those it no longer holds)
    and `status.changed_since` (per target, the later commits that changed its files). Read from a mirror of
    the repository (`reader`'s, or one in aicd's cache); best effort: left empty when it cannot be read in
    OFF_BRANCH_WAIT_S."""
    from aicd.dashboard.gitops import GitOpsReader  # here: the dashboard's package imports this module

    if not status.commits():
        return
    plan = await delivery_plan(client, status.delivery_id)
    read = (reader or GitOpsReader()).branch_since(plan.gitops_repo, plan.gitops_branch, status)
    with contextlib.suppress(TimeoutError):  # a Git host that does not answer: the status as it is
        status.off_branch, status.changed_since = await asyncio.wait_for(read, OFF_BRANCH_WAIT_S)


async def _live_targets(client: Client, status: DeliveryStatus) -> None:
    """The targets still rolling out, as their rollout children stand now: a child reports to the delivery only
    when it starts waiting and when it ends (workflows.rollout_control.PROGRESS_IN_RESULT), so the steps in
    between are read from the child's `current` query. A child that does not answer keeps its last report."""
    from aicd.workflows.rollout_control import RolloutControl

    running = [t for t in status.targets.values() if t.state not in FINAL_TARGET_STATES]

    async def current(target: TargetStatus) -> None:
        handle = client.get_workflow_handle(
            rollout_workflow_id(status.delivery_id, target.stage, target.target)
        )
        try:
            live = await handle.query(RolloutControl.current)
        except RPCError:
            return  # not started yet, or gone: the delivery's own record stands
        status.targets[target.target] = live

    await asyncio.gather(*(current(target) for target in running))
    # The delivery shows itself paused while a target waits for a human, and hears that the wait is over only
    # at the rollout's next report: read live, a delivery no target holds any more is moving again.
    if (
        status.phase == "paused"
        and not status.paused
        and not any(target.state == "awaiting-resume" for target in status.targets.values())
    ):
        status.phase, status.pause_reason = "progressing", ""


async def _retrying(client: Client, status: DeliveryStatus) -> list[str]:
    """What the delivery and its running rollouts are retrying now, from Temporal's pending activities: an
    activity on a later attempt (its last failure), or a GitOps write whose pushes the remote refuses (inside
    one attempt, so only its heartbeat says so). A step that does not move then says why, not `progressing`."""
    workflow_ids = [status.delivery_id] + [
        rollout_workflow_id(status.delivery_id, target.stage, target.target)
        for target in status.targets.values()
        if target.state not in FINAL_TARGET_STATES
    ]

    async def pending(workflow_id: str) -> list[str]:
        try:
            description = await client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            return []  # not started yet, or gone
        lines = []
        for activity in description.raw_description.pending_activities:
            detail = ""
            if activity.heartbeat_details.payloads:
                with contextlib.suppress(Exception):  # details of another shape: not a sentence to show
                    (decoded,) = await client.data_converter.decode(activity.heartbeat_details.payloads[:1])
                    detail = decoded if isinstance(decoded, str) else ""
            refused = detail.startswith(PUSH_REFUSED)
            if activity.attempt <= 1 and not refused:
                continue
            rollout = workflow_id.removeprefix(status.delivery_id).removeprefix("--").replace("--", "/")
            what = f"{activity.activity_type.name} of {rollout or 'the delivery'}"
            facts = [detail] if refused else []
            if activity.attempt > 1:
                failure = activity.last_failure.message or "no failure recorded"
                facts.append(f"attempt {activity.attempt}, the last one failed: {failure}")
            lines.append(f"{what}: {'; '.join(facts)}")
        return lines

    found = await asyncio.gather(*(pending(workflow_id) for workflow_id in workflow_ids))
    return [line for lines in found for line in lines]


async def list_deliveries(
    client: Client, app: str | None = None, running_only: bool = False
) -> list[tuple[str, str, str]]:
    """(delivery ID, Temporal status, phase) of deliveries, newest first."""
    clauses = [f"WorkflowType = '{DELIVERY_WORKFLOW}'"]
    if app:
        clauses.append(f"AicdApp = '{_quote(app)}'")
    if running_only:
        clauses.append("ExecutionStatus = 'Running'")
    rows = []
    async for execution in client.list_workflows(" AND ".join(clauses)):
        phase = execution.typed_search_attributes.get(search.PHASE) or ""
        status = execution.status.name.lower() if execution.status else "unknown"
        rows.append((execution.id, status, phase))
    return rows


@dataclass(frozen=True)
class DeliverySummary:
    """One delivery as Temporal's visibility store knows it (no query, no history read)."""

    delivery_id: str
    run_id: str
    app: str
    state: str  # Temporal's execution status: running, completed, failed, terminated, ...
    phase: str  # the AicdPhase search attribute ("" before the delivery set one)
    stage: str  # the AicdStage search attribute
    started: datetime
    closed: datetime | None
    history_length: int


async def list_delivery_summaries(
    client: Client,
    app: str | None = None,
    *,
    phase: str | None = None,
    running_only: bool = False,
    limit: int | None = None,
) -> list[DeliverySummary]:
    """Deliveries with their start and close times, newest first (the dashboard's list)."""
    clauses = ["WorkflowType = 'DeliveryWorkflow'"]
    if app:
        clauses.append(f"AicdApp = '{_quote(app)}'")
    if phase:
        clauses.append(f"AicdPhase = '{_quote(phase)}'")
    if running_only:
        clauses.append("ExecutionStatus = 'Running'")
    rows: list[DeliverySummary] = []
    async for execution in client.list_workflows(" AND ".join(clauses), limit=limit):
        attributes = execution.typed_search_attributes
        rows.append(
            DeliverySummary(
                delivery_id=execution.id,
                run_id=execution.run_id,
                app=attributes.get(search.APP) or "",
                state=execution.status.name.lower() if execution.status else "unknown",
                phase=attributes.get(search.PHASE) or "",
                stage=attributes.get(search.STAGE) or "",
                started=execution.start_time,
                closed=execution.close_time,
                history_length=execution.history_length,
            )
        )
    return rows


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _rpc_reason(delivery_id: str, error: RPCError) -> str:
    text = str(error).lower()
    if "not found" in text:
        return f"no delivery {delivery_id}"
    if "already completed" in text:
        return f"delivery {delivery_id} has already ended"
    return f"{delivery_id}: {error}"


async def act_on_app(
    client: Client,
    app: str,
    kind: str,
    action: HumanAction,
    refusal: Callable[[str], Awaitable[str | None]] | None = None,
    *,
    request_id: str | None = None,
) -> list[tuple[str, str]]:
    """The same action on every running delivery of `app` (on-call's "stop the line"): per delivery,
    the outcome or `refused: <why>`. `refusal`, when given, is asked first for each delivery (why this actor
    may not act on it, or None); a delivery it refuses is sent nothing. `request_id`: as for send_action."""
    outcomes = []
    for delivery_id, _state, _phase in await list_deliveries(client, app, running_only=True):
        try:
            why = await refusal(delivery_id) if refusal is not None else None
            if why is not None:
                outcomes.append((delivery_id, f"refused: {why}"))
                continue
            outcome = await send_action(client, delivery_id, kind, action, request_id=request_id)
            outcomes.append((delivery_id, outcome))
        except ActionRefused as refused:
            outcomes.append((delivery_id, f"refused: {refused}"))
    return outcomes
