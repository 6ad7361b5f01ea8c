"""The source repository as aicd's entry points see it: branch heads (`git ls-remote`) and the one identity
of a revision.

Every entry point (CLI, gateway, poller) turns what it was given into the full commit SHA before anything
starts, so a short SHA, a full SHA and a branch name naming the same commit are one delivery, and an unknown
or ambiguous revision is refused at once with the repository named, instead of failing later in a build.

git runs as an argv list, never through a shell, with only the usual transports allowed (no `ext::`), no
terminal prompts, and the repository after `--`; branch names and revisions are data, never options.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from pathlib import Path

from aicd.redact import redact_credentials

ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
LS_REMOTE_TIMEOUT_S = 60.0
FETCH_TIMEOUT_S = 300.0
FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
CACHE_DIR_ENV = "AICD_CACHE_DIR"


class SourceError(Exception):
    """The repository cannot be read (unreachable, refused): worth trying again later."""


class RevisionUnknown(Exception):
    """The revision names no commit of the repository, or more than one: the caller's mistake."""


def is_full_sha(revision: str) -> bool:
    return FULL_SHA.fullmatch(revision) is not None


def _git_env() -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS}


async def _git(
    *args: str, cwd: Path | None = None, timeout_s: float = LS_REMOTE_TIMEOUT_S
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_git_env(),
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise SourceError(
            redact_credentials(f"git {' '.join(args[:3])} timed out after {timeout_s:.0f}s")
        ) from None
    return process.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace")


def _refuse_option(repo: str) -> None:
    if repo.startswith("-"):
        raise SourceError(f"refusing repository {redact_credentials(repo)!r}: it would be read as an option")


async def list_refs(repo: str, *patterns: str, timeout_s: float = LS_REMOTE_TIMEOUT_S) -> dict[str, str]:
    """{full ref name: SHA} of `repo` from `git ls-remote` (heads and tags unless patterns say otherwise)."""
    _refuse_option(repo)
    code, stdout, stderr = await _git("ls-remote", "--", repo, *patterns, timeout_s=timeout_s)
    if code != 0:
        tail = stderr.strip().splitlines()[-1:] or ["no output"]
        raise SourceError(redact_credentials(f"git ls-remote {repo} failed ({code}): {tail[0]}"))
    refs: dict[str, str] = {}
    for line in stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if sha and ref and not ref.endswith("^{}"):
            refs[ref] = sha.lower()
        elif ref.endswith("^{}"):  # an annotated tag: the commit it points at
            refs[ref.removesuffix("^{}")] = sha.lower()
    return refs


async def list_heads(repo: str, timeout_s: float = LS_REMOTE_TIMEOUT_S) -> dict[str, str]:
    """{branch: head SHA} of `repo`."""
    refs = await list_refs(repo, "refs/heads/*", timeout_s=timeout_s)
    return {
        ref.removeprefix("refs/heads/"): sha for ref, sha in refs.items() if ref.startswith("refs/heads/")
    }


async def branch_head(repo: str, branch: str) -> str | None:
    """The SHA at the head of `branch` now, or None when the branch does not exist."""
    refs = await list_refs(repo, f"refs/heads/{branch}")
    return refs.get(f"refs/heads/{branch}")


def cache_dir() -> Path:
    base = os.environ.get(CACHE_DIR_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aicd"
    )
    return Path(base) / "sources"


async def resolve_revision(repo: str, given: str, cache: Path | None = None) -> str:
    """The full SHA of the commit `given` names in `repo`: a full or short SHA, a branch or a tag.

    Branches and tags resolve from `git ls-remote` alone; a SHA is looked up in a local mirror of the
    repository's branches and tags (fetched into `cache`, incrementally after the first time), so it must be
    reachable from one of them. Raises RevisionUnknown (unknown or ambiguous) or SourceError (unreachable)."""
    shown = redact_credentials(repo)
    wanted = given.strip()
    if not wanted or wanted.startswith("-") or any(ord(char) < 0x20 for char in wanted):
        raise RevisionUnknown(f"{given!r} is not a revision of {shown}")
    refs = await list_refs(repo)
    for ref in (f"refs/heads/{wanted}", f"refs/tags/{wanted}", wanted):
        if ref in refs:
            return refs[ref]
    lowered = wanted.lower()
    if is_full_sha(lowered) and lowered in refs.values():
        return lowered
    if not re.fullmatch(r"[0-9a-f]{4,64}", lowered):
        raise RevisionUnknown(f"{given!r} is neither a branch, a tag nor a commit SHA of {shown}")
    mirror = await _mirror(repo, cache or cache_dir())
    code, stdout, stderr = await _git(
        "rev-parse", "--verify", "--end-of-options", f"{lowered}^{{commit}}", cwd=mirror
    )
    if code == 0 and is_full_sha(stdout.strip()):
        return stdout.strip()
    if "ambiguous" in stderr:
        raise RevisionUnknown(f"{given!r} is ambiguous in {shown}: give more hex digits or the full SHA")
    raise RevisionUnknown(f"no commit {given!r} on any branch or tag of {shown}")


async def fetch_mirror(repo: str, cache: Path | None = None) -> Path:
    """A bare mirror of `repo`'s branches and tags in the cache, fetched now (read with `git_in`)."""
    return await _mirror(repo, cache or cache_dir())


async def git_in(path: Path, *args: str, timeout_s: float = LS_REMOTE_TIMEOUT_S) -> tuple[int, str, str]:
    """`git ARGS` in `path` (a mirror): exit code, stdout, stderr; arguments are data, never a shell."""
    return await _git(*args, cwd=path, timeout_s=timeout_s)


async def _mirror(repo: str, cache: Path) -> Path:
    """A bare mirror of the repository's branches and tags under `cache`, fetched now."""
    _refuse_option(repo)
    path = cache / (hashlib.sha256(repo.encode()).hexdigest()[:20] + ".git")
    if not (path / "HEAD").exists():
        path.mkdir(parents=True, exist_ok=True)
        code, _out, stderr = await _git("init", "--quiet", "--bare", str(path))
        if code != 0:
            raise SourceError(
                redact_credentials(f"cannot create a mirror of {repo} in {path}: {stderr.strip()}")
            )
    code, _out, stderr = await _git(
        "fetch",
        "--quiet",
        "--prune",
        "--no-tags",
        "--",
        repo,
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
        cwd=path,
        timeout_s=FETCH_TIMEOUT_S,
    )
    if code != 0:
        tail = stderr.strip().splitlines()[-1:] or ["no output"]
        raise SourceError(redact_credentials(f"cannot fetch {repo}: {tail[0]}"))
    return path
