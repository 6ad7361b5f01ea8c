"""Target kind `git`: commit only. Flux or an auto-syncing Argo CD applies the commit; health is the commit
having landed on the branch, and the analysis steps are the judge of the release."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar

import git

from aicd.activities.drivers.base import SyncFailed, SyncRequest, SyncResult
from aicd.activities.gitops import local_git_dir


class GitDriver:
    name: ClassVar[str] = "git"

    async def sync(self, request: SyncRequest, heartbeat: Callable[..., None]) -> SyncResult:
        if request.pushed:  # the step's own push just landed it; the branch is never force-pushed
            return SyncResult(
                request.target, request.revision, healthy=True, message="commit landed (pushed)"
            )
        landed = await asyncio.to_thread(
            _on_branch, request.gitops_repo, request.gitops_branch, request.revision
        )
        if not landed:
            raise SyncFailed(
                f"commit {request.revision[:12]} is not on {request.gitops_branch} of {request.gitops_repo}"
            )
        return SyncResult(request.target, request.revision, healthy=True, message="commit landed")


def _on_branch(repo: str, branch: str, revision: str) -> bool:
    """The commit is the branch head or an ancestor of it (another delivery may have pushed on top)."""
    output = git.Git().execute(["git", "ls-remote", repo, f"refs/heads/{branch}"])
    head = output.split()[0] if output else ""
    if head == revision:
        return True
    local = local_git_dir(repo)
    if local is None:
        # A remote we only push to fast-forward: our successful push put it there and nobody force-pushes.
        return bool(head)
    status, _out, _err = git.Git().execute(
        ["git", "--git-dir", str(local), "merge-base", "--is-ancestor", revision, head],
        with_exceptions=False,
        with_extended_output=True,
    )
    return status == 0
