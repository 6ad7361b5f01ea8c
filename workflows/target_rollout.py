"""TargetRolloutWorkflow: one target of one stage. Commit each step's desired state, let the target's driver
sync it and report health, walk the canary steps (timed pauses are durable timers that stop while paused,
`pause: {}` waits for a human, analysis polls the judge), then promote. Rollback is the parent's job: it
knows the scope."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.analysis import AnalysisLookRequest
    from activities.drivers.base import SyncRequest, SyncResult
    from activities.gitops import CommitRequest, CommitResult, FileEdit, delivery_trailer
    from aicd.messages import SYSTEM_ACTOR, HumanAction, TargetStatus
    from aicd.plan import AnalysisPlan, StepPlan, TargetPlan, WritePlan
    from workflows.common import (
        ANALYSIS_RETRY,
        ANALYSIS_TIMEOUT,
        GIT_HEARTBEAT,
        GIT_RETRY,
        GIT_TIMEOUT,
        SYNC_HEARTBEAT,
        SYNC_RETRY,
    )


@dataclass
class TargetRolloutInput:
    delivery_id: str  # the parent DeliveryWorkflow's ID; progress is signalled there
    app: str
    revision: str
    revision_short: str
    artifact_tag: str
    gitops_repo: str
    gitops_branch: str
    write: WritePlan
    stage: str
    target: TargetPlan
    steps: list[StepPlan]
    analysis: AnalysisPlan | None
    actor: str = SYSTEM_ACTOR  # who let this stage start (the approver), written on its first commit
    paused: bool = False
    pause_reason: str = ""


@dataclass
class TargetRolloutResult:
    target: str
    outcome: str  # promoted | failed | aborted
    reason: str = ""
    commits: list[str] = field(default_factory=list)


class Aborted(Exception):
    pass


class StepFailed(Exception):
    pass


@workflow.defn
class TargetRolloutWorkflow:
    def __init__(self) -> None:
        self.paused = False
        self.pause_reason = ""
        self.aborted = False
        self.abort_reason = ""
        self.resumed_by: str | None = None  # releases a `pause: {}` step or an inconclusive analysis
        self.status: TargetStatus | None = None
        self.next_actor = SYSTEM_ACTOR
        self.reports: list[asyncio.Future[None]] = []
        self.report_seq = 0

    # --- messages from the parent delivery -------------------------------------------------------
    @workflow.signal
    def pause(self, action: HumanAction) -> None:
        self.paused = True
        self.pause_reason = action.reason

    @workflow.signal
    def resume(self, action: HumanAction) -> None:
        # A resume undoes a pause first; only a resume while not paused releases a step waiting for a human,
        # so lifting "stop the line" never also waves a `pause: {}` gate through.
        if self.paused:
            self.paused = False
        else:
            self.resumed_by = action.actor
        self.next_actor = action.actor

    @workflow.signal
    def abort(self, action: HumanAction) -> None:
        self.aborted = True
        self.abort_reason = action.reason or f"aborted by {action.actor}"

    @workflow.query
    def current(self) -> TargetStatus | None:
        return self.status

    # --- the rollout ------------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: TargetRolloutInput) -> TargetRolloutResult:
        self.input = input
        self.paused = input.paused or self.paused
        self.pause_reason = input.pause_reason or self.pause_reason
        self.next_actor = input.actor
        self.status = TargetStatus(target=input.target.name, stage=input.stage, kind=input.target.kind)
        try:
            for step in input.steps:
                await self._step(step)
            await self._promote()
        except Aborted:
            return await self._finish("aborted", self.abort_reason)
        except StepFailed as failure:
            return await self._finish("failed", str(failure))
        return await self._finish("promoted", "")

    async def _finish(self, outcome: str, reason: str) -> TargetRolloutResult:
        assert self.status is not None
        self.status.state = outcome
        self.status.message = reason
        await self._report()
        await self.reports[-1]
        return TargetRolloutResult(self.input.target.name, outcome, reason, list(self.status.commits))

    async def _step(self, step: StepPlan) -> None:
        assert self.status is not None
        await self._wait_unpaused()
        self.status.step_index = step.index
        self.status.step_kind = step.kind
        self.status.state = "progressing"
        if step.kind != "setWeight":
            await self._report()  # long-running steps show at once; a weight change shows when done
        if step.kind == "setWeight":
            assert step.weight is not None
            values: dict[str, Any] = {self.input.write.canary_image: self.input.artifact_tag, self.input.write.weight: step.weight}
            await self._commit_and_sync(step.id, step.describe(), values)
            self.status.weight = step.weight
        elif step.kind == "pause":
            if step.duration_s is None:
                await self._wait_for_human("waiting at `pause: {}` until resumed")
            else:
                await self._sleep(step.duration_s)
        elif step.kind == "analysis":
            await self._analysis(step)
        else:  # the schema allows nothing else; a new kind needs code here
            raise ApplicationError(f"unknown step kind {step.kind}", non_retryable=True)
        await self._report()

    async def _promote(self) -> None:
        await self._wait_unpaused()
        values = {
            self.input.write.image: self.input.artifact_tag,
            self.input.write.weight: 0,
            self.input.write.canary_image: self.input.artifact_tag,
        }
        await self._commit_and_sync("promote", f"promote {self.input.artifact_tag}", values)
        assert self.status is not None
        self.status.weight = 100
        self.status.step_kind = "promote"

    async def _commit_and_sync(self, step_id: str, description: str, values: dict[str, Any]) -> None:
        assert self.status is not None
        target = self.input.target
        trailer_step = f"{self.input.stage}/{target.name}/{step_id}"
        actor, self.next_actor = self.next_actor, SYSTEM_ACTOR
        request = CommitRequest(
            repo=self.input.gitops_repo,
            branch=self.input.gitops_branch,
            delivery=delivery_trailer(self.input.app, self.input.revision),
            step=trailer_step,
            actor=actor,
            subject=f"aicd: {self.input.app} {self.input.revision_short} {target.name} {description}",
            edits=[FileEdit(target.path, values)],
        )
        try:
            commit: CommitResult = await workflow.execute_activity(
                "gitops_commit",
                request,
                result_type=CommitResult,
                start_to_close_timeout=GIT_TIMEOUT,
                heartbeat_timeout=GIT_HEARTBEAT,
                retry_policy=GIT_RETRY,
            )
        except ActivityError as error:
            raise StepFailed(f"{trailer_step}: commit failed: {_cause(error)}") from error
        assert commit.sha is not None
        if commit.sha not in self.status.commits:
            self.status.commits.append(commit.sha)
        await self._sync(trailer_step, commit.sha)

    async def _sync(self, trailer_step: str, sha: str) -> None:
        target = self.input.target
        request = SyncRequest(
            delivery_id=self.input.delivery_id,
            stage=self.input.stage,
            target=target.name,
            kind=target.kind,
            config=target.config,
            gitops_repo=self.input.gitops_repo,
            gitops_branch=self.input.gitops_branch,
            revision=sha,
            step=trailer_step,
            timeout_s=target.progress_deadline_s,
        )
        try:
            await workflow.execute_activity(
                "sync_target",
                request,
                result_type=SyncResult,
                start_to_close_timeout=timedelta(seconds=target.progress_deadline_s + 60),
                heartbeat_timeout=SYNC_HEARTBEAT,
                retry_policy=SYNC_RETRY,
            )
        except ActivityError as error:
            raise StepFailed(f"{trailer_step}: {_cause(error)}") from error

    async def _analysis(self, step: StepPlan) -> None:
        assert self.status is not None and step.duration_s is not None
        analysis = self.input.analysis
        if analysis is None:  # validation refuses this; a plan built by hand must fail loudly, never pass
            raise StepFailed(f"{step.id}: analysis step without an analysis provider")
        started = workflow.now().timestamp()
        active_s = 0.0
        verdict: dict[str, Any] = {}
        while True:
            wait = min(analysis.interval_s, max(step.duration_s - active_s, 0.0))
            await self._sleep(wait)
            active_s += wait
            final = active_s >= step.duration_s
            verdict = await self._look(step, started, final)
            self.status.last_verdict = verdict
            await self._report()
            if verdict.get("outcome") == "fail":
                raise StepFailed(f"analysis failed: {verdict.get('summary', '')}")
            if final:
                break
        if verdict.get("outcome") != "pass":
            await self._wait_for_human(f"analysis inconclusive: {verdict.get('summary', '')}")

    async def _look(self, step: StepPlan, started: float, final: bool) -> dict[str, Any]:
        assert self.input.analysis is not None and self.status is not None
        request = AnalysisLookRequest(
            analysis=self.input.analysis,
            metrics=step.metrics,
            start=started,
            end=workflow.now().timestamp(),
            canary_weight=self.status.weight,
            final=final,
            variables={"stage": self.input.stage, "target": self.input.target.name, "revision": self.input.revision},
        )
        try:
            verdict: dict[str, Any] = await workflow.execute_activity(
                "analysis_look",
                request,
                result_type=dict,
                start_to_close_timeout=ANALYSIS_TIMEOUT,
                retry_policy=ANALYSIS_RETRY,
            )
            return verdict
        except ActivityError as error:
            # The provider failing is data about the analysis: never a pass, a human decides.
            return {"outcome": "inconclusive" if final else "running", "summary": f"analysis error: {_cause(error)}", "metrics": []}

    # --- waiting ----------------------------------------------------------------------------------
    async def _wait_unpaused(self) -> None:
        assert self.status is not None
        if self.paused and not self.aborted:
            self.status.state = "paused"
            await self._report()
        await workflow.wait_condition(lambda: not self.paused or self.aborted)
        if self.aborted:
            raise Aborted()

    async def _wait_for_human(self, why: str) -> None:
        assert self.status is not None
        self.resumed_by = None
        self.status.state = "awaiting-resume"
        self.status.message = why
        await self._report()
        await workflow.wait_condition(lambda: self.resumed_by is not None or self.aborted)
        if self.aborted:
            raise Aborted()
        self.status.state = "progressing"
        self.status.message = f"resumed by {self.resumed_by}"

    async def _sleep(self, seconds: float) -> None:
        """A durable timer whose clock stops while the rollout is paused."""
        remaining = seconds
        while remaining > 0:
            await self._wait_unpaused()
            began = workflow.now()
            try:
                await workflow.wait_condition(lambda: self.paused or self.aborted, timeout=timedelta(seconds=remaining))
            except TimeoutError:
                return
            remaining -= (workflow.now() - began).total_seconds()
        await self._wait_unpaused()

    async def _report(self) -> None:
        """Tell the parent delivery how this target stands (its status query shows every target).

        Reports go out one after another so the parent never sees an older state after a newer one, and
        without holding up the rollout for the server's acknowledgement; a report overtaken by a newer one
        before it was sent is dropped. `_finish` waits for the last one."""
        assert self.status is not None
        self.report_seq += 1
        snapshot = dataclasses.replace(self.status, commits=list(self.status.commits))
        previous = self.reports[-1] if self.reports else None
        self.reports.append(asyncio.ensure_future(self._send_report(previous, self.report_seq, snapshot)))

    async def _send_report(self, previous: asyncio.Future[None] | None, seq: int, snapshot: TargetStatus) -> None:
        if previous is not None:
            await previous
        if seq < self.report_seq:
            return  # a newer report is queued behind this one
        parent = workflow.get_external_workflow_handle(self.input.delivery_id)
        try:
            await parent.signal("target_progress", snapshot)
        except Exception as error:  # the parent gone (terminated) must not fail the target
            workflow.logger.warning("cannot report progress to %s: %s", self.input.delivery_id, error)


def _cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error)

