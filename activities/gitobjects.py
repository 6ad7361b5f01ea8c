"""A GitOps clone's history and commits, read and written in process (libgit2 through pygit2).

The writer checks ownership and commits every step of a batch here, so a step costs no git process: the
checks walk the commits since a step's base (or the delivery's window) in memory, and a step's commit is
built from the index entries of the files its `apply` wrote. Fetch and push stay on the git CLI, so
credentials, transports and hooks of the remote are the ones git is configured with.

What a check reads is what `git log --name-only --no-renames` says: newest first, each commit's files as
changed against its first parent, its aicd trailers as git parses them (libgit2 implements git's trailer
rules). A merge of two parents changed only what differs from merging them (as `--diff-merges=remerge`
shows it): a person's `git pull` that merges aicd's commits into their own work changed none of aicd's
files, and a rollback must not take the merge for a person's edit of them.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pygit2
from pygit2.enums import SortMode

from aicd.trailers import CommitTrailers, parse_trailers


@dataclass
class LoggedCommit:
    sha: str
    author: str
    subject: str
    trailers: CommitTrailers | None
    files: list[str]
    parents: tuple[str, ...] = ()

    def describe_writer(self) -> str:
        if self.trailers is None:
            return f'changed since by commit {self.sha[:7]} of {self.author} ("{self.subject}"), not by aicd'
        writer = self.trailers.delivery_id or self.trailers.delivery
        return f"written since by {writer} (step {self.trailers.step})"


class NotAnAncestor(Exception):
    """The base of a range is not in the history of its head (the branch was rewritten, or it is unknown)."""


def open_objects(git_dir: str | os.PathLike[str]) -> pygit2.Repository:
    return pygit2.Repository(os.fspath(git_dir))


def first_parent(objects: pygit2.Repository, sha: str) -> str | None:
    """The first parent of a commit (`sha^`); None for a root commit."""
    commit = objects[pygit2.Oid(hex=sha)].peel(pygit2.Commit)
    return str(commit.parent_ids[0]) if commit.parent_ids else None


def head_of(objects: pygit2.Repository) -> str | None:
    """The commit HEAD points at; None on an unborn branch."""
    return None if objects.head_is_unborn else str(objects.head.target)


def resolve(objects: pygit2.Repository, ref: str) -> str | None:
    """The commit a ref (`HEAD`, `origin/main`, `refs/...`) points at; None when there is no such ref."""
    if ref == "HEAD":
        return head_of(objects)
    try:
        return str(objects.revparse_single(ref).peel(pygit2.Commit).id)
    except (KeyError, ValueError, pygit2.GitError):
        return None


class SymbolicLink(Exception):
    """A path that is a symbolic link in the commit read: aicd reads and writes only regular files."""


def read_at(objects: pygit2.Repository, revision: str, path: str) -> bytes | None:
    """The content of the file at `path` in `revision` (a SHA, a ref, `<sha>^`); None when there is no such
    revision (the parent of a root commit) or no such file. A symbolic link raises SymbolicLink. Trees are
    cached by libgit2, so reading thousands of paths of one commit walks each directory once."""
    try:
        entry = objects.revparse_single(revision).peel(pygit2.Commit).tree[path]
    except (KeyError, ValueError, pygit2.GitError):
        return None
    if entry.filemode == pygit2.enums.FileMode.LINK:
        raise SymbolicLink(path)
    if entry.type != pygit2.enums.ObjectType.BLOB:
        return None
    return bytes(objects[entry.id].read_raw())


def history(
    objects: pygit2.Repository,
    head: str | None,
    *,
    after: str | None = None,
    since: datetime | None = None,
    containing: tuple[str, ...] = (),
    touching: frozenset[str] = frozenset(),
    limit: int | None = None,
) -> list[LoggedCommit]:
    """The commits of `head` (newest first): only those not in `after`'s history (`after..head`), only
    those committed since `since` (the walk stops at the first older one, as git's --since does), only
    those whose message holds every string of `containing`, only those that changed one of the files
    `touching` (when given); at most `limit` of them. `after` must be in `head`'s history (NotAnAncestor)."""
    if head is None:
        return []
    # Topological first: commits made in the same second tie on time, and a child must never follow its
    # parent (the delivery's oldest commit is the last one found).
    walker = objects.walk(pygit2.Oid(hex=head), SortMode.TOPOLOGICAL | SortMode.TIME)
    if after is not None:
        try:
            if after != head and not objects.descendant_of(pygit2.Oid(hex=head), pygit2.Oid(hex=after)):
                raise NotAnAncestor(after)
        except (KeyError, ValueError, pygit2.GitError):
            raise NotAnAncestor(after) from None
        walker.hide(pygit2.Oid(hex=after))
    found: list[LoggedCommit] = []
    for commit in _walk(walker, since):
        message = commit.message
        if all(text in message for text in containing) and (
            not touching or _touches(objects, commit, touching)
        ):
            found.append(logged(objects, commit, message))
            if limit is not None and len(found) >= limit:
                break
    return found


def _walk(walker: pygit2.Walker, since: datetime | None) -> Iterator[pygit2.Commit]:
    floor = since.timestamp() if since is not None else None
    for commit in walker:
        if floor is not None and commit.commit_time < floor:
            return
        yield commit


def _touches(objects: pygit2.Repository, commit: pygit2.Commit, paths: frozenset[str]) -> bool:
    return not paths.isdisjoint(_changed_file_set(objects, commit))


# A commit's changes never change, and with many deliveries writing one repository every ownership check
# walks the same recent commits of other apps: each is diffed once per process, then looked up.
_CHANGED_FILES_KEPT = 50_000
_changed_file_sets: OrderedDict[pygit2.Oid, frozenset[str]] = OrderedDict()
_changed_file_sets_guard = threading.Lock()


def _changed_file_set(objects: pygit2.Repository, commit: pygit2.Commit) -> frozenset[str]:
    with _changed_file_sets_guard:
        known = _changed_file_sets.get(commit.id)
        if known is not None:
            _changed_file_sets.move_to_end(commit.id)
            return known
    files = frozenset(changed_files(objects, commit))
    with _changed_file_sets_guard:
        _changed_file_sets[commit.id] = files
        if len(_changed_file_sets) > _CHANGED_FILES_KEPT:
            _changed_file_sets.popitem(last=False)
    return files


def logged(objects: pygit2.Repository, commit: pygit2.Commit, message: str | None = None) -> LoggedCommit:
    message = commit.message if message is None else message
    trailers = "\n".join(f"{key}: {value}" for key, value in commit.message_trailers.items())
    return LoggedCommit(
        str(commit.id),
        f"{commit.author.name} <{commit.author.email}>",
        " ".join(message.split("\n\n", 1)[0].split()),
        parse_trailers(trailers),
        sorted(_changed_file_set(objects, commit)),
        tuple(str(parent) for parent in commit.parent_ids),
    )


def changed_files(objects: pygit2.Repository, commit: pygit2.Commit) -> list[str]:
    """The paths a commit changed: against its first parent (everything it holds, for a root commit); for a
    merge of two parents, the paths where it differs from merging them (a resolved conflict, an edit made in
    the merge), so a clean merge changed nothing of its own."""
    if len(commit.parents) == 2:
        merged = _merged_parents(objects, commit)
        conflicted = _conflicted_paths(merged)
        return sorted(conflicted | {delta.new_file.path for delta in merged.diff_to_tree(commit.tree).deltas})
    if commit.parents:
        diff = commit.parents[0].tree.diff_to_tree(commit.tree)
    else:
        diff = commit.tree.diff_to_tree(swap=True)
    return [delta.new_file.path for delta in diff.deltas]


def edit_base(objects: pygit2.Repository, sha: str, path: str) -> bytes | None:
    """What a commit's own edit of `path` starts from: its first parent's file; for a merge of two parents,
    what merging them gives the file (the first parent's file where they conflict: the resolution is the
    merge's edit)."""
    commit = objects[pygit2.Oid(hex=sha)].peel(pygit2.Commit)
    if len(commit.parents) != 2:
        return read_at(objects, f"{sha}^", path)
    merged = _merged_parents(objects, commit)
    if path in _conflicted_paths(merged):
        return read_at(objects, f"{sha}^", path)
    if path not in merged:
        return None
    return bytes(objects[merged[path].id].read_raw())


def _merged_parents(objects: pygit2.Repository, commit: pygit2.Commit) -> pygit2.Index:
    """The index git's merge of a commit's two parents gives (conflicts left in it)."""
    ours, theirs = commit.parents
    base = objects.merge_base(ours.id, theirs.id)
    ancestor = (
        objects[base].peel(pygit2.Commit).tree if base is not None else objects[objects.TreeBuilder().write()]
    )
    return objects.merge_trees(ancestor, ours.tree, theirs.tree)


def _conflicted_paths(merged: pygit2.Index) -> set[str]:
    if merged.conflicts is None:
        return set()
    return {entry.path for sides in merged.conflicts for entry in sides if entry is not None}


def commit_paths(objects: pygit2.Repository, paths: list[str], message: str) -> str:
    """Commit the work tree's `paths` (written or deleted; nothing else differs from HEAD) on top of HEAD, as
    `git commit --all --allow-empty -m message` does with the clone's configured identity (its hooks aside:
    see the caller), and keep the index in step for the git CLI. The new tree is HEAD's with only the
    directories on the way to `paths` rebuilt: the cost follows the change, not the repository (libgit2's
    own index-to-tree writes every tree of the repository). Returns the new commit's SHA."""
    index = objects.index
    index.read(force=False)
    root = Path(objects.workdir)
    changes: dict[str, Any] = {}
    for path in paths:
        *directories, name = path.split("/")
        level = changes
        for directory in directories:
            level = level.setdefault(directory, {})
        if os.path.lexists(root / path):
            index.add(path)
            level[name] = index[path]
        else:
            if path in index:
                index.remove(path)
            level[name] = None
    index.write()
    head = None if objects.head_is_unborn else objects[objects.head.target].peel(pygit2.Commit)
    tree = _rebuilt(objects, head.tree if head is not None else None, changes)
    if tree is None:
        tree = objects.TreeBuilder().write()
    identity = objects.default_signature
    parents = [head.id] if head is not None else []
    return str(objects.create_commit("HEAD", identity, identity, clean_message(message), tree, parents))


def _rebuilt(
    objects: pygit2.Repository, tree: pygit2.Tree | None, changes: dict[str, Any]
) -> pygit2.Oid | None:
    """`tree` with `changes` (name -> index entry, None to delete, or a dict of changes below a directory);
    None when nothing is left in it."""
    builder = objects.TreeBuilder(tree) if tree is not None else objects.TreeBuilder()
    for name, change in changes.items():
        existing = builder.get(name)
        if isinstance(change, dict):
            below = (
                objects[existing.id].peel(pygit2.Tree)
                if existing is not None and existing.type_str == "tree"
                else None
            )
            rebuilt = _rebuilt(objects, below, change)
            if rebuilt is not None:
                builder.insert(name, rebuilt, pygit2.enums.FileMode.TREE)
            elif existing is not None:
                builder.remove(name)
        elif change is not None:
            builder.insert(name, change.id, change.mode)
        elif existing is not None:
            builder.remove(name)
    return builder.write() if len(builder) else None


def clean_message(message: str) -> str:
    """The message as `git commit -m` stores it (its default "whitespace" cleanup): trailing spaces cut,
    runs of blank lines made one, no blank lines at either end, one final newline."""
    lines: list[str] = []
    for line in message.splitlines():
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""
