"""Edge fleets end to end: DeliveryWorkflow -> EdgeFleetWorkflow on a real Temporal dev server, real bare Git
repos, and site health endpoints served on loopback (a fleet file may list one per site)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.messages import DeliveryStatus, HumanAction, TargetStatus, Trigger
from aicd.testing.engine import (
    commits,
    git,
    make_repo,
    plan_from,
    running_worker,
    spec_document,
    start_dev_server,
    temporal_env,
    wait_for,
)
from aicd.testing.standins.kube_argocd import KubeArgoCD
from aicd.workflows.edge_fleet import EdgeFleetWorkflow
from aicd.workflows.registry import ALL_WORKFLOWS, sandbox_runner

__all__ = ["temporal_env"]

SITE_VALUES = (
    "# edge values for {site}\nimage:\n  repository: example/web  # keep me\n  tag: v0\nregion: {site}\n"
)
PATH = "apps/web/edge/{{ site }}/values.yaml"
HISTORY_WARNING = 10_240


def site_file(site: str) -> str:
    return f"apps/web/edge/{site}/values.yaml"


def names(count: int) -> list[str]:
    return [f"pop-{index:04d}" for index in range(count)]


class Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 drops connections when 50 sites are checked at once
    daemon_threads = True


class HealthServer:
    """Each site's health endpoint: 200, or 503 for the sites in `broken`."""

    def __init__(self) -> None:
        self.broken: set[str] = set()
        self.hits: dict[str, int] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site = self.path.rstrip("/").rsplit("/", 1)[-1]
                owner.hits[site] = owner.hits.get(site, 0) + 1
                self.send_response(503 if site in owner.broken else 200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[HealthServer]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def fleet_spec(
    tmp_path: Path,
    sites: list[str],
    *,
    batches: list[str],
    health: str | None = None,
    steps: list[dict[str, Any]] | None = None,
    **target: Any,
) -> tuple[dict[str, Any], str, str, str]:
    """(spec document, gitops repo, seed commit, source revision) of an app with one edge fleet."""
    source, revision = make_repo(tmp_path, "source", {"README": "web\n"})
    if health:
        fleet = "".join(f"- {{name: {site}, health: '{health}/healthz/{site}'}}\n" for site in sites)
    else:
        fleet = "".join(f"- {site}\n" for site in sites)
    files = {site_file(site): SITE_VALUES.format(site=site) for site in sites}
    files["fleets/edge.yaml"] = "# the edge PoPs\n" + fleet
    files["apps/web/central/values.yaml"] = "image: {tag: v0}\n"
    gitops, seed = make_repo(tmp_path, "gitops", files)
    edge = {"kind": "edge", "sites": {"file": "fleets/edge.yaml"}, "path": PATH, "batches": batches, **target}
    stage: dict[str, Any] = {"name": "edge", "targets": ["pops"]}
    if steps:
        stage["strategy"] = {"canary": {"steps": steps}}
    document = spec_document("web", source, gitops, {"pops": edge}, [stage])
    return document, gitops, seed, revision


def argocd_fleet(tmp_path: Path) -> dict[str, str]:
    """The keys of a fleet of Argo CD sites: each site an Application named as an ApplicationSet names them
    (`web-{{ site }}`), in the stand-in that `argocd_sites` starts."""
    return {
        "siteKind": "argocd",
        "app": "web-{{ site }}",
        "context": "edge",
        "kubeconfig": str(tmp_path / "kubeconfig"),
    }


@contextmanager
def argocd_sites(
    tmp_path: Path, gitops: str, sites: list[str], broken: set[str] | None = None
) -> Iterator[KubeArgoCD]:
    """The Argo CD stand-in with an Application per site of an `argocd_fleet`; a `broken` site's values (which
    say `region: <site>`) are Degraded at every revision."""
    with KubeArgoCD(bookmark_interval_s=0.5) as argocd:
        argocd.write_kubeconfig(tmp_path / "kubeconfig", context="edge")
        argocd.broken_tags = set(broken or ())
        for site in sites:
            argocd.create_app(f"web-{site}", repo=gitops, path=f"apps/web/edge/{site}")
        yield argocd


def synced_revisions(argocd: KubeArgoCD, sites: list[str]) -> dict[str, list[str]]:
    """The revisions each site's Application was synced to, in order."""
    return {site: [record.revision for record in argocd.syncs(f"web-{site}")] for site in sites}


def delivery_commits(gitops: str) -> list[dict[str, str]]:
    return [entry for entry in commits(gitops) if "Aicd-Step" in entry]


def changed_files(gitops: str, sha: str) -> list[str]:
    return git("--git-dir", gitops, "show", "--format=", "--name-only", sha).split()


def raw_tree_diff(gitops: str, seed: str) -> str:
    """Names of files that differ between the seed commit and the branch head (byte for byte)."""
    return git("--git-dir", gitops, "diff", "--name-only", seed, "main")


def pops(status: DeliveryStatus) -> TargetStatus:
    return status.targets.get("pops") or TargetStatus("pops", "edge", "edge")


async def all_runs(client: Client, delivery_id: str) -> dict[tuple[str, str], int]:
    """History length of every workflow run of the delivery (the fleet's continued runs included)."""
    lengths = {}
    async for execution in client.list_workflows(f"WorkflowId STARTS_WITH '{delivery_id}'"):
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        lengths[(execution.id, execution.run_id)] = len(history.events)
    return lengths


async def test_fleet_from_file_one_commit_per_batch(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    sites = names(40)
    document, gitops, _seed, revision = fleet_spec(tmp_path, sites, batches=["10%", "50%", "100%"])
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
        runs = await all_runs(client, plan.delivery_id)
    assert result.phase == "succeeded", result.reason
    log = delivery_commits(gitops)
    assert [entry["Aicd-Step"] for entry in log] == [
        "edge/pops/batch-1",
        "edge/pops/batch-2",
        "edge/pops/batch-3",
    ]
    assert {entry["Aicd-Delivery"] for entry in log} == {f"web@{revision}"}
    assert log[0]["subject"] == f"aicd: web {revision[:7]} pops batch 1/3 (4 sites)"
    # Each batch is one commit touching exactly its sites, in fleet order: 4, 16, 20.
    expected = [sites[:4], sites[4:20], sites[20:]]
    for entry, batch in zip(log, expected, strict=True):
        assert sorted(changed_files(gitops, entry["sha"])) == sorted(site_file(site) for site in batch)
    for site in sites:
        values = git("--git-dir", gitops, "show", f"main:{site_file(site)}")
        assert f"tag: {plan.artifact_tag}" in values and "# keep me" in values and f"region: {site}" in values
    assert git("--git-dir", gitops, "show", "main:apps/web/central/values.yaml") == "image: {tag: v0}"
    target = pops(status)
    assert target.state == "promoted" and target.sites_total == 40
    assert target.sites_by_state == {"updated": 40} and target.failed_sites == []
    assert target.commits == [entry["sha"] for entry in log] == result.commits
    fleet_runs = [key for key in runs if key[0].endswith("--edge--pops")]
    assert len(fleet_runs) == 3  # one run per batch: continue-as-new after every batch


async def test_failures_within_budget_stay_on_previous_version(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    sites = names(20)
    with HealthServer().running() as health:
        health.broken = {"pop-0003", "pop-0012"}
        document, gitops, seed, revision = fleet_spec(
            tmp_path,
            sites,
            batches=["25%", "100%"],
            health=health.url,
            maxFailures="10%",
            progressDeadline="1s",
        )
        plan = plan_from(document, revision)
        client = temporal_env.client
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
            status = await get_status(client, plan.delivery_id)
    assert result.phase == "succeeded", result.reason
    assert set(health.hits) == set(sites)  # every site's health endpoint was asked
    steps = [entry["Aicd-Step"] for entry in delivery_commits(gitops)]
    assert steps == [
        "edge/pops/batch-1",
        "edge/pops/batch-1-restore",
        "edge/pops/batch-2",
        "edge/pops/batch-2-restore",
    ]
    # The failed sites are back on their files from before the delivery, byte for byte; the rest moved.
    assert raw_tree_diff(gitops, seed).split() == sorted(
        site_file(s) for s in sites if s not in health.broken
    )
    target = pops(status)
    assert target.state == "promoted"
    assert target.failed_sites == ["pop-0003", "pop-0012"]
    assert target.sites_by_state == {"updated": 18, "failed": 2}
    assert "pop-0003, pop-0012" in target.message and "stay on the previous version" in target.message
    restore = delivery_commits(gitops)[1]
    assert changed_files(gitops, restore["sha"]) == [site_file("pop-0003")]


async def test_over_budget_fails_and_the_delivery_rolls_back_every_site(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    sites = names(20)
    with HealthServer().running() as health:
        health.broken = {"pop-0006", "pop-0008", "pop-0009"}
        document, gitops, seed, revision = fleet_spec(
            tmp_path,
            sites,
            batches=["25%", "50%", "100%"],
            health=health.url,
            maxFailures=1,
            progressDeadline="1s",
        )
        plan = plan_from(document, revision)
        client = temporal_env.client
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
            status = await get_status(client, plan.delivery_id)
    assert result.phase == "failed"
    assert "more than maxFailures 1" in result.reason and "pop-0006 (health" in result.reason
    steps = [entry["Aicd-Step"] for entry in delivery_commits(gitops)]
    assert steps == ["edge/pops/batch-1", "edge/pops/batch-2", "edge/pops/rollback"]  # batch 3 never started
    assert raw_tree_diff(gitops, seed) == ""  # every touched site file restored byte for byte
    rollback = delivery_commits(gitops)[-1]
    assert sorted(changed_files(gitops, rollback["sha"])) == sorted(site_file(site) for site in sites[:10])
    assert pops(status).state == "rolled-back"


async def test_pause_and_abort_reach_a_fleet_that_continued_as_new(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    sites = names(30)
    document, gitops, seed, revision = fleet_spec(
        tmp_path, sites, batches=["10%", "40%", "70%", "100%"], steps=[{"pause": "2s"}, {"setWeight": 100}]
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    fleet_id = f"{plan.delivery_id}--edge--pops"
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await wait_for(
            client, plan.delivery_id, lambda s: len(pops(s).commits) == 2 and pops(s).step_kind == "pause"
        )
        described = await client.get_workflow_handle(fleet_id).describe()
        assert (
            described.run_id != described.raw_description.workflow_execution_info.first_run_id
        )  # a later run
        await send_action(client, plan.delivery_id, "pause", HumanAction("oncall", "edge alarms"))
        await wait_for(client, plan.delivery_id, lambda s: pops(s).state == "paused")
        current = await client.get_workflow_handle(fleet_id).query(EdgeFleetWorkflow.current)
        assert current.state == "paused" and "edge alarms" in current.message
        await asyncio.sleep(2.5)  # longer than the pause step: a running fleet would have committed batch 3
        assert len(delivery_commits(gitops)) == 2
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))
        await wait_for(client, plan.delivery_id, lambda s: len(pops(s).commits) == 3)
        batch_three = delivery_commits(gitops)[2]
        assert batch_three["Aicd-Step"] == "edge/pops/batch-3" and batch_three["Aicd-Actor"] == "oncall"
        await send_action(client, plan.delivery_id, "abort", HumanAction("carol", "roll it back"))
        result = await handle_for(client, plan.delivery_id).result()
        histories = [
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
            async for execution in client.list_workflows(f"WorkflowId = '{fleet_id}'")
        ]
    assert result.phase == "aborted" and "roll it back" in result.reason
    steps = [entry["Aicd-Step"] for entry in delivery_commits(gitops)]
    assert steps == ["edge/pops/batch-1", "edge/pops/batch-2", "edge/pops/batch-3", "edge/pops/rollback"]
    assert delivery_commits(gitops)[-1]["Aicd-Actor"] == "carol"
    assert raw_tree_diff(gitops, seed) == ""
    # Batches 1, 2 and 3 each had their run. An abort that reaches the fleet only after batch 3's 2 s pause (a
    # loaded machine) finds it already in the run for batch 4, which committed nothing (the steps above).
    assert len(histories) in (3, 4), len(histories)
    replayer = Replayer(workflows=ALL_WORKFLOWS, workflow_runner=sandbox_runner())
    for history in histories:  # deterministic: every run replays on the current code
        await replayer.replay_workflow(history)


async def test_an_abort_during_the_health_checks_cancels_them_and_schedules_nothing_more(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A cancelled chunk check is not a failed one: it reads no site names, which after an abort would land in
    the task that completes the fleet's workflow (Core: invalid command sequence, the task failed)."""
    sites = names(6)
    with HealthServer().running() as health:
        health.broken = set(sites)  # never healthy: the checks run until the abort cancels them
        document, gitops, seed, revision = fleet_spec(
            tmp_path, sites, batches=["100%"], health=health.url, progressDeadline="5m"
        )
        plan = plan_from(document, revision)
        client = temporal_env.client
        fleet_id = f"{plan.delivery_id}--edge--pops"
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
            await wait_for(client, plan.delivery_id, lambda s: len(pops(s).commits) == 1)
            while not set(sites) <= set(health.hits):
                await asyncio.sleep(0.1)
            await send_action(client, plan.delivery_id, "abort", HumanAction("carol", "edge alarms"))
            # Before the fix, the fleet's completing task failed again at every attempt: the delivery never ended.
            result = await asyncio.wait_for(handle_for(client, plan.delivery_id).result(), 120)
            histories = [
                await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
                async for execution in client.list_workflows(f"WorkflowId = '{fleet_id}'")
            ]
    assert result.phase == "aborted" and raw_tree_diff(gitops, seed) == ""
    events = [event for history in histories for event in history.events]
    kinds = [event.WhichOneof("attributes") for event in events]
    assert "activity_task_cancel_requested_event_attributes" in kinds
    failed = [
        event.workflow_task_failed_event_attributes
        for event in events
        if event.HasField("workflow_task_failed_event_attributes")
    ]
    assert failed == [], failed
    scheduled = [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in events
        if event.HasField("activity_task_scheduled_event_attributes")
    ]
    assert "gitops_read_fleet_names" not in scheduled, scheduled
    replayer = Replayer(workflows=ALL_WORKFLOWS, workflow_runner=sandbox_runner())
    for history in histories:  # the patched branch replays on the current code
        await replayer.replay_workflow(history)


async def test_two_thousand_sites_keep_every_history_small(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    sites = names(2_000)
    document, gitops, seed, revision = fleet_spec(
        tmp_path, sites, batches=["1%", "10%", "50%", "100%"], maxFailures="1%"
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
        runs = await all_runs(client, plan.delivery_id)
    assert result.phase == "succeeded", result.reason
    assert [entry["Aicd-Step"] for entry in delivery_commits(gitops)] == [
        f"edge/pops/batch-{n}" for n in (1, 2, 3, 4)
    ]
    assert len(raw_tree_diff(gitops, seed).split()) == 2_000
    assert pops(status).sites_by_state == {"updated": 2_000}
    assert len(runs) == 5  # the delivery and four fleet runs
    assert max(runs.values()) < HISTORY_WARNING, runs
    assert max(runs.values()) < 300, runs  # far below: a batch costs a handful of events whatever its size


async def test_argocd_sites_sync_their_own_application(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """siteKind argocd: each site is an Application named as an ApplicationSet names them (`web-{{ site }}`),
    synced to its batch's commit through the argocd driver; a site that turns Degraded fails alone."""
    sites = names(6)
    broken = sites[4]
    document, gitops, seed, revision = fleet_spec(
        tmp_path,
        sites,
        batches=["50%", "100%"],
        maxFailures=1,
        progressDeadline="20s",
        **argocd_fleet(tmp_path),
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    with argocd_sites(tmp_path, gitops, sites, broken={broken}) as argocd:
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
            status = await get_status(client, plan.delivery_id)
        synced = synced_revisions(argocd, sites)
    assert result.phase == "succeeded", result.reason
    log = delivery_commits(gitops)
    assert [entry["Aicd-Step"] for entry in log] == [
        "edge/pops/batch-1",
        "edge/pops/batch-2",
        "edge/pops/batch-2-restore",
    ]
    assert synced == {
        site: [log[0 if index < 3 else 1]["sha"]] + ([log[2]["sha"]] if site == broken else [])
        for index, site in enumerate(sites)
    }  # one sync each; the failed site a second one, back to its restore commit
    target = pops(status)
    assert target.sites_by_state == {"updated": 5, "failed": 1} and target.failed_sites == [broken]
    assert raw_tree_diff(gitops, seed).split() == sorted(site_file(site) for site in sites if site != broken)


async def test_a_failed_argocd_site_is_synced_back_to_its_restore_commit(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """siteKind argocd, a site fails within maxFailures: the fleet restores its file in Git (`batch-1-restore`)
    and the status says it stays on the previous version. Its Application, though, was last synced to the
    batch's commit and nothing synced it again - Argo CD syncs what aicd asks - so it kept running the release
    that Git and the status say it no longer has. The restore must reach the site: its Application ends synced
    to the restore commit, at which its file is the one from before the delivery."""
    sites = names(4)
    broken = sites[1]
    document, gitops, seed, revision = fleet_spec(
        tmp_path,
        sites,
        batches=["100%"],
        maxFailures=1,
        progressDeadline="60s",
        **argocd_fleet(tmp_path),
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    with argocd_sites(tmp_path, gitops, sites, broken={broken}) as argocd:
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
        running = argocd.syncs(f"web-{broken}")[-1].revision
    assert result.phase == "succeeded", result.reason
    steps = [entry["Aicd-Step"] for entry in delivery_commits(gitops)]
    assert steps == ["edge/pops/batch-1", "edge/pops/batch-1-restore"]
    restore = delivery_commits(gitops)[1]["sha"]
    assert running == restore, "the failed site still runs the batch's commit"
    assert git("--git-dir", gitops, "show", f"{running}:{site_file(broken)}") == git(
        "--git-dir", gitops, "show", f"{seed}:{site_file(broken)}"
    )


PAYLOAD_LIMIT = 64 * 1024  # this test's server refuses payloads over 64 KB (Temporal's default: 2 MB)


async def test_a_fleet_file_larger_than_the_payload_limit_never_travels_through_history(
    tmp_path: Path,
) -> None:
    """A fleet file over Temporal's payload limit (here lowered to 64 KB, so a fleet of 2,500 sites stands
    for one of 200,000) rolls out: the workflow holds the file's commit and size, and the activities read the
    sites - names and health URLs - from Git. A site whose health URL fails is restored by name."""
    health = HealthServer()
    sites = names(2_500)
    health.broken = {sites[1_800]}
    document, gitops, seed, revision = fleet_spec(
        tmp_path, sites, batches=["10%", "100%"], health=health.url, maxFailures="1%", progressDeadline="1s"
    )
    fleet_bytes = len(git("--git-dir", gitops, "show", "main:fleets/edge.yaml"))
    assert fleet_bytes > 2 * PAYLOAD_LIMIT, fleet_bytes
    plan = plan_from(document, revision)
    limits = [f"limit.blobSize.error={PAYLOAD_LIMIT}", f"limit.blobSize.warn={PAYLOAD_LIMIT // 2}"]
    env = await start_dev_server(limits)
    try:
        client = env.client
        with pytest.raises(RPCError, match=r"(?i)size"):  # the limit is in force on this server
            await client.start_workflow(
                "NoSuchWorkflow", "x" * PAYLOAD_LIMIT, id="too-big", task_queue="none"
            )
        with health.running():
            async with running_worker(client, tmp_path / "state") as queue:
                await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
                result = await handle_for(client, plan.delivery_id).result()
                status = await get_status(client, plan.delivery_id)
        # Every run of the fleet (the branch that reads the file by reference) replays deterministically.
        replayer = Replayer(workflows=ALL_WORKFLOWS, workflow_runner=sandbox_runner())
        async for execution in client.list_workflows(f"WorkflowId STARTS_WITH '{plan.delivery_id}'"):
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            await replayer.replay_workflow(await handle.fetch_history())
    finally:
        await env.shutdown()
    assert result.phase == "succeeded", result.reason
    assert [entry["Aicd-Step"] for entry in delivery_commits(gitops)] == [
        "edge/pops/batch-1",
        "edge/pops/batch-2",
        "edge/pops/batch-2-restore",
    ]
    changed = set(raw_tree_diff(gitops, seed).split())
    assert len(changed) == 2_499 and site_file(sites[1_800]) not in changed
    assert pops(status).sites_by_state == {"updated": 2_499, "failed": 1}
    assert pops(status).failed_sites == [sites[1_800]]
    assert len(health.hits) == 2_500  # every site's health URL, read from the file by the activities
