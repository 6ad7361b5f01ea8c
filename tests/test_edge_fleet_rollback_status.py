"""A fleet after the delivery rolled it back: what `aicd status`, Slack and the dashboard say about its sites, and
what its sites run, must agree with Git, where every site the fleet moved is back on its previous version."""

from __future__ import annotations

import asyncio
from pathlib import Path
from unittest import mock

from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.dashboard.history import DeliveryDigest
from aicd.dashboard.views import fleet_grid, status_from_history
from aicd.fleet import FleetSlice, MovedSites, Site
from aicd.messages import HumanAction, Trigger, rollout_workflow_id
from aicd.slack_blocks import compact_status, delivery_message, describe_progress
from aicd.status_view import status_text
from aicd.testing.engine import (
    human_commit,
    plan_from,
    running_worker,
    show,
    temporal_env,
    wait_for,
)
from aicd.workflows.edge_fleet import EdgeFleetWorkflow
from tests.record_histories import BUG_IN_BATCH_2, FLEET_BUG, refused_fleet_checks
from tests.test_edge_fleet import (
    HealthServer,
    argocd_fleet,
    argocd_sites,
    delivery_commits,
    fleet_spec,
    names,
    pops,
    raw_tree_diff,
    site_file,
    synced_revisions,
)

__all__ = ["temporal_env"]


async def test_a_rolled_back_fleet_shows_no_site_on_the_release(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A fleet fails over its budget in batch 2 and the delivery rolls every site file back (Git: the branch
    equals the seed). The status counted 7 sites `updated` after that (`aicd status`: `rolled-back ... sites 20:
    failed 3, pending 10, updated 7`), so a reader believed 7 sites ran the release that Git - and the sites -
    no longer had. The 7 sites the fleet had moved are `rolled-back` now, in the status, `aicd status`, Slack
    and the dashboard's grid."""
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
            fleet_id = rollout_workflow_id(plan.delivery_id, "edge", "pops")
            fleet = await client.get_workflow_handle_for(EdgeFleetWorkflow.run, fleet_id).result()
    assert result.phase == "failed"
    assert raw_tree_diff(gitops, seed) == ""  # Git: no site runs the release
    # What a rollback syncs back (for an argocd fleet): the 10 sites of batches 1 and 2, the second run's
    # (continued as new after batch 1) committed before it failed.
    moved = fleet.moved_sites
    assert moved is not None and moved.fleet_sites is not None and moved.sites == []
    assert (moved.fleet_sites.start, moved.fleet_sites.end) == (0, 10)
    target = pops(status)
    assert target.state == "rolled-back"
    assert target.sites_by_state == {"rolled-back": 7, "failed": 3, "pending": 10}, status_text(status)
    assert "sites 20: rolled-back 7, failed 3, pending 10" in status_text(status)
    _, blocks = delivery_message(compact_status(status))
    assert "20 sites (7 rolled-back, 3 failed, 10 pending)" in str(blocks), blocks
    assert "updated" not in str(blocks) and "updated" not in describe_progress(target)
    grid = fleet_grid(target)
    assert grid.counts == [("rolled-back", 7), ("failed", 3), ("pending", 10)]
    assert grid.cells[:7] == ["rolled-back"] * 7 and "updated" not in grid.cells


async def test_a_rolled_back_argocd_fleet_syncs_its_sites_back(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """siteKind argocd: batch 1 (2 sites) is synced to the batch's commit, one site turns Degraded over
    maxFailures 0, and the delivery rolls the fleet back in Git. Nothing synced the sites' Applications to the
    rollback commit, so the healthy site of batch 1 kept running the release while Git (and the status:
    `rolled-back`) said the fleet was on its previous version. Now the rollback syncs the two sites the fleet
    moved - not the two it never touched - to the rollback commit, and names the one not healthy there (its
    values are broken at every revision)."""
    sites = names(4)
    document, gitops, seed, revision = fleet_spec(
        tmp_path,
        sites,
        batches=["50%", "100%"],
        maxFailures=0,
        progressDeadline="60s",
        **argocd_fleet(tmp_path),
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    with argocd_sites(tmp_path, gitops, sites, broken={sites[1]}) as argocd:
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
            status = await get_status(client, plan.delivery_id)
        synced = synced_revisions(argocd, sites)
    running = synced[sites[0]][-1]
    assert result.phase == "failed" and pops(status).state == "rolled-back"
    assert raw_tree_diff(gitops, seed) == ""  # Git: the fleet is back
    assert show(gitops, running, site_file(sites[0])) == show(gitops, seed, site_file(sites[0])), (
        f"web-{sites[0]} still runs {running[:7]}, the batch's commit"
    )
    batch, rollback = (entry["sha"] for entry in delivery_commits(gitops))
    assert synced == {sites[0]: [batch, rollback], sites[1]: [batch, rollback], sites[2]: [], sites[3]: []}
    message = pops(status).message
    assert f"not healthy after the rollback: {sites[1]} (" in message, message
    assert pops(status).sites_by_state == {"rolled-back": 1, "failed": 1, "pending": 2}


async def test_a_batch_whose_commit_failed_moved_no_site(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Batch 2's commit fails (a site file of that batch is not valid YAML: nothing of the batch reaches Git) and
    the delivery rolls back batch 1. The batch's sites were still counted `updating`, and the rollback then
    counted them `rolled-back` as if the fleet had moved them: 4 sites said to be put back where 2 ever left."""
    sites = names(4)
    document, gitops, _seed, revision = fleet_spec(tmp_path, sites, batches=["50%", "100%"])
    human_commit(
        gitops, tmp_path, {site_file(sites[3]): "image: [tag: v0\n"}, "break pop-0003"
    )  # unparseable
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    assert result.phase == "failed" and "batch-2" in result.reason, result.reason
    assert [entry["Aicd-Step"] for entry in delivery_commits(gitops)] == [
        "edge/pops/batch-1",
        "edge/pops/rollback",
    ]
    target = pops(status)
    assert target.state == "rolled-back"
    assert target.sites_by_state == {"rolled-back": 2, "pending": 2}, target.sites_by_state


async def test_a_fleet_that_fails_as_a_workflow_has_its_moved_sites_synced_back(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """siteKind argocd, a fleet file: batch 1 is synced to its commit; batch 2 is committed, its health check
    refused, and so is the read of its sites' names that would fail them by name (Git unreachable): the fleet
    failed as a workflow, with no result, so the delivery learnt of no site it had moved. Its rollback put every
    site file back in Git and synced none: batch 1's sites kept running the release. Now the fleet ends failed
    with the sites it moved, and the rollback syncs all four to the rollback commit."""
    sites = names(4)
    document, gitops, seed, revision = fleet_spec(
        tmp_path,
        sites,
        batches=["50%", "100%"],
        maxFailures=0,
        progressDeadline="60s",
        **argocd_fleet(tmp_path),
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    with argocd_sites(tmp_path, gitops, sites) as argocd:
        async with running_worker(client, tmp_path / "state", [refused_fleet_checks(2)]) as queue:
            await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
            status = await get_status(client, plan.delivery_id)
        synced = synced_revisions(argocd, sites)
    assert result.phase == "failed", result.reason
    assert result.reason == "pops: the fleet failed: Git is unreachable", result.reason
    assert raw_tree_diff(gitops, seed) == ""  # Git: the fleet is back
    batch1, _batch2, rollback = (entry["sha"] for entry in delivery_commits(gitops))
    assert synced == {
        sites[0]: [batch1, rollback],
        sites[1]: [batch1, rollback],
        sites[2]: [rollback],
        sites[3]: [rollback],
    }, f"batch 1's sites still run {batch1[:7]}, the release"
    target = pops(status)
    assert target.state == "rolled-back"
    assert target.sites_by_state == {"rolled-back": 4}, target.sites_by_state


async def test_a_bug_in_the_fleet_ends_it_failed_with_the_sites_it_moved(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """siteKind argocd, four sites in batches of 1, 1 and 2: batch 1 is synced to its commit, batch 2 is committed,
    and the fleet's code raises a plain Python exception as it starts checking batch 2 (a bug: no Temporal
    failure). Temporal failed the fleet's workflow task and retried it for ever: the delivery waited on its fleet
    until someone terminated it. Now the fleet ends failed with the two sites it moved, and the delivery's rollback
    puts their files back and syncs them - not the two sites never touched - to the rollback commit."""
    sites = names(4)
    document, gitops, seed, revision = fleet_spec(
        tmp_path, sites, batches=["25%", "50%", "100%"], progressDeadline="60s", **argocd_fleet(tmp_path)
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    with argocd_sites(tmp_path, gitops, sites) as argocd:
        async with running_worker(client, tmp_path / "state", [BUG_IN_BATCH_2]) as queue:
            await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
            # No one terminates anything: a fleet stuck on its bug leaves the delivery running past this.
            result = await asyncio.wait_for(handle_for(client, plan.delivery_id).result(), timeout=90)
            status = await get_status(client, plan.delivery_id)
            fleet_id = rollout_workflow_id(plan.delivery_id, "edge", "pops")
            fleet = await client.get_workflow_handle_for(EdgeFleetWorkflow.run, fleet_id).result()
        synced = synced_revisions(argocd, sites)
    assert fleet.outcome == "failed" and fleet.reason.startswith(
        f"the fleet failed on a bug: BugInWorkflow: {FLEET_BUG}"
    )
    assert result.phase == "failed" and "the fleet failed on a bug" in result.reason, result.reason
    assert fleet.moved_sites is not None and fleet.moved_sites.count == 2
    assert raw_tree_diff(gitops, seed) == ""  # Git: the fleet is back
    batch1, _batch2, rollback = (entry["sha"] for entry in delivery_commits(gitops))
    assert synced == {sites[0]: [batch1, rollback], sites[1]: [rollback], sites[2]: [], sites[3]: []}, synced
    target = pops(status)
    assert target.state == "rolled-back"
    assert target.sites_by_state == {"rolled-back": 2, "pending": 2}, target.sites_by_state


async def test_a_site_file_the_rollback_left_to_another_writer_is_not_counted_rolled_back(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Batch 1 moves two sites and waits for a human (`pause: {}`); meanwhile Alice sets one of them to another
    image tag by hand, and the delivery is aborted. Its rollback puts the other site back and leaves Alice's file
    as she wrote it, and says so - yet the fleet counted both sites `rolled-back`, one of them on a version no
    rollback gave it. Now it counts one `rolled-back` and one `left-as-is`: in the status, `aicd status`, Slack,
    and the dashboard's grid, live and read from the delivery's history."""
    sites = names(4)
    document, gitops, seed, revision = fleet_spec(
        tmp_path, sites, batches=["50%", "100%"], steps=[{"pause": {}}]
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda status: pops(status).state == "awaiting-resume")
        edited = show(gitops, "main", site_file(sites[0])) + "\n"
        hotfix = edited.replace(f"tag: {plan.artifact_tag}", "tag: hotfix")
        human_commit(gitops, tmp_path, {site_file(sites[0]): hotfix}, "hotfix")
        await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "enough"))
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
        history = await handle_for(client, plan.delivery_id).fetch_history()
    assert result.phase == "aborted", result.reason
    assert raw_tree_diff(gitops, seed).split() == [site_file(sites[0])]  # Alice's file, as she left it
    target = pops(status)
    assert target.state == "rolled-back" and f"left {site_file(sites[0])} as it is" in target.message
    assert target.sites_by_state == {"rolled-back": 1, "left-as-is": 1, "pending": 2}, target.sites_by_state
    assert "sites 4: rolled-back 1, left-as-is 1, pending 2" in status_text(status)
    _, blocks = delivery_message(compact_status(status))
    assert "4 sites (1 rolled-back, 1 left-as-is, 2 pending)" in str(blocks), blocks
    assert fleet_grid(target).cells == ["rolled-back", "left-as-is", "pending", "pending"]
    digest = DeliveryDigest()
    await digest.feed(history.events, DataConverter.default)
    from_history = status_from_history(digest, "").targets["pops"]
    assert from_history.sites_by_state == target.sites_by_state, from_history.sites_by_state


async def test_a_bug_in_making_the_fleets_result_still_ends_the_wait(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The bug of the test above, and a second one as the fleet names the sites it moved for its result: the
    fleet cannot make a result, so it fails as a workflow (a non-retryable ApplicationError), which at least ends
    the delivery's wait - whose rollback then syncs every site of the fleet, as for a terminated one - where the
    second bug failed the workflow task for ever."""
    real = MovedSites.of.__func__

    def of(cls: type[MovedSites], batch: list[Site] | FleetSlice) -> MovedSites:
        moved = real(cls, batch)
        if moved.count == 2:  # the fleet's two moved sites; the delivery asks for all four
            raise KeyError("a bug in naming the moved sites")
        return moved

    sites = names(4)
    document, gitops, seed, revision = fleet_spec(
        tmp_path, sites, batches=["25%", "50%", "100%"], progressDeadline="60s", **argocd_fleet(tmp_path)
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    # aicd.fleet is passed through the workflow sandbox: the fleet's code sees the patched class.
    with (
        argocd_sites(tmp_path, gitops, sites) as argocd,
        mock.patch.object(MovedSites, "of", classmethod(of)),
    ):
        async with running_worker(client, tmp_path / "state", [BUG_IN_BATCH_2]) as queue:
            await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
            result = await asyncio.wait_for(handle_for(client, plan.delivery_id).result(), timeout=90)
            status = await get_status(client, plan.delivery_id)
        synced = synced_revisions(argocd, sites)
    assert result.phase == "failed" and "the fleet failed on a bug" in result.reason, result.reason
    assert "a bug in naming the moved sites" in result.reason, result.reason
    assert raw_tree_diff(gitops, seed) == ""
    batch1, _batch2, rollback = (entry["sha"] for entry in delivery_commits(gitops))
    assert synced == {
        sites[0]: [batch1, rollback],
        sites[1]: [rollback],
        sites[2]: [rollback],
        sites[3]: [rollback],
    }, synced
    assert pops(status).state == "rolled-back"


async def test_a_left_failed_site_past_the_named_ones_stays_failed(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Batch 1 moves 30 sites, 25 of them fail within maxFailures and are restored, and the fleet waits for a
    human; Alice sets the image of a failed site and of an updated one by hand, and the delivery is aborted. The
    rollback leaves both files as Alice wrote them. The status names only the first 20 failed sites, so the
    failed site past them counted `left-as-is` - taken from the sites on the release - and the counts said 3
    sites rolled back and 2 left on it, where Git has 4 and 1. Now the rollback counts the left files the
    delivery had put back itself, and any number of failed sites counts right, live and from the history."""
    sites = names(60)
    failed, updated = sites[22], sites[27]
    with HealthServer().running() as health:
        health.broken = set(sites[:25])
        document, gitops, seed, revision = fleet_spec(
            tmp_path,
            sites,
            batches=["50%", "100%"],
            health=health.url,
            maxFailures=25,
            progressDeadline="1s",
            steps=[{"pause": {}}],
        )
        plan = plan_from(document, revision)
        client = temporal_env.client
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
            awaiting = await wait_for(
                client, plan.delivery_id, lambda status: pops(status).state == "awaiting-resume", timeout=60
            )
            assert pops(awaiting).sites_by_state == {"updated": 5, "failed": 25, "pending": 30}
            assert failed not in pops(awaiting).failed_sites  # past the names a status carries
            hotfixes = {
                site_file(site): (show(gitops, "main", site_file(site)) + "\n").replace(
                    f"tag: {tag}", "tag: hotfix"
                )
                for site, tag in ((failed, "v0"), (updated, plan.artifact_tag))
            }
            human_commit(gitops, tmp_path, hotfixes, "hotfix")
            await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "enough"))
            result = await handle_for(client, plan.delivery_id).result()
            status = await get_status(client, plan.delivery_id)
            history = await handle_for(client, plan.delivery_id).fetch_history()
    assert result.phase == "aborted", result.reason
    assert raw_tree_diff(gitops, seed).split() == sorted([site_file(failed), site_file(updated)])
    target = pops(status)
    assert f"left {site_file(failed)} as it is" in target.message, target.message
    expected = {"rolled-back": 4, "left-as-is": 1, "failed": 25, "pending": 30}
    assert target.sites_by_state == expected, target.sites_by_state
    digest = DeliveryDigest()
    await digest.feed(history.events, DataConverter.default)
    assert status_from_history(digest, "").targets["pops"].sites_by_state == expected


async def test_a_fleet_that_ended_without_a_result_has_every_site_synced_back(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """siteKind argocd: batch 1 moves two sites and waits for a human; an operator terminates the fleet (stuck on
    a bug, say). It ended with no result, so the delivery knew no site it had moved: its rollback put the files
    back in Git and synced none, and batch 1's sites kept running the release. Now a rollback of a fleet whose
    rollout ended without a result syncs every site of the fleet to the rollback commit."""
    sites = names(4)
    document, gitops, seed, revision = fleet_spec(
        tmp_path, sites, batches=["50%", "100%"], steps=[{"pause": {}}], **argocd_fleet(tmp_path)
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    with argocd_sites(tmp_path, gitops, sites) as argocd:
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
            await wait_for(client, plan.delivery_id, lambda status: pops(status).state == "awaiting-resume")
            fleet_id = rollout_workflow_id(plan.delivery_id, "edge", "pops")
            await client.get_workflow_handle(fleet_id).terminate("stuck")
            result = await handle_for(client, plan.delivery_id).result()
            status = await get_status(client, plan.delivery_id)
        synced = synced_revisions(argocd, sites)
    assert result.phase == "failed", result.reason
    assert raw_tree_diff(gitops, seed) == ""  # Git: the fleet is back
    batch1, rollback = (entry["sha"] for entry in delivery_commits(gitops))
    assert synced == {
        sites[0]: [batch1, rollback],
        sites[1]: [batch1, rollback],
        sites[2]: [rollback],
        sites[3]: [rollback],
    }, f"batch 1's sites still run {batch1[:7]}, the release"
    assert pops(status).state == "rolled-back", pops(status)
