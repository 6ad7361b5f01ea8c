"""What the dashboard reads from Temporal workflow histories, and how it keeps them.

A run's history only grows, so it is cached per run: a closed run is read once, a running one is read again
only for its new events - newest first with `GetWorkflowExecutionHistoryReverse`, back to the last event
already known. Each cached run also keeps a digest (the facts the pages draw) that is fed only the new
events, so a delivery followed live costs one small read per change, whatever its length.

Facts taken from a delivery's history (DeliveryWorkflow):
- its input (the plan: stages, waves, targets; the trigger) from the first event;
- each target's progress: every `target_progress` signal carries a TargetStatus snapshot, timed by its event;
- the phase and stage over time (the AicdPhase / AicdStage search attribute upserts);
- the human actions the workflow accepted (updates), the rollback commits and when they landed;
- the child rollout workflows (one per target), and how the run ended.

A rollout child reports progress to its delivery only when it starts waiting (a pause, a human, an analysis)
and hands its final status back in its result (workflows.rollout_control.PROGRESS_IN_RESULT), so each target's
progress is also read from the child's completion (its result's `status`) and from its own history.

From a target's rollout (TargetRolloutWorkflow, or an edge fleet's runs, continued as new): every analysis
look - the `analysis_look` activity's request (the step's start, the look's time, the canary weight) and its
result, the judge's AnalysisVerdict; and every step's commit - the `apply_step` activity's step ID, when it
was scheduled and when it landed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client
from temporalio.converter import DataConverter, value_to_type

from aicd import search
from aicd.client import HUMAN_ACTIONS
from aicd.judge.model import AnalysisVerdict
from aicd.messages import DeliveryInput, DeliveryResult, HumanAction, TargetStatus

log = logging.getLogger("aicd.dashboard")

# The attribute names (HistoryEvent's `attributes` one-of) that end a run.
CLOSING = {
    "workflow_execution_completed_event_attributes": "completed",
    "workflow_execution_failed_event_attributes": "failed",
    "workflow_execution_canceled_event_attributes": "canceled",
    "workflow_execution_terminated_event_attributes": "terminated",
    "workflow_execution_timed_out_event_attributes": "timed-out",
    "workflow_execution_continued_as_new_event_attributes": "continued-as-new",
}
REVERSE_PAGE = 200


def event_time(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


@dataclass
class ChildRun:
    """A target's rollout workflow, as its parent delivery started it."""

    target: str
    stage: str
    workflow_id: str
    workflow_type: str
    initiated_event_id: int
    run_id: str = ""  # known once the child has started
    started: datetime | None = None


@dataclass
class RecordedAction:
    """A human action the delivery accepted (an update), timed by its history event."""

    at: datetime
    kind: str
    action: HumanAction


@dataclass
class Rollback:
    at: datetime  # when the rollback commits were pushed
    targets: list[str]
    reason: str
    # Per target, the files the rollback left as they are (someone else wrote them since), from its result.
    left: dict[str, list[str]] = field(default_factory=dict)
    # The targets it committed nothing for because it left every file they had: their state is as it was.
    all_left: list[str] = field(default_factory=list)
    # Per target, how many of its left files the delivery had put back itself before (CommitResult.left_restored).
    left_restored: dict[str, int] = field(default_factory=dict)


@dataclass
class DeliveryDigest:
    """Facts of one delivery run, fed its history in order (see the module docstring)."""

    input: DeliveryInput | None = None
    started: datetime | None = None
    children: dict[str, ChildRun] = field(default_factory=dict)  # by target
    progress: dict[str, list[tuple[datetime, TargetStatus]]] = field(default_factory=dict)
    phases: list[tuple[datetime, str]] = field(default_factory=list)
    stages: list[tuple[datetime, str]] = field(default_factory=list)
    actions: list[RecordedAction] = field(default_factory=list)
    rollbacks: list[Rollback] = field(default_factory=list)
    closed: datetime | None = None
    close_kind: str = ""
    result: DeliveryResult | None = None
    last_event: datetime | None = None
    _scheduled: dict[int, tuple[str, Any]] = field(default_factory=dict, repr=False)

    async def feed(self, events: Sequence[HistoryEvent], converter: DataConverter) -> None:
        for event in events:
            self.last_event = event_time(event)
            await _guarded(self._event, event, converter)

    async def _event(self, event: HistoryEvent, converter: DataConverter) -> None:
        kind = event.WhichOneof("attributes")
        if kind == "workflow_execution_started_event_attributes":
            attributes = event.workflow_execution_started_event_attributes
            self.started = event_time(event)
            (self.input,) = await _decode(converter, attributes.input.payloads, [DeliveryInput])
        elif kind == "workflow_execution_signaled_event_attributes":
            signal = event.workflow_execution_signaled_event_attributes
            if signal.signal_name == "target_progress" and signal.input.payloads:
                (status,) = await _decode(converter, signal.input.payloads, [TargetStatus])
                self.progress.setdefault(status.target, []).append((event_time(event), status))
        elif kind == "upsert_workflow_search_attributes_event_attributes":
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            for key, timeline in ((search.PHASE.name, self.phases), (search.STAGE.name, self.stages)):
                if key in fields:
                    (value,) = await _decode(converter, [fields[key]], [None])
                    timeline.append((event_time(event), _keyword(value)))
        elif kind == "workflow_execution_update_accepted_event_attributes":
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request.input
            if request.name in HUMAN_ACTIONS and request.args.payloads:
                (action,) = await _decode(converter, request.args.payloads, [HumanAction])
                self.actions.append(RecordedAction(event_time(event), request.name, action))
        elif kind == "activity_task_scheduled_event_attributes":
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name == "gitops_rollback_many":
                (requests,) = await _decode(converter, scheduled.input.payloads, [None])
                self._scheduled[event.event_id] = ("rollback", requests)
        elif kind == "activity_task_completed_event_attributes":
            completed = event.activity_task_completed_event_attributes
            found = self._scheduled.pop(completed.scheduled_event_id, None)
            if found is not None:
                results = None
                if completed.result.payloads:
                    (results,) = await _decode(converter, completed.result.payloads, [None])
                self.rollbacks.append(_rollback(event_time(event), found[1], results))
        elif kind == "start_child_workflow_execution_initiated_event_attributes":
            child = event.start_child_workflow_execution_initiated_event_attributes
            (child_input,) = await _decode(converter, child.input.payloads, [None])
            target = (
                str(child_input.get("target", {}).get("name", "")) if isinstance(child_input, dict) else ""
            )
            if target:
                self.children[target] = ChildRun(
                    target,
                    str(child_input.get("stage", "")),
                    child.workflow_id,
                    child.workflow_type.name,
                    event.event_id,
                )
        elif kind == "child_workflow_execution_started_event_attributes":
            started = event.child_workflow_execution_started_event_attributes
            for child_run in self.children.values():
                if child_run.initiated_event_id == started.initiated_event_id:
                    child_run.run_id = started.workflow_execution.run_id
                    child_run.started = event_time(event)
        elif kind == "child_workflow_execution_completed_event_attributes":
            ended = event.child_workflow_execution_completed_event_attributes
            (result,) = await _decode(converter, ended.result.payloads, [None])
            final = result.get("status") if isinstance(result, dict) else None
            if final:  # a child of PROGRESS_IN_RESULT: its final status came with its result, not by signal
                status = value_to_type(TargetStatus, final)
                self.progress.setdefault(status.target, []).append((event_time(event), status))
        elif kind in CLOSING:
            self.closed = event_time(event)
            self.close_kind = CLOSING[kind]
            if kind == "workflow_execution_completed_event_attributes":
                payloads = event.workflow_execution_completed_event_attributes.result.payloads
                if payloads:
                    (self.result,) = await _decode(converter, payloads, [DeliveryResult])


def _rollback(at: datetime, requests: Any, results: Any) -> Rollback:
    """The rollback's targets from its requests; what it left of each from its results (one per request)."""
    rollback = Rollback(at, [], "")
    requests = requests if isinstance(requests, list) else []
    results = (
        results if isinstance(results, list) and len(results) == len(requests) else [None] * len(requests)
    )
    for request, result in zip(requests, results, strict=True):
        if isinstance(request, dict):
            # The step is "<stage>/<target>/rollback".
            parts = str(request.get("step", "")).split("/")
            if len(parts) == 3:
                target = parts[1]
                rollback.targets.append(target)
                left = result.get("left") if isinstance(result, dict) else None
                if isinstance(left, dict) and left:
                    rollback.left[target] = [str(path) for path in left]
                    if result.get("sha") is None:
                        rollback.all_left.append(target)
                    restored = result.get("left_restored")
                    if isinstance(restored, int) and not isinstance(restored, bool):
                        rollback.left_restored[target] = restored
            rollback.reason = rollback.reason or str(request.get("reason", ""))
    return rollback


@dataclass
class Look:
    """One analysis look of a rollout: the judge's verdict on everything since the step began."""

    at: datetime  # when the look's result was recorded
    step_start: float  # epoch seconds: when its analysis step began (tells the steps apart)
    end: float  # epoch seconds: the end of the data it judged
    weight: int  # the canary weight while it looked
    verdict: AnalysisVerdict | None  # None: the look itself failed (see `error`)
    error: str = ""


@dataclass
class StepMark:
    """One step's commit of a rollout (its `apply_step` activity)."""

    scheduled: datetime  # when the step began to commit
    at: datetime  # when its commit landed and the target synced
    step: str  # the step's ID in its trailer: "<index>-<kind>", or "promote"


@dataclass
class RolloutDigest:
    """The analysis looks and step commits of one rollout run."""

    looks: list[Look] = field(default_factory=list)
    steps: list[StepMark] = field(default_factory=list)
    next_run_id: str = ""  # an edge fleet continues as new: its looks go on in that run
    closed: datetime | None = None
    _scheduled: dict[int, Any] = field(default_factory=dict, repr=False)
    _steps: dict[int, tuple[datetime, str]] = field(default_factory=dict, repr=False)

    async def feed(self, events: Sequence[HistoryEvent], converter: DataConverter) -> None:
        for event in events:
            await _guarded(self._event, event, converter)

    async def _event(self, event: HistoryEvent, converter: DataConverter) -> None:
        kind = event.WhichOneof("attributes")
        if kind == "activity_task_scheduled_event_attributes":
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name == "analysis_look":
                (request,) = await _decode(converter, scheduled.input.payloads, [None])
                self._scheduled[event.event_id] = request if isinstance(request, dict) else {}
            elif scheduled.activity_type.name == "apply_step":
                (request,) = await _decode(converter, scheduled.input.payloads, [None])
                trailer = str(request.get("commit", {}).get("step", "")) if isinstance(request, dict) else ""
                self._steps[event.event_id] = (event_time(event), trailer.rsplit("/", 1)[-1])
        elif kind == "activity_task_completed_event_attributes":
            completed = event.activity_task_completed_event_attributes
            step = self._steps.pop(completed.scheduled_event_id, None)
            if step is not None:
                self.steps.append(StepMark(step[0], event_time(event), step[1]))
            request = self._scheduled.pop(completed.scheduled_event_id, None)
            if request is not None:
                (verdict,) = await _decode(converter, completed.result.payloads, [AnalysisVerdict])
                self.looks.append(_look(event_time(event), request, verdict))
        elif kind in (
            "activity_task_failed_event_attributes",
            "activity_task_timed_out_event_attributes",
        ):
            attributes = getattr(event, kind)
            request = self._scheduled.pop(attributes.scheduled_event_id, None)
            if request is not None:
                self.looks.append(_look(event_time(event), request, None, attributes.failure.message))
        elif kind in CLOSING:
            self.closed = event_time(event)
            if kind == "workflow_execution_continued_as_new_event_attributes":
                self.next_run_id = (
                    event.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                )


def _look(at: datetime, request: dict[str, Any], verdict: AnalysisVerdict | None, error: str = "") -> Look:
    return Look(
        at=at,
        step_start=float(request.get("start", 0.0)),
        end=float(request.get("end", at.timestamp())),
        weight=int(request.get("canary_weight", 0)),
        verdict=verdict,
        error=error,
    )


async def _guarded(
    handle: Callable[[HistoryEvent, DataConverter], Awaitable[None]],
    event: HistoryEvent,
    converter: DataConverter,
) -> None:
    """One event; one this version cannot read (a payload of another shape) is skipped, the rest still count."""
    try:
        await handle(event, converter)
    except Exception as error:
        log.warning(
            "dashboard: history event %s (%s) not readable: %s",
            event.event_id,
            event.WhichOneof("attributes"),
            error,
        )


async def _decode(converter: DataConverter, payloads: Sequence[Payload], hints: list[Any]) -> list[Any]:
    return await converter.decode(list(payloads), [hint if hint is not None else Any for hint in hints])


def _keyword(value: Any) -> str:
    if isinstance(value, list):  # search attribute values are lists of one
        return str(value[0]) if value else ""
    return str(value)


# --- the cache ------------------------------------------------------------------------------------------


@dataclass
class _Run:
    last_event_id: int = 0
    closed: bool = False
    digest: Any = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class HistoryStore:
    """Histories read through the client, cached per run (see the module docstring); the least recently
    used runs are forgotten beyond `max_runs`."""

    def __init__(self, client: Client, max_runs: int = 512) -> None:
        self.client = client
        self.max_runs = max_runs
        self._runs: collections.OrderedDict[tuple[str, str], _Run] = collections.OrderedDict()
        self.events_read = 0  # for the tests and /metrics: how much history was fetched

    async def delivery(self, workflow_id: str, run_id: str, length: int | None = None) -> DeliveryDigest:
        """The delivery run's digest; `length` (the history length visibility reports) saves a read when
        nothing is new."""
        digest: DeliveryDigest = await self._digest(workflow_id, run_id, DeliveryDigest, length)
        return digest

    async def rollout(self, workflow_id: str, run_id: str) -> RolloutDigest:
        """Every look and step commit of a rollout, following an edge fleet's runs continued as new."""
        merged = RolloutDigest()
        seen = set()
        while run_id and run_id not in seen:
            seen.add(run_id)
            digest: RolloutDigest = await self._digest(workflow_id, run_id, RolloutDigest, None)
            merged.looks.extend(digest.looks)
            merged.steps.extend(digest.steps)
            run_id = digest.next_run_id
        return merged

    async def _digest(self, workflow_id: str, run_id: str, kind: type[Any], length: int | None) -> Any:
        key = (workflow_id, run_id)
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = _Run(digest=kind())
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        self._runs.move_to_end(key)
        async with run.lock:
            if not run.closed and (length is None or run.last_event_id < length):
                new = await self._new_events(workflow_id, run_id, run.last_event_id)
                if new:
                    await run.digest.feed(new, self.client.data_converter)
                    run.last_event_id = new[-1].event_id
                    run.closed = new[-1].WhichOneof("attributes") in CLOSING
        return run.digest

    async def _new_events(self, workflow_id: str, run_id: str, after: int) -> list[HistoryEvent]:
        if after == 0:
            handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
            events = [event async for event in handle.fetch_history_events()]
        else:
            events = await self._events_after(workflow_id, run_id, after)
        self.events_read += len(events)
        return events

    async def _events_after(self, workflow_id: str, run_id: str, after: int) -> list[HistoryEvent]:
        """The events newer than `after`, read newest first until `after` is reached."""
        newest_first: list[HistoryEvent] = []
        token = b""
        while True:
            response = await self.client.workflow_service.get_workflow_execution_history_reverse(
                GetWorkflowExecutionHistoryReverseRequest(
                    namespace=self.client.namespace,
                    execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
                    maximum_page_size=REVERSE_PAGE,
                    next_page_token=token,
                )
            )
            for event in response.history.events:
                if event.event_id <= after:
                    return newest_first[::-1]
                newest_first.append(event)
            token = response.next_page_token
            if not token:
                return newest_first[::-1]
