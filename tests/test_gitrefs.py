"""aicd.gitrefs against Git itself: on a corpus of ref and branch names (shell syntax, '..', control
characters, '@{', '.lock', leading '-', trailing '.', '//', spaces, each of ~^:?*[\\), the port says valid
exactly when `git check-ref-format` (and `--branch` for branch names) does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from aicd.gitrefs import ref_problem, refname_problem

BRANCHES = [
    "main",
    "release/1.2",
    "release/$(touch x)",
    "release/$(touch${IFS}x)",
    "release/`id`;ls|cat&&true",
    "release/a..b",
    "release/..",
    "release/a.b..",
    "release/a\x01b",
    "release/a\tb",
    "release/a\x7fb",
    "release/a\nb",
    "release/a@{1}",
    "release/@{",
    "release/a@b",
    "release/a@",
    "@",
    "release/x.lock",
    "release/x.lock/y",
    "release/a.lock.b",
    "x.lock.",
    "-release",
    "-",
    "release/-x",
    "release/x.",
    "release//x",
    "release/",
    "/release",
    "release/a b",
    "release/a~1",
    "release/a^",
    "release/a:b",
    "release/a?",
    "release/a*",
    "release/a[1]",
    "release/a\\b",
    "release/.hidden",
    "release/a/.b",
    "release/.",
    "HEAD",
    "release/HEAD",
    "release/é/ünïcode",
    "release/{x}",
    "release/@",
    "release/a=b+c,d%e#f!g'h\"i<j>k",
]
REFS = [f"refs/heads/{name}" for name in BRANCHES] + [
    "refs/tags/v1.0",
    "refs/tags/v1.0^{}",
    "HEAD",
    "refs",
    "/refs/heads/main",
    "refs/heads/main/",
    "refs//heads/main",
]


def git_accepts(*args: str, cwd: Path) -> bool:
    # No repository around (the ceiling), so `--branch` does not expand `@{-1}` and the like.
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(cwd.parent)}
    done = subprocess.run(["git", "check-ref-format", *args], cwd=cwd, env=env, capture_output=True)
    return done.returncode == 0


@pytest.fixture(scope="module")
def outside_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("no-repo")


@pytest.mark.parametrize("ref", REFS, ids=repr)
def test_refname_rules_are_gits(ref: str, outside_repo: Path) -> None:
    assert (refname_problem(ref) is None) == git_accepts(ref, cwd=outside_repo), refname_problem(ref)


@pytest.mark.parametrize("name", BRANCHES, ids=repr)
def test_branch_rules_are_gits(name: str, outside_repo: Path) -> None:
    problem = ref_problem(f"refs/heads/{name}")
    assert (problem is None) == git_accepts("--branch", name, cwd=outside_repo), problem


def test_the_corpus_has_both_kinds() -> None:
    verdicts = {ref_problem(f"refs/heads/{name}") is None for name in BRANCHES}
    assert verdicts == {True, False}
    assert ref_problem("refs/heads/release/a..b") == "contains '..'"
    assert ref_problem("refs/heads/-x") == "is a branch name that starts with '-'"
    assert ref_problem("refs/heads/release/\ud800") == "is not valid UTF-8"
