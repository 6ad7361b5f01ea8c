"""The GitOps write path on its own (real Git, no Temporal): writes never leave the clone through symbolic
links, never overwrite a newer delivery's or a human's write, never land late; a rollback restores only what
its own delivery wrote, matched by exact trailers, and leaves what others wrote since."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from aicd.activities.drivers import argocd as argocd_driver
from aicd.activities.drivers.base import SyncRequest
from aicd.activities.gitops import CommitRequest, FileEdit, GitOpsActivities, RollbackRequest
from aicd.activities.steps import StepActivities, StepRequest, StepResult
from aicd.activities.sync import sync_target
from aicd.errors import ErrorType
from aicd.plan import WritePlan
from aicd.testing.engine import branch_at, commits, git, human_commit, human_merge, make_repo, show
from aicd.testing.standins.kube_argocd import KubeArgoCD

SEED = "# web\nimage:\n  tag: v0   # stable\ncanary:\n  weight: 0\n  tag: v0\n"
WRITE = WritePlan("image.tag", "canary.weight", "canary.tag")
APP = "web"
OLD_REV = "a" * 40
NEW_REV = "b" * 40


def request(
    gitops: str,
    delivery_id: str,
    started: str,
    step: str,
    values: dict,
    *,
    revision: str = OLD_REV,
    base: str | None = None,
) -> CommitRequest:
    return CommitRequest(
        gitops,
        "main",
        f"{APP}@{revision}",
        f"prod/web/{step}",
        "aicd",
        f"aicd: {APP} {step}",
        [FileEdit("apps/web/values.yaml", values)],
        delivery_id=delivery_id,
        started=started,
        base=base,
    )


def rollback(gitops: str, delivery_id: str, started: str, *, revision: str = OLD_REV) -> RollbackRequest:
    return RollbackRequest(
        gitops,
        "main",
        f"{APP}@{revision}",
        "prod/web/rollback",
        "carol",
        f"aicd: {APP} rollback",
        ["apps/web/values.yaml"],
        reason="abort",
        delivery_id=delivery_id,
        started=started,
        write=WRITE,
    )


async def refused(call, kind: ErrorType) -> ApplicationError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApplicationError) as caught:
        await call
    assert caught.value.type == kind, caught.value
    assert caught.value.non_retryable
    return caught.value


# --- symbolic links -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["file", "directory", "dangling"])
async def test_a_symlink_in_the_repository_is_never_followed(tmp_path: Path, shape: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "values.yaml").write_text("secret: untouched\n")
    gitops, _ = make_repo(tmp_path, "gitops", {"README": "x\n"})
    links = {
        "file": {"apps/web/values.yaml": str(outside / "values.yaml")},
        "directory": {"apps/web": str(outside)},
        "dangling": {"apps/web/values.yaml": str(tmp_path / "nowhere" / "values.yaml")},
    }[shape]
    human_commit(gitops, tmp_path, {}, f"a {shape} symlink", symlinks=links)
    before = commits(gitops)
    error = await refused(
        GitOpsActivities(tmp_path / "state").commit(
            request(gitops, "d1", "2026-01-01T00:00:00+00:00", "0-setWeight", {"canary.weight": 10})
        ),
        ErrorType.GITOPS_PATH_INVALID,
    )
    assert "target web" in str(error) and "symbolic link" in str(error), error
    assert (outside / "values.yaml").read_text() == "secret: untouched\n"
    assert not (tmp_path / "nowhere").exists()
    assert commits(gitops) == before
    clone = next((tmp_path / "state" / "gitops").glob("*/"))
    assert git("status", "--porcelain", cwd=clone) == ""  # the clone is left as the branch is


async def test_a_file_swapped_for_a_symlink_mid_delivery_is_refused_and_left_by_the_rollback(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text("secret: untouched\n")
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED})
    activities = GitOpsActivities(tmp_path / "state")
    started = "2026-01-01T00:00:00+00:00"
    first = await activities.commit(
        request(gitops, "d1", started, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    )
    human_commit(gitops, tmp_path, {}, "swap for a link", symlinks={"apps/web/values.yaml": str(outside)})
    await refused(
        activities.commit(
            request(gitops, "d1", started, "1-setWeight", {"canary.weight": 50}, base=first.sha)
        ),
        ErrorType.GITOPS_PATH_INVALID,
    )
    undone = await activities.rollback(rollback(gitops, "d1", started))
    assert undone.sha is None and "changed since by commit" in undone.left["apps/web/values.yaml"]
    assert outside.read_text() == "secret: untouched\n"


async def test_a_fleet_file_that_is_a_symlink_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("- site-from-outside\n")
    gitops, _ = make_repo(tmp_path, "gitops", {"README": "x\n"})
    human_commit(gitops, tmp_path, {}, "fleet link", symlinks={"fleets/edge.yaml": str(secret)})
    await refused(
        GitOpsActivities(tmp_path / "state").read_file(gitops, "main", "fleets/edge.yaml"),
        ErrorType.GITOPS_PATH_INVALID,
    )


# --- ownership --------------------------------------------------------------------------------------------------
async def test_an_older_delivery_never_writes_over_a_newer_one(tmp_path: Path) -> None:
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED})
    activities = GitOpsActivities(tmp_path / "state")
    older, newer = ("old", "2026-01-01T00:00:00+00:00"), ("new", "2026-01-01T00:05:00+00:00")
    first = await activities.commit(
        request(gitops, *older, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    )
    await activities.commit(
        request(
            gitops,
            *newer,
            "promote",
            {"image.tag": "v2", "canary.weight": 0, "canary.tag": "v2"},
            revision=NEW_REV,
        )
    )
    content = show(gitops, "main", "apps/web/values.yaml")
    error = await refused(
        GitOpsActivities(tmp_path / "other").commit(
            request(gitops, *older, "1-setWeight", {"canary.weight": 50}, base=first.sha)
        ),
        ErrorType.SUPERSEDED,
    )
    assert error.details[0] == {"by": "new"} and "newer delivery" in str(error)
    assert show(gitops, "main", "apps/web/values.yaml") == content
    # Its first write to a file the newer one owns is refused too (no base: it never wrote it).
    await refused(
        activities.commit(request(gitops, *older, "promote", {"image.tag": "v1"})), ErrorType.SUPERSEDED
    )
    # The other way round is a newer delivery taking over: allowed.
    taken = await activities.commit(
        request(
            gitops,
            "newest",
            "2026-01-02T00:00:00+00:00",
            "0-setWeight",
            {"canary.weight": 5},
            revision="c" * 40,
        )
    )
    assert taken.sha and not taken.already_done


async def test_a_human_commit_stops_the_next_write_until_accepted(tmp_path: Path) -> None:
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED})
    activities = GitOpsActivities(tmp_path / "state")
    started = "2026-01-01T00:00:00+00:00"
    first = await activities.commit(
        request(gitops, "d1", started, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    )
    reverted = SEED.replace("tag: v0   # stable", "tag: v0   # pinned by hand")
    human = human_commit(gitops, tmp_path, {"apps/web/values.yaml": reverted}, "Revert canary: pin v0")
    error = await refused(
        activities.commit(
            request(gitops, "d1", started, "1-setWeight", {"canary.weight": 50}, base=first.sha)
        ),
        ErrorType.HUMAN_EDIT,
    )
    assert error.details[0] == {
        "sha": human,
        "author": "Alice <alice@example.com>",
        "subject": "Revert canary: pin v0",
        "accepted": human,  # the branch head: what a resume continues from
    }
    assert human[:7] in str(error) and "Alice" in str(error)
    assert show(gitops, "main", "apps/web/values.yaml") == reverted.rstrip("\n")
    # Resumed: the write continues from the file as the human left it.
    accepted = await activities.commit(
        request(gitops, "d1", started, "1-setWeight", {"canary.weight": 50}, base=human)
    )
    assert accepted.sha and "pinned by hand" in show(gitops, "main", "apps/web/values.yaml")
    # A rewritten branch (the base is gone from it) is a human's doing as well.
    git("--git-dir", gitops, "update-ref", "refs/heads/main", human)
    error = await refused(
        activities.commit(
            request(gitops, "d1", started, "2-setWeight", {"canary.weight": 60}, base=accepted.sha)
        ),
        ErrorType.HUMAN_EDIT,
    )
    # Resumed after the rewrite: the write continues from the rewritten branch, as it is now.
    assert error.details[0]["sha"] == human and "Revert canary" in error.details[0]["subject"]
    resumed = await activities.commit(
        request(gitops, "d1", started, "2-setWeight", {"canary.weight": 60}, base=error.details[0]["sha"])
    )
    assert resumed.sha and "weight: 60" in show(gitops, "main", "apps/web/values.yaml")


async def test_a_late_write_after_a_later_step_is_dropped(tmp_path: Path) -> None:
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED})
    activities = GitOpsActivities(tmp_path / "state")
    started = "2026-01-01T00:00:00+00:00"
    first = await activities.commit(request(gitops, "d1", started, "0-setWeight", {"canary.weight": 10}))
    await activities.commit(
        request(gitops, "d1", started, "promote", {"canary.weight": 0, "image.tag": "v1"}, base=first.sha)
    )
    promoted = show(gitops, "main", "apps/web/values.yaml")
    # A stalled worker's write of step 1, based on step 0, arrives after the promotion.
    error = await refused(
        GitOpsActivities(tmp_path / "stalled").commit(
            request(gitops, "d1", started, "1-setWeight", {"canary.weight": 50}, base=first.sha)
        ),
        ErrorType.STALE_WRITE,
    )
    assert "promote" in str(error)
    assert show(gitops, "main", "apps/web/values.yaml") == promoted


# --- rollback ----------------------------------------------------------------------------------------------------
async def test_rollback_matches_its_own_delivery_exactly(tmp_path: Path) -> None:
    """A re-deploy of the same revision, and an old-style delivery named by a short SHA, are other deliveries:
    aborting one restores the file to its content before that one, never before the first."""
    full, short = "6cb11d4" + "e" * 33, "6cb11d4"
    cases = {
        # (first delivery, second delivery): (delivery ID, started, revision) each
        "re-deploy": (
            (f"delivery-web-{full}", "2026-01-01T00:00:00+00:00", full),
            (f"delivery-web-{full}-2", "2026-01-02T00:00:00+00:00", full),
        ),
        # Commits from before delivery IDs went into trailers: told apart by the exact revision only.
        "short SHA": (("", "", full), ("", "", short)),
    }
    for name, (first, second) in cases.items():
        gitops, _ = make_repo(tmp_path / name, "gitops", {"apps/web/values.yaml": SEED})
        activities = GitOpsActivities(tmp_path / name / "state")
        await activities.commit(
            request(
                gitops,
                first[0],
                first[1],
                "promote",
                {"image.tag": "v1", "canary.tag": "v1"},
                revision=first[2],
            )
        )
        promoted = show(gitops, "main", "apps/web/values.yaml")
        await activities.commit(
            request(
                gitops,
                second[0],
                second[1],
                "0-setWeight",
                {"canary.weight": 25, "canary.tag": "v9"},
                revision=second[2],
            )
        )
        undone = await activities.rollback(rollback(gitops, second[0], second[1], revision=second[2]))
        assert undone.sha is not None and undone.left == {}, name
        assert show(gitops, "main", "apps/web/values.yaml") == promoted, name


async def test_rollback_leaves_a_file_written_since_and_withdraws_an_orphaned_canary(tmp_path: Path) -> None:
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED, "apps/api/values.yaml": SEED})
    activities = GitOpsActivities(tmp_path / "state")
    older, newer = ("old", "2026-01-01T00:00:00+00:00"), ("new", "2026-01-01T00:05:00+00:00")
    await activities.commit(request(gitops, *older, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"}))
    await activities.commit(
        request(gitops, *newer, "0-setWeight", {"canary.weight": 20, "canary.tag": "v2"}, revision=NEW_REV)
    )
    newer_content = show(gitops, "main", "apps/web/values.yaml")
    undone = await activities.rollback(rollback(gitops, *older))
    assert undone.sha is None and "written since by new" in undone.left["apps/web/values.yaml"]
    assert show(gitops, "main", "apps/web/values.yaml") == newer_content
    # The newer one aborts: the file goes back to before it, but the older (ended) delivery's 10% canary is
    # withdrawn, not resurrected.
    undone = await activities.rollback(rollback(gitops, *newer, revision=NEW_REV))
    assert undone.sha is not None
    restored = show(gitops, "main", "apps/web/values.yaml")
    assert (
        "weight: 0" in restored
        and "tag: v0   # stable" in restored
        and "v1" not in restored.split("canary:")[1]
    )
    message = git("--git-dir", gitops, "log", "-1", "--format=%B", "main")
    assert "Aicd-Delivery-Id: new" in message and "Aicd-Started: 2026-01-01T00:05:00+00:00" in message


async def test_a_branch_rewound_by_a_force_push_never_gets_the_dropped_commits_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A human force-pushes the branch back past the delivery's canary. The next step's clone still holds the
    canary on top of the old head, so a plain push would be a fast-forward and put the dropped commit back.
    The push is a compare-and-swap on the head the step was checked on: refused, refetched, and the rewrite
    is a human's edit to wait for."""
    monkeypatch.setattr("aicd.activities.gitops._retried", lambda: False)  # first attempts: no fetch first
    gitops, seed = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED})
    activities = GitOpsActivities(tmp_path / "state")
    started = "2026-01-01T00:00:00+00:00"
    first = await activities.commit(
        request(gitops, "d1", started, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    )
    branch_at(gitops, "main", seed)
    error = await refused(
        activities.commit(
            request(gitops, "d1", started, "1-setWeight", {"canary.weight": 50}, base=first.sha)
        ),
        ErrorType.HUMAN_EDIT,
    )
    assert "history of the GitOps branch was rewritten" in str(error), error
    assert [entry["sha"] for entry in commits(gitops)] == [seed]


async def test_a_deleted_branch_is_never_pushed_back_by_a_write_or_a_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone deletes the GitOps branch mid-delivery. The clone still holds its history; a write on it would
    push the whole branch back, and a first write of another file would make a branch of that file alone. Both
    wait for a human instead, and the rollback has nothing of the delivery to restore: the branch stays deleted."""
    monkeypatch.setattr("aicd.activities.gitops._retried", lambda: False)
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED, "apps/api/values.yaml": SEED})
    activities = GitOpsActivities(tmp_path / "state")
    started = "2026-01-01T00:00:00+00:00"
    first = await activities.commit(
        request(gitops, "d1", started, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    )
    git("--git-dir", gitops, "update-ref", "-d", "refs/heads/main")
    error = await refused(
        activities.commit(
            request(gitops, "d1", started, "1-setWeight", {"canary.weight": 50}, base=first.sha)
        ),
        ErrorType.HUMAN_EDIT,
    )
    assert "the GitOps branch no longer exists" in str(error), error
    other = dataclasses.replace(
        request(gitops, "d1", started, "0-setWeight", {"canary.weight": 10}),
        step="prod/api/0-setWeight",
        edits=[FileEdit("apps/api/values.yaml", {"canary.weight": 10})],
    )
    error = await refused(activities.commit(other), ErrorType.HUMAN_EDIT)
    assert "the GitOps branch does not exist" in str(error), error
    undone = await activities.rollback(rollback(gitops, "d1", started))
    assert undone.sha is None
    assert git("--git-dir", gitops, "for-each-ref", "refs/heads") == ""


async def test_a_retried_rollback_reports_the_files_its_landed_commit_left_and_kept(tmp_path: Path) -> None:
    """A rollback whose push landed but whose result was lost is retried: it finds its commit by its trailer
    and must say what the first attempt said - which files it left to their newer writer, which of those the
    delivery had put back itself, whose edits it kept - or the status would call them all rolled back."""
    files = ("apps/web/values.yaml", "apps/api/values.yaml", "apps/db/values.yaml")
    gitops, _ = make_repo(tmp_path, "gitops", dict.fromkeys(files, SEED + "replicas: 3\n"))
    activities = GitOpsActivities(tmp_path / "state")
    older, newer = ("old", "2026-01-01T00:00:00+00:00"), ("new", "2026-01-01T00:05:00+00:00")

    def step(
        owner: tuple[str, str],
        name: str,
        paths: tuple[str, ...],
        values: dict,
        revision: str,
        base: str | None = None,
    ) -> CommitRequest:
        made = request(gitops, *owner, name, values, revision=revision, base=base)
        return dataclasses.replace(made, edits=[FileEdit(path, values) for path in paths])

    canary = {"canary.weight": 10, "canary.tag": "v1"}
    first = await activities.commit(step(older, "0-setWeight", files, canary, OLD_REV))
    # db is put back by the delivery itself (as a fleet batch restores its failed sites), then both db and
    # api are written by a newer delivery; web gets a human's edit beside the delivery's values.
    await activities.commit(
        step(older, "1-setWeight", files[2:], {"canary.weight": 0, "canary.tag": "v0"}, OLD_REV, first.sha)
    )
    await activities.commit(
        step(newer, "0-setWeight", files[1:], {"canary.weight": 20, "canary.tag": "v2"}, NEW_REV)
    )
    web = show(gitops, "main", files[0]).replace("replicas: 3", "replicas: 6")
    human_commit(gitops, tmp_path, {files[0]: web}, "Scale web")
    undo = dataclasses.replace(rollback(gitops, *older), paths=list(files))
    undone = await activities.rollback(undo)
    assert undone.sha is not None and not undone.already_done and first.sha
    assert set(undone.left) == set(files[1:]) and all(
        "written since by new" in why for why in undone.left.values()
    )
    assert set(undone.kept) == {files[0]} and undone.left_restored == 1
    retried = await activities.rollback(undo)
    assert retried.already_done and retried.sha == undone.sha
    assert (retried.left, retried.kept, retried.left_restored) == (undone.left, undone.kept, 1)


async def test_rollback_keeps_a_human_edit_that_a_resume_accepted(tmp_path: Path) -> None:
    """Paused, a human scales the app (and pins the canary's tag by hand); resumed, the delivery writes again
    and then aborts: the file goes back to before the delivery with the scaling kept. The human's canary tag
    was about this release's canary and goes back with it."""
    gitops, _ = make_repo(
        tmp_path, "gitops", {"apps/web/values.yaml": SEED + "replicas: 3\nenv:\n- name: A\n  value: a\n"}
    )
    seeded = show(gitops, "main", "apps/web/values.yaml")
    activities = GitOpsActivities(tmp_path / "state")
    started = "2026-01-01T00:00:00+00:00"
    await activities.commit(
        request(gitops, "d1", started, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    )
    edited = (
        show(gitops, "main", "apps/web/values.yaml")
        .replace("replicas: 3", "replicas: 6")
        .replace("value: a", "value: b")
        .replace("tag: v1", "tag: v1-hotfix")
    )
    human = human_commit(
        gitops, tmp_path, {"apps/web/values.yaml": edited + "\nhpa:\n  max: 9\n"}, "Scale web for the sale"
    )
    await activities.commit(request(gitops, "d1", started, "1-setWeight", {"canary.weight": 50}, base=human))
    undone = await activities.rollback(rollback(gitops, "d1", started))
    assert undone.sha is not None and undone.left == {}
    restored = show(gitops, "main", "apps/web/values.yaml")
    expected = (
        seeded.replace("replicas: 3", "replicas: 6").replace("value: a", "value: b") + "\nhpa:\n  max: 9"
    )
    assert restored == expected, restored


# A person whose clone was behind commits there and merges (`git pull`, or a `--no-ff` merge into main),
# dated before the canary: the merge carries the canary over and is nobody's edit of it.
MERGES = pytest.mark.parametrize("pull", [True, False], ids=["git-pull", "merge-into-main"])
BEFORE_THE_CANARY = "2025-12-31T23:00:00+00:00"


@MERGES
async def test_a_merge_of_a_persons_work_elsewhere_is_no_edit_of_the_canarys_file(
    tmp_path: Path, pull: bool
) -> None:
    """The merged work scaled another app: the next step goes on, and an abort withdraws the canary and keeps
    the other app's scaling."""
    gitops, seed = make_repo(
        tmp_path, "gitops", {"apps/web/values.yaml": SEED, "apps/api/values.yaml": "replicas: 1\n"}
    )
    activities = GitOpsActivities(tmp_path / "state")
    started = "2026-01-01T00:00:00+00:00"
    first = await activities.commit(
        request(gitops, "d1", started, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    )
    human_merge(
        gitops,
        tmp_path,
        seed,
        {"apps/api/values.yaml": "replicas: 2\n"},
        "Scale api",
        pull=pull,
        dated=BEFORE_THE_CANARY,
    )
    second = await activities.commit(
        request(gitops, "d1", started, "1-setWeight", {"canary.weight": 50}, base=first.sha)
    )
    assert second.sha is not None and "weight: 50" in show(gitops, "main", "apps/web/values.yaml")
    undone = await activities.rollback(rollback(gitops, "d1", started))
    assert undone.sha is not None and undone.left == {} and undone.kept == {}
    assert show(gitops, "main", "apps/web/values.yaml") == SEED.rstrip("\n")
    assert show(gitops, "main", "apps/api/values.yaml") == "replicas: 2"


@MERGES
@pytest.mark.parametrize("resumed", [False, True], ids=["aborted", "resumed-then-aborted"])
async def test_a_persons_edit_merged_from_an_older_branch_stops_the_delivery_and_is_kept_by_the_rollback(
    tmp_path: Path, pull: bool, resumed: bool
) -> None:
    """The merged work scaled the canary's own app (a line away from the canary's keys, so git merges it
    cleanly): the next step waits for a human and names the person's commit, not the merge; a resume goes on
    from the merge; the abort withdraws the canary around the scaling, whichever side of the merge the canary
    came from and however the commits sort by date."""
    values = "replicas: 3\nname: web\nregion: eu\n" + SEED
    gitops, seed = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": values})
    seeded = show(gitops, "main", "apps/web/values.yaml")
    activities = GitOpsActivities(tmp_path / "state")
    started = "2026-01-01T00:00:00+00:00"
    first = await activities.commit(
        request(gitops, "d1", started, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    )
    scaled = values.replace("replicas: 3", "replicas: 6")
    human_merge(
        gitops,
        tmp_path,
        seed,
        {"apps/web/values.yaml": scaled},
        "Scale web",
        pull=pull,
        dated=BEFORE_THE_CANARY,
    )
    stopped = await refused(
        activities.commit(
            request(gitops, "d1", started, "1-setWeight", {"canary.weight": 50}, base=first.sha)
        ),
        ErrorType.HUMAN_EDIT,
    )
    assert '("Scale web")' in str(stopped), stopped
    # Resumed, the rollout continues from the branch as the person left it (the merge), not from their commit:
    # from there, the canary's own commit beside it would read as a later write of the delivery.
    accepted = stopped.details[0]["accepted"]
    assert accepted == git("--git-dir", gitops, "rev-parse", "main")
    if resumed:
        going_on = await activities.commit(
            request(gitops, "d1", started, "1-setWeight", {"canary.weight": 50}, base=accepted)
        )
        assert going_on.sha is not None and "weight: 50" in show(gitops, "main", "apps/web/values.yaml")
    undone = await activities.rollback(rollback(gitops, "d1", started))
    assert undone.sha is not None and undone.left == {}
    if not resumed:  # a resume accepted the edit: kept as one the delivery went on from, not named
        assert list(undone.kept) == ["apps/web/values.yaml"]
        assert '("Scale web")' in undone.kept["apps/web/values.yaml"]
    assert show(gitops, "main", "apps/web/values.yaml") == seeded.replace("replicas: 3", "replicas: 6")


async def test_rollback_over_a_human_edit_it_cannot_carry_restores_before_the_delivery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A human edit that removed a key cannot be replayed as values: the rollback is a plain undo to before
    the delivery, and says so in the worker's log."""
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED + "replicas: 3\n"})
    seeded = show(gitops, "main", "apps/web/values.yaml")
    activities = GitOpsActivities(tmp_path / "state")
    started = "2026-01-01T00:00:00+00:00"
    await activities.commit(request(gitops, "d1", started, "0-setWeight", {"canary.weight": 10}))
    edited = show(gitops, "main", "apps/web/values.yaml").replace("replicas: 3", "")
    human = human_commit(gitops, tmp_path, {"apps/web/values.yaml": edited}, "Let the HPA scale web")
    await activities.commit(request(gitops, "d1", started, "1-setWeight", {"canary.weight": 50}, base=human))
    undone = await activities.rollback(rollback(gitops, "d1", started))
    assert undone.sha is not None
    assert show(gitops, "main", "apps/web/values.yaml") == seeded
    assert "drops later edits by others" in caplog.text and "Let the HPA scale web" in caplog.text


# --- a retried step whose push had landed -------------------------------------------------------------------------
def synced_step(commit: CommitRequest, kubeconfig: Path) -> StepRequest:
    """The step as TargetRolloutWorkflow schedules it, for an Argo CD target running the file."""
    path = commit.edits[0].path
    config = {"kind": "argocd", "app": "web-prod", "path": path, "kubeconfig": str(kubeconfig)}
    sync = SyncRequest(
        commit.delivery_id,
        "prod",
        "web",
        "argocd",
        commit.repo,
        commit.branch,
        "",
        commit.step,
        20.0,
        path=path,
        config=config,
    )
    return StepRequest(commit, sync)


async def attempt(number: int, call, *args):  # type: ignore[no-untyped-def]
    """`call(*args)` as attempt `number` of an activity (a retry looks for its pushed commit first)."""
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, attempt=number)
    return await environment.run(call, *args)


def running(standin: KubeArgoCD, gitops: str) -> str:
    """The file as the Argo CD stand-in runs it: at the revision of its last sync."""
    synced = standin.app("web-prod")["status"]["operationState"]["syncResult"]["revision"]
    return show(gitops, synced, "apps/web/values.yaml")


@pytest.fixture
def argocd(tmp_path: Path) -> Iterator[tuple[str, KubeArgoCD, Path]]:
    """A GitOps repository, an Argo CD stand-in with an Application on its file, and the kubeconfig."""
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED})
    with KubeArgoCD() as standin:
        standin.create_app("web-prod", repo=gitops, path="apps/web")
        yield gitops, standin, standin.write_kubeconfig(tmp_path / "kubeconfig")


async def test_a_retried_step_never_syncs_its_commit_over_a_newer_delivery(
    tmp_path: Path, argocd: tuple[str, KubeArgoCD, Path]
) -> None:
    """The step's push landed, then its attempt died before the sync (worker lost, Argo CD's API down); before
    the retry a newer delivery wrote the file. Found by its trailer, the old commit must not be synced again:
    Argo CD would run it while the branch says otherwise."""
    gitops, standin, kubeconfig = argocd
    older, newer = ("old", "2026-01-01T00:00:00+00:00"), ("new", "2026-01-01T00:05:00+00:00")
    steps = StepActivities(GitOpsActivities(tmp_path / "state"))
    first = request(gitops, *older, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    done = await attempt(1, steps.apply_step, synced_step(first, kubeconfig))
    late = request(gitops, *older, "1-setWeight", {"canary.weight": 50}, base=done.commit.sha)
    pushed = await attempt(1, steps.gitops.commit, late)  # pushed; the attempt dies before its sync
    taken = request(
        gitops, *newer, "0-setWeight", {"canary.weight": 20, "canary.tag": "v2"}, revision=NEW_REV
    )
    newest = await attempt(1, steps.apply_step, synced_step(taken, kubeconfig))
    error = await refused(attempt(2, steps.apply_step, synced_step(late, kubeconfig)), ErrorType.SUPERSEDED)
    assert error.details[0] == {"by": "new", "landed": pushed.sha}  # the rollout owns up to its commit
    # Argo CD runs what the branch says: the newer delivery's canary, not the older one's 50%.
    assert [sync.revision for sync in standin.syncs("web-prod")] == [done.commit.sha, newest.commit.sha]
    assert running(standin, gitops) == show(gitops, "main", "apps/web/values.yaml")


async def test_a_retried_step_never_syncs_its_commit_over_a_human_edit(
    tmp_path: Path, argocd: tuple[str, KubeArgoCD, Path]
) -> None:
    """As above with a human's commit since the step's push: the retry stops for a human as the next write
    would. Once a resume accepts the human's commit (the write's base from then on), the step's old commit is
    from before it: the step is written anew on top of the human's file, never the old commit synced."""
    gitops, standin, kubeconfig = argocd
    delivery = ("d1", "2026-01-01T00:00:00+00:00")
    steps = StepActivities(GitOpsActivities(tmp_path / "state"))
    first = request(gitops, *delivery, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    done = await attempt(1, steps.apply_step, synced_step(first, kubeconfig))
    late = request(gitops, *delivery, "1-setWeight", {"canary.weight": 50}, base=done.commit.sha)
    pushed = await attempt(1, steps.gitops.commit, late)  # pushed; the attempt dies before its sync
    by_hand = show(gitops, "main", "apps/web/values.yaml").replace("# web", "# web: 6 replicas, by hand")
    human = human_commit(gitops, tmp_path, {"apps/web/values.yaml": by_hand + "\n"}, "More replicas")
    error = await refused(attempt(2, steps.apply_step, synced_step(late, kubeconfig)), ErrorType.HUMAN_EDIT)
    assert error.details[0]["sha"] == human and error.details[0]["landed"] == pushed.sha
    assert [sync.revision for sync in standin.syncs("web-prod")] == [done.commit.sha]  # not the late one
    # Resumed: the write goes on from the human's commit; its first attempt died before pushing.
    accepted = dataclasses.replace(late, base=human)
    result = await attempt(2, steps.apply_step, synced_step(accepted, kubeconfig))
    assert not result.commit.already_done
    now = show(gitops, "main", "apps/web/values.yaml")
    assert "by hand" in now and "weight: 50" in now
    assert running(standin, gitops) == now


# --- a sync never moves Argo CD back behind the branch ------------------------------------------------------------
def sync_back(commit: CommitRequest, kubeconfig: Path, sha: str) -> SyncRequest:
    """The sync of a withdrawal commit, as DeliveryWorkflow._sync_back schedules it after `rollback_many`."""
    return dataclasses.replace(synced_step(commit, kubeconfig).sync, step="prod/web/rollback", revision=sha)


async def test_an_older_withdrawal_synced_late_runs_the_newer_delivery(
    tmp_path: Path, argocd: tuple[str, KubeArgoCD, Path]
) -> None:
    """Supersede: the older delivery withdraws its canary, the newer one commits and syncs its canary, then the
    older one's sync of its withdrawal arrives. It must not bring Argo CD back to the withdrawal commit: the
    branch head (the newer canary, which contains the withdrawal) is what runs."""
    gitops, standin, kubeconfig = argocd
    older, newer = ("old", "2026-01-01T00:00:00+00:00"), ("new", "2026-01-01T00:05:00+00:00")
    steps = StepActivities(GitOpsActivities(tmp_path / "state"))
    first = request(gitops, *older, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    await attempt(1, steps.apply_step, synced_step(first, kubeconfig))
    [withdrawn] = await attempt(1, steps.gitops.rollback_many, [rollback(gitops, *older)])
    assert withdrawn.sha is not None
    taken = request(
        gitops, *newer, "0-setWeight", {"canary.weight": 20, "canary.tag": "v2"}, revision=NEW_REV
    )
    newest = await attempt(1, steps.apply_step, synced_step(taken, kubeconfig))
    result = await attempt(1, sync_target, sync_back(first, kubeconfig, withdrawn.sha))
    head = git("--git-dir", gitops, "rev-parse", "main")
    assert head == newest.commit.sha
    assert running(standin, gitops) == show(gitops, "main", "apps/web/values.yaml")
    assert "tag: v2" in running(standin, gitops)
    assert standin.syncs("web-prod")[-1].revision == head
    assert result.details["operationRevision"] == head


async def test_a_sync_at_the_branch_head_syncs_exactly_its_revision(
    tmp_path: Path, argocd: tuple[str, KubeArgoCD, Path]
) -> None:
    gitops, standin, kubeconfig = argocd
    steps = StepActivities(GitOpsActivities(tmp_path / "state"))
    first = request(gitops, "d1", "2026-01-01T00:00:00+00:00", "0-setWeight", {"canary.weight": 10})
    done = await attempt(1, steps.apply_step, synced_step(first, kubeconfig))
    assert done.commit.sha == git("--git-dir", gitops, "rev-parse", "main")
    assert [sync.revision for sync in standin.syncs("web-prod")] == [done.commit.sha]
    # a retry finds its operation held: not requested again
    again = await attempt(
        2, sync_target, dataclasses.replace(synced_step(first, kubeconfig).sync, revision=done.commit.sha)
    )
    assert again.healthy
    assert [sync.revision for sync in standin.syncs("web-prod")] == [done.commit.sha]


async def test_a_sync_of_a_commit_the_rewritten_branch_no_longer_has_fails_typed(
    tmp_path: Path, argocd: tuple[str, KubeArgoCD, Path]
) -> None:
    gitops, standin, kubeconfig = argocd
    steps = StepActivities(GitOpsActivities(tmp_path / "state"))
    first = request(gitops, "d1", "2026-01-01T00:00:00+00:00", "0-setWeight", {"canary.weight": 10})
    done = await attempt(1, steps.apply_step, synced_step(first, kubeconfig))
    assert done.commit.sha is not None
    git("--git-dir", gitops, "update-ref", "refs/heads/main", f"{done.commit.sha}~1")  # a force-push
    human = human_commit(gitops, tmp_path, {"apps/web/values.yaml": SEED + "# by hand\n"}, "Rewrite")
    request_again = dataclasses.replace(synced_step(first, kubeconfig).sync, step="prod/web/rollback")
    error = await refused(
        attempt(1, sync_target, dataclasses.replace(request_again, revision=done.commit.sha)),
        ErrorType.HUMAN_EDIT,
    )
    assert "rewritten" in str(error)
    assert [sync.revision for sync in standin.syncs("web-prod")] == [done.commit.sha]  # nothing synced
    assert human != done.commit.sha


async def test_a_newer_sync_between_the_head_read_and_the_patch_is_not_undone(
    tmp_path: Path, argocd: tuple[str, KubeArgoCD, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same supersede, interleaved at the worst moment: the older delivery's sync has read the app and the
    branch head (its own withdrawal) when the newer delivery pushes its canary and syncs it. The older patch,
    conditioned on the resourceVersion it read, gets a 409; on the fresh read it reads the head again and syncs
    the newer canary, so the last sync to land still runs the branch head."""
    gitops, standin, kubeconfig = argocd
    older, newer = ("old", "2026-01-01T00:00:00+00:00"), ("new", "2026-01-01T00:05:00+00:00")
    steps = StepActivities(GitOpsActivities(tmp_path / "state"))
    first = request(gitops, *older, "0-setWeight", {"canary.weight": 10, "canary.tag": "v1"})
    await attempt(1, steps.apply_step, synced_step(first, kubeconfig))
    [withdrawn] = await attempt(1, steps.gitops.rollback_many, [rollback(gitops, *older)])
    assert withdrawn.sha is not None
    taken = request(
        gitops, *newer, "0-setWeight", {"canary.weight": 20, "canary.tag": "v2"}, revision=NEW_REV
    )
    real_head = argocd_driver.branch_head
    heads: list[str | None] = []
    newest: list[StepResult] = []

    async def head_then_newer_lands(repo: str, branch: str) -> str | None:
        head = await real_head(repo, branch)
        heads.append(head)
        if len(heads) == 1:  # the older sync's first read: the newer delivery lands before its patch
            newest.append(await attempt(1, steps.apply_step, synced_step(taken, kubeconfig)))
        return head

    monkeypatch.setattr(argocd_driver, "branch_head", head_then_newer_lands)
    # The newer delivery's whole step runs inside this sync's progress deadline: room for a loaded machine.
    late = dataclasses.replace(sync_back(first, kubeconfig, withdrawn.sha), timeout_s=300.0)
    result = await attempt(1, sync_target, late)
    head = git("--git-dir", gitops, "rev-parse", "main")
    assert head == newest[0].commit.sha
    assert heads[0] == withdrawn.sha and heads[-1] == head  # read again after the 409
    assert [sync.revision for sync in standin.syncs("web-prod")][-2:] == [head, head]
    assert result.details["conflicts"] >= 1
    assert result.details["operationRevision"] == head
    assert running(standin, gitops) == show(gitops, "main", "apps/web/values.yaml")
