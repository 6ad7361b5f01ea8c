"""GitOps repository activities: one commit per step, idempotent by trailers, push races retried by
re-applying the step on the fresh branch (never a force-push), rollback restored from Git itself."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import in_thread_with_heartbeats
from activities.yamledit import set_keys
from aicd.redact import redact_credentials
from aicd.spec.placeholders import render

log = logging.getLogger(__name__)

MAX_PUSH_ATTEMPTS = 30
_REJECTED_PUSH = ("rejected", "fetch first", "non-fast-forward", "failed to push", "lock")
_thread_locks: dict[str, threading.Lock] = {}
# Clones this process left clean and equal to the remote branch after its own push or fetch.
_in_sync_clones: set[str] = set()
_thread_locks_guard = threading.Lock()


@dataclass
class FileEdit:
    """Set `values` (dotted key -> value) in the file at `path`; with `sites`, `path` is a template with
    `{{ site }}` and the same values go into every site's file (an edge batch stays a small payload)."""

    path: str
    values: dict[str, Any]
    sites: list[str] = field(default_factory=list)

    def paths(self) -> list[str]:
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


@dataclass
class CommitResult:
    sha: str | None  # None: nothing to commit (a rollback of a target this delivery never touched)
    already_done: bool = False
    push_retries: int = 0


def delivery_trailer(app: str, revision: str) -> str:
    return f"{app}@{revision}"


def _message(subject: str, delivery: str, step: str, actor: str, reason: str) -> str:
    body = f"\n{reason}\n" if reason else ""
    return f"{subject}\n{body}\nAicd-Delivery: {delivery}\nAicd-Step: {step}\nAicd-Actor: {actor}\n"


@dataclass
class StepCommit:
    """One step's commit: `apply` edits the work tree and returns the paths it changed, or None when the
    step has nothing to commit."""

    delivery: str
    step: str
    message: str
    apply: Callable[[git.Repo], list[str] | None]


class GitOpsClone:
    """A working clone of one GitOps repository under the worker's state dir, guarded by a lock that holds
    across threads and across worker processes sharing the state dir."""

    def __init__(self, state_dir: Path, url: str, branch: str) -> None:
        self.url = url
        self.branch = branch
        key = hashlib.sha1(f"{url}#{branch}".encode()).hexdigest()[:16]
        self.path = state_dir / "gitops" / key
        self.lock_path = state_dir / "gitops" / f"{key}.lock"

    @contextmanager
    def locked(self) -> Iterator[git.Repo]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _thread_locks_guard:
            thread_lock = _thread_locks.setdefault(str(self.path), threading.Lock())
        with thread_lock, open(self.lock_path, "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield self._open()
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _open(self) -> git.Repo:
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
                    type="GitOpsUnreachable",
                ) from None
            with repo.config_writer() as config:
                config.set_value("user", "name", "aicd")
                config.set_value("user", "email", "aicd@localhost")
        return repo

    def refresh(self, repo: git.Repo) -> bool:
        """Reset the clone to the remote branch; False when the branch does not exist yet."""
        repo.git.fetch("origin", "--prune", "--quiet")
        remote_ref = f"origin/{self.branch}"
        try:
            repo.git.rev_parse("--verify", "--quiet", remote_ref)
        except git.GitCommandError:
            repo.git.checkout("--orphan", f"aicd-{self.branch}") if not repo.head.is_valid() else None
            return False
        repo.git.checkout("-B", self.branch, remote_ref, "--quiet", "--force")
        repo.git.reset("--hard", remote_ref, "--quiet")
        repo.git.clean("-fdq")
        _in_sync_clones.add(str(self.path))
        return True

    def find_step_commit(self, repo: git.Repo, delivery: str, step: str) -> str | None:
        output = repo.git.log(
            f"origin/{self.branch}",
            "--format=%H",
            "--all-match",
            "--fixed-strings",
            f"--grep=Aicd-Delivery: {delivery}",
            f"--grep=Aicd-Step: {step}",
            "-n",
            "50",
        )
        for sha in output.split():
            trailers = repo.git.log("-1", "--format=%(trailers:only,unfold)", sha)
            if f"Aicd-Delivery: {delivery}" in trailers.splitlines() and f"Aicd-Step: {step}" in trailers.splitlines():
                return sha
        return None

    def commit_and_push(
        self,
        steps: list[StepCommit],
        heartbeat: Callable[[str], None],
        *,
        maybe_done: bool = True,
    ) -> list[CommitResult]:
        """One commit per step, all pushed at once; on a rejected push refetch and re-apply them all.

        `maybe_done=False` (a first activity attempt: no earlier execution can have pushed these steps) lets
        a clone this process knows to be in step with the remote skip the fetch and the trailer search; a
        rejected push falls back to the full path, so a stale clone costs one retry, never a wrong commit."""
        retries = 0
        fast = not maybe_done
        for attempt in range(MAX_PUSH_ATTEMPTS):
            with self.locked() as repo:
                try:
                    results = self._commit_locally(repo, steps, fast=fast, maybe_done=maybe_done)
                    if any(result.sha and not result.already_done for result in results):
                        repo.git.push("origin", f"HEAD:refs/heads/{self.branch}", "--quiet")
                        _in_sync_clones.add(str(self.path))
                    for result in results:
                        result.push_retries = retries
                    return results
                except git.GitCommandError as error:
                    _in_sync_clones.discard(str(self.path))
                    stderr = error.stderr or ""
                    if not any(word in stderr for word in _REJECTED_PUSH):
                        raise
                    retries += 1
                    fast = False
                    log.info("push of %s rejected (attempt %d); refetching", steps[0].step, attempt + 1)
                except BaseException:
                    _in_sync_clones.discard(str(self.path))  # the work tree may be half-edited
                    raise
            heartbeat(f"push retry {retries}")
            time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))
        raise RuntimeError(f"push of {steps[0].step} still rejected after {MAX_PUSH_ATTEMPTS} attempts")

    def _commit_locally(self, repo: git.Repo, steps: list[StepCommit], *, fast: bool, maybe_done: bool) -> list[CommitResult]:
        has_branch = True
        if not (fast and self._known_in_sync(repo)):
            has_branch = self.refresh(repo)
        results = []
        for step in steps:
            existing = self.find_step_commit(repo, step.delivery, step.step) if has_branch and maybe_done else None
            if existing:
                results.append(CommitResult(existing, already_done=True))
                continue
            paths = step.apply(repo)
            if paths is None:
                results.append(CommitResult(None))
                continue
            # The work tree was clean before `apply`: `commit -a` takes its edits and deletions of tracked
            # files; only files new to the repo need staging first (rare: a first deploy to a new path).
            new_files = _untracked(repo, paths)
            if new_files:
                _stage(repo, new_files)
            repo.git.commit("--all", "--allow-empty", "-m", step.message, "--quiet")
            head = read_ref(Path(repo.git_dir), "HEAD")
            assert head is not None, "HEAD unreadable right after a commit"
            results.append(CommitResult(head))
        return results

    def _known_in_sync(self, repo: git.Repo) -> bool:
        """This process last left the clone clean and pushed, and HEAD is still the remote branch (read from
        the ref files: a process per check would cost as much as the commit)."""
        if str(self.path) not in _in_sync_clones:
            return False
        git_dir = Path(repo.git_dir)
        head = read_ref(git_dir, "HEAD")
        return head is not None and head == read_ref(git_dir, f"refs/remotes/origin/{self.branch}")


class GitOpsActivities:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def _clone(self, repo: str, branch: str) -> GitOpsClone:
        return GitOpsClone(self.state_dir, repo, branch)

    @activity.defn(name="gitops_commit")
    async def commit(self, request: CommitRequest) -> CommitResult:
        return await in_thread_with_heartbeats(self._commit, request)

    def _commit(self, request: CommitRequest, heartbeat: Callable[[str], None]) -> CommitResult:
        clone = self._clone(request.repo, request.branch)

        def apply(repo: git.Repo) -> list[str]:
            changed = []
            for edit in request.edits:
                for path in edit.paths():
                    _check_inside(path)
                    file = Path(repo.working_tree_dir or ".") / path
                    text = file.read_text() if file.exists() else ""
                    try:
                        updated = set_keys(text, edit.values)
                    except ValueError as error:
                        raise ApplicationError(f"{path}: {error}", non_retryable=True, type="GitOpsFileInvalid") from error
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_text(updated)
                    changed.append(path)
            return changed

        message = _message(request.subject, request.delivery, request.step, request.actor, request.reason)
        step = StepCommit(request.delivery, request.step, message, apply)
        return clone.commit_and_push([step], heartbeat, maybe_done=_retried())[0]

    @activity.defn(name="gitops_rollback")
    async def rollback(self, request: RollbackRequest) -> CommitResult:
        return (await self.rollback_many([request]))[0]

    @activity.defn(name="gitops_rollback_many")
    async def rollback_many(self, requests: list[RollbackRequest]) -> list[CommitResult]:
        """Rollback commits of several targets of one GitOps branch, one commit each, pushed together: an
        abort restores a whole stage in one push."""
        return await in_thread_with_heartbeats(self._rollback, requests)

    def _rollback(self, requests: list[RollbackRequest], heartbeat: Callable[[str], None]) -> list[CommitResult]:
        first = requests[0]
        if any((request.repo, request.branch) != (first.repo, first.branch) for request in requests):
            raise ApplicationError("one rollback batch covers one GitOps branch", non_retryable=True, type="GitOpsPathInvalid")
        clone = self._clone(first.repo, first.branch)
        steps = [
            StepCommit(
                request.delivery,
                request.step,
                _message(request.subject, request.delivery, request.step, request.actor, request.reason),
                self._restore(clone, request),
            )
            for request in requests
        ]
        return clone.commit_and_push(steps, heartbeat, maybe_done=_retried())

    def _restore(self, clone: GitOpsClone, request: RollbackRequest) -> Callable[[git.Repo], list[str] | None]:
        wanted = set(request.paths)

        def apply(repo: git.Repo) -> list[str] | None:
            first_touch = _first_commits_touching(repo, f"origin/{clone.branch}", request.delivery, wanted)
            befores = _contents_at(repo, {path: f"{sha}^" for path, sha in first_touch.items()})
            changed: list[str] = []
            root = Path(repo.working_tree_dir or ".")
            for path in sorted(first_touch):
                before = befores[path]
                file = root / path
                current = file.read_bytes() if file.exists() else None
                if current == before:
                    continue
                if before is None:
                    file.unlink()
                else:
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_bytes(before)
                changed.append(path)
            return changed or None

        return apply

    @activity.defn(name="gitops_read_file")
    async def read_file(self, repo: str, branch: str, path: str) -> str:
        def read() -> str:
            clone = self._clone(repo, branch)
            with clone.locked() as local:
                clone.refresh(local)
                content = _content_at(local, f"origin/{branch}", path)
            if content is None:
                raise ApplicationError(f"{path} not found on {branch} of {repo}", non_retryable=True, type="GitOpsFileMissing")
            return content.decode()

        return await asyncio.to_thread(read)


def _check_inside(path: str) -> None:
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts or ".git" in parts:
        raise ApplicationError(f"path {path!r} leaves the GitOps repository", non_retryable=True, type="GitOpsPathInvalid")


_SITE_PLACEHOLDER = re.compile(r"\{\{\s*site\s*\}\}")


def path_matcher(paths: set[str]) -> Callable[[str], bool]:
    """Matches the exact paths, and paths of templates with `{{ site }}` (an edge fleet's files)."""
    exact = {path for path in paths if "{{" not in path}
    patterns = [
        # `{{site}}` is as valid in a spec as `{{ site }}`
        re.compile("^" + "[^/]+".join(map(re.escape, _SITE_PLACEHOLDER.split(path))) + "$") for path in paths if "{{" in path
    ]
    return lambda path: path in exact or any(pattern.match(path) for pattern in patterns)


def _first_commits_touching(repo: git.Repo, ref: str, delivery: str, paths: set[str]) -> dict[str, str]:
    """For each path (or path template), the oldest commit of `delivery` that touched it: its parent holds
    the content from before this delivery."""
    output = repo.git.log(
        ref, "--reverse", "--format=@%H", "--name-only", "--fixed-strings", f"--grep=Aicd-Delivery: {delivery}"
    )
    matches = path_matcher(paths)
    first: dict[str, str] = {}
    sha = ""
    for line in output.splitlines():
        if line.startswith("@"):
            sha = line[1:]
        elif line and line not in first and matches(line):
            first[line] = sha
    return first


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


def _untracked(repo: git.Repo, paths: list[str]) -> list[str]:
    """Those of `paths` that exist in the work tree but not in the index (read from .git/index, no process)."""
    root = Path(repo.working_tree_dir or ".")
    tracked = {path for path, _stage_number in repo.index.entries}
    return [path for path in paths if path not in tracked and (root / path).exists()]


def _stage(repo: git.Repo, paths: list[str]) -> None:
    """`git add --all -- <paths>` in one process that reads the paths from stdin: linear in the paths, where
    thousands of pathspecs on the command line cost git time per path *per index entry* (and can pass the
    argument-size limit)."""
    with tempfile.TemporaryFile() as listing:
        listing.write(b"".join(path.encode() + b"\0" for path in paths))
        listing.seek(0)
        repo.git.update_index("--add", "--remove", "-z", "--stdin", istream=listing)


def _contents_at(repo: git.Repo, revisions: dict[str, str]) -> dict[str, bytes | None]:
    """The content of each path at its revision (None: absent there), without a process per path: one
    `ls-tree` per distinct revision (a fleet rollback has one per batch) maps paths to blobs, and the blobs
    are read through one `git cat-file --batch` process. Looking up `<rev>:<path>` per path instead re-reads
    the large directory trees of a fleet every time."""
    by_revision: dict[str, list[str]] = {}
    for path, revision in revisions.items():
        by_revision.setdefault(revision, []).append(path)
    contents: dict[str, bytes | None] = {}
    for revision, paths in by_revision.items():
        try:
            listing = repo.git.ls_tree("-r", "-z", "--full-tree", revision)
        except git.GitCommandError:  # no such revision (the parent of a root commit): nothing existed
            listing = ""
        blobs = {}
        for entry in listing.split("\0"):
            meta, _, path = entry.partition("\t")
            if meta.split(" ")[1:2] == ["blob"]:
                blobs[path] = meta.split(" ")[2]
        for path in paths:
            blob = blobs.get(path)
            contents[path] = repo.git.get_object_data(blob)[3] if blob else None
    return contents


def _content_at(repo: git.Repo, revision: str, path: str) -> bytes | None:
    try:
        return repo.git.execute(["git", "show", f"{revision}:{path}"], stdout_as_string=False, strip_newline_in_stdout=False)  # type: ignore[no-any-return]
    except git.GitCommandError:
        return None


def _retried() -> bool:
    """Whether an earlier execution of this activity may already have pushed (any attempt after the first)."""
    return not activity.in_activity() or activity.info().attempt > 1
