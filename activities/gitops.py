"""GitOps repository activities: one commit per step, idempotent by trailers, push races retried by
re-applying the step on the fresh branch (never a force-push), rollback restored from Git itself.

Git never says something false about what runs, whatever the order of releases, pauses, aborts and human
commits. Every write checks, under the clone lock and on the branch as it is (fetched, unless a remote on this
machine shows the clone already has it; or as this process last pushed it, see `_known_in_sync`), right
before it commits:
- where it writes: a real file inside the clone, never through a symbolic link (file, directory, dangling);
- who owns the file (aicd.trailers): a delivery never writes over a newer delivery of its app (Superseded),
  nor over a human's commit made since its own last write (HumanEdit, until a human resumes), nor after a
  later write of its own has landed (StaleWrite);
- that it is still wanted (the fence): the activity attempt is still the one Temporal waits for - not
  cancelled, not timed out and retried elsewhere while this worker stalled.
A rejected push refetches and does all of it again. A retried step that finds its commit already pushed is
checked the same way from that commit before it is synced again: Argo CD must not be brought back to a state
someone has written over since. A rollback restores each file to its content before the delivery, except a
file someone else has written since: it is left, and the commit message says why.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import fcntl
import hashlib
import logging
import os
import random
import re
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import IO, Any

import git
import pygit2
from temporalio import activity
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError

from aicd.activities.gitobjects import (
    LoggedCommit,
    NotAnAncestor,
    SymbolicLink,
    commit_paths,
    edit_base,
    first_parent,
    head_of,
    history,
    open_objects,
    read_at,
    resolve,
)
from aicd.activities.heartbeats import in_thread_with_heartbeats
from aicd.activities.yamledit import clear_of_writer, get_key, set_keys, undo_keeping_others
from aicd.errors import ErrorType
from aicd.flags import FlagChange, apply_flag_change
from aicd.fleet import SITE_PLACEHOLDER, FleetError, FleetFile, FleetSlice, Site, parse_fleet
from aicd.messages import PUSH_REFUSED
from aicd.plan import WritePlan
from aicd.redact import redact_credentials
from aicd.spec.paths import repo_path_problem
from aicd.spec.placeholders import render
from aicd.trailers import (
    DELIVERY,
    STEP,
    CommitTrailers,
    DeliveryRef,
    commit_message,
)

log = logging.getLogger(__name__)

MAX_PUSH_ATTEMPTS = 30
# A step writing more files than this (an edge batch) is committed by git, which hashes them faster.
IN_PROCESS_PATHS = 200
FENCE_TIMEOUT_S = 10.0
# Newer deliveries' commits are younger than this delivery's start; the margin absorbs clock skew between
# worker hosts (committer dates are their clocks).
OWNERSHIP_CLOCK_MARGIN = timedelta(hours=1)
_REJECTED_PUSH = ("rejected", "fetch first", "non-fast-forward", "failed to push", "lock")
_thread_locks: dict[str, threading.Lock] = {}
# Clones this process left clean and equal to the remote branch after its own push or fetch.
_in_sync_clones: set[str] = set()
# Who holds a clone's lock, written in its lock file: a clone another process has held since (workers sharing
# a state dir) may have been left mid-write by it, killed, so what this process knew of it no longer holds.
_PROCESS_NONCE = uuid.uuid4().hex
_thread_locks_guard = threading.Lock()


def push_refusal(stderr: str) -> str:
    """git's reason for refusing a push, from its stderr: the remote's error or the rejected ref."""
    lines = [line.strip().removeprefix("stderr: '").removesuffix("'") for line in stderr.splitlines()]
    reasons = [
        line for line in lines if ("error:" in line or "rejected" in line) and "failed to push" not in line
    ]
    return (reasons or [line for line in lines if line] or [""])[0]


@dataclass
class FileEdit:
    """Set `values` (dotted key -> value) in the file at `path`; with `sites`, `path` is a template with
    `{{ site }}` and the same values go into every site's file (an edge batch stays a small payload). With
    `flag`, the file is a flagd flag-definition file and the edit is that change of one flag (aicd.flags)."""

    path: str
    values: dict[str, Any]
    sites: list[str] = field(default_factory=list)
    flag: FlagChange | None = None
    # key -> another key: set to the value the file held at the other key before this edit (a blue-green
    # switch keeps the version it replaces, which only the file knows).
    copies: dict[str, str] = field(default_factory=dict)
    # Instead of `sites`: those sites of a fleet file, read by the worker (the names stay out of history).
    fleet_sites: FleetSlice | None = None

    def paths(self) -> list[str]:
        assert self.fleet_sites is None, "a fleet slice is resolved to its sites before the edit is applied"
        if not self.sites:
            return [self.path]
        return [render(self.path, {"site": site}, partial=True) for site in self.sites]


@dataclass
class CommitRequest:
    repo: str
    branch: str
    delivery: str  # trailer value, "<app>@<revision>"
    step: str  # trailer value, "<stage>/<target>/<index>-<kind>"
    actor: str
    subject: str  # first line, e.g. "aicd: checkout-api 4f2c1d9 prod-use1 setWeight 10"
    edits: list[FileEdit]
    reason: str = ""
    delivery_id: str = ""
    started: str = ""  # the delivery's start (ISO): orders deliveries of one app
    # This delivery's last commit to these files, or a human commit it was told to continue from: anything
    # else that touched them since is someone else's write. None for the delivery's first write to them.
    base: str | None = None

    def owner(self) -> DeliveryRef:
        return _owner(self.delivery, self.delivery_id, self.started)


@dataclass
class RollbackRequest:
    repo: str
    branch: str
    delivery: str
    step: str  # "<stage>/<target>/rollback"
    actor: str
    subject: str
    paths: list[str]
    reason: str = ""
    delivery_id: str = ""
    started: str = ""
    # The write keys: a restored file never keeps a canary (a weight left by an older, superseded delivery
    # is withdrawn: weight 0, canary image = image).
    write: WritePlan | None = None

    def owner(self) -> DeliveryRef:
        return _owner(self.delivery, self.delivery_id, self.started)


@dataclass
class CommitResult:
    sha: str | None  # None: nothing to commit (a rollback of a target this delivery never touched)
    already_done: bool = False
    push_retries: int = 0
    left: dict[str, str] = field(default_factory=dict)  # path -> why a rollback left it as it is
    kept: dict[str, str] = field(default_factory=dict)  # path -> whose edits a rollback restored it around
    # Of `left`, how many this delivery had put back itself before someone else wrote them (its last write gave
    # them their content from before it: a fleet's failed sites, restored by their batch), so not left on its
    # release. A count, not names: a fleet's rollback may leave thousands. None: not a rollback, or a result of
    # a worker from before it counted.
    left_restored: int | None = None
    # This very call's push put the commit on the branch (a push that was not forced succeeded with it): no
    # one needs to ask the remote whether it landed. False when found by its trailer or not pushed here.
    pushed: bool = False


def _owner(delivery: str, delivery_id: str, started: str) -> DeliveryRef:
    app, _, revision = delivery.rpartition("@")
    return DeliveryRef(app, revision, delivery_id, started)


def _error(kind: ErrorType, message: str, *details: Any) -> ApplicationError:
    return ApplicationError(message, *details, non_retryable=True, type=str(kind))


@dataclass
class Applied:
    """What a step did to the work tree: the paths it wrote, and for a rollback the paths it left alone."""

    paths: list[str]
    left: dict[str, str] = field(default_factory=dict)
    # A rollback's paths restored around people's edits made since the delivery wrote them: path -> whose.
    kept: dict[str, str] = field(default_factory=dict)
    left_restored: int | None = None  # see CommitResult


@dataclass
class Worktree:
    """The clone a step is applied to: the git CLI's handle and the in-process one (gitobjects) on the same
    repository. HEAD is the remote branch plus the commits of the batch made before this step."""

    repo: git.Repo
    objects: pygit2.Repository
    remote_head: str | None = None  # the remote branch's head the batch builds on (None: unknown)

    @property
    def root(self) -> Path:
        return Path(self.repo.working_tree_dir or ".")

    @property
    def head(self) -> str | None:
        return head_of(self.objects)


@dataclass
class StepCommit:
    """One step's commit: `apply` edits the work tree (after checking it may) and says what it changed."""

    owner: DeliveryRef
    step: str
    actor: str
    subject: str
    reason: str
    apply: Callable[[Worktree], Applied]
    commit_unchanged: bool = (
        True  # a canary step commits even when nothing changed (its trailer is its record)
    )
    base: str | None = None  # the commit its ownership check starts from: the clone must hold it
    # For a step an earlier attempt already pushed (found by its trailer): refuses it, as `apply` would refuse
    # a new write, when someone else has written its files since - its sync would run what Git no longer says.
    confirm: Callable[[Worktree, str], None] | None = None

    def message(self, applied: Applied) -> str:
        trailers = CommitTrailers(
            self.owner.trailer, self.step, self.actor, self.owner.delivery_id, self.owner.started
        )
        notes = [f"Left {path} as it is: {why}." for path, why in sorted(applied.left.items())]
        notes += [f"Kept the edits to {path}: {whose}." for path, whose in sorted(applied.kept.items())]
        if applied.left and applied.left_restored:
            notes.append(f"{applied.left_restored} {_RESTORED_NOTE}")
        return commit_message(self.subject, trailers, "\n".join([self.reason, *notes]).strip())


_RESTORED_NOTE = "of the files left had been put back by this delivery already."
_LEFT_NOTE = re.compile(r"^Left (?P<path>.+?) as it is: (?P<why>.*)\.$")
_KEPT_NOTE = re.compile(r"^Kept the edits to (?P<path>.+?): (?P<whose>.*)\.$")


def noted_result(sha: str, message: str) -> CommitResult:
    """The result of a step an earlier attempt pushed, read back from its commit: a rollback's message notes
    the files it left and kept (StepCommit.message), which a retry must report as the first attempt would."""
    left: dict[str, str] = {}
    kept: dict[str, str] = {}
    restored: int | None = None
    for line in message.splitlines():
        if found := _LEFT_NOTE.match(line):
            left[found["path"]] = found["why"]
        elif found := _KEPT_NOTE.match(line):
            kept[found["path"]] = found["whose"]
        elif line.endswith(f" {_RESTORED_NOTE}") and line.split(" ", 1)[0].isdigit():
            restored = int(line.split(" ", 1)[0])
    return CommitResult(sha, already_done=True, left=left, kept=kept, left_restored=restored)


@dataclass
class _WriteRequest:
    """One activity's steps waiting for, or in, a group commit."""

    steps: list[StepCommit]
    maybe_done: bool
    fence: WriteFence
    heartbeat: Callable[[str], None]  # its activity's: what the status shows while the write is retried
    done: threading.Event = field(default_factory=threading.Event)
    results: list[CommitResult] | None = None
    error: BaseException | None = None


@dataclass
class _GroupCommit:
    """The requests waiting to be written to one clone, and whether a thread is writing them."""

    mutex: threading.Lock = field(default_factory=threading.Lock)
    pending: list[_WriteRequest] = field(default_factory=list)
    leading: bool = False


_groups: dict[str, _GroupCommit] = {}


@dataclass
class _Handles:
    """A clone's handles, opened once per process: opening them costs more than a step's commit. Both read
    refs, the index and objects from disk as they use them, so what git processes or other workers change
    in the clone is seen; a clone made again (another `.git`) gets new ones."""

    git_dir: tuple[int, int] | None
    repo: git.Repo
    objects: pygit2.Repository


_handles: dict[str, _Handles] = {}


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class GitOpsClone:
    """A working clone of one GitOps repository under the worker's state dir, guarded by a lock that holds
    across threads and across worker processes sharing the state dir."""

    def __init__(self, state_dir: Path, url: str, branch: str) -> None:
        self.url = url
        self.branch = branch
        key = hashlib.sha1(f"{url}#{branch}".encode()).hexdigest()[:16]
        self.path = state_dir / "gitops" / key
        self.lock_path = state_dir / "gitops" / f"{key}.lock"

    @property
    def remote_ref(self) -> str:
        return f"origin/{self.branch}"

    def tracked_head(self, git_dir: Path) -> str | None:
        """The remote branch's head as the clone last fetched it (None: no such branch)."""
        return read_ref(git_dir, f"refs/remotes/{self.remote_ref}")

    @contextmanager
    def locked(self) -> Iterator[git.Repo]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _thread_locks_guard:
            thread_lock = _thread_locks.setdefault(str(self.path), threading.Lock())
        with thread_lock, open(self.lock_path, "a+") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                self._take_over(lock_file)
                _remove_stale_git_locks(self.path / ".git")
                yield self._open()
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _take_over(self, lock_file: IO[str]) -> None:
        """Under the lock: sign the lock file as this process's; when another process held the clone since
        this one did, forget that this process left it in sync (it may hold that process's half-written step:
        the next write resets the clone to the remote branch)."""
        holder = f"{os.getpid()} {_PROCESS_NONCE}"  # the PID differs in a forked child
        lock_file.seek(0)
        if lock_file.read() != holder:
            _in_sync_clones.discard(str(self.path))
            lock_file.truncate(0)
            lock_file.write(holder)
            lock_file.flush()

    def _open(self) -> git.Repo:
        cached = _handles.get(str(self.path))
        if cached is not None and cached.git_dir == _identity(self.path / ".git"):
            return cached.repo
        if (self.path / ".git").exists():
            repo = git.Repo(self.path)
        else:
            if self.path.exists():
                import shutil

                shutil.rmtree(self.path)  # a clone interrupted half-way
            try:
                repo = git.Repo.clone_from(self.url, self.path, no_checkout=True)
            except git.GitCommandError as error:
                raise ApplicationError(  # the cause's text (git's command line) would show the URL unredacted
                    redact_credentials(f"cannot clone GitOps repo {self.url}: {error.stderr.strip()}"),
                    type=str(ErrorType.GITOPS_UNREACHABLE),
                ) from None
            with repo.config_writer() as config:
                config.set_value("user", "name", "aicd")
                config.set_value("user", "email", "aicd@localhost")
        _handles[str(self.path)] = _Handles(_identity(self.path / ".git"), repo, open_objects(repo.git_dir))
        return repo

    def objects(self) -> pygit2.Repository:
        """The in-process handle on the clone `locked` opened (use it under the lock, as the clone)."""
        return _handles[str(self.path)].objects

    def refresh(self, repo: git.Repo) -> bool:
        """Reset the clone to the remote branch; False when the branch does not exist yet."""
        git_dir = Path(repo.git_dir)
        if not self._remote_unchanged(git_dir):
            repo.git.fetch("origin", "--prune", "--quiet")
        remote = self.tracked_head(git_dir)
        if remote is None:
            # No branch on the remote - not yet, or deleted since: none of the clone's history is on it, and a
            # commit on that history would push it all back. An empty unborn branch instead.
            _in_sync_clones.discard(str(self.path))
            if repo.head.is_valid():
                unborn = f"refs/heads/aicd-unborn-{self.branch}"
                with suppress(git.GitCommandError):
                    repo.git.update_ref("-d", unborn)
                repo.git.symbolic_ref("HEAD", unborn)
                repo.git.read_tree("--empty")
                repo.git.clean("-fdxq")
            return False
        clean = str(self.path) in _in_sync_clones  # left clean by this process: no reset or clean needed
        if not (clean and read_ref(git_dir, "HEAD") == remote):
            repo.git.checkout("-B", self.branch, self.remote_ref, "--quiet", "--force")
            if not clean:
                repo.git.reset("--hard", self.remote_ref, "--quiet")
                repo.git.clean("-fdq")
        _in_sync_clones.add(str(self.path))
        return True

    def _remote_unchanged(self, git_dir: Path) -> bool:
        """The clone's copy of the remote branch is the remote branch now: nothing to fetch. Known only for a
        remote on this machine, whose ref is a file read (a network remote is asked by the fetch itself)."""
        remote = local_git_dir(self.url)
        if remote is None:
            return False
        known = self.tracked_head(git_dir)
        return known is not None and known == read_ref(remote, f"refs/heads/{self.branch}")

    def discard_local_work(self, repo: git.Repo) -> None:
        """Back to the remote branch after a refused or failed step: nothing half-written stays in the clone."""
        _in_sync_clones.discard(str(self.path))
        with suppress(git.GitCommandError):
            repo.git.reset("--hard", self.remote_ref, "--quiet")
            repo.git.clean("-fdq")

    def find_step_commit(
        self, objects: pygit2.Repository, owner: DeliveryRef, step: str, base: str | None = None
    ) -> str | None:
        """The commit of this step on the remote branch, if an earlier attempt has pushed it. An attempt writes
        on top of its `base`: a commit of the step older than the base (made before a human's commit that a
        resume accepted as the base) is an earlier write the delivery has moved past, not this one."""
        marks = (f"{DELIVERY}: {owner.trailer}", f"{STEP}: {step}")
        for commit in history(objects, resolve(objects, self.remote_ref), containing=marks, limit=50):
            if (
                commit.trailers is not None
                and commit.trailers.step == step
                and commit.trailers.belongs_to(owner)
            ):
                return None if _is_ancestor(objects, commit.sha, base) else commit.sha
        return None

    def commit_and_push(
        self,
        steps: list[StepCommit],
        heartbeat: Callable[[str], None],
        *,
        maybe_done: bool = True,
        fence: WriteFence | None = None,
    ) -> list[CommitResult]:
        """One commit per step, pushed together with what other activities of this process are writing to the
        same branch at the same moment (a group commit: one fetch and one push for all of them); on a rejected
        push refetch and re-apply them all. Blocks until this request's commits have landed or failed.

        `maybe_done=False` (a first activity attempt: no earlier execution can have pushed these steps) lets
        a clone this process knows to be in step with the remote skip the fetch and the trailer search. A
        rejected push means someone else pushed: from then on every attempt refetches and looks for its own
        trailer first (another worker may have pushed this very step). Each request's `fence` runs under the
        lock right before every push and drops that request when its write is no longer wanted."""
        request = _WriteRequest(steps, maybe_done, fence or WriteFence(), heartbeat)
        group = self._group()
        with group.mutex:
            group.pending.append(request)
            leading = not group.leading
            group.leading = True
        if leading:  # this thread writes every batch until no request is waiting
            while True:
                with group.mutex:
                    batch, group.pending = group.pending, []
                    if not batch:
                        group.leading = False
                        break
                self._write_batch(batch)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.results is not None
        return request.results

    def _group(self) -> _GroupCommit:
        with _thread_locks_guard:
            return _groups.setdefault(str(self.path), _GroupCommit())

    def _write_batch(self, batch: list[_WriteRequest]) -> None:
        """Commit each request of the batch in turn (a request refused by its own checks is dropped without
        touching the others), check each one's fence, push once."""
        live = list(batch)
        retries = 0
        last_refusal = ""
        try:
            for attempt in range(MAX_PUSH_ATTEMPTS):
                for request in live:
                    request.error = request.fence.cancelled()
                live = [request for request in live if request.error is None]
                if not live:
                    return
                with self.locked() as repo:
                    try:
                        staged = self._commit_requests(repo, live, fast=attempt == 0)
                        pushing = [
                            r for r in staged if any(c.sha and not c.already_done for c in r.results or [])
                        ]
                        answers = []
                        for request in pushing:
                            try:
                                answers.append((request, request.fence.ask()))
                            except Exception as error:
                                request.error = error
                        for request, answer in answers:
                            try:
                                answer()
                            except Exception as error:
                                request.error = error
                        if any(request.error is not None for request in pushing):
                            self.discard_local_work(repo)  # rebuilt without them on the next round
                            live = [request for request in live if request.error is None]
                            continue
                        if pushing:
                            # Compare and swap: the push lands only while the branch is the commit the steps were
                            # checked on. A branch rewound to an older commit (a force-push) would take it as a
                            # fast-forward and get back the commits it dropped. HEAD descends from that commit, so
                            # the lease never forces anything.
                            checked_on = self.tracked_head(Path(repo.git_dir)) or ""
                            repo.git.push(
                                "origin",
                                f"--force-with-lease=refs/heads/{self.branch}:{checked_on}",
                                f"HEAD:refs/heads/{self.branch}",
                                "--quiet",
                            )
                            _in_sync_clones.add(str(self.path))
                            for request in pushing:
                                for result in request.results or []:
                                    result.pushed = bool(result.sha) and not result.already_done
                        for request in staged:
                            for result in request.results or []:
                                result.push_retries = retries
                        return
                    except git.GitCommandError as error:
                        self.discard_local_work(repo)
                        stderr = error.stderr or ""
                        if not any(word in stderr for word in _REJECTED_PUSH):
                            raise
                        retries += 1
                        last_refusal = push_refusal(stderr)
                        for request in live:
                            request.maybe_done = True
                            request.results = None
                        log.info(
                            "push of %s rejected (attempt %d); refetching", live[0].steps[0].step, attempt + 1
                        )
                    except BaseException:
                        self.discard_local_work(repo)
                        raise
                for request in live:
                    request.heartbeat(
                        f"{PUSH_REFUSED} {retries} time{'s' if retries > 1 else ''}; git said last:"
                        f" {redact_credentials(last_refusal)}"
                    )
                time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))
            raise RuntimeError(
                f"push of {live[0].steps[0].step} still rejected after {MAX_PUSH_ATTEMPTS} attempts; "
                f"git said last: {redact_credentials(last_refusal)}"
            )
        except BaseException as error:
            for request in live:
                if request.error is None:  # staged, perhaps, but not pushed
                    request.results, request.error = None, error
            if not isinstance(error, Exception):
                raise
        finally:
            for request in batch:
                if request.error is None and request.results is None:
                    request.error = RuntimeError("the group commit ended without writing this request")
                request.done.set()

    def _commit_requests(
        self, repo: git.Repo, requests: list[_WriteRequest], *, fast: bool
    ) -> list[_WriteRequest]:
        """Commit the requests in turn on the fresh branch; a request whose checks refuse it (a newer
        delivery's file, a human's edit, a bad file) gets its error and leaves no trace in the clone."""
        has_branch = True
        if not (
            fast
            and not any(request.maybe_done for request in requests)
            and self._known_in_sync(repo, requests)
        ):
            has_branch = self.refresh(repo)
        work = Worktree(repo, self.objects(), self.tracked_head(Path(repo.git_dir)))
        staged = []
        for request in requests:
            before = read_ref(Path(repo.git_dir), "HEAD")
            try:
                request.results = self._commit_locally(
                    work, request.steps, has_branch=has_branch, maybe_done=request.maybe_done
                )
            except Exception as error:
                if before is None:
                    raise  # nothing to go back to on an unborn branch: the whole batch is tried again
                repo.git.reset("--hard", before, "--quiet")
                repo.git.clean("-fdq")
                request.error, request.results = error, None
                continue
            staged.append(request)
        return staged

    def _commit_locally(
        self, work: Worktree, steps: list[StepCommit], *, has_branch: bool, maybe_done: bool
    ) -> list[CommitResult]:
        """Each step checked, applied and committed in process: no git process per step."""
        results = []
        for step in steps:
            existing = (
                self.find_step_commit(work.objects, step.owner, step.step, step.base)
                if has_branch and maybe_done
                else None
            )
            if existing:
                if step.confirm is not None:
                    step.confirm(work, existing)
                results.append(noted_result(existing, work.objects[existing].peel(pygit2.Commit).message))
                continue
            applied = step.apply(work)
            if not applied.paths and not step.commit_unchanged:
                results.append(
                    CommitResult(
                        None, left=applied.left, kept=applied.kept, left_restored=applied.left_restored
                    )
                )
                continue
            # The work tree was clean before `apply`: the paths it wrote are all there is to commit.
            if _runs_commit_hooks(work.repo) or len(applied.paths) > IN_PROCESS_PATHS:
                # git runs hooks of its own; and hashes thousands of files (a fleet batch) faster than libgit2
                _stage(work.repo, applied.paths)
                work.repo.git.commit("--allow-empty", "-m", step.message(applied), "--quiet")
                sha = work.head
                assert sha is not None, "HEAD unreadable right after a commit"
            else:
                sha = commit_paths(work.objects, applied.paths, step.message(applied))
            results.append(
                CommitResult(sha, left=applied.left, kept=applied.kept, left_restored=applied.left_restored)
            )
        return results

    def _known_in_sync(self, repo: git.Repo, requests: list[_WriteRequest]) -> bool:
        """This process last left the clone clean and pushed, HEAD is still the remote branch as last seen, and
        every step's ownership base is a commit this clone has (a base it has not seen - another worker's
        commit - needs a fetch). The checks then run on this state without a fetch: should the remote have
        moved since (on, or back by a force-push), the push - a compare-and-swap - is refused, and the retry
        refetches and checks again - a push that lands proves the state it was checked on was the branch. Read
        from files: a process per check costs as much as the commit."""
        if str(self.path) not in _in_sync_clones:
            return False
        git_dir = Path(repo.git_dir)
        head = read_ref(git_dir, "HEAD")
        if head is None or head != self.tracked_head(git_dir):
            return False
        return all(
            step.base in (None, head) or _has_loose_object(git_dir, step.base)
            for request in requests
            for step in request.steps
        )


class GitOpsActivities:
    def __init__(self, state_dir: Path, client: Client | None = None) -> None:
        self.state_dir = state_dir
        self.client = client  # asks Temporal, before every push, whether the write is still wanted

    def _clone(self, repo: str, branch: str) -> GitOpsClone:
        return GitOpsClone(self.state_dir, repo, branch)

    @activity.defn(name="gitops_commit")
    async def commit(self, request: CommitRequest) -> CommitResult:
        fence = write_fence(self.client, request.delivery_id)
        return await in_thread_with_heartbeats(lambda r, beat: self._commit(r, beat, fence), request)

    def _commit(
        self, request: CommitRequest, heartbeat: Callable[[str], None], fence: WriteFence
    ) -> CommitResult:
        clone = self._clone(request.repo, request.branch)
        step = self.step_commit(self._with_fleet_sites(request))
        return clone.commit_and_push([step], heartbeat, maybe_done=_retried(), fence=fence)[0]

    def _with_fleet_sites(self, request: CommitRequest) -> CommitRequest:
        """The request with each fleet slice of its edits read from Git as the sites' names."""
        if all(edit.fleet_sites is None for edit in request.edits):
            return request
        edits = [
            dataclasses.replace(
                edit,
                sites=[
                    site.name for site in self.fleet_sites(request.repo, request.branch, edit.fleet_sites)
                ],
                fleet_sites=None,
            )
            if edit.fleet_sites is not None
            else edit
            for edit in request.edits
        ]
        return dataclasses.replace(request, edits=edits)

    def step_commit(self, request: CommitRequest) -> StepCommit:
        """The request as a step of a group commit: checks, then the edits of its files."""
        owner = request.owner()
        target = _target_of(request.step)
        paths = [path for edit in request.edits for path in edit.paths()]

        def apply(work: Worktree) -> Applied:
            files = {
                path: safe_file(work.root, path, target) for path in paths
            }  # every path checked before any write
            check_ownership(work, owner, request.base, set(paths), target)
            for edit in request.edits:
                for path in edit.paths():
                    text = _read(files[path]) or b""
                    try:
                        if edit.flag is not None:
                            updated = apply_flag_change(text.decode(), edit.flag)
                        else:
                            values = {
                                key: get_key(text.decode(), source) for key, source in edit.copies.items()
                            }
                            updated = set_keys(text.decode(), {**values, **edit.values})
                    except (ValueError, UnicodeDecodeError) as error:
                        raise _error(ErrorType.GITOPS_FILE_INVALID, f"{path}: {error}") from error
                    _write(files[path], updated.encode())
            return Applied(paths)

        def confirm(work: Worktree, pushed: str) -> None:
            try:
                check_ownership(work, owner, pushed, set(paths), target)
            except ApplicationError as refused:
                # This step's commit is on the branch (an earlier attempt pushed it; its result was lost with its
                # worker): the refusal says so, or the rollout would never own up to a commit Git holds.
                details = (
                    refused.details[0] if refused.details and isinstance(refused.details[0], dict) else {}
                )
                raise ApplicationError(
                    refused.message,
                    {**details, "landed": pushed},
                    type=refused.type,
                    non_retryable=refused.non_retryable,
                ) from None

        return StepCommit(
            owner,
            request.step,
            request.actor,
            request.subject,
            request.reason,
            apply,
            base=request.base,
            confirm=confirm,
        )

    @activity.defn(name="gitops_rollback")
    async def rollback(self, request: RollbackRequest) -> CommitResult:
        return (await self.rollback_many([request]))[0]

    @activity.defn(name="gitops_rollback_many")
    async def rollback_many(self, requests: list[RollbackRequest]) -> list[CommitResult]:
        """Rollback commits of several targets of one GitOps branch, one commit each, pushed together: an
        abort restores a whole stage in one push."""
        fence = write_fence(self.client, requests[0].delivery_id if requests else "")
        return await in_thread_with_heartbeats(lambda r, beat: self._rollback(r, beat, fence), requests)

    def _rollback(
        self, requests: list[RollbackRequest], heartbeat: Callable[[str], None], fence: WriteFence
    ) -> list[CommitResult]:
        first = requests[0]
        if any((request.repo, request.branch) != (first.repo, first.branch) for request in requests):
            raise _error(ErrorType.GITOPS_PATH_INVALID, "one rollback batch covers one GitOps branch")
        clone = self._clone(first.repo, first.branch)
        steps = [
            StepCommit(
                request.owner(),
                request.step,
                request.actor,
                request.subject,
                request.reason,
                self._restore(request),
                commit_unchanged=False,
            )
            for request in requests
        ]
        return clone.commit_and_push(steps, heartbeat, maybe_done=_retried(), fence=fence)

    def _restore(self, request: RollbackRequest) -> Callable[[Worktree], Applied]:
        owner = request.owner()
        matches = path_matcher(set(request.paths))
        target = _target_of(request.step)

        def apply(work: Worktree) -> Applied:
            commits = _delivery_history(work, owner)
            ancestry = _Ancestry(commits)
            writes: dict[str, list[LoggedCommit]] = {}  # each path's commits, newest first
            for commit in commits:
                for path in filter(matches, commit.files):
                    writes.setdefault(path, []).append(commit)
            first_touch: dict[str, str] = {}
            settled: dict[str, str] = {}  # each path's newest write by this delivery
            since: dict[str, list[LoggedCommit]] = {}
            left: dict[str, str] = {}
            kept: dict[str, str] = {}
            for path, its in writes.items():
                own = [commit for commit in its if _is_own(commit, owner)]
                if not own:  # written by others only, never by this delivery
                    continue
                settled[path], first_touch[path] = own[0].sha, own[-1].sha
                since[path] = ancestry.since(its, first=own[-1].sha, last=own[0].sha)
                later = [commit for commit in since[path] if not ancestry.holds(own[0].sha, commit.sha)]
                if not later:
                    continue
                left[path] = later[-1].describe_writer()
                if _only_clear_human_edits_since(work, owner, path, later, since[path]):
                    # A human's edit beside the delivery's values: the file is restored around it.
                    kept[path] = left.pop(path)
            # A left file whose newest write by this delivery gave it its content from before the delivery had
            # been put back already (a fleet's failed site, by its batch's restore): left, but not on the release.
            left_restored = sum(
                1
                for path in left
                if _contents_at(work.objects, {path: settled[path]}, target)
                == _contents_at(work.objects, {path: f"{first_touch[path]}^"}, target)
            )
            befores = _contents_at(
                work.objects,
                {path: f"{sha}^" for path, sha in first_touch.items() if path not in left},
                target,
            )
            for path, before in befores.items():
                befores[path] = _keeping_others_edits(work, owner, path, before, since[path])
            changed: list[str] = []
            for path in sorted(befores):
                file = safe_file(work.root, path, target)
                before = befores[path]
                if before is not None and request.write is not None:
                    before = _without_canary(before, request.write)
                if _read(file) == before:
                    continue
                if before is None:
                    file.unlink()
                else:
                    _write(file, before)
                changed.append(path)
            return Applied(
                changed,
                left,
                {path: whose for path, whose in kept.items() if path in changed},
                left_restored,
            )

        return apply

    @activity.defn(name="gitops_read_fleet")
    async def read_fleet(self, repo: str, branch: str, path: str) -> FleetFile:
        """The fleet file at the branch head, parsed and checked here: the workflow gets its commit and its
        size, never its sites (FleetFile). A file that is no fleet is a non-retryable FleetConfigError."""

        def read() -> FleetFile:
            clone = self._clone(repo, branch)
            with clone.locked() as local:
                clone.refresh(local)
                revision = clone.tracked_head(Path(local.git_dir))
            if revision is None:
                raise _error(
                    ErrorType.GITOPS_FILE_MISSING, f"{path} not found: {branch} of {repo} has no commits"
                )
            return FleetFile(
                path, revision, len(self.fleet_sites(repo, branch, FleetSlice(path, revision, 0, 0)))
            )

        return await asyncio.to_thread(read)

    @activity.defn(name="gitops_read_fleet_names")
    async def read_fleet_names(self, repo: str, branch: str, part: FleetSlice) -> list[str]:
        """The names of a slice's sites (a chunk whose health could not be checked fails by name)."""
        sites = await asyncio.to_thread(self.fleet_sites, repo, branch, part)
        return [site.name for site in sites]

    def fleet_sites(self, repo: str, branch: str, part: FleetSlice) -> list[Site]:
        """The sites of a fleet slice (all of them for an empty slice at 0..0), read from the clone at the
        slice's commit - fetched if this clone has not seen it - and parsed once per process and commit.
        Blocking (call it in a thread)."""
        clone = self._clone(repo, branch)
        sites = _parsed_fleet(str(clone.path), part.revision, part.path)
        if sites is None:
            with clone.locked() as local:
                clone.refresh(local)
            sites = _parsed_fleet(str(clone.path), part.revision, part.path)
        if sites is None:
            raise _error(
                ErrorType.GITOPS_FILE_MISSING,
                f"{part.path} not found at {part.revision[:12]} of {branch} of {repo}",
            )
        return sites[part.start : part.end] if part.end else sites

    @activity.defn(name="gitops_read_file")
    async def read_file(self, repo: str, branch: str, path: str) -> str:
        def read() -> str:
            clone = self._clone(repo, branch)
            with clone.locked() as local:
                clone.refresh(local)
                content = _contents_at(clone.objects(), {path: clone.remote_ref}, target="")[path]
            if content is None:
                raise _error(ErrorType.GITOPS_FILE_MISSING, f"{path} not found on {branch} of {repo}")
            return content.decode()

        return await asyncio.to_thread(read)

    def files_under(self, repo: str, branch: str, paths: list[str], suffix: str) -> dict[str, str]:
        """The files at `paths` on the branch (a path names a file, or a directory whose files ending in
        `suffix` are taken, recursively); paths that name nothing are left out. For readers such as the
        policy gate and the calendar; blocking (call it in a thread)."""
        clone = self._clone(repo, branch)
        with clone.locked() as local:
            if not clone.refresh(local):
                return {}
            listing = local.git.ls_tree("-r", "-z", "--name-only", "--full-tree", clone.remote_ref)
            names = [name for name in listing.split("\0") if name]
            wanted = [
                name
                for name in names
                for path in paths
                if name == path.rstrip("/")
                or (name.startswith(path.rstrip("/") + "/") and name.endswith(suffix))
            ]
            contents = _contents_at(clone.objects(), {name: clone.remote_ref for name in wanted}, target="")
        return {name: content.decode() for name, content in contents.items() if content is not None}


@lru_cache(maxsize=4)
def _parsed_fleet_cached(clone: str, revision: str, path: str) -> list[Site]:
    objects = open_objects(Path(clone) / ".git")
    blob = _contents_at(objects, {path: revision}, target="")[path]
    if blob is None:
        raise FileNotFoundError(path)
    try:
        return parse_fleet(blob.decode(), path)
    except (FleetError, UnicodeDecodeError) as error:
        raise _error(ErrorType.FLEET_CONFIG_ERROR, str(error)) from None


def _parsed_fleet(clone: str, revision: str, path: str) -> list[Site] | None:
    """The sites of the fleet file at `path` in commit `revision` of the clone (None: the clone lacks the
    commit, or the file is not in it). A fleet file of one commit never changes: parsed once per process."""
    try:
        return _parsed_fleet_cached(clone, revision, path)
    except FileNotFoundError:
        return None


# --- where a write may go -----------------------------------------------------------------------------------
def safe_file(root: Path, path: str, target: str) -> Path:
    """The file `path` of the clone at `root`, refused (non-retryable, naming target and path) when it would
    leave the clone: an absolute path, `..`, `.git`, or a symbolic link anywhere on the way (to a file, a
    directory or nothing at all). Directories that do not exist yet are fine: they will be real ones."""
    where = f"target {target}: " if target else ""
    why = repo_path_problem(path, placeholders=frozenset())  # the rule `aicd validate` applies to the spec
    if why:
        raise _error(ErrorType.GITOPS_PATH_INVALID, f"{where}path {path!r} {why}")
    current = root
    for part in PurePosixPath(path).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            break
        if stat.S_ISLNK(mode):
            link = os.readlink(current)
            raise _error(
                ErrorType.GITOPS_PATH_INVALID,
                f"{where}{current.relative_to(root)} is a symbolic link (to {link!r}) in the GitOps repository;"
                f" aicd writes {path} only as a regular file inside its clone",
            )
    return root / path


def _read(file: Path) -> bytes | None:
    try:
        descriptor = os.open(file, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read()


def _write(file: Path, content: bytes) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)


def _target_of(step: str) -> str:
    parts = step.split("/")
    return parts[1] if len(parts) >= 3 else ""


# --- who owns a file ------------------------------------------------------------------------------------------
def check_ownership(
    work: Worktree, owner: DeliveryRef, base: str | None, paths: set[str], target: str
) -> None:
    """Refuse (typed, non-retryable) a write of `paths` by `owner` that would overwrite someone else's write.

    With a `base` (this delivery's last commit to these files, or a human commit it was told to continue
    from), every commit after it that touched them is looked at: a newer delivery's -> Superseded, a human's
    -> HumanEdit, this delivery's own -> StaleWrite (a later step already wrote: this write is late). Without
    one (the delivery's first write to them), only a newer delivery of the app can take a file away.
    "After" runs to the clone's HEAD: the remote branch and the commits made before this one in its batch."""
    where = f"target {target}: " if target else ""
    head = work.head
    if base is not None and base == head:
        return  # this delivery's own last write is the branch head: nobody has written since
    touching = frozenset(paths)  # only commits of these files can refuse the write
    if head is None:
        # No write of a delivery makes the branch: it would hold this one file, or the clone's old history of a
        # branch someone deleted. A resume waits again until the branch is there.
        what = (
            f"no longer exists: it was deleted since this delivery last wrote to it ({base[:7]})"
            if base
            else "does not exist (deleted, or never made: aicd writes only to a branch that has commits)"
        )
        raise _error(
            ErrorType.HUMAN_EDIT,
            f"{where}the GitOps branch {what}; a resume waits again until it is pushed",
            {"sha": base or "", "author": "", "subject": "branch deleted"},
        )
    if base is not None:
        try:
            commits = history(work.objects, head, after=base, touching=touching)
        except NotAnAncestor:
            # The rewritten branch's head is what a resume continues from (as from a human's commit): the
            # old base would be refused again on every resume.
            rewritten = history(work.objects, head, limit=1)
            raise _error(
                ErrorType.HUMAN_EDIT,
                f"{where}the history of the GitOps branch was rewritten: {base[:7]}, this delivery's last write,"
                f" is no longer on it (the branch is at {(head or '')[:7]})",
                {
                    "sha": head or base,
                    "author": rewritten[0].author if rewritten else "",
                    "subject": f"history rewritten: {rewritten[0].subject}"
                    if rewritten
                    else "history rewritten",
                },
            ) from None
    else:
        mark = (f"{DELIVERY}: {owner.app}@",)
        if owner.started:
            since = datetime.fromisoformat(owner.started) - OWNERSHIP_CLOCK_MARGIN
            commits = history(work.objects, head, since=since, containing=mark, touching=touching)
        else:
            commits = history(work.objects, head, containing=mark, touching=touching, limit=500)
    human: LoggedCommit | None = None
    own_later: LoggedCommit | None = None
    for commit in commits:
        touched = sorted(paths.intersection(commit.files))
        if not touched:
            continue
        trailers = commit.trailers
        if trailers is None:
            human = human or commit
        elif trailers.belongs_to(owner):
            own_later = own_later or commit
        elif trailers.owner().app == owner.app and trailers.owner().is_newer_than(owner):
            newer = trailers.delivery_id or trailers.delivery
            raise _error(
                ErrorType.SUPERSEDED,
                f"{where}{touched[0]} was written by {newer}, a newer delivery of {owner.app}; this delivery never"
                " writes it again",
                {"by": newer},
            )
    if human is not None and base is not None:
        # A resume accepts the branch as it is now, not only this commit: one merged from a side branch does not
        # hold this delivery's writes beside it, which would read as later writes from there.
        raise _error(
            ErrorType.HUMAN_EDIT,
            f"{where}{sorted(paths.intersection(human.files))[0]} was changed in Git by commit {human.sha[:7]} of"
            f' {human.author} ("{human.subject}") since this delivery last wrote it',
            {
                "sha": human.sha,
                "author": human.author,
                "subject": human.subject,
                "accepted": work.remote_head or human.sha,
            },
        )
    if own_later is not None and own_later.trailers is not None:
        raise _error(
            ErrorType.STALE_WRITE,
            f"{where}a later write of this delivery ({own_later.trailers.step}, {own_later.sha[:7]}) has already"
            " landed; this one is late and is dropped",
        )


def _delivery_history(work: Worktree, owner: DeliveryRef) -> list[LoggedCommit]:
    """Every commit from this delivery's first one to HEAD, newest first ([] if it never wrote)."""
    head = work.head
    mine = history(work.objects, head, containing=(f"{DELIVERY}: {owner.trailer}",))
    if not mine:
        return []
    before = first_parent(work.objects, mine[-1].sha)
    if before is None:  # its first commit is the root commit
        return history(work.objects, head)
    return history(work.objects, head, after=before)


class _Ancestry:
    """Which commits of a delivery's history hold which in theirs. With merges on the branch, a commit later in
    the log is not always newer: a person's side branch, merged after aicd wrote, can be older by date and is
    still not in the history of aicd's write."""

    def __init__(self, commits: list[LoggedCommit]) -> None:
        self._parents = {commit.sha: commit.parents for commit in commits}
        self._history: dict[str, frozenset[str]] = {}
        # Without a merge, the log is the history: a commit holds every one after it (a fleet's rollback asks
        # this of thousands of files).
        self._linear = all(len(commit.parents) <= 1 for commit in commits)
        self._position = {commit.sha: index for index, commit in enumerate(commits)}

    def holds(self, sha: str, other: str) -> bool:
        """Whether `other` is `sha` or in its history."""
        if self._linear:
            return self._position[other] >= self._position[sha]
        return other == sha or other in self._before(sha)

    def since(self, commits: list[LoggedCommit], *, first: str, last: str) -> list[LoggedCommit]:
        """Of `commits` (newest first), those from `first` on (every one not in its history), oldest first:
        the ones `last` holds, then the rest (others' edits after it, or beside it on a merged branch)."""
        kept = [
            commit for commit in reversed(commits) if not self.holds(first, commit.sha) or commit.sha == first
        ]
        return [commit for commit in kept if self.holds(last, commit.sha)] + [
            commit for commit in kept if not self.holds(last, commit.sha)
        ]

    def _before(self, sha: str) -> frozenset[str]:
        known = self._history.get(sha)
        if known is None:
            seen: set[str] = set()
            todo = list(self._parents.get(sha, ()))
            while todo:
                parent = todo.pop()
                if parent in seen or parent not in self._parents:
                    continue
                seen.add(parent)
                todo.extend(self._parents[parent])
            known = self._history[sha] = frozenset(seen)
        return known


def _keeping_others_edits(
    work: Worktree, owner: DeliveryRef, path: str, before: bytes | None, since: list[LoggedCommit]
) -> bytes | None:
    """The content to restore: `before` the delivery's first write, with the edits others made to the file
    since (a human's commit that a resume accepted) kept, except where the delivery itself wrote. `since`: the
    commits of the file from the delivery's first write on, oldest first. An edit that does more than set
    values (a key removed, a list resized) cannot be carried over: then `before`, as a plain undo, and a
    warning naming it."""
    theirs = [commit for commit in since if not _is_own(commit, owner)]
    if not theirs or before is None:
        return before
    edits = _edits(work, owner, path, since)
    try:
        kept = undo_keeping_others(before.decode(), edits) if edits is not None else None
    except UnicodeDecodeError:
        kept = None
    if kept is None:
        log.warning(
            "rollback of %s restores %s as before it and drops later edits by others that set more than values: %s",
            owner.trailer,
            path,
            "; ".join(commit.describe_writer() for commit in theirs),
        )
        return before
    return kept.encode()


def _only_clear_human_edits_since(
    work: Worktree, owner: DeliveryRef, path: str, later: list[LoggedCommit], since: list[LoggedCommit]
) -> bool:
    """Whether everything written to `path` after the delivery's last write of it (`later`) is people's commits
    (no delivery's) that only set values away from the delivery's own (yamledit.clear_of_writer): on-call
    scaled the app while the canary ran. The rollback then restores the file around them instead of leaving a
    failed canary running. `since` as for _keeping_others_edits."""
    if not later or any(commit.trailers is not None for commit in later):
        return False
    try:
        edits = _edits(work, owner, path, since)
    except SymbolicLink:  # swapped for a link: never read through, the file is left as it is
        return False
    return edits is not None and clear_of_writer(edits)


def _is_own(commit: LoggedCommit, owner: DeliveryRef) -> bool:
    return commit.trailers is not None and commit.trailers.belongs_to(owner)


def _edits(
    work: Worktree, owner: DeliveryRef, path: str, commits: list[LoggedCommit]
) -> list[tuple[bool, str, str]] | None:
    """Each commit's edit of `path` as (by the delivery, content before, content after); None when the file is
    not text."""
    try:
        return [
            (
                _is_own(commit, owner),
                (edit_base(work.objects, commit.sha, path) or b"").decode(),
                (read_at(work.objects, commit.sha, path) or b"").decode(),
            )
            for commit in commits
        ]
    except UnicodeDecodeError:
        return None


def _without_canary(content: bytes, write: WritePlan) -> bytes:
    """The restored content with no canary and no blue-green preview or warm previous version in it: what
    another (older, superseded) delivery left there would otherwise come back with nobody left to drive it."""
    try:
        text = content.decode()
    except UnicodeDecodeError:
        return content
    values: dict[str, Any] = {}
    try:
        weight = get_key(text, write.weight) if write.weight is not None else None
        if weight not in (None, 0, "0"):
            assert write.weight is not None
            values[write.weight] = 0
            image = get_key(text, write.image)
            if image is not None and write.canary_image is not None:
                values[write.canary_image] = image
        for key in (write.preview, write.previous):
            if key is not None and get_key(text, key) not in (None, ""):
                values[key] = None
    except ValueError:
        return content
    return set_keys(text, values).encode() if values else content


# --- the fence ------------------------------------------------------------------------------------------------
class WriteFence:
    """Whether a write is still wanted, askable from any thread (a group commit checks the fences of other
    activities' requests): outside an activity, always."""

    def cancelled(self) -> BaseException | None:
        return None

    def check(self) -> None:
        pass

    def ask(self) -> Callable[[], None]:
        """Start asking; the returned call waits for the answer and raises as `check` does. A batch asks
        every request's fence at once, so its push waits for the slowest answer, not for their sum."""
        return self.check


class ActivityFence(WriteFence):
    """The fence of the activity that is running where it is made: not cancelled, and - asked of Temporal
    right before a push - still the attempt the workflow waits for. A worker that stalled (VM pause, CPU
    throttling) or lost Temporal while still reaching Git must not push a step the delivery has given to
    another worker or moved past."""

    def __init__(self, client: Client | None, delivery_id: str = "") -> None:
        self.client = client
        self.delivery_id = delivery_id  # the delivery above the activity's workflow (asked at the same time)
        self.info = activity.info()
        self.context = contextvars.copy_context()  # the activity's own, whichever thread asks
        self.loop = asyncio.get_running_loop()

    def cancelled(self) -> BaseException | None:
        if self.context.run(activity.is_cancelled):
            return _error(ErrorType.WRITE_FENCED, "the activity was cancelled; its write is dropped")
        return None

    def check(self) -> None:
        self.ask()()

    def ask(self) -> Callable[[], None]:
        if (cancelled := self.cancelled()) is not None:
            raise cancelled
        if self.client is None:
            return lambda: None
        future = asyncio.run_coroutine_threadsafe(
            _why_not_current(self.client, self.info, self.delivery_id), self.loop
        )

        def answer() -> None:
            try:
                why = future.result(timeout=FENCE_TIMEOUT_S)
            except Exception as error:  # Temporal unreachable: do not push blind; the attempt is retried
                future.cancel()
                raise RuntimeError(
                    f"cannot confirm with Temporal that this write is still wanted: {error}"
                ) from error
            if why:
                raise _error(ErrorType.WRITE_FENCED, f"write dropped: {why}")

        return answer


def write_fence(client: Client | None, delivery_id: str = "") -> WriteFence:
    """The fence for a write made by the running activity (none outside one); `delivery_id` names the
    delivery the write belongs to when the activity runs in one of its target workflows."""
    return ActivityFence(client, delivery_id) if activity.in_activity() else WriteFence()


async def _why_not_current(client: Client, info: activity.Info, delivery_id: str = "") -> str:
    """Why Temporal no longer waits for this attempt's write ("" when it does): its workflow ended, the
    attempt timed out and was retried, it was cancelled - or the delivery above a target's workflow ended
    (a terminated delivery's children are ended by the server moments later; the write must not land in
    between). The two are asked at once."""
    own = client.get_workflow_handle(info.workflow_id or "", run_id=info.workflow_run_id).describe()
    if delivery_id and delivery_id != info.workflow_id:
        description, above = await asyncio.gather(own, client.get_workflow_handle(delivery_id).describe())
        if above.status != WorkflowExecutionStatus.RUNNING:
            return f"workflow {info.workflow_id} has ended with its delivery {delivery_id}"
    else:
        description = await own
    if description.status != WorkflowExecutionStatus.RUNNING:
        return f"workflow {info.workflow_id} has ended"
    for pending in description.raw_description.pending_activities:
        if pending.activity_id == info.activity_id:
            if pending.attempt != info.attempt:
                return f"attempt {info.attempt} of {info.activity_type} was superseded by attempt {pending.attempt}"
            if pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED:
                return f"{info.activity_type} was cancelled"
            return ""
    return f"{info.activity_type} (activity {info.activity_id}) is no longer pending in {info.workflow_id}"


# --- plumbing -------------------------------------------------------------------------------------------------


def path_matcher(paths: set[str]) -> Callable[[str], bool]:
    """Matches the exact paths, and paths of templates with `{{ site }}` (an edge fleet's files)."""
    exact = {path for path in paths if "{{" not in path}
    patterns = [
        re.compile("^" + "[^/]+".join(map(re.escape, SITE_PLACEHOLDER.split(path))) + "$")
        for path in paths
        if "{{" in path
    ]
    return lambda path: path in exact or any(pattern.match(path) for pattern in patterns)


def _stage(repo: git.Repo, paths: list[str]) -> None:
    """`git add --all -- <paths>` in one process that reads the paths from stdin: linear in the paths, where
    thousands of pathspecs on the command line cost git time per path *per index entry* (and can pass the
    argument-size limit)."""
    with tempfile.TemporaryFile() as listing:
        listing.write(b"".join(path.encode() + b"\0" for path in paths))
        listing.seek(0)
        repo.git.update_index("--add", "--remove", "-z", "--stdin", istream=listing)


COMMIT_HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit")
_commit_hooks: dict[str, bool] = {}


def _runs_commit_hooks(repo: git.Repo) -> bool:
    """Whether `git commit` would run a hook in this clone (its hooks directory, or core.hooksPath however
    git is configured): then commits go through git so the hooks run as before. Asked of git once per clone
    and process."""
    key = str(repo.git_dir)
    if key not in _commit_hooks:
        # relative to the work tree, where GitPython runs git (an absolute core.hooksPath stays as it is)
        hooks = Path(repo.working_tree_dir or ".") / repo.git.rev_parse("--git-path", "hooks")
        _commit_hooks[key] = any(os.access(hooks / name, os.X_OK) for name in COMMIT_HOOKS)
    return _commit_hooks[key]


def local_git_dir(url: str) -> Path | None:
    """The git directory of a remote that is a repository on this machine (a path or file:// URL)."""
    path = Path(url.removeprefix("file://"))
    for git_dir in (path, path / ".git"):
        if (git_dir / "HEAD").is_file() and (git_dir / "objects").is_dir():
            return git_dir
    return None


def read_ref(git_dir: Path, ref: str) -> str | None:
    """The commit a ref points at, from the loose ref file or packed-refs (symbolic refs followed)."""
    for _ in range(5):  # HEAD -> refs/heads/<branch> -> sha; deeper chains are not ours
        loose = git_dir / ref
        if loose.is_file():
            value = loose.read_text().strip()
            if not value.startswith("ref: "):
                return value or None
            ref = value[5:]
            continue
        packed = git_dir / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and not line.startswith(("#", "^")):
                    return sha
        return None
    return None


def _remove_stale_git_locks(git_dir: Path) -> None:
    """Git's own lock files (`index.lock`, `HEAD.lock`, a ref's `.lock`) left in the clone by a process killed
    inside a commit or a ref update. Every aicd use of the clone holds its lock, so under it they are stale;
    left there, every later write would fail on them."""
    if not git_dir.is_dir():
        return
    for stale in [*git_dir.glob("*.lock"), *(git_dir / "refs").rglob("*.lock")]:
        log.warning("removing %s, left by a writer that was killed", stale)
        stale.unlink(missing_ok=True)


def _is_ancestor(objects: pygit2.Repository, sha: str, of: str | None) -> bool:
    """Whether commit `sha` is an ancestor of commit `of`, and not `of` itself (False when either is unknown)."""
    if of is None or of == sha:
        return False
    try:
        return bool(objects.descendant_of(pygit2.Oid(hex=of), pygit2.Oid(hex=sha)))
    except (KeyError, ValueError, pygit2.GitError):
        return False


def _has_loose_object(git_dir: Path, sha: str) -> bool:
    """The clone holds this object unpacked (every commit it made or fetched since its last gc): a file test,
    no process. False for a packed one, which only costs the caller a fetch."""
    return len(sha) == 40 and (git_dir / "objects" / sha[:2] / sha[2:]).is_file()


def _contents_at(
    objects: pygit2.Repository, revisions: dict[str, str], target: str
) -> dict[str, bytes | None]:
    """The content of each path at its revision (None: absent there), read in process. A symbolic link there
    is refused, never followed."""
    contents: dict[str, bytes | None] = {}
    for path, revision in revisions.items():
        try:
            contents[path] = read_at(objects, revision, path)
        except SymbolicLink:
            where = f"target {target}: " if target else ""
            raise _error(
                ErrorType.GITOPS_PATH_INVALID,
                f"{where}{path} is a symbolic link in the GitOps repository at {revision}; aicd reads and writes"
                " only regular files",
            ) from None
    return contents


def _retried() -> bool:
    """Whether an earlier execution of this activity may already have pushed (any attempt after the first)."""
    return not activity.in_activity() or activity.info().attempt > 1
