"""The embedded stack's own GitOps repository: `<state>/gitops.git` (bare, branch `main`), which the local
reconciler of `aicd dev` follows for every `local` target, and `<state>/artifacts`, where local builds put
each version. `aicd init` adds an app's local targets here; the deliveries then write through the worker's
GitOps activities like on any GitOps repo."""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

GITOPS_DIR = "gitops.git"
ARTIFACTS_DIR = "artifacts"
BRANCH = "main"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "aicd",
    "GIT_AUTHOR_EMAIL": "aicd@localhost",
    "GIT_COMMITTER_NAME": "aicd",
    "GIT_COMMITTER_EMAIL": "aicd@localhost",
    "GIT_TERMINAL_PROMPT": "0",
}


class LocalGitOpsError(RuntimeError):
    """Git refused a step on the local GitOps repository; the message has its words."""


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", f"init.defaultBranch={BRANCH}", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        env={**os.environ, **_IDENTITY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise LocalGitOpsError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def local_artifacts(state_dir: Path) -> Path:
    path = state_dir.expanduser().resolve() / ARTIFACTS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def local_gitops_repo(state_dir: Path) -> Path:
    """`<state>/gitops.git`, made with a first commit on `main` when missing (the reconciler needs a head)."""
    state = state_dir.expanduser().resolve()
    state.mkdir(parents=True, exist_ok=True)
    repo = state / GITOPS_DIR
    with open(state / "gitops.lock", "w") as lock:  # `aicd dev` and `aicd init` may both get here first
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (repo / "HEAD").exists():
            _git(state, "init", "-q", "--bare", str(repo))
        if not _git(repo, "for-each-ref", f"refs/heads/{BRANCH}"):
            commit_files(
                repo,
                {
                    "README.md": "GitOps repository of the embedded stack (`aicd dev`): one directory per app.\n"
                },
                "GitOps repository of aicd dev",
                first=True,
            )
    return repo


def commit_files(repo: Path, files: Mapping[str, str], message: str, *, first: bool = False) -> str:
    """Commit `files` (path -> text) on `main` of the bare `repo` and push; returns the new head."""
    with tempfile.TemporaryDirectory(prefix="aicd-gitops-") as scratch:
        work = Path(scratch) / "work"
        if first:
            work.mkdir()
            _git(work, "init", "-q")
            _git(work, "remote", "add", "origin", str(repo))
        else:
            _git(Path(scratch), "clone", "-q", "--branch", BRANCH, str(repo), str(work))
        for path, text in files.items():
            target = work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        _git(work, "add", "-A")
        _git(work, "commit", "-q", "-m", message)
        _git(work, "push", "-q", "origin", f"HEAD:refs/heads/{BRANCH}")
        return _git(work, "rev-parse", "HEAD")
