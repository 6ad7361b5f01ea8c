"""TargetRolloutWorkflow: one target of one stage. Commit each step's desired state, let the target's driver
sync it and report health, walk the canary steps (timed pauses are durable timers that stop while paused,
`pause: {}` waits for a human, analysis polls the judge), then promote. Rollback is the parent's job: it
knows the scope. A step that fails ends the rollout `failed` with the commits it made, and so does a bug in
its code (a plain Python exception, which would otherwise fail the workflow task for ever:
ROLLOUT_BUG_IN_RESULT)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from aicd.activities.drivers.base import SyncRequest
    from aicd.activities.gitops import CommitRequest, FileEdit
    from aicd.activities.steps import StepActivities, StepRequest, StepResult
    from aicd.flags import FlagChange
    from aicd.messages import SYSTEM_ACTOR, TARGET_ROLLOUT_WORKFLOW, TargetStatus
    from aicd.steps import StepKind
    from aicd.strategies import CanaryStrategy
    from aicd.trailers import delivery_trailer, step_trailer
    from aicd.verification import target_urls
    from aicd.workflows.common import GIT_TIMEOUT, STEP_RETRY, SYNC_HEARTBEAT, cause_of, on_writer_queue
    from aicd.workflows.rollout_control import (
        Aborted,
        RolloutControl,
        StepFailed,
        Superseded,
        TargetRolloutInput,
        TargetRolloutResult,
    )

# The patch after which a bug in the rollout's code (a plain Python exception, no Temporal failure) ends the
# rollout failed with a result naming its commits; before it, the workflow task failed and was retried for ever.
ROLLOUT_BUG_IN_RESULT = "rollout-bug-in-result"

__all__ = ["Aborted", "StepFailed", "TargetRolloutInput", "TargetRolloutResult", "TargetRolloutWorkflow"]


@workflow.defn(name=TARGET_ROLLOUT_WORKFLOW)
class TargetRolloutWorkflow(RolloutControl):
    @workflow.init
    def __init__(self, input: TargetRolloutInput) -> None:
        self.input = input
        self.status = TargetStatus(target=input.target.name, stage=input.stage, kind=input.target.kind)
        self._init_control(paused=input.paused, pause_reason=input.pause_reason, next_actor=input.actor)
        self.base = input.base
        self.file_bases = dict(input.file_bases)

    @workflow.run
    async def run(self, input: TargetRolloutInput) -> TargetRolloutResult:
        self._patch_reporting()
        self._patch_per_file_base()
        # A bug in the rollout's code ends it failed with the commits it made, as a step's failure does.
        return await self._failed_with_a_result(
            self._run(input), "the rollout", bug_patch=ROLLOUT_BUG_IN_RESULT
        )

    async def _run(self, input: TargetRolloutInput) -> TargetRolloutResult:
        strategy = input.strategy if input.strategy is not None else CanaryStrategy(list(input.steps))
        if input.strategy is not None:
            self.status.strategy = strategy.name
        try:
            await strategy.run(self)
        except Aborted:
            return await self._finish("aborted", self.abort_reason)
        except StepFailed as failure:
            return await self._finish("failed", str(failure))
        except Superseded as superseded:
            return await self._finish("superseded", str(superseded), superseded.by)
        return await self._finish("promoted", "")

    # --- what a strategy can do (aicd.strategies.base.StrategyRollout) ----------------------------------
    async def step(self, step: StepKind) -> None:
        await self._step(step)

    async def promote(self) -> None:
        await self._promote()

    async def enter(self, phase: str, message: str, weight: int | None = None) -> None:
        await self._wait_unpaused()
        self.status.step_index = -1
        self.status.step_kind = phase
        self.status.state = "progressing"
        self.status.message = message
        if weight is not None:
            self.status.weight = weight
        await self._report()

    def now(self) -> float:
        return workflow.now().timestamp()

    async def _step(self, step: StepKind) -> None:
        await self._wait_unpaused()
        self.status.step_index = step.index
        self.status.step_kind = step.name
        self.status.state = "progressing"
        wait_s = step.fixed_wait_s
        self.status.wait_until = (workflow.now() + timedelta(seconds=wait_s)).isoformat() if wait_s else ""
        if step.waits:
            await self._report()  # steps that take time show at once; a weight change shows when done
        await step.run(self)
        self.status.wait_until = ""
        await self._report_step_done()

    async def commit(
        self,
        step_id: str,
        description: str,
        values: Mapping[str, Any],
        copies: Mapping[str, str] | None = None,
    ) -> None:
        edit = FileEdit(self.input.target.path, dict(values), copies=dict(copies or {}))
        await self._commit_and_sync(step_id, description, [edit])

    async def change_flag(self, step_id: str, description: str, change: FlagChange) -> None:
        flags = self.input.target.flags
        if not flags:  # validation refuses this; never pass silently
            raise StepFailed(f"{step_id}: target {self.input.target.name} has no `flags` file")
        await self._commit_and_sync(step_id, description, [FileEdit(flags, {}, flag=change)])
        self.status.flags[change.flag] = change.describe().split(": ", 1)[-1]

    async def _promote(self) -> None:
        await self._wait_unpaused()
        values = self.input.write.promote_values(self.input.artifact_tag)
        edit = FileEdit(self.input.target.path, values)
        try:
            await self._commit_and_sync("promote", f"promote {self.input.artifact_tag}", [edit])
        except Superseded as superseded:
            if not superseded.landed:
                raise
            # The promotion landed before the newer delivery wrote (its result was lost with its worker): it is
            # this delivery's release that a newer one started from, and what their rollbacks put back.
            workflow.logger.info("%s: promoted before %s wrote", self.input.target.name, superseded.by)
        self.status.weight = 100
        self.status.step_kind = "promote"

    async def _commit_and_sync(self, step_id: str, description: str, edits: list[FileEdit]) -> None:
        """The step's commit, then the driver bringing the target to it and waiting for health."""
        target = self.input.target
        trailer_step = step_trailer(self.input.stage, target.name, step_id)
        actor, self.next_actor = self.next_actor, SYSTEM_ACTOR
        sync = SyncRequest(
            delivery_id=self.input.delivery_id,
            stage=self.input.stage,
            target=target.name,
            kind=target.kind,
            settings=target.typed(),
            path=target.path,
            gitops_repo=self.input.gitops_repo,
            gitops_branch=self.input.gitops_branch,
            revision="",  # the commit's, filled in by the activity
            step=trailer_step,
            timeout_s=target.progress_deadline_s,
        )

        async def write(base: str | None) -> StepResult:
            commit = CommitRequest(
                repo=self.input.gitops_repo,
                branch=self.input.gitops_branch,
                delivery=delivery_trailer(self.input.app, self.input.revision),
                step=trailer_step,
                actor=actor,
                subject=f"aicd: {self.input.app} {self.input.revision_short} {target.name} {description}",
                edits=edits,
                delivery_id=self.input.delivery_id,
                started=self.input.delivery_started,
                base=base,
            )
            return await workflow.execute_activity_method(
                StepActivities.apply_step,
                StepRequest(commit, sync),
                task_queue=on_writer_queue(),
                start_to_close_timeout=GIT_TIMEOUT + timedelta(seconds=target.progress_deadline_s + 60),
                heartbeat_timeout=SYNC_HEARTBEAT,
                retry_policy=STEP_RETRY,
            )

        try:
            result = await self._guarded_write(write, [edit.path for edit in edits])
        except ActivityError as error:
            raise StepFailed(f"{trailer_step}: {cause_of(error)}") from error
        assert result.commit.sha is not None
        self.reported_urls.update(result.sync.details.get("urls") or {})
        self.status.urls = target_urls(self.input.target.urls, self.reported_urls)
        self._wrote([edit.path for edit in edits], result.commit.sha)
        if result.commit.sha not in self.status.commits:
            self.status.commits.append(result.commit.sha)
