"""Argo CD targets end to end through the unchanged production code: a delivery across two regions, each
region's Argo CD a loopback Kubernetes API stand-in reached through its own kubeconfig context."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from aicd.argocd_manifests import GitOpsTree, render_applications
from aicd.client import get_status, handle_for, start_delivery
from aicd.messages import Trigger
from aicd.testing.engine import (
    commits,
    git,
    make_repo,
    plan_from,
    running_worker,
    show,
    spec_document,
    temporal_env,
)
from aicd.testing.standins.kube_argocd import KubeArgoCD, write_kubeconfig

__all__ = ["temporal_env"]

SEED = "# {region}\nimage:\n  tag: v0\ncanary:\n  weight: 0\n"
REGIONS = {"prod-use1": "us-east-1", "prod-euw1": "eu-west-1"}


@pytest.fixture
def clusters() -> Iterator[dict[str, KubeArgoCD]]:
    with KubeArgoCD() as use1, KubeArgoCD() as euw1:
        yield {"prod-use1": use1, "prod-euw1": euw1}


def two_region_delivery(
    tmp_path: Path, clusters: dict[str, KubeArgoCD], scope: str = "stage"
) -> tuple[dict, str, str]:
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    files = {f"apps/shop/{region}/values.yaml": SEED.format(region=region) for region in REGIONS.values()}
    gitops, _ = make_repo(tmp_path, "gitops", files)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", clusters)
    targets = {
        name: {
            "kind": "argocd",
            "region": region,
            "app": f"shop-{name}",
            "context": name,
            "kubeconfig": str(kubeconfig),
            "path": f"apps/shop/{region}/values.yaml",
            "progressDeadline": "30s",
        }
        for name, region in REGIONS.items()
    }
    for name, manifest in zip(REGIONS, render_applications("shop", gitops, "main", targets), strict=True):
        stale = {
            "sync": {"status": "Synced", "revision": "0" * 40},
            "health": {"status": "Healthy"},
            "reconciledAt": "2020-01-01T00:00:00Z",
        }
        clusters[name].add_application(manifest, status=stale)
    document = spec_document(
        "shop",
        source,
        gitops,
        targets,
        [
            {
                "name": "production",
                "waves": [["prod-use1"], ["prod-euw1"]],
                "strategy": {"canary": {"steps": [{"setWeight": 20}, {"setWeight": 100}]}},
            }
        ],
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
        assert steps == [
            f"production/{name}/0-setWeight",
            f"production/{name}/1-setWeight",
            f"production/{name}/promote",
        ]
        app = cluster.app(f"shop-{name}")
        assert (
            app["status"]["health"]["status"] == "Healthy"
            and app["status"]["sync"]["revision"] == committed[-1]
        )
    assert min(r.at for r in clusters["prod-euw1"].syncs("shop-prod-euw1")) > max(
        r.at for r in clusters["prod-use1"].syncs("shop-prod-use1")
    )  # waves in order


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
    rollbacks = {
        entry["Aicd-Step"]: entry["sha"] for entry in log if entry["Aicd-Step"].endswith("/rollback")
    }
    assert set(rollbacks) == {"production/prod-use1/rollback", "production/prod-euw1/rollback"}
    for name, region in REGIONS.items():
        path = f"apps/shop/{region}/values.yaml"
        assert show(gitops, "main", path) == SEED.format(region=region).rstrip("\n")  # Git tells the truth
        app = clusters[name].app(f"shop-{name}")
        # one push put both rollbacks on the branch: each region runs the head, which holds its own rollback
        assert app["status"]["sync"]["revision"] == git("--git-dir", gitops, "rev-parse", "main")
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
        assert show(gitops, "main", f"apps/shop/{region}/values.yaml") == SEED.format(region=region).rstrip(
            "\n"
        )


# ---- every Application shape aicd drives --------------------------------------------------------------------------

CHARTS = "https://charts.example.com/stable"
CHART = {"repo": CHARTS, "name": "shop", "version": "2.3.1"}
CANARY_DEPLOYMENT = (
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop-canary\n  labels:\n    stable: v0\n"
    "spec:\n  replicas: 0\n  template:\n    metadata:\n      labels:\n        version: v0\n"
)
# replica-weighted canary in a manifest: stable tag and canary tag in labels, the weight as the canary's replicas
MANIFEST_WRITES = {"image": "metadata.labels.stable", "canaryImage": "spec.template.metadata.labels.version",
                   "weight": "spec.replicas"}  # fmt: skip
SHAPES: dict[str, tuple[dict[str, str], str, dict[str, Any], dict[str, Any]]] = {
    # shape: (GitOps files, the target's file, extra target keys, extra spec keys)
    "multi-source chart with ref values": ({"envs/prod/values.yaml": SEED.format(region="prod")},
                                           "envs/prod/values.yaml", {"chart": CHART}, {}),
    "kustomize overlay": ({"apps/shop/prod/kustomization.yaml": "resources: [canary.yaml]\n",
                           "apps/shop/prod/canary.yaml": CANARY_DEPLOYMENT},
                          "apps/shop/prod/canary.yaml", {}, {"write": MANIFEST_WRITES}),
    "plain manifests directory": ({"apps/shop/prod/canary.yaml": CANARY_DEPLOYMENT},
                                  "apps/shop/prod/canary.yaml", {}, {"write": MANIFEST_WRITES}),
}  # fmt: skip


def one_target_delivery(
    tmp_path: Path, cluster: KubeArgoCD, files: dict[str, str], path: str, target_extra: dict[str, Any],
    spec_extra: dict[str, Any],
) -> tuple[dict[str, Any], str, str]:  # fmt: skip
    """One argocd target whose Application is what `aicd argocd manifests` emits for its layout."""
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", files)
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig", context="prod")
    target = {"kind": "argocd", "app": "shop-prod", "context": "prod", "kubeconfig": str(kubeconfig), "path": path,
              "progressDeadline": "30s", **target_extra}  # fmt: skip
    (manifest,) = render_applications(
        "shop", gitops, "main", {"prod": target}, tree=GitOpsTree.open(gitops, "main")
    )
    cluster.add_chart(CHARTS, "shop", ["2.3.1"])
    cluster.add_application(
        manifest, status={"health": {"status": "Healthy"}, "reconciledAt": "2020-01-01T00:00:00Z"}
    )
    document = spec_document(
        "shop", source, gitops, {"prod": target},
        [{"name": "production", "targets": ["prod"],
          "strategy": {"canary": {"steps": [{"setWeight": 20}, {"setWeight": 100}]}}}],
        **spec_extra,
    )  # fmt: skip
    return document, gitops, revision


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_each_application_shape_delivers_to_healthy(
    temporal_env: WorkflowEnvironment, tmp_path: Path, shape: str
) -> None:
    files, path, target_extra, spec_extra = SHAPES[shape]
    with KubeArgoCD() as cluster:
        document, gitops, revision = one_target_delivery(
            tmp_path, cluster, files, path, target_extra, spec_extra
        )
        plan = plan_from(document, revision)
        client = temporal_env.client
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "succeeded", result.reason
        committed = [entry["sha"] for entry in commits(gitops) if "Aicd-Step" in entry]
        syncs = cluster.syncs("shop-prod")
        app = cluster.app("shop-prod")
    assert len(committed) == 3 and app["status"]["health"]["status"] == "Healthy"
    if "sources" in app["spec"]:
        # every step moved the values source only; the chart stayed at its version
        assert [s.revisions for s in syncs] == [["2.3.1", sha] for sha in committed]
        assert app["status"]["sync"]["revisions"] == ["2.3.1", committed[-1]]
    else:
        assert [s.revision for s in syncs] == committed
        assert app["status"]["sync"]["revision"] == committed[-1]
    assert plan.artifact_tag in show(gitops, "main", path)


async def test_single_source_chart_from_a_chart_repository_fails_at_the_first_step(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    with KubeArgoCD() as cluster:
        files = {"envs/prod/values.yaml": SEED.format(region="prod")}
        document, gitops, revision = one_target_delivery(
            tmp_path, cluster, files, "envs/prod/values.yaml", {"chart": CHART}, {}
        )
        # the app as some teams have it: the chart alone, its values inline - no source aicd can write
        chart_only = {
            "repoURL": CHARTS,
            "chart": "shop",
            "targetRevision": "2.3.1",
            "helm": {"values": "x: 1"},
        }

        def chart_alone(app: dict[str, Any]) -> None:
            del app["spec"]["sources"]
            app["spec"]["source"] = chart_only

        cluster._mutate(("argocd", "shop-prod"), chart_alone)
        plan = plan_from(document, revision)
        client = temporal_env.client
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
        assert cluster.syncs("shop-prod") == []  # nothing sent where Argo CD expects a chart version
    assert result.phase == "failed"
    assert "shop-prod" in result.reason and "ref: values" in result.reason, result.reason
    assert show(gitops, "main", "envs/prod/values.yaml") == SEED.format(region="prod").rstrip(
        "\n"
    )  # rolled back


async def test_api_server_restart_mid_delivery_does_not_fail_it(
    temporal_env: WorkflowEnvironment, clusters: dict[str, KubeArgoCD], tmp_path: Path
) -> None:
    document, gitops, revision = two_region_delivery(tmp_path, clusters)
    plan = plan_from(document, revision)
    use1 = clusters["prod-use1"]
    use1.status_delay_s = 1.0
    operations: list[int] = []

    def restart_during_the_second_sync(_op: dict[str, Any]) -> None:
        operations.append(1)
        if len(operations) == 2:  # the driver is watching: cut it off, refuse, then answer 403 for a while
            threading.Timer(0.2, lambda: use1.restart(down_s=0.5, unavailable_s=0.3, forbidden_s=1.0)).start()

    use1.on_operation = restart_during_the_second_sync
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "succeeded", result.reason
    assert use1.restarts == 1 and any(r.status == 403 for r in use1.requests)
    committed = [
        e["sha"] for e in commits(gitops) if e.get("Aicd-Step", "").startswith("production/prod-use1/")
    ]
    assert [s.revision for s in use1.syncs("shop-prod-use1")] == committed  # one sync per step, none repeated


async def test_blue_green_through_argo_cd_syncs_each_commit_and_ends_on_the_release(
    temporal_env: WorkflowEnvironment, clusters: dict[str, KubeArgoCD], tmp_path: Path
) -> None:
    """A blue-green stage on argocd targets: the preview, the switch and the retirement are one commit each,
    each synced by its region's Argo CD in that order, wave after wave; the file ends on the release with no
    preview and no warm version left."""
    document, gitops, revision = two_region_delivery(tmp_path, clusters)
    document["spec"]["stages"][0]["strategy"] = {
        "blueGreen": {"autoPromotionSeconds": 1, "scaleDownDelaySeconds": 1}
    }
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "succeeded", result.reason
    log = [entry for entry in commits(gitops) if "Aicd-Step" in entry]
    for name, region in REGIONS.items():
        mine = [entry for entry in log if entry["Aicd-Step"].startswith(f"production/{name}/")]
        assert [entry["Aicd-Step"].rsplit("/", 1)[1] for entry in mine] == ["preview", "promote", "retire"]
        assert [record.revision for record in clusters[name].syncs(f"shop-{name}")] == [
            e["sha"] for e in mine
        ]
        final = yaml.safe_load(show(gitops, "main", f"apps/shop/{region}/values.yaml"))
        assert final["image"]["tag"] == plan.artifact_tag
        assert not (final.get("preview") or {}).get("tag") and not (final.get("previous") or {}).get("tag")
    assert min(r.at for r in clusters["prod-euw1"].syncs("shop-prod-euw1")) > max(
        r.at for r in clusters["prod-use1"].syncs("shop-prod-use1")
    )  # waves in order
