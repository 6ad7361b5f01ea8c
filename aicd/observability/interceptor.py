"""A Temporal worker interceptor that turns what the worker sees into aicd's metrics.

Workflow code does no I/O and stays as it is. This interceptor watches from outside:
- activities (plain Python, any I/O allowed): the duration of each step the worker executes, analysis
  verdicts, GitOps push retries and refused writes, fleet sites checked and failed - read from each
  activity's request and result - and the delivery context that log lines carry;
- workflows: a DeliveryWorkflow starting and ending (its terminal phase, its duration, whether it rolled
  targets back and why), a target rollout ending. These are recorded from inside the workflow's run, so only
  when the workflow is not replaying: a history replayed after a worker restart, a cache eviction or a query
  on a closed delivery records nothing twice, and the commands a workflow issues are untouched, so old
  histories replay exactly as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from aicd.judge.model import AnalysisVerdict
from aicd.observability import context as delivery_context
from aicd.observability.metrics import AicdMetrics

DELIVERY_WORKFLOW = "DeliveryWorkflow"
ROLLOUT_WORKFLOWS = frozenset({"TargetRolloutWorkflow", "EdgeFleetWorkflow"})
ROLLED_BACK = "rolled-back"  # a target's state after a rollback commit (aicd.messages.TargetStatus.state)


class MetricsInterceptor(Interceptor):
    """Records into `metrics`; add it to the worker's interceptors."""

    def __init__(self, metrics: AicdMetrics) -> None:
        self.metrics = metrics
        # One class per interceptor (the SDK instantiates it per workflow run), bound to these metrics.
        self._workflow_class = type("BoundWorkflowMetrics", (_WorkflowMetrics,), {"metrics": metrics})

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityMetrics(next, self.metrics)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return self._workflow_class


# --- activities ---------------------------------------------------------------------------------------
class _ActivityMetrics(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, metrics: AicdMetrics) -> None:
        super().__init__(next)
        self.metrics = metrics

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        request = input.args[0] if input.args else None
        context = delivery_context.from_workflow_id(info.workflow_id or "").with_request(request)
        token = delivery_context.CURRENT.set(context)
        began = time.monotonic()
        try:
            result = await self.next.execute_activity(input)
        except BaseException as error:
            _record(
                self.metrics, info.activity_type, input.args, None, error, time.monotonic() - began, context
            )
            raise
        finally:
            delivery_context.CURRENT.reset(token)
        _record(self.metrics, info.activity_type, input.args, result, None, time.monotonic() - began, context)
        return result


Recorder = Callable[
    [AicdMetrics, Sequence[Any], Any, BaseException | None, float, delivery_context.DeliveryContext], None
]


def _apply_step(
    metrics: AicdMetrics,
    args: Sequence[Any],
    result: Any,
    error: BaseException | None,
    seconds: float,
    _ctx: Any,
) -> None:
    request = args[0]
    step_id = str(request.commit.step).rsplit("/", 1)[-1]
    kind = "promote" if step_id == "promote" else step_id.partition("-")[2]
    metrics.step(kind, str(request.sync.kind), error is None, seconds)
    if result is not None:
        metrics.pushed(int(result.commit.push_retries))
    else:
        _refused(metrics, error)


def _commit(
    metrics: AicdMetrics, _args: Sequence[Any], result: Any, error: BaseException | None, _s: float, _ctx: Any
) -> None:
    if result is not None:
        metrics.pushed(int(result.push_retries))
    else:
        _refused(metrics, error)


def _rollback_many(
    metrics: AicdMetrics,
    _args: Sequence[Any],
    result: Any,
    error: BaseException | None,
    seconds: float,
    _ctx: Any,
) -> None:
    metrics.step("rollback", "", error is None, seconds)
    if result is not None:
        # One push carries every file of the rollback: its retries are reported on each result.
        metrics.pushed(max((int(item.push_retries) for item in result), default=0))
    else:
        _refused(metrics, error)


def _rollback(
    metrics: AicdMetrics,
    args: Sequence[Any],
    result: Any,
    error: BaseException | None,
    seconds: float,
    ctx: Any,
) -> None:
    _rollback_many(metrics, args, None if result is None else [result], error, seconds, ctx)


def _command(
    metrics: AicdMetrics,
    _args: Sequence[Any],
    _result: Any,
    error: BaseException | None,
    seconds: float,
    _ctx: Any,
) -> None:
    metrics.step("command", "", error is None, seconds)


def _analysis(
    metrics: AicdMetrics, args: Sequence[Any], result: Any, _error: BaseException | None, _s: float, _ctx: Any
) -> None:
    """A look that decides the analysis - the final one, or one that fails it - counts; interim looks and
    looks that errored (the workflow turns those into a wait for a human) do not."""
    if isinstance(result, AnalysisVerdict):
        result = result.to_dict()
    if not isinstance(result, dict):
        return
    request = args[0]
    outcome = str(result.get("outcome", ""))
    if outcome != "fail" and not request.final:
        return
    verdicts = {
        str(item.get("name", "")): str(item.get("verdict", ""))
        for item in result.get("metrics", ())
        if isinstance(item, dict)
    }
    metrics.analysis_decided(outcome, float(request.end) - float(request.start), verdicts)


def _sites(
    metrics: AicdMetrics, _args: Sequence[Any], result: Any, _error: BaseException | None, _s: float, ctx: Any
) -> None:
    if result is not None:
        metrics.fleet_sites(ctx.app, int(result.checked), len(result.failed))


def _refused(metrics: AicdMetrics, error: BaseException | None) -> None:
    if error is None or isinstance(error, asyncio.CancelledError):  # cancelled: the write was withdrawn
        return
    metrics.write_refused((error.type or "") if isinstance(error, ApplicationError) else "")


# By activity name (the names workflows call them by); others record nothing of their own.
RECORDERS: dict[str, Recorder] = {
    "apply_step": _apply_step,
    "gitops_commit": _commit,
    "gitops_rollback": _rollback,
    "gitops_rollback_many": _rollback_many,
    "run_command": _command,
    "analysis_look": _analysis,
    "edge_check_sites": _sites,
}


def _record(
    metrics: AicdMetrics,
    activity_type: str,
    args: Sequence[Any],
    result: Any,
    error: BaseException | None,
    seconds: float,
    context: delivery_context.DeliveryContext,
) -> None:
    recorder = RECORDERS.get(activity_type)
    if recorder is None or not args:
        return
    try:
        recorder(metrics, args, result, error, seconds, context)
    except Exception:  # a metric must never fail the activity it observes
        activity.logger.exception("recording metrics of %s failed", activity_type)


# --- workflows ----------------------------------------------------------------------------------------
class _WorkflowMetrics(WorkflowInboundInterceptor):
    metrics: AicdMetrics  # set on the bound subclass

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        kind = workflow.info().workflow_type
        if kind == DELIVERY_WORKFLOW:
            return await self._delivery(input)
        if kind in ROLLOUT_WORKFLOWS:
            return await self._rollout(input)
        return await super().execute_workflow(input)

    async def _delivery(self, input: ExecuteWorkflowInput) -> Any:
        delivery = input.args[0]
        app, scope = str(delivery.plan.app), str(delivery.plan.rollback_scope)
        if not workflow.unsafe.is_replaying():
            self.metrics.delivery_started(app, scope)
        try:
            result = await super().execute_workflow(input)
        except FailureError:  # the workflow failed (not a workflow task failure, which is retried)
            if not workflow.unsafe.is_replaying():
                self.metrics.delivery_ended(app, "failed", _age())
            raise
        if not workflow.unsafe.is_replaying():
            phase = str(result.phase)
            self.metrics.delivery_ended(app, phase, _age())
            status = _status()
            if status is not None and any(target.state == ROLLED_BACK for target in status.targets.values()):
                self.metrics.rolled_back(app, scope, phase)
        return result

    async def _rollout(self, input: ExecuteWorkflowInput) -> Any:
        result = await super().execute_workflow(input)  # a fleet's continue-as-new raises: counted at its end
        if not workflow.unsafe.is_replaying():
            self.metrics.target_rollout_ended(str(input.args[0].target.kind), str(result.outcome))
        return result


def _age() -> float:
    return (workflow.now() - workflow.info().workflow_start_time).total_seconds()


def _status() -> Any:
    """The delivery's status through its own query handler (read only)."""
    query = getattr(workflow.instance(), "status_query", None)
    return query() if callable(query) else None
