"""Argo CD targets end to end through the unchanged production code: a delivery across two regions, each
region's Argo CD a loopback Kubernetes API stand-in reached through its own kubeconfig context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from aicd.argocd_manifests import render_applications
from aicd.client import get_status, handle_for, start_delivery
from aicd.messages import Trigger
from tests.helpers_engine import (
    commits,
    make_repo,
    plan_from,
    running_worker,
    show,
    spec_document,
    temporal_env,
)
from tests.standins.kube_argocd import KubeArgoCD, write_kubeconfig

__all__ = ["temporal_env"]

SEED = "# {region}\nimage:\n  tag: v0\ncanary:\n  weight: 0\n"
REGIONS = {"prod-use1": "us-east-1", "prod-euw1": "eu-west-1"}


@pytest.fixture
def clusters() -> Iterator[dict[str, KubeArgoCD]]:
    with KubeArgoCD(bookmark_interval_s=0.5) as use1, KubeArgoCD(bookmark_interval_s=0.5) as euw1:
        yield {"prod-use1": use1, "prod-euw1": euw1}


def two_region_delivery(tmp_path: Path, clusters: dict[str, KubeArgoCD], scope: str = "stage") -> tuple[dict, str, str]:
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    files = {f"apps/shop/{region}/values.yaml": SEED.format(region=region) for region in REGIONS.values()}
    gitops, _ = make_repo(tmp_path, "gitops", files)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", clusters)
    targets = {
        name: {"kind": "argocd", "region": region, "app": f"shop-{name}", "context": name,
               "kubeconfig": str(kubeconfig), "path": f"apps/shop/{region}/values.yaml", "progressDeadline": "30s"}
        for name, region in REGIONS.items()
    }
    for name, manifest in zip(REGIONS, render_applications("shop", gitops, "main", targets), strict=True):
        stale = {"sync": {"status": "Synced", "revision": "0" * 40}, "health": {"status": "Healthy"},
                 "reconciledAt": "2020-01-01T00:00:00Z"}
        clusters[name].add_application(manifest, status=stale)
    document = spec_document(
        "shop", source, gitops, targets,
        [{"name": "production", "waves": [["prod-use1"], ["prod-euw1"]],
          "strategy": {"canary": {"steps": [{"setWeight": 20}, {"setWeight": 100}]}}}],
        rollback={"scope": scope},
    )
    return document, gitops, revision


async def test_two_regions_each_app_synced_once_per_committed_step(
    temporal_env: WorkflowEnvironment, clusters: dict[str, KubeArgoCD], tmp_path: Path
) -> None:
    document, gitops, revision = two_region_delivery(tmp_path, clusters)
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "succeeded", result.reason
    log = [entry for entry in commits(gitops) if "Aicd-Step" in entry]
    for name, cluster in clusters.items():
        committed = [entry["sha"] for entry in log if entry["Aicd-Step"].startswith(f"production/{name}/")]
        synced = [record.revision for record in cluster.syncs(f"shop-{name}")]
        assert len(committed) == 3 and synced == committed  # setWeight 20, setWeight 100, promote
        steps = [record.info.get("aicd-step") for record in cluster.syncs(f"shop-{name}")]
        assert steps == [f"production/{name}/0-setWeight", f"production/{name}/1-setWeight", f"production/{name}/promote"]
        app = cluster.app(f"shop-{name}")
        assert app["status"]["health"]["status"] == "Healthy" and app["status"]["sync"]["revision"] == committed[-1]
    assert min(r.at for r in clusters["prod-euw1"].syncs("shop-prod-euw1")) > max(
        r.at for r in clusters["prod-use1"].syncs("shop-prod-use1"))  # waves in order


async def test_degraded_second_region_rolls_back_both_regions(
    temporal_env: WorkflowEnvironment, clusters: dict[str, KubeArgoCD], tmp_path: Path
) -> None:
    document, gitops, revision = two_region_delivery(tmp_path, clusters, scope="stage")
    plan = plan_from(document, revision)
    clusters["prod-euw1"].broken_tags = {plan.artifact_tag}  # the release crash-loops in eu-west-1 only
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    assert result.phase == "failed" and "prod-euw1" in result.reason and "Degraded" in result.reason
    log = [entry for entry in commits(gitops) if "Aicd-Step" in entry]
    rollbacks = {entry["Aicd-Step"]: entry["sha"] for entry in log if entry["Aicd-Step"].endswith("/rollback")}
    assert set(rollbacks) == {"production/prod-use1/rollback", "production/prod-euw1/rollback"}
    for name, region in REGIONS.items():
        path = f"apps/shop/{region}/values.yaml"
        assert show(gitops, "main", path) == SEED.format(region=region).rstrip("\n")  # Git tells the truth
        app = clusters[name].app(f"shop-{name}")
        assert app["status"]["sync"]["revision"] == rollbacks[f"production/{name}/rollback"]
        assert app["status"]["health"]["status"] == "Healthy"  # back on the pre-delivery values
        assert status.targets[name].state == "rolled-back"
    assert not any(entry["Aicd-Step"] == "production/prod-euw1/promote" for entry in log)


async def test_target_scope_rolls_back_only_the_failed_region(
    temporal_env: WorkflowEnvironment, clusters: dict[str, KubeArgoCD], tmp_path: Path
) -> None:
    document, gitops, revision = two_region_delivery(tmp_path, clusters, scope="target")
    plan = plan_from(document, revision)
    clusters["prod-euw1"].broken_tags = {plan.artifact_tag}
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "failed"
    steps = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
    assert "production/prod-euw1/rollback" in steps and "production/prod-use1/rollback" not in steps
    assert f"tag: {plan.artifact_tag}" in show(gitops, "main", "apps/shop/us-east-1/values.yaml")


async def test_release_scope_rolls_back_earlier_stages_too(
    temporal_env: WorkflowEnvironment, clusters: dict[str, KubeArgoCD], tmp_path: Path
) -> None:
    document, gitops, revision = two_region_delivery(tmp_path, clusters, scope="release")
    spec = document["spec"]
    spec["stages"] = [
        {"name": "staging", "targets": ["prod-use1"]},
        {"name": "production", "targets": ["prod-euw1"]},
    ]
    plan = plan_from(document, revision)
    clusters["prod-euw1"].broken_tags = {plan.artifact_tag}
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "failed"
    steps = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
    assert steps[-2:] == ["production/prod-euw1/rollback", "staging/prod-use1/rollback"]  # newest stage first
    for region in REGIONS.values():
        assert show(gitops, "main", f"apps/shop/{region}/values.yaml") == SEED.format(region=region).rstrip("\n")
