"""Git never lies, end to end on real Temporal and real Git: overlapping releases of one app (supersede and
queue), re-deploys of an old revision (CLI and force-push), stale webhooks, and a human's commit in Git
mid-canary. Every test reads the GitOps branch itself: final content per target, and the order of writes
(once a newer delivery has written a target, the older one never writes it again)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import yaml
from temporalio.testing import WorkflowEnvironment

from aicd.client import ActionRefused, get_status, handle_for, send_action, start_delivery
from aicd.messages import DeliveryStatus, HumanAction, Trigger
from aicd.plan import DeliveryPlan
from aicd.testing.engine import (
    assert_replays,
    branch_at,
    git,
    human_merge,
    make_repo,
    plan_from,
    running_worker,
    show,
    spec_document,
    temporal_env,
    wait_for,
)
from tests.test_gateway_webhooks import github_headers, github_payload, http, make_gateway, metric, write_spec
from tests.test_git_truth_interleavings import writes

__all__ = ["temporal_env"]

SEED = "# values\nimage:\n  tag: v0   # stable\ncanary:\n  weight: 0\n  tag: v0\n"
STEPS = [{"setWeight": 10}, {"pause": "2s"}, {"setWeight": 100}]


def new_release(root: Path, source: str) -> str:
    """A new commit on the main branch of `source` (made by `make_repo(root, "source", ...)`); its SHA."""
    seed = root / "source-seed"
    identity = ("-c", "user.name=dev", "-c", "user.email=dev@x")
    git(*identity, "commit", "-q", "--allow-empty", "-m", f"r{uuid.uuid4()}", cwd=seed)
    git("push", "-q", source, "HEAD:main", cwd=seed)
    return git("rev-parse", "HEAD", cwd=seed)


class Repos:
    """A source repo with a release history and a GitOps repo with two targets' files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.source, first = make_repo(root, "source", {"README": "r1\n"})
        self.revisions = [first]
        self.gitops, _ = make_repo(root, "gitops", {"a.yaml": SEED, "b.yaml": SEED})

    def release(self) -> str:
        """A new commit on the source's main branch; returns its SHA."""
        self.revisions.append(new_release(self.root, self.source))
        return self.revisions[-1]

    def writes(self, path: str) -> list[tuple[str, str]]:
        """(delivery ID, step) of each aicd commit that changed `path`, oldest first."""
        return [(delivery, step) for _sha, delivery, step in writes(self.gitops, path) if delivery]

    def values(self, path: str) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(show(self.gitops, "main", path))
        return loaded


def document(repos: Repos, app: str, *, steps: list[dict[str, Any]] = STEPS, **extra: Any) -> dict[str, Any]:
    return spec_document(
        app,
        repos.source,
        repos.gitops,
        {"a": {"kind": "git", "path": "a.yaml"}, "b": {"kind": "git", "path": "b.yaml"}},
        [{"name": "production", "waves": [["a"], ["b"]], "strategy": {"canary": {"steps": steps}}}],
        **extra,
    )


async def started_to_first_pause(client: Any, plan: DeliveryPlan, queue: str) -> DeliveryStatus:
    """Start the delivery and wait until target a has reached its pause step (its canary is in Git)."""
    await start_delivery(client, plan, Trigger("cli", "dev"), queue=queue)
    return await wait_for(
        client, plan.delivery_id, lambda s: "a" in s.targets and s.targets["a"].step_kind == "pause"
    )


def assert_never_after(writes: list[tuple[str, str]], older: str, newer: str) -> None:
    """Once `newer` has written a file, `older` never writes it again."""
    order = [delivery for delivery, _step in writes]
    if newer in order and older in order:
        last_older = max(i for i, d in enumerate(order) if d == older)
        first_newer = order.index(newer)
        assert last_older < first_newer, writes


async def refused(client: Any, delivery: str, kind: str, why: str) -> None:
    try:
        await send_action(client, delivery, kind, HumanAction("oncall"))
    except ActionRefused as refusal:
        assert why in str(refusal), refusal
        return
    raise AssertionError(f"{kind} of {delivery} was accepted")


async def test_a_newer_release_supersedes_an_older_one_paused_mid_canary(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    repos = Repos(tmp_path)
    app = f"overlap-{uuid.uuid4().hex[:6]}"
    old, new = (
        plan_from(document(repos, app), repos.revisions[0]),
        plan_from(document(repos, app), repos.release()),
    )
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, old, Trigger("cli", "dev"), queue=queue)
        await wait_for(
            client, old.delivery_id, lambda s: "a" in s.targets and s.targets["a"].step_kind == "pause"
        )
        await send_action(client, old.delivery_id, "pause", HumanAction("oncall", "looking"))
        assert repos.values("a.yaml")["canary"] == {"weight": 10, "tag": old.artifact_tag}
        await start_delivery(client, new, Trigger("cli", "dev"), queue=queue)
        result = await handle_for(client, new.delivery_id).result()
        older = await handle_for(client, old.delivery_id).result()
        status = await get_status(client, old.delivery_id)
        await refused(client, old.delivery_id, "resume", "has already ended")
        await refused(client, old.delivery_id, "abort", "has already ended")
        await assert_replays(client, [old.delivery_id, f"{old.delivery_id}--production--a", new.delivery_id])
    assert result.phase == "succeeded", result.reason
    assert older.phase == "superseded" and new.delivery_id in older.reason
    assert status.superseded_by == new.delivery_id
    assert ("superseded", new.delivery_id) in [(a.kind, a.actor) for a in status.actions]
    for path in ("a.yaml", "b.yaml"):
        assert repos.values(path) == {
            "image": {"tag": new.artifact_tag},
            "canary": {"weight": 0, "tag": new.artifact_tag},
        }
        assert_never_after(repos.writes(path), old.delivery_id, new.delivery_id)
    # The older delivery never reached b; on a it wrote its canary and, at most, withdrew it before the newer one.
    assert {d for d, _ in repos.writes("b.yaml")} == {new.delivery_id}
    assert repos.writes("a.yaml")[0] == (old.delivery_id, "production/a/0-setWeight")


async def test_a_newer_release_supersedes_an_older_one_waiting_for_approval(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    repos = Repos(tmp_path)
    app = f"gated-{uuid.uuid4().hex[:6]}"
    stages = [
        {"name": "staging", "targets": ["a"]},
        {"name": "production", "targets": ["b"], "approval": {"approvers": ["alice"], "timeout": "1h"}},
    ]

    def gated(revision: str) -> DeliveryPlan:
        spec = document(repos, app)
        spec["spec"]["stages"] = stages
        return plan_from(spec, revision)

    old, new = gated(repos.revisions[0]), gated(repos.release())
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, old, Trigger("cli", "dev"), queue=queue)
        await wait_for(client, old.delivery_id, lambda s: s.pending_approval == "production")
        promoted_by_old = repos.values("a.yaml")
        await start_delivery(client, new, Trigger("cli", "dev"), queue=queue)
        older = await handle_for(client, old.delivery_id).result()
        await wait_for(client, new.delivery_id, lambda s: s.pending_approval == "production")
        await send_action(client, new.delivery_id, "approve", HumanAction("alice"))
        result = await handle_for(client, new.delivery_id).result()
    assert older.phase == "superseded" and new.delivery_id in older.reason
    assert result.phase == "succeeded"
    assert promoted_by_old["image"]["tag"] == old.artifact_tag
    # The older one never touched production and withdrew nothing it had promoted.
    assert {d for d, _ in repos.writes("b.yaml")} == {new.delivery_id}
    assert [s for d, s in repos.writes("a.yaml") if d == old.delivery_id] == [
        "staging/a/0-setWeight",
        "staging/a/promote",
    ]
    assert (
        repos.values("a.yaml")["image"]["tag"] == repos.values("b.yaml")["image"]["tag"] == new.artifact_tag
    )


async def test_queued_release_waits_for_the_older_one(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    repos = Repos(tmp_path)
    app = f"queue-{uuid.uuid4().hex[:6]}"
    old = plan_from(document(repos, app, concurrency="queue"), repos.revisions[0])
    new = plan_from(document(repos, app, concurrency="queue"), repos.release())
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, old, Trigger("cli", "dev"), queue=queue)
        await wait_for(
            client, old.delivery_id, lambda s: "a" in s.targets and s.targets["a"].step_kind == "pause"
        )
        await send_action(client, old.delivery_id, "pause", HumanAction("oncall", "hold"))
        await start_delivery(client, new, Trigger("cli", "dev"), queue=queue)
        queued = await wait_for(client, new.delivery_id, lambda s: s.phase == "queued")
        assert [a.kind for a in (await get_status(client, old.delivery_id)).actions] == ["pause"]
        assert queued.waiting_for == [old.delivery_id] and queued.targets == {}
        await send_action(client, old.delivery_id, "resume", HumanAction("oncall"))
        older = await handle_for(client, old.delivery_id).result()
        result = await handle_for(client, new.delivery_id).result()
        await assert_replays(client, [new.delivery_id])
    assert older.phase == "succeeded" and result.phase == "succeeded"
    for path in ("a.yaml", "b.yaml"):
        order = [d for d, _ in repos.writes(path)]
        assert order == sorted(order, key=lambda d: d == new.delivery_id), order  # every old write first
        assert repos.values(path)["image"]["tag"] == new.artifact_tag


async def test_redeploy_of_an_old_revision_starts_a_new_delivery_that_wins(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    repos = Repos(tmp_path)
    app = f"redeploy-{uuid.uuid4().hex[:6]}"
    first, second = repos.revisions[0], repos.release()
    steps = [{"setWeight": 100}]
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        ids = []
        for revision in (first, second, first):
            plan = plan_from(document(repos, app, steps=steps), revision)
            started = await start_delivery(client, plan, Trigger("cli", "dev"), queue=queue)
            assert started.started
            ids.append(started.delivery_id)
            assert (await handle_for(client, started.delivery_id).result()).phase == "succeeded"
    assert ids[2] == f"{ids[0]}-2"  # the same revision again: a delivery of its own
    assert repos.values("a.yaml")["image"]["tag"] == repos.values("b.yaml")["image"]["tag"] == first
    assert [d for d, _ in repos.writes("a.yaml")] == [ids[0]] * 2 + [ids[1]] * 2 + [ids[2]] * 2


async def test_force_push_back_redeploys_and_a_stale_push_deploys_nothing(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    repos = Repos(tmp_path)
    app = f"pushed-{uuid.uuid4().hex[:6]}"
    write_spec(tmp_path / "specs", document(repos, app, steps=[{"setWeight": 100}]))
    first, second = repos.revisions[0], repos.release()
    client = temporal_env.client

    async def push(web: Any, before: str, after: str, **extra: Any) -> dict[str, Any]:
        body = json.dumps(
            github_payload(repos.source, "refs/heads/release/1", after, before=before, **extra)
        ).encode()
        answer = await web.post("/hooks/github", content=body, headers=github_headers(body))
        assert answer.status_code == 200, answer.text
        reply: dict[str, Any] = answer.json()
        return reply

    async with running_worker(client, tmp_path / "state") as queue:
        gateway = make_gateway(client, tmp_path / "specs", queue)
        async with http(gateway) as web:
            ids = []
            for before, after in (("0" * 40, first), (first, second)):
                branch_at(repos.source, "release/1", after)
                reply = await push(web, before, after)
                assert reply["result"] == "started", reply
                ids.append(reply["deliveries"][0]["delivery_id"])
                assert (await handle_for(client, ids[-1]).result()).phase == "succeeded"
            # The first push's event arrives again late, with a new delivery header: the branch has moved on.
            stale = await push(web, "0" * 40, first)
            assert stale["result"] == "ignored" and "stale" in stale["reason"], stale
            body = json.dumps(
                github_payload(repos.source, "refs/heads/release/1", "d" * 40, before=second)
            ).encode()
            unknown = await web.post("/hooks/github", content=body, headers=github_headers(body))
            assert unknown.status_code == 422 and f"no commit {'d' * 40!r}" in unknown.json()["error"], (
                unknown.text
            )
            assert repos.source in unknown.json()["error"]
            # The seed's rollback: the branch is force-pushed back to the first release.
            branch_at(repos.source, "release/1", first)
            reply = await push(web, second, first, forced=True)
            assert reply["result"] == "started", reply
            ids.append(reply["deliveries"][0]["delivery_id"])
            assert (await handle_for(client, ids[-1]).result()).phase == "succeeded"
            metrics = (await web.get("/metrics")).text
    assert len(set(ids)) == 3 and ids[2].startswith(f"delivery-{app}-{first}-")
    assert repos.values("a.yaml")["image"]["tag"] == first
    assert [d for d, _ in repos.writes("a.yaml")] == [ids[0]] * 2 + [ids[1]] * 2 + [ids[2]] * 2
    assert metric(metrics, 'aicd_webhooks_ignored_total{provider="github",reason="stale"}') == 1


async def test_a_human_revert_mid_canary_pauses_the_delivery(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Resume continues from the file as the human left it; abort ends the delivery and keeps the human's
    content (the rollback says it left it)."""
    client = temporal_env.client
    for ending in ("resume", "abort"):
        repos = Repos(tmp_path / ending)
        app = f"human-{ending}-{uuid.uuid4().hex[:6]}"
        plan = plan_from(
            document(repos, app, steps=[{"setWeight": 10}, {"pause": "3s"}, {"setWeight": 100}]),
            repos.revisions[0],
        )
        async with running_worker(client, tmp_path / ending / "state") as queue:
            await started_to_first_pause(client, plan, queue)
            work = tmp_path / ending / "human"
            git("clone", "-q", repos.gitops, str(work))
            reverted = SEED.replace("# values", "# reverted by hand: canary looked wrong")
            (work / "a.yaml").write_text(reverted)
            git(
                "-c",
                "user.name=Alice",
                "-c",
                "user.email=alice@x",
                "commit",
                "-qam",
                "Revert canary of a",
                cwd=work,
            )
            git("push", "-q", "origin", "HEAD:main", cwd=work)
            human = git("rev-parse", "HEAD", cwd=work)
            paused = await wait_for(client, plan.delivery_id, lambda s: s.phase == "paused", timeout=30)
            assert (
                human[:7] in paused.pause_reason
                and "Alice" in paused.pause_reason
                and "Revert canary of a" in paused.pause_reason
            )
            assert paused.targets["a"].state == "awaiting-resume"
            assert [(a.kind, a.actor) for a in paused.actions] == [("human-edit", "Alice <alice@x>")]
            await send_action(client, plan.delivery_id, ending, HumanAction("oncall", "checked"))
            result = await handle_for(client, plan.delivery_id).result()
            status = await get_status(client, plan.delivery_id)
            await assert_replays(client, [plan.delivery_id, f"{plan.delivery_id}--production--a"])
        text = show(repos.gitops, "main", "a.yaml")
        if ending == "resume":
            assert result.phase == "succeeded"
            assert (
                "# reverted by hand" in text and repos.values("a.yaml")["image"]["tag"] == plan.artifact_tag
            )
        else:
            assert result.phase == "aborted"
            assert text == reverted.rstrip("\n")  # the human's content survives the rollback
            assert "left a.yaml as it is" in status.targets["a"].message


async def test_a_persons_git_pull_merge_mid_canary_is_resumed_from_and_the_release_lands_beside_it(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """On-call scaled a from a clone made before the canary, dated before it too, and pushed it the way `git
    pull` merges. The next step waits and names their commit, not the merge; resumed, the delivery goes on from
    the merge (not from their commit, beside which the canary's own commit would read as a later write) and
    promotes over the scaling."""
    repos = Repos(tmp_path)
    seed = git("--git-dir", repos.gitops, "rev-parse", "main")
    plan = plan_from(
        document(
            repos,
            f"merged-{uuid.uuid4().hex[:6]}",
            steps=[{"setWeight": 10}, {"pause": "3s"}, {"setWeight": 100}],
        ),
        repos.revisions[0],
    )
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await started_to_first_pause(client, plan, queue)
        merge = human_merge(
            repos.gitops,
            tmp_path,
            seed,
            {"a.yaml": "replicas: 6\n" + SEED},
            "Scale a",
            pull=True,
            dated="2020-01-01T00:00:00+00:00",
        )
        paused = await wait_for(client, plan.delivery_id, lambda s: s.phase == "paused", timeout=30)
        assert '"Scale a"' in paused.pause_reason and merge[:7] not in paused.pause_reason, (
            paused.pause_reason
        )
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall", "scaling is fine"))
        result = await handle_for(client, plan.delivery_id).result()
        await assert_replays(client, [plan.delivery_id, f"{plan.delivery_id}--production--a"])
    assert result.phase == "succeeded", result.reason
    assert repos.values("a.yaml") == {
        "replicas": 6,
        "image": {"tag": plan.artifact_tag},
        "canary": {"weight": 0, "tag": plan.artifact_tag},
    }
    assert [step for _delivery, step in repos.writes("a.yaml")][-1] == "production/a/promote"


async def test_a_branch_force_pushed_back_past_the_canary_waits_for_a_human(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """On-call force-pushes the GitOps branch back to before the canary. The delivery never pushes the
    dropped commit back (its next write would have been a fast-forward over the rewound branch): it waits for
    a human, naming the rewrite; the abort then finds nothing of its own on the branch and keeps it as is."""
    repos = Repos(tmp_path)
    before = git("--git-dir", repos.gitops, "rev-parse", "main")
    plan = plan_from(
        document(
            repos,
            f"rewound-{uuid.uuid4().hex[:6]}",
            steps=[{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}],
        ),
        repos.revisions[0],
    )
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await started_to_first_pause(client, plan, queue)
        branch_at(repos.gitops, "main", before)
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall", "go on"))
        waiting = await wait_for(
            client, plan.delivery_id, lambda s: s.targets["a"].human_edit is not None, timeout=30
        )
        assert "history of the GitOps branch was rewritten" in waiting.targets["a"].message
        assert git("--git-dir", repos.gitops, "rev-parse", "main") == before  # nothing pushed over it
        await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "rewound on purpose"))
        result = await handle_for(client, plan.delivery_id).result()
        await assert_replays(client, [plan.delivery_id, f"{plan.delivery_id}--production--a"])
    assert result.phase == "aborted"
    assert git("--git-dir", repos.gitops, "rev-parse", "main") == before
    assert repos.values("a.yaml") == yaml.safe_load(SEED)


async def test_a_newer_release_that_fails_its_tests_stops_nothing(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    repos = Repos(tmp_path)
    app = f"broken-{uuid.uuid4().hex[:6]}"
    old = plan_from(document(repos, app), repos.revisions[0])
    failing = document(repos, app)
    failing["spec"]["test"] = [{"name": "unit", "command": ["python3", "-c", "raise SystemExit(3)"]}]
    new = plan_from(failing, repos.release())
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, old, Trigger("cli", "dev"), queue=queue)
        await wait_for(
            client, old.delivery_id, lambda s: "a" in s.targets and s.targets["a"].step_kind == "pause"
        )
        await send_action(client, old.delivery_id, "pause", HumanAction("oncall", "hold"))
        await start_delivery(client, new, Trigger("cli", "dev"), queue=queue)
        broken = await handle_for(client, new.delivery_id).result()
        await send_action(client, old.delivery_id, "resume", HumanAction("oncall"))
        older = await handle_for(client, old.delivery_id).result()
    assert broken.phase == "failed" and "unit" in broken.reason
    assert older.phase == "succeeded"
    assert {d for path in ("a.yaml", "b.yaml") for d, _ in repos.writes(path)} == {old.delivery_id}


async def test_a_human_scaling_the_app_mid_canary_does_not_keep_a_failed_canary_on(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """While the canary waits, on-call scales the app by hand (`replicas: 6`, nothing of the canary); then the
    canary fails its smoke test. The rollback left the whole file as it was - the failed release kept its 10%
    of the traffic - because someone had written it since the delivery. The human's edit was beside the
    delivery's values: the rollback restores the file around it, and keeps it."""
    repos = Repos(tmp_path)
    app = f"scaled-{uuid.uuid4().hex[:6]}"
    steps: list[dict[str, Any]] = [
        {"setWeight": 10},
        {"pause": "3s"},
        {"verify": {"name": "smoke", "command": ["false"]}},
    ]
    plan = plan_from(document(repos, app, steps=steps), repos.revisions[0])
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await started_to_first_pause(client, plan, queue)
        work = tmp_path / "human"
        git("clone", "-q", repos.gitops, str(work))
        (work / "a.yaml").write_text((work / "a.yaml").read_text() + "replicas: 6\n")
        git("-c", "user.name=Alice", "-c", "user.email=alice@x", "commit", "-qam", "scale a", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    assert result.phase == "failed", result.reason
    assert repos.values("a.yaml") == {
        "image": {"tag": "v0"},
        "canary": {"weight": 0, "tag": "v0"},
        "replicas": 6,
    }
    assert show(repos.gitops, "main", "a.yaml").startswith("# values\n")  # the file's own text, restored
    assert status.targets["a"].state == "rolled-back", status.targets["a"]
    assert [step for _delivery, step in repos.writes("a.yaml")][-1] == "production/a/rollback"
    # The status and the commit say whose edits the rollback kept: what runs is not only the older release.
    assert (
        "kept the edits to a.yaml" in status.targets["a"].message and "Alice" in status.targets["a"].message
    )
    assert "Kept the edits to a.yaml: " in git("--git-dir", repos.gitops, "log", "-1", "--format=%B", "main")
