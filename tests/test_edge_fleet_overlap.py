"""Git never lies with an edge fleet: a newer release of the app supersedes an older one whose fleet is part
way through its batches, and is then aborted itself. Real Temporal, real Git (see test_edge_fleet.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.messages import HumanAction, Trigger
from aicd.testing.engine import (
    assert_replays,
    commits,
    git,
    make_repo,
    plan_from,
    running_worker,
    spec_document,
    temporal_env,
    wait_for,
)
from tests.test_edge_fleet import PATH, SITE_VALUES, names, pops, raw_tree_diff, site_file
from tests.test_engine_overlap import new_release
from tests.test_git_truth_interleavings import writes

__all__ = ["temporal_env"]

# Each batch is followed by a long pause: the fleet waits there for the harness.
PAUSED = [{"pause": "600s"}, {"setWeight": 100}]


def fleet_document(source: str, gitops: str) -> dict[str, Any]:
    edge = {
        "kind": "edge",
        "sites": {"file": "fleets/edge.yaml"},
        "path": PATH,
        "batches": ["25%", "50%", "100%"],
    }
    stage = {"name": "edge", "targets": ["pops"], "strategy": {"canary": {"steps": PAUSED}}}
    return spec_document("web", source, gitops, {"pops": edge}, [stage])


def site_tags(gitops: str, sites: list[str]) -> dict[str, str]:
    """The image tag each site's file gives on the branch."""
    tags = {}
    for site in sites:
        text = git("--git-dir", gitops, "show", f"main:{site_file(site)}")
        tags[site] = next(line.split("tag:")[1].strip() for line in text.splitlines() if "tag:" in line)
    return tags


async def test_a_newer_release_supersedes_an_older_fleet_part_way_and_its_abort_restores_the_seed(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    sites = names(12)
    source, first = make_repo(tmp_path, "source", {"README": "web\n"})
    files = {site_file(site): SITE_VALUES.format(site=site) for site in sites}
    files["fleets/edge.yaml"] = "".join(f"- {site}\n" for site in sites)
    gitops, seed = make_repo(tmp_path, "gitops", files)
    old = plan_from(fleet_document(source, gitops), first)
    new = plan_from(fleet_document(source, gitops), new_release(tmp_path, source))
    client = temporal_env.client

    def in_first_pause(status: Any) -> bool:
        return len(pops(status).commits) >= 1 and pops(status).step_kind == "pause"

    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, old, Trigger("cli", "dev"), queue=queue)
        await wait_for(client, old.delivery_id, in_first_pause)
        assert site_tags(gitops, sites) == {
            site: old.artifact_tag if index < 3 else "v0" for index, site in enumerate(sites)
        }
        await start_delivery(client, new, Trigger("cli", "dev"), queue=queue)
        older = await handle_for(client, old.delivery_id).result()
        await wait_for(client, new.delivery_id, in_first_pause)
        # The older release is on no site: its batch went back before the newer one's batch moved the same sites.
        assert site_tags(gitops, sites) == {
            site: new.artifact_tag if index < 3 else "v0" for index, site in enumerate(sites)
        }
        await send_action(client, new.delivery_id, "abort", HumanAction("oncall", "edge alarms"))
        newer = await handle_for(client, new.delivery_id).result()
        statuses = [await get_status(client, plan.delivery_id) for plan in (old, new)]
        fleets = [f"{plan.delivery_id}--edge--pops" for plan in (old, new)]
        await assert_replays(client, [old.delivery_id, new.delivery_id])
        await assert_replays(client, fleets)
    assert older.phase == "superseded" and new.delivery_id in older.reason
    assert newer.phase == "aborted" and "edge alarms" in newer.reason
    assert raw_tree_diff(gitops, seed) == ""  # every site file byte for byte as seeded
    on_branch = {entry["sha"] for entry in commits(gitops)}
    for status, plan in zip(statuses, (old, new), strict=True):
        fleet = pops(status)
        assert fleet.state == "rolled-back", (plan.delivery_id, fleet.message)
        assert fleet.sites_by_state == {"rolled-back": 3, "pending": 9}, fleet.sites_by_state
        assert len(fleet.commits) == 2 and set(fleet.commits) <= on_branch  # its batch and its rollback

    def aicd_writers(site: str) -> list[str]:
        return [delivery for _, delivery, _ in writes(gitops, site_file(site)) if delivery]

    for site in sites[:3]:
        assert aicd_writers(site) == [old.delivery_id] * 2 + [new.delivery_id] * 2
    for site in sites[3:]:
        assert aicd_writers(site) == []
