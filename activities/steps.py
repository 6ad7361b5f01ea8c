"""The `apply_step` activity: one canary step's commit and the target driver's sync in one activity, so a
step costs one round trip through Temporal. A retry is safe: the commit is found by its trailer instead of
made twice, and drivers recognise a sync they already started."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from temporalio import activity

from aicd.activities.drivers.base import SyncRequest, SyncResult
from aicd.activities.gitops import CommitRequest, CommitResult, GitOpsActivities
from aicd.activities.sync import sync_target


@dataclass
class StepRequest:
    commit: CommitRequest
    sync: SyncRequest  # its `revision` is filled with the commit's SHA


@dataclass
class StepResult:
    commit: CommitResult
    sync: SyncResult


class StepActivities:
    def __init__(self, gitops: GitOpsActivities) -> None:
        self.gitops = gitops

    @activity.defn(name="apply_step")
    async def apply_step(self, request: StepRequest) -> StepResult:
        commit = await self.gitops.commit(request.commit)
        assert commit.sha is not None, "a step always commits (empty commits included)"
        synced = await sync_target(
            dataclasses.replace(request.sync, revision=commit.sha, pushed=commit.pushed)
        )
        return StepResult(commit, synced)
