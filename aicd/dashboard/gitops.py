"""The commits a delivery made, read from its GitOps repository for the dashboard: subject, author, aicd
trailers and the diff (the built-in diff view), or a link to the Git host's own diff page.

The repository is read from a bare mirror in aicd's cache (`aicd.source.fetch_mirror`, the one place aicd
mirrors repositories), fetched only when a wanted commit is not there yet and then at most every few
seconds. Commits never change, so what was read once is kept. git runs as an argv list, never a shell."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from aicd.messages import DeliveryStatus, LaterCommit
from aicd.redact import redact_credentials
from aicd.source import SourceError, fetch_mirror, git_in
from aicd.trailers import DELIVERY_ID, parse_trailers

log = logging.getLogger("aicd.dashboard")

SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
FETCH_COOLDOWN_S = 1.0
BRANCH_RECHECK_S = 30.0  # how stale a page's "is this commit still on the branch" may be
MAX_LATER_COMMITS = 5  # later commits named per target
MAX_DIFF_BYTES = 512 * 1024  # a diff beyond this is cut (values files are small; a vendored chart is not)
READ_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    subject: str
    author: str
    date: str  # ISO 8601
    step: str = ""  # the Aicd-Step trailer
    actor: str = ""  # the Aicd-Actor trailer


@dataclass(frozen=True)
class DiffLine:
    kind: str  # add | del | ctx | hunk
    text: str
    old: int | None = None  # line numbers in the old and new file
    new: int | None = None


@dataclass
class FileDiff:
    path: str
    old_path: str
    lines: list[DiffLine] = field(default_factory=list)
    added: int = 0
    removed: int = 0
    binary: bool = False


@dataclass
class CommitDiff:
    info: CommitInfo
    files: list[FileDiff]
    truncated: bool = False


class GitOpsUnreadable(Exception):
    """The repository or commit cannot be read now; the message says why (credentials redacted)."""


def commit_url(template: str, repo: str, sha: str) -> str:
    """A link to the Git host's view of a commit: the template's `{sha}`, `{short}` and `{repo_path}` (the
    repository URL's path without `.git`, e.g. `platform/gitops`) filled in."""
    return template.replace("{sha}", sha).replace("{short}", sha[:8]).replace("{repo_path}", repo_path(repo))


def repo_path(repo: str) -> str:
    """`https://host/group/gitops.git`, `git@host:group/gitops.git`, `ssh://git@host/group/gitops` ->
    `group/gitops`."""
    text = redact_credentials(repo).strip().rstrip("/")
    if "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("/", 1)[1] if "/" in text else ""
    elif re.match(r"^[\w.-]+@[\w.-]+:", text):
        text = text.split(":", 1)[1]
    return text.removesuffix(".git").lstrip("/")


class GitOpsReader:
    """Reads commits of GitOps repositories through mirrors under `cache` (None: aicd's cache dir)."""

    def __init__(self, cache: Path | None = None) -> None:
        self.cache = cache
        self._infos: dict[tuple[str, str], CommitInfo] = {}
        self._fetched: dict[str, float] = {}
        self._mirrors: dict[str, Path] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # (repo, branch) -> the branch head last checked, and the commits known to be in its history
        self._on_branch: dict[tuple[str, str], tuple[str, frozenset[str]]] = {}
        # (repo, branch, delivery, a target's commits) -> (the branch head read at, the later commits found)
        self._later: dict[tuple[str, str, str, tuple[str, ...]], tuple[str, list[LaterCommit]]] = {}

    async def infos(self, repo: str, shas: list[str]) -> dict[str, CommitInfo]:
        """What is known of these commits (best effort: an unreadable repository gives what was read before)."""
        wanted = [sha for sha in dict.fromkeys(shas) if SHA.fullmatch(sha) and (repo, sha) not in self._infos]
        if wanted:
            try:
                mirror = await self._mirror_with(repo, wanted)
                await self._read_infos(repo, mirror, wanted)
            except GitOpsUnreadable as unreadable:
                log.warning("cannot read commits of the GitOps repo: %s", unreadable)
        return {sha: self._infos[(repo, sha)] for sha in shas if (repo, sha) in self._infos}

    async def off_branch(self, repo: str, branch: str, shas: list[str]) -> set[str]:
        """The commits among `shas` that the branch no longer holds: someone rewrote its history (a force-push
        back, a deleted branch) after they were pushed, so what Argo CD deploys is not what they say. The
        branch is read from a mirror fetched at most every BRANCH_RECHECK_S, and again for a commit the mirror
        has not seen (pushed since). Best effort: nothing is reported when the repository cannot be read."""
        wanted = [sha for sha in dict.fromkeys(shas) if SHA.fullmatch(sha)]
        if not wanted:
            return set()
        try:
            mirror, fresh = await self._mirror_fetched_within(repo, BRANCH_RECHECK_S)
            off, unseen = await self._check_branch(repo, branch, mirror, wanted)
            if unseen and not fresh:
                mirror = await self._mirror_with(repo, sorted(unseen))
                off, unseen = await self._check_branch(repo, branch, mirror, wanted)
        except GitOpsUnreadable as unreadable:
            log.warning("cannot read the branch of the GitOps repo: %s", unreadable)
            return set()
        return off | unseen  # a commit the remote does not have, just fetched, is on none of its branches

    async def changed_since(
        self, repo: str, branch: str, delivery_id: str, written: dict[str, list[str]]
    ) -> dict[str, list[LaterCommit]]:
        """Per target (`written`: its commits, oldest first), when a file its commits wrote reads otherwise on
        the branch now than after the delivery's last write of that file: the commits that last changed those
        files (newest first, at most MAX_LATER_COMMITS) - a person's edit or a newer delivery, whose content
        runs now. A file changed and changed back counts as unchanged. A target whose last commit the branch
        does not hold is left out (off_branch says so). Best effort, as off_branch."""
        try:
            mirror, _fresh = await self._mirror_fetched_within(repo, BRANCH_RECHECK_S)
            head = await _branch_head(mirror, branch)
            if head is None:
                return {}
            found: dict[str, list[LaterCommit]] = {}
            for target, shas in written.items():
                valid = [sha for sha in shas if SHA.fullmatch(sha)]
                key = (repo, branch, delivery_id, tuple(valid))
                known_head, known = self._later.get(key, ("", []))
                if known_head == head:
                    if known:
                        found[target] = known
                    continue
                # Only commits the branch holds: a force-push may have dropped earlier ones that the mirror
                # never had. The last one is asked first: off the branch, off_branch says so.
                if not valid or not await _holds(mirror, head, valid[-1]):
                    self._later[key] = (head, [])
                    continue
                held = [sha for sha in valid[:-1] if await _holds(mirror, head, sha)] + valid[-1:]
                # Each file against the delivery's own last write of it: an edge fleet writes each site's file
                # in one batch, so a person's pin between two batches is in the last commit's tree too.
                wrote = {fields[0]: names for fields, names in await _changes(mirror, held, walk=False)}
                last_write = {name: sha for sha in held for name in wrote.get(sha, [])}
                files_by_write: dict[str, set[str]] = {}
                for name, sha in last_write.items():
                    files_by_write.setdefault(sha, set()).add(name)
                differing = sorted(
                    [
                        name
                        for sha, names in files_by_write.items()
                        for name in names.intersection(await _differing(mirror, sha, head))
                    ]
                )
                last_writes = {
                    await _last_change(mirror, head, name) for name in differing[:MAX_LATER_COMMITS]
                }
                later = [
                    commit
                    for commit in await _later_commits(mirror, sorted(sha for sha in last_writes if sha))
                    if commit.delivery_id != delivery_id
                ]
                self._later[key] = (head, later)
                if later:
                    found[target] = later
            return found
        except GitOpsUnreadable as unreadable:
            log.warning("cannot read the branch of the GitOps repo: %s", unreadable)
            return {}

    async def branch_since(
        self, repo: str, branch: str, status: DeliveryStatus
    ) -> tuple[list[str], dict[str, list[LaterCommit]]]:
        """What the branch says now of a delivery's commits: those it no longer holds (in the status's order),
        and each target's later commits (changed_since). Read for a running delivery too: one waiting for an
        approval or a pause finds a person's pin or a force-push only at its next write, hours later maybe,
        and its status must not claim until then what the branch no longer says. Its own commits newer than
        the status's are its own, so they are never named."""
        shas = status.commits()
        off = await self.off_branch(repo, branch, shas)
        written = {name: list(target.commits) for name, target in status.targets.items()}
        later = await self.changed_since(repo, branch, status.delivery_id, written)
        return [sha for sha in shas if sha in off], later

    async def _check_branch(
        self, repo: str, branch: str, mirror: Path, shas: list[str]
    ) -> tuple[set[str], set[str]]:
        """(commits the mirror's branch does not hold, commits the mirror lacks); the commits found on the
        branch are remembered with its head, and asked again only once the branch is rewritten."""
        head = await _branch_head(mirror, branch)
        if head is None:
            return set(shas), set()
        checked, on = self._on_branch.get((repo, branch), ("", frozenset()))
        if checked != head and not (checked and await _holds(mirror, head, checked)):
            on = frozenset()  # rewritten since the last check: every commit is asked again
        off, unseen = set(), set()
        for sha in shas:
            if sha in on:
                continue
            held = await _holds(mirror, head, sha)
            if held:
                on |= {sha}
            elif held is None:
                unseen.add(sha)
            else:
                off.add(sha)
        self._on_branch[(repo, branch)] = (head, on)
        return off, unseen

    async def diff(self, repo: str, sha: str) -> CommitDiff:
        if not SHA.fullmatch(sha):
            raise GitOpsUnreadable(f"{sha!r} is not a full commit SHA")
        mirror = await self._mirror_with(repo, [sha])
        await self._read_infos(repo, mirror, [sha])
        info = self._infos.get((repo, sha))
        if info is None:
            raise GitOpsUnreadable(f"commit {sha[:12]} is not in {redact_credentials(repo)}")
        code, out, err = await git_in(
            mirror,
            "show",
            "--format=",
            "--patch",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "-M",
            "--end-of-options",
            sha,
            timeout_s=READ_TIMEOUT_S,
        )
        if code != 0:
            raise GitOpsUnreadable(redact_credentials(f"git show {sha[:12]} failed: {err.strip()[-300:]}"))
        truncated = len(out) > MAX_DIFF_BYTES
        return CommitDiff(info, parse_diff(out[:MAX_DIFF_BYTES]), truncated)

    async def _mirror_with(self, repo: str, shas: list[str]) -> Path:
        """The repository's mirror, fetched first when one of `shas` is not in it (at most once a second)."""
        lock = self._locks.setdefault(repo, asyncio.Lock())
        async with lock:
            mirror = self._mirrors.get(repo)
            if mirror is not None and await _has_all(mirror, shas):
                return mirror
            wait = FETCH_COOLDOWN_S - (time.monotonic() - self._fetched.get(repo, -FETCH_COOLDOWN_S))
            if wait > 0:
                await asyncio.sleep(wait)
            return await self._fetch(repo)

    async def _mirror_fetched_within(self, repo: str, max_age_s: float) -> tuple[Path, bool]:
        """The repository's mirror, fetched now (True) unless it was fetched less than `max_age_s` ago."""
        async with self._locks.setdefault(repo, asyncio.Lock()):
            mirror = self._mirrors.get(repo)
            if mirror is not None and time.monotonic() - self._fetched.get(repo, -max_age_s) < max_age_s:
                return mirror, False
            return await self._fetch(repo), True

    async def _fetch(self, repo: str) -> Path:
        try:
            mirror = await fetch_mirror(repo, self.cache)
        except SourceError as error:
            raise GitOpsUnreadable(str(error)) from None
        self._mirrors[repo] = mirror
        self._fetched[repo] = time.monotonic()
        return mirror

    async def _read_infos(self, repo: str, mirror: Path, shas: list[str]) -> None:
        missing = [sha for sha in shas if (repo, sha) not in self._infos]
        present = [sha for sha in missing if await _has_all(mirror, [sha])]
        if not present:
            return
        fields = "%H%x01%an%x01%aI%x01%s%x01%(trailers:only,unfold)%x02"
        out = await _git_out(mirror, "show", "--no-patch", f"--format={fields}", "--end-of-options", *present)
        for record in out.split("\x02"):
            parts = record.strip().split("\x01")
            if len(parts) != 5 or not SHA.fullmatch(parts[0]):
                continue
            sha, author, date, subject, trailer_text = parts
            trailers = parse_trailers(trailer_text)
            self._infos[(repo, sha)] = CommitInfo(
                sha,
                subject,
                author,
                date,
                trailers.step if trailers else "",
                trailers.actor if trailers else "",
            )


async def _has_all(mirror: Path, shas: list[str]) -> bool:
    for sha in shas:
        with contextlib.suppress(SourceError):
            code, _out, _err = await git_in(mirror, "cat-file", "-e", "--end-of-options", f"{sha}^{{commit}}")
            if code == 0:
                continue
        return False
    return True


async def _branch_head(mirror: Path, branch: str) -> str | None:
    """The commit the mirror's `branch` points at; None when the remote has no such branch (deleted)."""
    try:
        code, out, _err = await git_in(
            mirror, "rev-parse", "--verify", "--quiet", "--end-of-options", f"refs/heads/{branch}^{{commit}}"
        )
    except SourceError as error:
        raise GitOpsUnreadable(str(error)) from None
    return out.strip() if code == 0 else None


async def _holds(mirror: Path, head: str, sha: str) -> bool | None:
    """Whether `sha` is in `head`'s history; None when the mirror does not have the commit."""
    try:
        code, _out, _err = await git_in(mirror, "merge-base", "--is-ancestor", "--end-of-options", sha, head)
    except SourceError as error:
        raise GitOpsUnreadable(str(error)) from None
    return True if code == 0 else False if code == 1 else None


LATER_FORMAT = f"%x1e%H%x1f%an%x1f%s%x1f%(trailers:key={DELIVERY_ID},valueonly,separator=)"


async def _changes(mirror: Path, revisions: list[str], *, walk: bool) -> list[tuple[list[str], list[str]]]:
    """`git log` of `revisions` (walk: their history too), newest first: per commit its LATER_FORMAT fields and
    the files it changed."""
    no_walk = () if walk else ("--no-walk",)
    out = await _git_out(
        mirror,
        "log",
        "-z",
        "--name-only",
        f"--format={LATER_FORMAT}",
        *no_walk,
        "--end-of-options",
        *revisions,
    )
    found = []
    for record in out.split("\x1e")[1:]:
        header, _, names = record.partition("\0")
        found.append((header.split("\x1f"), [name for name in names.lstrip("\n").split("\0") if name]))
    return found


async def _later_commits(mirror: Path, shas: list[str]) -> list[LaterCommit]:
    """The commits, newest first, with who made them (a delivery, by its trailer, or a person)."""
    if not shas:
        return []
    found = []
    for fields, _names in await _changes(mirror, shas, walk=False):
        sha, author, subject, delivery = [*fields, "", "", "", ""][:4]
        found.append(LaterCommit(sha, author, subject, delivery.strip()))
    return found


async def _differing(mirror: Path, old: str, new: str) -> set[str]:
    """The files whose content differs between two commits."""
    out = await _git_out(mirror, "diff", "--name-only", "-z", "--no-renames", "--end-of-options", old, new)
    return {name for name in out.split("\0") if name}


async def _last_change(mirror: Path, head: str, path: str) -> str:
    """The commit that gave `path` its content at `head` (by ancestry: the parent whose content a merge kept)."""
    return (await _git_out(mirror, "log", "-1", "--format=%H", "--end-of-options", head, "--", path)).strip()


async def _git_out(mirror: Path, *args: str) -> str:
    try:
        code, out, err = await git_in(mirror, *args, timeout_s=READ_TIMEOUT_S)
    except SourceError as error:
        raise GitOpsUnreadable(str(error)) from None
    if code != 0:
        raise GitOpsUnreadable(redact_credentials(f"git {args[0]} failed: {err.strip()[-300:]}"))
    return out


HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def parse_diff(text: str) -> list[FileDiff]:
    """Files and lines of `git show --patch` output."""
    files: list[FileDiff] = []
    current: FileDiff | None = None
    old_line = new_line = 0
    for line in text.splitlines():
        if line.startswith("diff --git "):
            match = re.match(r"^diff --git a/(.*) b/(.*)$", line)
            old, new = (match.group(1), match.group(2)) if match else (line[11:], line[11:])
            current = FileDiff(path=new, old_path=old)
            files.append(current)
            continue
        if current is None:
            continue
        if line.startswith("Binary files "):
            current.binary = True
        elif line.startswith("@@"):
            match = HUNK.match(line)
            if match:
                old_line, new_line = int(match.group(1)), int(match.group(2))
            current.lines.append(DiffLine("hunk", line))
        elif not current.lines:
            continue  # the header lines (index, ---, +++, rename from/to) before the first hunk
        elif line.startswith("+"):
            current.lines.append(DiffLine("add", line[1:], None, new_line))
            current.added += 1
            new_line += 1
        elif line.startswith("-"):
            current.lines.append(DiffLine("del", line[1:], old_line, None))
            current.removed += 1
            old_line += 1
        elif line.startswith("\\"):
            current.lines.append(DiffLine("ctx", line, None, None))
        else:
            current.lines.append(DiffLine("ctx", line[1:], old_line, new_line))
            old_line += 1
            new_line += 1
    return files
