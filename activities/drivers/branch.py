"""The GitOps branch as a target driver sees it right before it asks a target to run a commit: its head now, and
whether that head still contains the commit (a later commit landed on top) or not (the branch was rewritten).

A repository on this machine (a path or file:// URL) is read from its files and objects, without a process. A
remote one is asked with `git ls-remote` of the one ref, and fetched into a bare cache (`aicd.source.cache_dir()`)
only when its head is not the commit itself. git runs as an argv list with no terminal prompt and only the usual
transports; credentials written in the URL (`https://user:token@host/...`) never reach argv: the command gets the
URL without them and git's own `url.<with>.insteadOf=<without>` rewrite, passed in its environment
(GIT_CONFIG_COUNT), puts them back. Errors are redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pygit2

from aicd.activities.gitops import local_git_dir, read_ref
from aicd.redact import redact_credentials
from aicd.source import ALLOWED_PROTOCOLS, cache_dir

GIT_TIMEOUT_S = 60.0
FETCH_TIMEOUT_S = 300.0


class BranchUnreadable(RuntimeError):
    """The GitOps remote did not answer (unreachable, refused, timed out): transient, the activity is retried."""


def _without_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL for argv, and the environment that gives git its credentials back."""
    parts = urlsplit(url)
    if "://" not in url or "@" not in parts.netloc:
        return url, {}
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    count = int(os.environ.get("GIT_CONFIG_COUNT") or 0)
    return bare, {
        f"GIT_CONFIG_KEY_{count}": f"url.{url}.insteadOf",
        f"GIT_CONFIG_VALUE_{count}": bare,
        "GIT_CONFIG_COUNT": str(count + 1),
    }


async def _git(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout_s: float
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS, **env},
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise BranchUnreadable(f"git {args[0]} timed out after {timeout_s:.0f}s") from None
    return process.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace")


def _failed(what: str, repo: str, stderr: str) -> BranchUnreadable:
    tail = stderr.strip().splitlines()[-1:] or ["no output"]
    return BranchUnreadable(redact_credentials(f"{what} of GitOps repo {repo} failed: {tail[0]}"))


async def branch_head(repo: str, branch: str) -> str | None:
    """The commit at the head of `branch` now; None when the branch does not exist."""
    local = local_git_dir(repo)
    if local is not None:
        return read_ref(local, f"refs/heads/{branch}")
    if repo.startswith("-"):
        raise BranchUnreadable(
            f"refusing repository {redact_credentials(repo)!r}: it would be read as an option"
        )
    url, env = _without_credentials(repo)
    code, stdout, stderr = await _git(
        "ls-remote", "--", url, f"refs/heads/{branch}", env=env, timeout_s=GIT_TIMEOUT_S
    )
    if code != 0:
        raise _failed("git ls-remote", repo, stderr)
    for line in stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha.strip().lower()
    return None


def _descends(git_dir: Path, head: str, revision: str) -> bool:
    objects = pygit2.Repository(str(git_dir))
    try:
        return bool(objects.descendant_of(pygit2.Oid(hex=head), pygit2.Oid(hex=revision)))
    except (KeyError, ValueError, pygit2.GitError):
        return False


async def contains(repo: str, branch: str, head: str, revision: str) -> bool:
    """Whether commit `head` of `branch` has `revision` in its history (`git merge-base --is-ancestor`)."""
    if head == revision:
        return True
    local = local_git_dir(repo)
    if local is None:
        local = await _fetched(repo, branch, head)
    return await asyncio.to_thread(_descends, local, head, revision)


# Syncs of one worker that need the same cache fetch one at a time: two fetches updating one ref at once
# fail one of them ("cannot lock ref"), and the second usually finds the first already brought `head`.
_cache_locks: dict[Path, asyncio.Lock] = {}


async def _fetched(repo: str, branch: str, head: str) -> Path:
    """A bare cache of the remote branch that has commit `head`: fetched now unless it already has it."""
    path = cache_dir().parent / "gitops-heads" / (hashlib.sha256(repo.encode()).hexdigest()[:20] + ".git")
    async with _cache_locks.setdefault(path, asyncio.Lock()):
        if (path / "HEAD").exists() and await asyncio.to_thread(_has_commit, path, head):
            return path
        return await _fetch(repo, branch, path)


def _has_commit(git_dir: Path, sha: str) -> bool:
    try:
        return pygit2.Repository(str(git_dir)).get(sha) is not None
    except (ValueError, pygit2.GitError):
        return False


async def _fetch(repo: str, branch: str, path: Path) -> Path:
    if not (path / "HEAD").exists():
        path.mkdir(parents=True, exist_ok=True)
        code, _out, stderr = await _git(
            "init", "--quiet", "--bare", str(path), env={}, timeout_s=GIT_TIMEOUT_S
        )
        if code != 0:
            raise _failed("git init of a cache", repo, stderr)
    url, env = _without_credentials(repo)
    code, _out, stderr = await _git(
        "fetch",
        "--quiet",
        "--no-tags",
        "--",
        url,
        f"+refs/heads/{branch}:refs/heads/{branch}",
        env=env,
        cwd=path,
        timeout_s=FETCH_TIMEOUT_S,
    )
    if code != 0:
        raise _failed("git fetch", repo, stderr)
    return path
