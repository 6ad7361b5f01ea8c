"""Git never lies, whatever the order: seeded random interleavings of releases, pauses, resumes, aborts,
humans' commits and force-pushes back, worker restarts and bugs in aicd's own rollout code on two apps that
share one GitOps repository (two targets each), on real Temporal and real Git. The harness acts as the
people around a delivery do, at random moments; at the end it resumes whatever waits for a human, then reads
the GitOps branch and every delivery's final status and checks what must hold in any order:

- every delivery ends (none waits for good);
- once a newer delivery has written a file, an older one never writes it again;
- every commit a delivery reports is on the branch (or was dropped by a person's force-push), and every
  commit of a delivery on the branch is one it reports (Git holds nothing a delivery does not own up to); a
  delivery writes only its own app's files;
- each file runs the release of the last delivery that says it promoted the target (or of a human's pin of
  the image after it), or the seed's if none did: never a release a delivery says it rolled back, aborted or
  never finished, and no canary is left on; a rollback commit puts back the release from before the delivery;
  a file a person forced back and no delivery wrote since runs what they forced it to;
- with Argo CD targets (every fifth seed), an Application runs what aicd last wrote to its file.

`python -m tests.test_git_truth_interleavings FIRST LAST` runs seeds FIRST..LAST and prints the failures."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor, Replayer

from aicd.activities import WorkerSettings
from aicd.argocd_manifests import render_applications
from aicd.client import ActionRefused, get_status, handle_for, read_branch_since, send_action, start_delivery
from aicd.dashboard.gitops import GitOpsReader
from aicd.dashboard.views import stage_views
from aicd.messages import DeliveryStatus, HumanAction, Trigger
from aicd.plan import DeliveryPlan
from aicd.slack_blocks import describe_progress
from aicd.status_view import status_text
from aicd.testing.engine import (
    WorkflowBug,
    commits,
    git,
    human_commit,
    make_repo,
    plan_from,
    running_worker,
    show,
    spec_document,
    start_dev_server,
    temporal_env,
    wait_for,
)
from aicd.testing.standins.kube_argocd import KubeArgoCD, write_kubeconfig
from aicd.trailers import split_step
from aicd.worker import Workers, build_worker
from aicd.workflows.registry import ALL_WORKFLOWS, sandbox_runner
from aicd.workflows.rollout_control import REPORT_LANDED
from tests.record_histories import patch_markers

__all__ = ["temporal_env"]

SEED_VALUES = "# values\nimage:\n  tag: v0\ncanary:\n  weight: 0\n  tag: v0\nreplicas: 2\n"
# Two apps in one GitOps repository: each delivery's targets `a` and `b` are its app's two files.
APPS = {"one": {"a": "a.yaml", "b": "b.yaml"}, "two": {"a": "c.yaml", "b": "d.yaml"}}
FILES = tuple(path for files in APPS.values() for path in files.values())
# A release whose source holds BROKEN fails its smoke test after the first canary step (run in its checkout).
STEPS = [
    {"setWeight": 10},
    {"pause": "1s"},
    {"verify": {"name": "smoke", "command": ["test", "!", "-e", "BROKEN"]}},
    {"setWeight": 50},
    {"pause": "1s"},
    {"setWeight": 100},
]
ENDED = ("succeeded", "failed", "aborted", "superseded", "rejected", "timed-out")
# `waves`: one stage, a then b. `stages`: a canary stage for a alone, then an approved stage for both (a
# target in two stages: its second rollout must see a human's edit made during the first).
STAGES: dict[str, list[dict[str, Any]]] = {
    "waves": [{"name": "production", "waves": [["a"], ["b"]], "strategy": {"canary": {"steps": STEPS}}}],
    "stages": [
        {"name": "canary", "targets": ["a"], "strategy": {"canary": {"steps": STEPS[:3]}}},
        {
            "name": "production",
            "targets": ["a", "b"],
            "approval": {"approvers": ["oncall"], "timeout": "1h"},
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": "1s"}, {"setWeight": 100}]}},
        },
    ],
}
ARGOCD_CONTEXT = "prod"
NEVER_SYNCED = {
    "sync": {"status": "Synced", "revision": "0" * 40},
    "health": {"status": "Healthy"},
    "reconciledAt": "2020-01-01T00:00:00Z",
}
SETTLE_S = 120.0  # how long the end may take once the harness stops acting, resuming what waits


@dataclass(frozen=True)
class Rewind:
    head: str  # the branch's head after the force-push
    dropped: frozenset[str]  # the commits no longer on the branch
    files: frozenset[str]  # the files its dropped commits wrote


@dataclass
class World:
    root: Path
    client: Client
    queue: str
    concurrency: str
    rollback_scope: str
    layout: str
    rng: random.Random
    app_prefix: str = "mix"
    source: str = ""
    gitops: str = ""
    plans: list[DeliveryPlan] = field(default_factory=list)
    app_of: dict[str, str] = field(default_factory=dict)  # delivery ID -> its key in APPS
    released: list[tuple[str, str]] = field(default_factory=list)  # (app, revision) of each release
    log: list[str] = field(default_factory=list)
    human_commits: int = 0
    restarts: int = 0
    phases: list[str] = field(default_factory=list)  # each delivery's final phase, in start order
    worker: Workers | None = None
    argocd: KubeArgoCD | None = None  # the targets are Argo CD Applications on this stand-in
    # Releases whose rollouts hit a bug in aicd's workflow code (a plain exception) at a later canary step.
    # Drawn from a generator of their own, so a seed's other choices stay those it made before bugs were.
    bug_rng: random.Random = field(default_factory=random.Random)
    buggy: set[str] = field(default_factory=set)
    # Whether on-call works in a clone that is behind and merges (`git pull`) before pushing, dated a while
    # before the push: a generator of its own too.
    merge_rng: random.Random = field(default_factory=random.Random)
    human_merges: int = 0
    # Whether on-call's hand on the branch is a force-push back a few commits rather than a commit: a
    # generator of its own too. Each rewind: the branch's new head, the commits it dropped, the files it changed.
    rewind_rng: random.Random = field(default_factory=random.Random)
    rewinds: list[Rewind] = field(default_factory=list)
    rewound_writes: int = 0  # deliveries' commits the rewinds dropped
    rewrites_seen: set[str] = field(default_factory=set)  # deliveries paused on a rewritten branch
    marked_off_branch: int = 0  # commits the deliveries' statuses show as no longer on the branch
    marked_changed: int = 0  # targets whose file a later commit changed, as the statuses show them
    bug: WorkflowBug = field(init=False)

    def __post_init__(self) -> None:
        self.bug = WorkflowBug(self.hits_a_bug, "a bug in the rollout's code")

    def hits_a_bug(self, activity: str, args: Sequence[Any]) -> bool:
        if activity != "apply_step":
            return False
        commit = args[0].commit
        return commit.delivery.rpartition("@")[2] in self.buggy and not split_step(commit.step)[2].startswith(
            "0-"
        )

    def setup(self) -> None:
        self.source, _ = make_repo(self.root, "source", {"README": "r0\n"})
        self.gitops, _ = make_repo(self.root, "gitops", {name: SEED_VALUES for name in FILES})
        git("clone", "-q", self.gitops, str(self.root / "human"))
        if self.argocd is not None:
            write_kubeconfig(self.root / "kubeconfig", {ARGOCD_CONTEXT: self.argocd})
            for app in APPS:
                targets = self.targets(app)
                for manifest in render_applications(f"{self.app_prefix}-{app}", self.gitops, "main", targets):
                    self.argocd.add_application(manifest, status=NEVER_SYNCED)

    def targets(self, app: str) -> dict[str, dict[str, Any]]:
        """The app's targets: files Argo CD-less `git` targets follow, or Argo CD Applications on the stand-in."""
        if self.argocd is None:
            return {target: {"kind": "git", "path": path} for target, path in APPS[app].items()}
        return {
            target: {
                "kind": "argocd",
                "app": self.application(app, target),
                "context": ARGOCD_CONTEXT,
                "kubeconfig": str(self.root / "kubeconfig"),
                "path": path,
                "progressDeadline": "30s",
            }
            for target, path in APPS[app].items()
        }

    def application(self, app: str, target: str) -> str:
        return f"{self.app_prefix}-{app}-{target}"

    def document(self, app: str) -> dict[str, Any]:
        return spec_document(
            f"{self.app_prefix}-{app}",
            self.source,
            self.gitops,
            self.targets(app),
            STAGES[self.layout],
            concurrency=self.concurrency,
            rollback={"scope": self.rollback_scope},
        )

    # --- the worker: one pod, restarted now and then with a fresh disk (another pod) ---------------------
    async def start_worker(self) -> None:
        state = self.root / f"state-{self.restarts}"
        self.worker = build_worker(self.client, WorkerSettings(state_dir=state), self.queue, [self.bug])
        await self.worker.__aenter__()

    async def stop_worker(self) -> None:
        if self.worker is not None:
            worker, self.worker = self.worker, None
            await worker.__aexit__(None, None, None)

    async def restart_worker(self) -> None:
        """The worker's pod is replaced (a rolling upgrade, a node drained): in-flight activities get its
        graceful shutdown, then a new worker with an empty state directory serves the same queue."""
        await self.stop_worker()
        self.restarts += 1
        await self.start_worker()
        self.log.append(f"worker restarted ({self.restarts})")

    def new_revision(self, broken: bool) -> str:
        seed = self.root / "source-seed"
        marker = seed / "BROKEN"
        if broken:
            marker.write_text("this release fails its smoke test\n")
        elif marker.exists():
            marker.unlink()
        git("add", "-A", cwd=seed)
        git(
            "-c",
            "user.name=dev",
            "-c",
            "user.email=dev@x",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "r",
            cwd=seed,
        )
        git("push", "-q", self.source, "HEAD:main", cwd=seed)
        return git("rev-parse", "HEAD", cwd=seed)

    # --- what people do ---------------------------------------------------------------------------------
    async def release(self) -> None:
        app = "one" if self.rng.random() < 0.65 else "two"
        broken = self.rng.random() < 0.3
        buggy = broken and self.bug_rng.random() < 0.4  # aicd's bug, not the release's: its tests pass
        revision = self.new_revision(broken and not buggy)
        if buggy:
            self.buggy.add(revision)
        self.released.append((app, revision))
        what = " (aicd bug)" if buggy else " (broken)" if broken else ""
        await self.deliver(app, revision, f"release{what}")

    async def redeploy(self) -> None:
        """`aicd deliver` of a revision released before (a rollback by re-deploy): a delivery of its own."""
        if self.released:
            await self.deliver(*self.rng.choice(self.released), "re-deploy")

    async def deliver(self, app: str, revision: str, what: str) -> None:
        plan = plan_from(self.document(app), revision)
        started = await start_delivery(self.client, plan, Trigger("cli", "dev"), queue=self.queue)
        if not started.started:  # that revision's delivery still runs: the request found it
            self.log.append(f"{what} {app} {plan.artifact_tag}: runs as {started.delivery_id[-8:]}")
            return
        plan = replace(plan, delivery_id=started.delivery_id)
        self.plans.append(plan)
        self.app_of[plan.delivery_id] = app
        self.log.append(f"{what} {app} {plan.artifact_tag} {plan.delivery_id[-10:]}")

    async def steer(self, kind: str) -> None:
        if not self.plans:
            return
        plan = self.rng.choice(self.plans)
        try:
            outcome = await send_action(self.client, plan.delivery_id, kind, HumanAction("oncall", kind))
        except ActionRefused as refused:
            outcome = f"refused: {refused}"
        self.log.append(f"{kind} {plan.delivery_id[-8:]}: {outcome[:60]}")

    def human_commit(self) -> None:
        """On-call edits a file by hand: scales it, kills its canary (weight 0), or pins its image to an earlier
        release (a rollback by hand). Half the time their clone is where they left it, and they merge the branch
        in before pushing (`git pull` as it merges), their commit dated up to a minute before the push."""
        work = self.root / "human"
        merges = self.merge_rng.random() < 0.5
        if not merges:
            git("pull", "-q", "--rebase", "origin", "main", cwd=work)
        name = self.rng.choice(FILES)
        values = yaml.safe_load((work / name).read_text())
        choice = self.rng.random()
        if choice < 0.4:
            values["replicas"] = self.rng.randint(3, 9)
            what = f"scale {name} to {values['replicas']}"
        elif choice < 0.8:
            values["canary"]["weight"] = 0
            what = f"kill the canary of {name}"
        else:
            app = next(app for app, files in APPS.items() if name in files.values())
            earlier = [
                "v0",
                *(plan.artifact_tag for plan in self.plans if self.app_of[plan.delivery_id] == app),
            ]
            values["image"]["tag"] = self.rng.choice(earlier)
            what = f"pin {name} to {values['image']['tag']}"
        text = yaml.safe_dump(values, sort_keys=False)
        if text == yaml.safe_dump(yaml.safe_load((work / name).read_text()), sort_keys=False):
            self.log.append(f"human: {what} (nothing to change)")
            return
        (work / name).write_text(text)
        alice = ("-c", "user.name=Alice", "-c", "user.email=alice@x")
        dated = datetime.now(UTC) - timedelta(seconds=self.merge_rng.uniform(0, 60) if merges else 0)
        subprocess.run(
            ["git", *alice, "commit", "-qam", what, f"--date={dated.isoformat()}"],
            cwd=work,
            check=True,
            capture_output=True,
            env={**os.environ, "GIT_COMMITTER_DATE": dated.isoformat()},
        )
        try:
            if merges:
                git("fetch", "-q", "origin", cwd=work)
                git(*alice, "merge", "-q", "--no-edit", "origin/main", cwd=work)
            git("push", "-q", "origin", "HEAD:main", cwd=work)
        except Exception:  # a conflict, or a delivery pushed in between: drop the edit, to retry later
            with contextlib.suppress(Exception):
                git("merge", "--abort", cwd=work)
            git("fetch", "-q", "origin", cwd=work)
            git("reset", "-q", "--hard", "origin/main", cwd=work)
            self.log.append(f"human: {what} (conflicted or lost a push race, dropped)")
            return
        self.human_commits += 1
        merged = len(git("rev-list", "--parents", "-n", "1", "HEAD", cwd=work).split()) > 2
        self.human_merges += merged
        self.log.append(f"human: {what}" + (" (merged)" if merged else ""))

    def human_rewind(self) -> None:
        """On-call undoes the last one to three commits by force (`git reset --hard HEAD~n`, `git push
        --force-with-lease`): the writes they drop, deliveries' included, vanish from the branch."""
        work = self.root / "human"
        git("fetch", "-q", "origin", cwd=work)
        git("reset", "-q", "--hard", "origin/main", cwd=work)
        old = git("rev-parse", "HEAD", cwd=work).strip()
        depth = len(git("rev-list", "--first-parent", "HEAD", cwd=work).split())
        if depth < 2:
            return
        back = self.rewind_rng.randint(1, min(3, depth - 1))
        new = git("rev-parse", f"HEAD~{back}", cwd=work).strip()
        try:
            git("push", "-q", f"--force-with-lease=main:{old}", "origin", f"{new}:main", cwd=work)
        except Exception:  # a delivery pushed in between: the lease refuses, try another time
            self.log.append(f"human: rewind {back} commits (lost a push race, dropped)")
            return
        trailer = "%(trailers:key=Aicd-Delivery-Id,valueonly,separator=)"
        logged = [
            line.split()
            for line in git("log", f"--format=%H {trailer}", f"{new}..{old}", cwd=work).splitlines()
        ]
        dropped = frozenset(fields[0] for fields in logged)
        writers = [fields for fields in logged if len(fields) > 1]  # the deliveries' commits among them
        # The files the dropped commits wrote, whether or not their content changed: a rewind that drops a
        # rollback and a re-deploy's canary of the same release leaves the file as it was, on a canary the
        # person brought back.
        files = frozenset(git("log", "--format=", "--name-only", f"{new}..{old}", cwd=work).split())
        git("reset", "-q", "--hard", new, cwd=work)
        self.rewinds.append(Rewind(new, dropped, files))
        self.rewound_writes += len(writers)
        self.log.append(
            f"human: rewind {back} commits to {new[:7]}, dropping {len(dropped)}, {len(writers)} of"
            f" deliveries ({sorted(files)})"
        )

    async def act(self, actions: int) -> None:
        await self.release()
        for _ in range(actions):
            await asyncio.sleep(self.rng.uniform(0.1, 1.5))
            choice = self.rng.random()
            if choice < 0.25:
                await self.release()
            elif choice < 0.45:
                await self.steer("pause")
            elif choice < 0.65:
                await self.steer("resume")
            elif choice < 0.72:
                await self.steer("abort")
            elif choice < 0.8:
                await self.steer("approve")
            elif choice < 0.84:
                await self.restart_worker()
            elif choice < 0.88:
                await self.redeploy()
            elif self.rewind_rng.random() < 0.3:
                await asyncio.to_thread(self.human_rewind)
            else:
                await asyncio.to_thread(self.human_commit)

    async def settle(self) -> dict[str, DeliveryStatus]:
        """Resume whatever waits for a human until every delivery has ended; their final statuses."""
        deadline = asyncio.get_running_loop().time() + SETTLE_S
        while True:
            statuses = {
                plan.delivery_id: await get_status(self.client, plan.delivery_id) for plan in self.plans
            }
            waiting = [d for d, s in statuses.items() if s.phase not in ENDED]
            if not waiting:
                return statuses
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    "deliveries never ended: "
                    + "; ".join(f"{d[-8:]} {statuses[d].phase} {statuses[d].pause_reason}" for d in waiting)
                )
            for delivery in waiting:
                if "history of the GitOps branch was rewritten" in (statuses[delivery].pause_reason or ""):
                    self.rewrites_seen.add(delivery)
                if statuses[delivery].paused or statuses[delivery].phase == "paused":
                    with contextlib.suppress(ActionRefused):
                        await send_action(self.client, delivery, "resume", HumanAction("oncall", "settle"))
                if statuses[delivery].pending_approval:
                    with contextlib.suppress(ActionRefused):
                        await send_action(self.client, delivery, "approve", HumanAction("oncall", "settle"))
            await asyncio.sleep(0.5)


def writes(gitops: str, path: str) -> list[tuple[str, str, str]]:
    """(commit, delivery ID, step) of each commit that changed `path`, oldest first ('' for a human's)."""
    out = git(
        "--git-dir",
        gitops,
        "log",
        "--reverse",
        "--format=@%H|%(trailers:key=Aicd-Delivery-Id,valueonly,separator=)|%(trailers:key=Aicd-Step,valueonly,separator=)",
        "--name-only",
        "main",
    )
    found, current = [], ("", "", "")
    for line in out.splitlines():
        if line.startswith("@"):
            sha, delivery, step = line[1:].split("|")
            current = (sha, delivery.strip(), step.strip())
        elif line.strip() == path:
            found.append(current)
    return found


def last_writer(gitops: str, path: str) -> tuple[str, str]:
    """The commit that gave `path` its content on the branch, and the delivery that made it ("" for a
    person's). Read by ancestry, not from `writes()`'s date order: a person's commit merged from a clone that
    was behind is dated before commits it lands after."""
    trailer = "%(trailers:key=Aicd-Delivery-Id,valueonly,separator=)"
    sha, _, delivery = git(
        "--git-dir", gitops, "log", "-1", f"--format=%H {trailer}", "main", "--", path
    ).partition(" ")
    return sha.strip(), delivery.strip()


def rewind_has_the_last_word(world: World, path: str, history: list[tuple[str, str, str]]) -> bool:
    """Whether a person's force-push changed `path` and no delivery has written it since (on the branch)."""
    return any(
        path in rewind.files
        and not any(
            d and sha != rewind.head and is_ancestor(world.gitops, rewind.head, sha) for sha, d, _ in history
        )
        for rewind in world.rewinds
    )


def later_writer(gitops: str, delivery: str, written: list[str], path: str) -> list[str]:
    """The commit whose content of `path` runs now, when it is not what the delivery's last write to it left
    there (and not the delivery's own); [] when that write's content runs, or the branch no longer holds it."""
    if not written or not is_ancestor(gitops, written[-1], "main"):
        return []
    same = subprocess.run(
        ["git", "--git-dir", gitops, "diff", "--quiet", written[-1], "main", "--", path], check=False
    )
    if same.returncode == 0:
        return []
    sha, writer = last_writer(gitops, path)
    return [] if writer == delivery else [sha]


def says_promoted(status: DeliveryStatus, target: str, step: str) -> bool:
    """Whether the delivery's status says the promotion made by its commit of `step` stands: the target's last
    stage ended promoted, or an earlier stage promoted it and the delivery did not roll that back."""
    stage, name, kind = split_step(step)
    state = status.targets.get(target)
    if state is None or name != target or kind != "promote":
        return False
    return (state.state == "promoted" and state.stage == stage) or stage in state.promoted_in


def is_ancestor(gitops: str, commit: str, of: str) -> bool:
    """Whether `commit` is `of` or in its history."""
    ran = subprocess.run(["git", "--git-dir", gitops, "merge-base", "--is-ancestor", commit, of], check=False)
    return ran.returncode == 0


def image_set_by(gitops: str, sha: str, path: str) -> str | None:
    """The image tag a (human's) commit set in `path`, None if it left the tag as it was (or is the seed)."""
    parents = git("--git-dir", gitops, "rev-list", "--parents", "-n", "1", sha).split()[1:]
    if not parents:
        return None
    tag = yaml.safe_load(show(gitops, sha, path))["image"]["tag"]
    return tag if tag != yaml.safe_load(show(gitops, parents[0], path))["image"]["tag"] else None


def rollbacks_that_do_not_restore(gitops: str, path: str, history: list[tuple[str, str, str]]) -> list[str]:
    """A delivery's rollback commit puts the file's release back as it was before the delivery's first write
    to it, with no canary on; a human's edit beside the canary since then stays (their pin of the image too).
    "Since" is by ancestry: a person's commit merged from a clone that was behind is dated before the canary
    and listed before it, and is still not in the history the delivery began from."""
    found = []
    for index, (sha, delivery, step) in enumerate(history):
        if not delivery or not step.endswith("/rollback"):
            continue
        first = next(position for position, (_, d, _) in enumerate(history) if d == delivery)
        began_from = f"{history[first][0]}~1"
        image = yaml.safe_load(show(gitops, began_from, path))["image"]
        for human, d, _ in history[:index]:
            if d or is_ancestor(gitops, human, began_from) or not is_ancestor(gitops, human, sha):
                continue
            if (pinned := image_set_by(gitops, human, path)) is not None:
                image = {**image, "tag": pinned}
        after = yaml.safe_load(show(gitops, sha, path))
        if after["image"] != image or after["canary"]["weight"] != 0:
            found.append(
                f"{path}: rollback {sha[:7]} of {delivery[-8:]} left image {after['image']} canary "
                f"{after['canary']}, where it should run {image}"
            )
    return found


def violations(world: World, statuses: dict[str, DeliveryStatus]) -> list[str]:
    found: list[str] = []
    order = [plan.delivery_id for plan in world.plans]  # start order: a later start is the newer delivery
    tags = {plan.delivery_id: plan.artifact_tag for plan in world.plans}
    branch = set(git("--git-dir", world.gitops, "rev-list", "main").split())
    rewound = {sha for rewind in world.rewinds for sha in rewind.dropped} - branch
    for delivery, status in statuses.items():
        dropped = set(status.commits()) - branch
        if set(status.off_branch) != dropped:
            found.append(
                f"{delivery[-8:]}: its status says {sorted(status.off_branch)} are no longer on the branch,"
                f" where Git says {sorted(dropped)}"
            )
        for target, state in status.targets.items():
            expected = later_writer(
                world.gitops, delivery, state.commits, APPS[world.app_of[delivery]][target]
            )
            shown = [commit.sha for commit in status.changed_since.get(target, [])]
            if shown != expected:
                found.append(
                    f"{delivery[-8:]} {target}: its status names {shown} as changing the file since its last"
                    f" write, where Git says {expected}"
                )
    for app, target, path in [(app, t, p) for app, files in APPS.items() for t, p in files.items()]:
        history = writes(world.gitops, path)
        strangers = {d for _, d, _ in history if d and world.app_of.get(d) != app}
        if strangers:
            found.append(f"{path}: written by deliveries of another app: {sorted(d[-8:] for d in strangers)}")
        history = [(sha, d, step) for sha, d, step in history if not d or world.app_of.get(d) == app]
        by_delivery = [(sha, d) for sha, d, _ in history if d]
        for index, (_, older) in enumerate(by_delivery):
            for _, newer in by_delivery[:index]:
                if order.index(newer) > order.index(older):
                    found.append(f"{path}: {older[-8:]} wrote after the newer {newer[-8:]}")
        for delivery, status in statuses.items():
            if world.app_of[delivery] != app:
                continue
            state = status.targets.get(target)
            reported = set(state.commits) if state else set()
            missing = reported - branch - rewound  # a person's force-push may drop what a delivery wrote
            if missing:
                found.append(f"{path}: {delivery[-8:]} reports commits not on the branch: {sorted(missing)}")
            unreported = {sha for sha, d, _ in history if d == delivery} - reported
            if unreported and state is not None:
                found.append(f"{path}: {delivery[-8:]} does not report its commits {sorted(unreported)}")
        found += rollbacks_that_do_not_restore(world.gitops, path, history)
        if rewind_has_the_last_word(world, path, history):
            continue  # what runs is what on-call forced the branch back to; no delivery wrote the file since
        # What should run: the release of the last promotion a delivery says stands, or of a human's pin after it.
        last, expected = None, "v0"
        for sha, d, step in history:
            if d and says_promoted(statuses[d], target, step):
                last, expected = d, tags[d]
            elif not d and (pinned := image_set_by(world.gitops, sha, path)) is not None:
                last, expected = None, pinned
        values = yaml.safe_load(show(world.gitops, "main", path))
        if values["image"]["tag"] != expected:
            owner = next((d for d, tag in tags.items() if tag == values["image"]["tag"]), None)
            said = statuses[owner].targets.get(target) if owner else None
            found.append(
                f"{path}: runs {values['image']['tag']} ("
                + (
                    f"{owner[-8:]} says {said.state if said else 'nothing'}: {said.message if said else ''}"
                    if owner
                    else "no delivery"
                )
                + f"), the last to say it promoted it is {last[-8:] if last else 'a human or none'} ({expected})"
            )
        if values["canary"]["weight"] != 0:
            found.append(f"{path}: a canary at weight {values['canary']['weight']} is left on")
        if world.argocd is not None and history and last_writer(world.gitops, path)[1]:
            # aicd wrote the file last: its Application runs that (no one syncs a human's commit here).
            application = world.application(app, target)
            synced = world.argocd.app(application)["status"]["sync"]["revision"]
            if (
                synced == NEVER_SYNCED["sync"]["revision"]
                or yaml.safe_load(show(world.gitops, synced, path)) != values
            ):
                found.append(f"{path}: {application} runs {synced[:7]}, not what aicd last wrote")
    return found


async def run_interleaving(
    client: Client, root: Path, seed: int, actions: int = 14, keep: Path | None = None
) -> tuple[list[str], World]:
    rng = random.Random(seed)
    concurrency = "queue" if seed % 3 == 2 else "supersede"
    layout = "stages" if seed % 2 == 0 else "waves"
    rollback_scope = ("stage", "release", "target")[seed % 4 % 3]
    queue = f"mix-{uuid.uuid4().hex[:10]}"
    world = World(root, client, queue, concurrency, rollback_scope, layout, rng, f"mix-{seed}-{queue[-6:]}")
    world.bug_rng = random.Random(f"bugs-{seed}")
    world.merge_rng = random.Random(f"merges-{seed}")
    world.rewind_rng = random.Random(f"rewinds-{seed}")
    with contextlib.ExitStack() as stack:
        if seed % 5 == 4:  # Argo CD targets: what runs is what each Application was last synced to
            world.argocd = stack.enter_context(KubeArgoCD())
        return await run_world(world, actions, keep or root)


async def run_world(world: World, actions: int, keep: Path) -> tuple[list[str], World]:
    client = world.client
    world.setup()
    await world.start_worker()
    try:
        await world.act(actions)
        try:
            statuses = await world.settle()
            for plan in world.plans:
                await handle_for(client, plan.delivery_id).result()
        except Exception as error:  # a delivery that cannot go on: is its history still the code's?
            unreplayable = await replay_failures(client, world.plans, keep, world.bug)
            raise AssertionError("\n".join([f"{type(error).__name__}: {error}", *unreplayable])) from error
        world.phases = [statuses[plan.delivery_id].phase for plan in world.plans]
        reader = GitOpsReader(cache=world.root / "mirrors")  # what `aicd status` and the dashboard read
        for status in statuses.values():
            await read_branch_since(client, status, reader)
            world.marked_off_branch += len(status.off_branch)
            world.marked_changed += len(status.changed_since)
        unreplayable = await replay_failures(client, world.plans, keep, world.bug)
    finally:
        await world.stop_worker()
    return violations(world, statuses) + unreplayable, world


async def replay_failures(
    client: Client, plans: list[DeliveryPlan], root: Path, bug: WorkflowBug | None = None
) -> list[str]:
    """Every run of every delivery and of its rollouts replays on the workflow code that ran it (with its bug);
    a history that does not is kept beside the run (`root/unreplayable-*.json`) and named."""
    replayer = Replayer(
        workflows=ALL_WORKFLOWS, workflow_runner=sandbox_runner(), interceptors=[bug] if bug else []
    )
    found = []
    for plan in plans:
        async for execution in client.list_workflows(f"WorkflowId STARTS_WITH '{plan.delivery_id}'"):
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            history = await handle.fetch_history()
            result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
            if result.replay_failure is not None:
                kept = root / f"unreplayable-{execution.id[-30:]}-{execution.run_id[-8:]}.json"
                kept.write_text(history.to_json())
                found.append(f"{execution.id} does not replay ({kept}): {result.replay_failure}")
    return found


async def test_a_target_in_two_stages_reports_the_commits_of_both(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The target's status and the delivery's result held only the last stage's commits: the first stage's
    canary commits were on the branch, owned by the delivery (its trailers), and reported nowhere."""
    source, revision = make_repo(tmp_path, "source", {"README": "r0\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"a.yaml": SEED_VALUES})
    steps = [{"setWeight": 10}, {"setWeight": 100}]
    document = spec_document(
        "two-stages",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [
            {"name": "canary", "targets": ["a"], "strategy": {"canary": {"steps": steps}}},
            {"name": "production", "targets": ["a"], "strategy": {"canary": {"steps": steps}}},
        ],
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "dev"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    on_branch = [sha for sha, delivery, _ in writes(gitops, "a.yaml") if delivery == plan.delivery_id]
    assert result.phase == "succeeded" and len(on_branch) == 6, on_branch  # 2 steps + promote, twice
    assert status.targets["a"].commits == on_branch
    assert result.commits == on_branch


async def on_branch(gitops: str, plan: DeliveryPlan, step: str) -> str:
    """The commit of `plan`'s `step` once it is on the GitOps branch (polled for a minute)."""
    for _ in range(600):
        for entry in commits(gitops):
            if entry.get("Aicd-Delivery-Id") == plan.delivery_id and entry.get("Aicd-Step") == step:
                return entry["sha"]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{step} of {plan.delivery_id} never reached the branch")


class LoseAStepsResult(Interceptor):
    """The worker running `step` (a trailer step's ending, `/promote`) of the release `revision` dies right after
    its push: the result never reaches Temporal. The retry runs once `may_retry` is set, after someone else wrote
    the file (seed 4 met this with worker restarts)."""

    def __init__(self, revision: str, step: str = "/promote") -> None:
        self.revision = revision
        self.step = step
        self.may_retry = asyncio.Event()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        lose = self

        class Losing(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                info = activity.info()
                commit = input.args[0].commit if info.activity_type == "apply_step" else None
                if commit is None or not (
                    commit.delivery.endswith(f"@{lose.revision}") and commit.step.endswith(lose.step)
                ):
                    return await super().execute_activity(input)
                if info.attempt == 1:
                    await super().execute_activity(input)
                    raise ApplicationError("the worker died after its push", type="WorkerLost")
                await lose.may_retry.wait()
                return await super().execute_activity(input)

        return Losing(next)


async def test_a_promotion_whose_result_was_lost_is_owned_up_to_after_a_newer_delivery_wrote(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A promote's push landed but its worker died before reporting it; a newer delivery then wrote the file,
    so the retry finds its commit on the branch and is refused. The delivery said `superseded` and never
    reported the commit, while its release was what ran: the newer delivery started from it, and its rollback
    put it back. Now the refusal names the landed commit, and the status says the promotion stands."""
    source, old_revision = make_repo(tmp_path, "source", {"README": "r0\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"a.yaml": SEED_VALUES})

    def plan_of(revision: str, steps: list[dict[str, Any]]) -> DeliveryPlan:
        document = spec_document(
            "landed",
            source,
            gitops,
            {"a": {"kind": "git", "path": "a.yaml"}},
            [{"name": "prod", "targets": ["a"], "strategy": {"canary": {"steps": steps}}}],
        )
        return plan_from(document, revision)

    old = plan_of(old_revision, [{"setWeight": 10}])
    lose = LoseAStepsResult(old_revision)
    client = temporal_env.client

    async with running_worker(client, tmp_path / "state", [lose]) as queue:
        await start_delivery(client, old, Trigger("cli", "dev"), queue=queue)
        promoted = await on_branch(gitops, old, "prod/a/promote")
        new_revision = human_commit(source, tmp_path, {"README": "r1\n"}, "r1")
        # The newer delivery writes without waiting for the older's withdrawal, as it does once
        # supersede_wait_s has passed: the older's retry is held until then.
        newer = dataclasses.replace(
            plan_of(new_revision, [{"setWeight": 10}, {"pause": {}}]), supersede_wait_s=0.0
        )
        await start_delivery(client, newer, Trigger("cli", "dev"), queue=queue)
        await on_branch(gitops, newer, "prod/a/0-setWeight")
        lose.may_retry.set()
        await handle_for(client, old.delivery_id).result()
        status = await get_status(client, old.delivery_id)
        await send_action(client, newer.delivery_id, "abort", HumanAction("oncall", "abort"))
        await handle_for(client, newer.delivery_id).result()
    history = await client.get_workflow_handle(f"{old.delivery_id}--prod--a").fetch_history()
    events = json.loads(history.to_json())["events"]
    assert any(REPORT_LANDED.encode() in patch for patch in patch_markers(events))  # it ran, and replays:
    assert await replay_failures(client, [old, newer], tmp_path) == []
    assert promoted in status.targets["a"].commits, status.targets["a"]
    assert says_promoted(status, "a", "prod/a/promote"), status.targets["a"]
    values = yaml.safe_load(show(gitops, "main", "a.yaml"))
    assert values["image"]["tag"] == old.artifact_tag and values["canary"]["weight"] == 0


async def test_a_canary_step_whose_result_was_lost_before_a_human_edit_is_owned_up_to_and_rolled_back(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A canary step's push landed but its worker died before reporting it; a human then scaled the app in the
    same file. The retry finds its commit and the human's after it: the rollout reports the commit and waits
    for a human; aborted, the rollback takes the canary back out around the human's scaling, and the status
    lists the landed commit and the rollback and says whose edits it kept."""
    source, revision = make_repo(tmp_path, "source", {"README": "r0\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"a.yaml": SEED_VALUES})
    document = spec_document(
        "lost",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [{"name": "prod", "targets": ["a"], "strategy": {"canary": {"steps": [{"setWeight": 10}]}}}],
    )
    plan = plan_from(document, revision)
    lose = LoseAStepsResult(revision, "/0-setWeight")
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state", [lose]) as queue:
        await start_delivery(client, plan, Trigger("cli", "dev"), queue=queue)
        landed = await on_branch(gitops, plan, "prod/a/0-setWeight")
        scaled = show(gitops, "main", "a.yaml").replace("replicas: 2", "replicas: 5")
        human_commit(gitops, tmp_path, {"a.yaml": scaled + "\n"}, "scale for the sale")
        lose.may_retry.set()
        waiting = await wait_for(
            client, plan.delivery_id, lambda s: s.targets["a"].state == "awaiting-resume"
        )
        assert landed in waiting.targets["a"].commits, waiting.targets["a"]
        await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "abort"))
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    assert await replay_failures(client, [plan], tmp_path) == []
    assert result.phase == "aborted", result.reason
    a = status.targets["a"]
    rollback = await on_branch(gitops, plan, "prod/a/rollback")
    assert a.state == "rolled-back" and a.commits == [landed, rollback], a
    assert "kept the edits to a.yaml" in a.message, a.message
    assert show(gitops, "main", "a.yaml") == SEED_VALUES.replace("replicas: 2", "replicas: 5").strip()


async def test_an_aborted_later_stage_says_the_earlier_stages_release_stands(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A target promoted in stage one, then aborted in stage two after a human took its file over: the abort
    leaves the file as it is, so the release promoted in stage one still runs, and the status says so (it
    said only `aborted`). A rollback that does restore the file says no release of this delivery stands."""
    source, revision = make_repo(tmp_path, "source", {"README": "r0\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"a.yaml": SEED_VALUES, "b.yaml": SEED_VALUES})
    document = spec_document(
        "stands",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}, "b": {"kind": "git", "path": "b.yaml"}},
        [
            {"name": "canary", "targets": ["a"], "strategy": {"canary": {"steps": [{"setWeight": 10}]}}},
            {
                "name": "production",
                "targets": ["a", "b"],
                "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": "2s"}, {"setWeight": 100}]}},
            },
        ],
        rollback={"scope": "stage"},
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "dev"), queue=queue)
        await wait_for(
            client,
            plan.delivery_id,
            lambda s: s.stage == "production" and s.targets["a"].step_kind == "pause",
        )
        killed = yaml.safe_load(show(gitops, "main", "a.yaml"))
        killed["canary"]["weight"] = 0  # on-call kills a's canary by hand: the file is theirs now
        human_commit(gitops, tmp_path, {"a.yaml": yaml.safe_dump(killed, sort_keys=False)}, "kill a's canary")
        await wait_for(client, plan.delivery_id, lambda s: s.targets["a"].state == "awaiting-resume")
        await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "abort"))
        await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    a, b = status.targets["a"], status.targets["b"]
    assert yaml.safe_load(show(gitops, "main", "a.yaml"))["image"]["tag"] == plan.artifact_tag
    assert "left a.yaml as it is" in a.message and a.state != "promoted"
    assert a.promoted_in == ["canary"]
    assert says_promoted(status, "a", "canary/a/promote")
    assert "(promoted in canary)" in status_text(status) and "(promoted in canary)" in describe_progress(a)
    nodes = {
        (view.name, node.name): node.state
        for view in stage_views(plan, status)
        for w in view.waves
        for node in w.nodes
    }
    assert nodes[("canary", "a")] == "promoted" and nodes[("production", "a")] == "aborted"
    # b's rollback put its file back to before the delivery: nothing of this delivery stands there.
    assert b.state == "rolled-back" and b.promoted_in == []
    assert yaml.safe_load(show(gitops, "main", "b.yaml"))["image"]["tag"] == "v0"


@pytest.mark.parametrize("seed", [1, 2, 4])  # 4: Argo CD targets
async def test_git_tells_the_truth_after_a_random_interleaving(
    temporal_env: WorkflowEnvironment, tmp_path: Path, seed: int
) -> None:
    found, world = await run_interleaving(temporal_env.client, tmp_path, seed)
    assert not found, "\n".join([*found, "what happened:", *world.log])
    assert len(world.plans) >= 2  # the seed made releases overlap


async def _main(first: int, last: int) -> None:
    import tempfile

    async with await start_dev_server() as env:
        for seed in range(first, last + 1):
            with tempfile.TemporaryDirectory() as root:
                try:
                    keep = Path(tempfile.gettempdir()) / "aicd-unreplayable"
                    keep.mkdir(exist_ok=True)
                    found, world = await run_interleaving(env.client, Path(root), seed, keep=keep)
                except AssertionError as stuck:
                    print(f"seed {seed}: STUCK {stuck}")
                    continue
                print(
                    f"seed {seed}: {len(world.plans)} deliveries, {world.human_commits} human commits "
                    f"({world.human_merges} merged), {len(world.rewinds)} rewinds "
                    f"(dropping {world.rewound_writes} deliveries' commits; "
                    f"{len(world.rewrites_seen)} deliveries paused on it, {world.marked_off_branch} commits"
                    f" shown off the branch by the statuses), {world.marked_changed} targets shown changed since, "
                    f"{world.restarts} restarts, "
                    f"{'OK' if not found else 'VIOLATIONS'} {' '.join(world.phases)}"
                )
                for line in found:
                    print("   ", line)
                if found:
                    for line in world.log:
                        print("      ", line)
                    for name in FILES:
                        print(f"       history of {name}:")
                        for sha, delivery, step in writes(world.gitops, name):
                            values = yaml.safe_load(show(world.gitops, sha, name))
                            print(f"         {sha[:7]} {delivery[-8:] or 'human':8} {step:28} {values}")


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), int(sys.argv[2])))
