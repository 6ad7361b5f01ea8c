"""Group commit: steps that different activities of one worker write to the same GitOps branch at the same
moment are committed one by one (trailers and idempotency unchanged) and pushed together; a request refused
by its own checks or its fence is dropped without holding back or spoiling the others."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from aicd.activities.drivers.base import SyncFailed, SyncRequest, SyncResult
from aicd.activities.drivers.git import GitDriver
from aicd.activities.gitobjects import clean_message, first_parent, head_of, history, open_objects
from aicd.activities.gitops import (
    CommitRequest,
    CommitResult,
    FileEdit,
    GitOpsActivities,
    WriteFence,
    _WriteRequest,
)
from aicd.errors import ErrorType
from aicd.testing.engine import commits, git, make_repo, show

PUSH_DELAY_S = 0.4


def slow_counting_repo(tmp_path: Path, files: dict[str, str]) -> tuple[str, Path]:
    """A bare repo whose pushes take a while (so requests pile up behind one) and are counted."""
    bare, _ = make_repo(tmp_path, "gitops", files)
    log = tmp_path / "pushes.log"
    hook = Path(bare) / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ncat >> {log}\nsleep {PUSH_DELAY_S}\n")
    hook.chmod(0o755)
    return bare, log


def request(gitops: str, app: str, step: str, *, started: str = "2026-01-01T00:00:00+00:00") -> CommitRequest:
    return CommitRequest(
        gitops,
        "main",
        f"{app}@{'a' * 40}",
        f"prod/{app}/{step}",
        "aicd",
        f"aicd: {app} {step}",
        [FileEdit(f"{app}.yaml", {"canary.weight": 10})],
        delivery_id=f"delivery-{app}",
        started=started,
    )


class Refused(WriteFence):
    def check(self) -> None:
        raise ApplicationError(
            "write dropped: attempt superseded", non_retryable=True, type=str(ErrorType.WRITE_FENCED)
        )


def run_together(calls: dict[str, object]) -> dict[str, object]:
    """Run the callables at once in threads; each one's result or exception."""
    outcomes: dict[str, object] = {}
    barrier = threading.Barrier(len(calls))

    def run(name: str, call) -> None:  # type: ignore[no-untyped-def]
        barrier.wait()
        try:
            outcomes[name] = call()
        except Exception as error:
            outcomes[name] = error

    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_concurrent_steps_share_pushes_and_keep_one_commit_each(tmp_path: Path) -> None:
    apps = [f"app{n}" for n in range(8)]
    gitops, pushes = slow_counting_repo(tmp_path, {f"{app}.yaml": "canary:\n  weight: 0\n" for app in apps})
    writer = GitOpsActivities(tmp_path / "state")
    outcomes = run_together(
        {
            app: lambda app=app: writer._commit(
                request(gitops, app, "0-setWeight"), lambda _: None, WriteFence()
            )
            for app in apps
        }
    )
    assert all(not isinstance(outcome, Exception) for outcome in outcomes.values()), outcomes
    made = [entry for entry in commits(gitops) if "Aicd-Step" in entry]
    assert sorted(entry["Aicd-Step"] for entry in made) == sorted(f"prod/{app}/0-setWeight" for app in apps)
    assert {outcome.sha for outcome in outcomes.values()} == {entry["sha"] for entry in made}  # type: ignore[attr-defined]
    assert len(pushes.read_text().splitlines()) <= 3  # 8 steps: the first push, then the rest together
    # Each step's own push landed it: the git driver need not ask the remote (CommitResult.pushed).
    assert all(outcome.pushed for outcome in outcomes.values())  # type: ignore[attr-defined]
    # Idempotent as before: the same step again is found, not committed twice - nor said pushed by this call.
    again = writer._commit(request(gitops, "app0", "0-setWeight"), lambda _: None, WriteFence())
    assert again.already_done and again.sha == outcomes["app0"].sha  # type: ignore[attr-defined]
    assert not again.pushed


def test_a_refused_or_fenced_request_does_not_hold_back_the_others(tmp_path: Path) -> None:
    gitops, _ = slow_counting_repo(
        tmp_path, {f"{app}.yaml": "canary:\n  weight: 0\n" for app in ("a", "b", "c", "d")}
    )
    writer = GitOpsActivities(tmp_path / "state")
    # A newer delivery of app `c` has written c.yaml: the older one's write is refused by ownership.
    newer = CommitRequest(
        gitops,
        "main",
        f"c@{'b' * 40}",
        "prod/c/0-setWeight",
        "aicd",
        "aicd: c newer",
        [FileEdit("c.yaml", {"canary.weight": 50})],
        delivery_id="delivery-c-newer",
        started="2026-06-01T00:00:00+00:00",
    )
    writer._commit(newer, lambda _: None, WriteFence())
    outcomes = run_together(
        {
            "a": lambda: writer._commit(request(gitops, "a", "0-setWeight"), lambda _: None, WriteFence()),
            "b": lambda: writer._commit(request(gitops, "b", "0-setWeight"), lambda _: None, Refused()),
            "c": lambda: writer._commit(request(gitops, "c", "0-setWeight"), lambda _: None, WriteFence()),
            "d": lambda: writer._commit(request(gitops, "d", "0-setWeight"), lambda _: None, WriteFence()),
        }
    )
    assert isinstance(outcomes["b"], ApplicationError) and outcomes["b"].type == ErrorType.WRITE_FENCED
    assert isinstance(outcomes["c"], ApplicationError) and outcomes["c"].type == ErrorType.SUPERSEDED
    assert not isinstance(outcomes["a"], Exception) and not isinstance(outcomes["d"], Exception), outcomes
    steps = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
    assert sorted(steps) == ["prod/a/0-setWeight", "prod/c/0-setWeight", "prod/d/0-setWeight"]
    assert "weight: 0" in show(gitops, "main", "b.yaml") and "weight: 50" in show(gitops, "main", "c.yaml")


class Recorded(WriteFence):
    """A fence that logs when it is asked and when its answer is waited for; `refuse` answers no."""

    def __init__(self, name: str, log: list[str], *, refuse: bool = False) -> None:
        self.name, self.log, self.refuse = name, log, refuse

    def ask(self) -> Callable[[], None]:
        self.log.append(f"ask {self.name}")

        def answer() -> None:
            self.log.append(f"answer {self.name}")
            if self.refuse:
                Refused().check()

        return answer


def test_the_fences_of_a_batch_are_asked_together_before_its_push(tmp_path: Path) -> None:
    """Every request of a batch has its fence asked before any answer is waited for (one round trip to
    Temporal per push, not one per request); a request whose fence answers no is dropped, the rest pushed."""
    gitops, pushes = slow_counting_repo(tmp_path, {f"{app}.yaml": "canary:\n  weight: 0\n" for app in "abc"})
    writer = GitOpsActivities(tmp_path / "state")
    clone = writer._clone(gitops, "main")
    log: list[str] = []
    batch = [
        _WriteRequest(
            [writer.step_commit(request(gitops, app, "0-setWeight"))],
            False,
            Recorded(app, log, refuse=app == "b"),
            lambda _: None,
        )
        for app in "abc"
    ]
    clone._write_batch(batch)
    assert log[:3] == ["ask a", "ask b", "ask c"] and sorted(log[3:6]) == ["answer a", "answer b", "answer c"]
    assert isinstance(batch[1].error, ApplicationError) and batch[1].error.type == ErrorType.WRITE_FENCED
    assert batch[0].error is None and batch[2].error is None
    steps = sorted(entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry)
    assert steps == ["prod/a/0-setWeight", "prod/c/0-setWeight"]
    assert "weight: 0" in show(gitops, "main", "b.yaml")
    assert len(pushes.read_text().splitlines()) == 1  # b's commit was taken out, a and c pushed once


def test_a_clone_made_again_under_a_running_worker_is_read_afresh(tmp_path: Path) -> None:
    """The clone's handles are kept between writes; a clone removed and cloned again (a wiped state dir) is
    opened anew, and a human commit made meanwhile is seen by the next write's ownership check."""
    gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "canary:\n  weight: 0\n"})
    writer = GitOpsActivities(tmp_path / "state")
    first = writer._commit(request(gitops, "web", "0-setWeight"), lambda _: None, WriteFence())
    shutil.rmtree(writer._clone(gitops, "main").path)
    work = tmp_path / "human"
    git("clone", "-q", gitops, str(work))
    (work / "web.yaml").write_text("canary:\n  weight: 7\n")
    git("-c", "user.name=h", "-c", "user.email=h@x", "commit", "-qam", "hotfix", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    second = request(gitops, "web", "1-setWeight")
    second.base = first.sha
    with pytest.raises(ApplicationError) as refused:
        writer._commit(second, lambda _: None, WriteFence())
    assert refused.value.type == ErrorType.HUMAN_EDIT


@pytest.mark.parametrize("workers", [2])
def test_two_workers_with_their_own_clones_lose_nothing(tmp_path: Path, workers: int) -> None:
    apps = [f"app{n}" for n in range(12)]
    gitops, _ = slow_counting_repo(tmp_path, {f"{app}.yaml": "canary:\n  weight: 0\n" for app in apps})
    writers = [GitOpsActivities(tmp_path / f"state-{n}") for n in range(workers)]
    outcomes = run_together(
        {
            app: lambda app=app, n=n: writers[n % workers]._commit(
                request(gitops, app, "0-setWeight"), lambda _: None, WriteFence()
            )
            for n, app in enumerate(apps)
        }
    )
    assert all(not isinstance(outcome, Exception) for outcome in outcomes.values()), outcomes
    made = {entry["sha"] for entry in commits(gitops) if "Aicd-Step" in entry}
    assert len(made) == len(apps)
    # Pushes rejected and retried: a step said pushed is on the branch, whoever's push got it there.
    assert {outcome.sha for outcome in outcomes.values() if outcome.pushed} <= made  # type: ignore[attr-defined]


def test_the_git_driver_trusts_only_a_push_of_the_same_step(tmp_path: Path) -> None:
    """A step whose own push landed its commit is synced without asking the remote; anything else (a commit
    found by its trailer on a retry, a rollback's sync) is looked up on the branch, and a commit that is not
    on it is never reported synced."""
    gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "canary:\n  weight: 0\n"})
    writer = GitOpsActivities(tmp_path / "state")
    first = writer._commit(request(gitops, "web", "0-setWeight"), lambda _: None, WriteFence())
    again = writer._commit(request(gitops, "web", "0-setWeight"), lambda _: None, WriteFence())
    assert first.pushed and again.already_done and not again.pushed
    git("--git-dir", gitops, "branch", "elsewhere", "main")  # keeps the commit, off main
    git(
        "--git-dir", gitops, "update-ref", "refs/heads/main", "main~1"
    )  # the step's commit left main (a human's doing)
    driver = GitDriver()

    def sync(result: CommitResult) -> SyncResult:
        assert result.sha is not None
        target = SyncRequest(
            "delivery-web", "prod", "web", "git", gitops, "main", result.sha, "prod/web/0-setWeight"
        )
        return asyncio.run(driver.sync(dataclasses.replace(target, pushed=result.pushed), lambda *_: None))

    assert sync(first).message == "commit landed (pushed)"  # the step's own activity, right after its push
    with pytest.raises(SyncFailed, match="is not on main"):
        sync(again)


def test_a_first_attempt_on_a_stale_clone_fetches_the_base_it_does_not_know(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers alternate the steps of one delivery: a worker whose clone it believes in step with the
    branch must still fetch when the step's ownership base is another worker's commit (first attempts skip
    the fetch only when the base is their own HEAD)."""
    monkeypatch.setattr("aicd.activities.gitops._retried", lambda: False)  # every write a first attempt
    gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "canary:\n  weight: 0\n"})
    workers = [GitOpsActivities(tmp_path / "state-a"), GitOpsActivities(tmp_path / "state-b")]
    base = None
    for index, weight in enumerate((10, 20, 30, 40)):
        step = request(gitops, "web", f"{index}-setWeight")
        step.edits = [FileEdit("web.yaml", {"canary.weight": weight})]
        step.base = base
        result = workers[index % 2]._commit(step, lambda _: None, WriteFence())
        assert result.sha and not result.already_done
        base = result.sha
    assert "weight: 40" in show(gitops, "main", "web.yaml")


def test_a_check_in_a_batch_sees_the_commits_made_before_it_in_the_same_batch(tmp_path: Path) -> None:
    """Two deliveries of one app whose writes to one file land in one batch, the newer first: the older's
    ownership check runs on the branch plus the batch's earlier commits, so it is refused (Superseded)
    instead of writing over the newer delivery before either is pushed."""
    gitops, pushes = slow_counting_repo(tmp_path, {"c.yaml": "canary:\n  weight: 0\n"})
    writer = GitOpsActivities(tmp_path / "state")
    newer = request(gitops, "c", "0-setWeight", started="2026-06-01T00:00:00+00:00")
    newer.delivery, newer.delivery_id = f"c@{'b' * 40}", "delivery-c-newer"
    newer.edits = [FileEdit("c.yaml", {"canary.weight": 50})]
    older = request(gitops, "c", "0-setWeight")
    clone = writer._clone(gitops, "main")
    batch = [
        _WriteRequest([writer.step_commit(r)], False, WriteFence(), lambda _: None) for r in (newer, older)
    ]
    clone._write_batch(batch)
    assert batch[0].error is None and batch[0].results is not None
    assert isinstance(batch[1].error, ApplicationError) and batch[1].error.type == ErrorType.SUPERSEDED
    assert [entry["Aicd-Delivery-Id"] for entry in commits(gitops) if "Aicd-Step" in entry] == [
        "delivery-c-newer"
    ]
    assert "weight: 50" in show(gitops, "main", "c.yaml")
    assert len(pushes.read_text().splitlines()) == 1


@pytest.mark.parametrize(
    "message",
    ["subject\n\nAicd-Step: a/b/c\n", "subject  \n\n\n\nreason \n\n\nAicd-Step: a/b/c", "\n\nsubject\n\n"],
)
def test_an_in_process_commit_message_is_what_git_commit_would_store(message: str) -> None:
    stored = subprocess.run(["git", "stripspace"], input=message, capture_output=True, text=True, check=True)
    assert clean_message(message) == stored.stdout


def test_a_step_commit_is_made_as_git_would_make_it(tmp_path: Path) -> None:
    """Author and committer are the clone's identity, the message carries the trailers git reads back, the
    new file is tracked and the clone is left clean for the git CLI."""
    gitops, _ = make_repo(tmp_path, "gitops", {"old.yaml": "x: 1\n"})
    writer = GitOpsActivities(tmp_path / "state")
    step = request(gitops, "fresh", "0-setWeight")
    step.reason = "first deploy"
    result = writer._commit(step, lambda _: None, WriteFence())
    made = commits(gitops)[-1]
    assert made["sha"] == result.sha and made["Aicd-Step"] == "prod/fresh/0-setWeight"
    assert made["Aicd-Delivery-Id"] == "delivery-fresh" and made["Aicd-Actor"] == "aicd"
    people = git("--git-dir", gitops, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "main")
    assert people == "aicd <aicd@localhost>|aicd <aicd@localhost>"
    assert git("--git-dir", gitops, "show", "--format=", "--name-status", "main") == "A\tfresh.yaml"
    clone = writer._clone(gitops, "main").path
    assert git("status", "--porcelain", cwd=clone) == ""


def test_history_lists_children_before_parents_when_commits_share_a_second(tmp_path: Path) -> None:
    """In-process commits land many to a second; a walk by time alone may then put a parent first, and a
    rollback that takes the delivery's oldest commit from the end of the list restores the wrong content."""
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work))
    same_second = "2026-01-01T00:00:00+00:00"
    env = {**os.environ, "GIT_COMMITTER_DATE": same_second, "GIT_AUTHOR_DATE": same_second}
    for index in range(12):
        (work / "v.yaml").write_text(f"a: {index}\n")
        for argv in (
            ["add", "v.yaml"],
            ["-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", f"c{index}"],
        ):
            subprocess.run(["git", *argv], cwd=work, check=True, env=env)
    objects = open_objects(work / ".git")
    listed = history(objects, head_of(objects))
    parents = {commit.sha: first_parent(objects, commit.sha) for commit in listed}
    position = {commit.sha: index for index, commit in enumerate(listed)}
    assert all(position[parent] > position[sha] for sha, parent in parents.items() if parent), [
        c.subject for c in listed
    ]


def test_history_touching_files_lists_what_git_log_of_those_files_lists(tmp_path: Path) -> None:
    """The ownership check walks only the commits that changed its files (added, edited, made executable,
    deleted, the root commit that added them), as `git log -- <files>` with first-parent diffs lists them."""
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work))
    (work / "a").mkdir()
    changes = [
        ("a/x.yaml", "w: 0\n"),  # root commit: adds x
        ("b.yaml", "w: 0\n"),  # another file only
        ("a/x.yaml", "w: 1\n"),
        ("b.yaml", "w: 1\n"),
        ("a/x.yaml", None),  # chmod +x
        ("c.yaml", "w: 0\n"),
        ("a/x.yaml", ""),  # deleted
    ]
    for index, (path, content) in enumerate(changes):
        if content is None:
            (work / path).chmod(0o755)
            git("add", path, cwd=work)
        elif content == "":
            git("rm", "-q", path, cwd=work)
        else:
            (work / path).write_text(content)
            git("add", path, cwd=work)
        git("-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", f"c{index}", cwd=work)
    objects = open_objects(work / ".git")
    listed = history(objects, head_of(objects), touching=frozenset({"a/x.yaml", "gone.yaml"}))
    expected = git("log", "--format=%s", "--", "a/x.yaml", "gone.yaml", cwd=work).split()
    assert [commit.subject for commit in listed] == expected == ["c6", "c4", "c2", "c0"]


def test_a_read_fetches_only_when_the_branch_has_moved(tmp_path: Path) -> None:
    """Gate reads (policies, calendars) see the branch as it is now; a clone whose copy of a local remote's
    branch is the branch is read without a fetch."""
    gitops, _ = make_repo(tmp_path, "gitops", {"policies/a.rego": "one\n"})
    reader = GitOpsActivities(tmp_path / "state")
    fetch_head = reader._clone(gitops, "main").path / ".git" / "FETCH_HEAD"

    def read() -> tuple[dict[str, str], int | None]:
        files = reader.files_under(gitops, "main", ["policies/"], ".rego")
        return files, fetch_head.stat().st_mtime_ns if fetch_head.exists() else None

    first, fetched = read()
    assert first == {"policies/a.rego": "one\n"}
    assert read() == (first, fetched)  # nothing moved: no fetch
    human = tmp_path / "human"
    git("clone", "-q", gitops, str(human))
    (human / "policies" / "a.rego").write_text("two\n")
    git("-c", "user.name=h", "-c", "user.email=h@x", "commit", "-qam", "tighten", cwd=human)
    git("push", "-q", "origin", "HEAD:main", cwd=human)
    later, fetched_later = read()
    assert later == {"policies/a.rego": "two\n"} and fetched_later != fetched
