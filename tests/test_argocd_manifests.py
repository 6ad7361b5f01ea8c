"""`aicd argocd manifests`: the Application each target layout needs, checked against Argo CD's Application fields
and applied to the Kubernetes/Argo CD stand-in (which must render and sync it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicd.activities.drivers.argocd import ArgoCDDriver
from aicd.activities.drivers.base import SyncRequest
from aicd.argocd_manifests import GitOpsTree, dump_manifests, render_applications
from aicd.testing.engine import spec_document
from aicd.testing.standins.argocd_schema import validate_application
from aicd.testing.standins.kube_argocd import GitOpsRepo, KubeArgoCD
from tests.conftest import RunAicd

CHARTS = "https://charts.example.com/stable"
CHART = {"repo": CHARTS, "name": "checkout-api", "version": "1.4.2"}
FILES = {
    # a values file beside its chart
    "apps/helm/prod/Chart.yaml": "apiVersion: v2\nname: checkout-api\nversion: 0.1.0\n",
    "apps/helm/prod/values.yaml": "image:\n  tag: v1\n",
    # a Kustomize overlay, and a file its kustomization uses
    "apps/kust/prod/kustomization.yaml": "resources: [deployment.yaml]\nimages:\n- name: shop\n  newTag: v1\n",
    "apps/kust/prod/deployment.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\n",
    "apps/kust/staging/kustomization.yaml": "resources: [../prod]\nconfigMapGenerator:\n- name: shop\n  envs: [release.env]\n",
    "apps/kust/staging/release.env": "TAG=v1\n",
    # values for a chart from a chart repository
    "envs/prod/values.yaml": "image:\n  tag: v1\n",
    # plain manifests
    "apps/plain/prod/deployment.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\n",
    # a values file with no chart anywhere near it
    "apps/orphan/values.yaml": "image:\n  tag: v1\n",
}


def argocd(app: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "argocd", "app": app, "path": path, **extra}


@pytest.fixture
def gitops(tmp_path: Path) -> GitOpsRepo:
    repo = GitOpsRepo(tmp_path / "git")
    repo.commit(FILES)
    return repo


def one(gitops: GitOpsRepo, target: dict[str, Any]) -> dict[str, Any]:
    (app,) = render_applications(
        "shop", gitops.url, "main", {"t": target}, tree=GitOpsTree.open(gitops.url, "main")
    )
    assert_argo_cd_application(app)
    return app


def assert_argo_cd_application(app: dict[str, Any]) -> None:
    """Every field is one of Argo CD's Application fields with its type, and the required ones are there."""
    stored, findings = validate_application(app)
    assert findings.invalid == [] and findings.unknown == [], findings
    assert stored == app
    spec = app["spec"]
    assert ("source" in spec) != (
        "sources" in spec
    )  # one or the other: Argo CD ignores source next to sources
    assert "syncPolicy" not in spec  # aicd drives every sync


def test_values_file_beside_a_chart_gives_a_helm_source(gitops: GitOpsRepo) -> None:
    app = one(gitops, argocd("shop-prod", "apps/helm/prod/values.yaml"))
    assert app["spec"]["source"] == {
        "repoURL": gitops.url,
        "targetRevision": "main",
        "path": "apps/helm/prod",
        "helm": {"valueFiles": ["values.yaml"]},
    }


def test_kustomization_gives_a_kustomize_source_not_helm_value_files(gitops: GitOpsRepo) -> None:
    app = one(gitops, argocd("shop-prod", "apps/kust/prod/kustomization.yaml"))
    assert app["spec"]["source"] == {
        "repoURL": gitops.url,
        "targetRevision": "main",
        "path": "apps/kust/prod",
        "kustomize": {},
    }
    # a file the overlay's kustomization uses is a Kustomize app too
    staging = one(gitops, argocd("shop-staging", "apps/kust/staging/release.env"))
    assert (
        staging["spec"]["source"]["path"] == "apps/kust/staging" and "kustomize" in staging["spec"]["source"]
    )


def test_values_for_a_chart_from_a_chart_repository_give_a_multi_source_app(gitops: GitOpsRepo) -> None:
    app = one(gitops, argocd("shop-prod", "envs/prod/values.yaml", chart=CHART))
    assert app["spec"]["sources"] == [
        {
            "repoURL": CHARTS,
            "chart": "checkout-api",
            "targetRevision": "1.4.2",
            "helm": {"valueFiles": ["$values/envs/prod/values.yaml"]},
        },
        {"repoURL": gitops.url, "targetRevision": "main", "ref": "values"},
    ]


def test_plain_manifests_give_a_directory_source(gitops: GitOpsRepo) -> None:
    app = one(gitops, argocd("shop-prod", "apps/plain/prod/deployment.yaml"))
    assert app["spec"]["source"] == {
        "repoURL": gitops.url,
        "targetRevision": "main",
        "path": "apps/plain/prod",
        "directory": {"recurse": False},
    }


@pytest.mark.parametrize(
    ("target", "error"),
    [
        (argocd("a", "apps/orphan/values.yaml"), r"targets\.t\.path: .*holds no Chart\.yaml.*chart: \{repo, name, version\}"),
        (argocd("a", "apps/helm/prod/values-prod.yaml"), r"targets\.t\.path: .* is not in the GitOps repo"),
        (argocd("a", "envs/qa/values.yaml", chart=CHART), r"targets\.t\.path: .* is not in the GitOps repo"),
        (argocd("a", "apps/kust/prod/kustomization.yaml", chart=CHART), r"targets\.t\.chart: .* is a kustomization"),
        (argocd("a", "envs/prod/values.yaml", chart={"repo": CHARTS, "name": "x"}), r"targets\.t\.chart\.version: required"),
        (argocd("a", "../outside/values.yaml"), r"targets\.t\.path: .* leaves the GitOps repository"),
    ],
)  # fmt: skip
def test_layouts_no_application_could_read_are_refused(
    gitops: GitOpsRepo, target: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        render_applications(
            "shop", gitops.url, "main", {"t": target}, tree=GitOpsTree.open(gitops.url, "main")
        )


def test_without_the_repository_layouts_follow_file_names() -> None:
    targets = {
        "helm": argocd("a", "apps/a/values.yaml"),
        "kust": argocd("b", "apps/b/kustomization.yaml"),
        "chart": argocd("c", "envs/c/values.yaml", chart=CHART),
    }
    helm, kust, chart = render_applications("shop", "https://git.example.com/gitops.git", "main", targets)
    assert helm["spec"]["source"]["helm"] == {"valueFiles": ["values.yaml"]}
    assert kust["spec"]["source"]["kustomize"] == {} and "helm" not in kust["spec"]["source"]
    assert chart["spec"]["sources"][1]["ref"] == "values"
    for app in (helm, kust, chart):
        assert_argo_cd_application(app)


async def test_every_layout_is_accepted_and_synced_by_the_stand_in(
    tmp_path: Path, gitops: GitOpsRepo
) -> None:
    """Applied as `kubectl apply` would (strict field validation), each emitted Application is driven to Healthy
    by the argocd driver at a new commit."""
    targets = {
        "helm": argocd("helm", "apps/helm/prod/values.yaml"),
        "kust": argocd("kust", "apps/kust/prod/kustomization.yaml"),
        "chart": argocd("chart", "envs/prod/values.yaml", chart=CHART),
        "plain": argocd("plain", "apps/plain/prod/deployment.yaml"),
    }
    apps = render_applications("shop", gitops.url, "main", targets, tree=GitOpsTree.open(gitops.url, "main"))
    head = gitops.commit({"envs/prod/values.yaml": "image:\n  tag: v2\n"})
    driver = ArgoCDDriver(heartbeat_interval_s=0.2, api_grace_s=1.0)
    with KubeArgoCD() as standin:
        kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig")
        standin.add_chart(CHARTS, "checkout-api", ["1.4.2"])
        for app in apps:
            standin.add_application(app)
        for name, target in targets.items():
            request = SyncRequest(
                delivery_id="delivery-shop-1",
                stage="prod",
                target=name,
                kind="argocd",
                config={**target, "kubeconfig": str(kubeconfig)},
                gitops_repo=gitops.url,
                gitops_branch="main",
                revision=head,
                step=f"prod/{name}/0-setWeight",
                timeout_s=20,
            )
            result = await driver.sync(request, lambda *_: None)
            assert result.healthy and result.details["syncRevision"] == head
            assert standin.app(name)["status"]["operationState"]["phase"] == "Succeeded"
        assert [s.revisions for s in standin.syncs("chart")] == [["1.4.2", head]]


def test_dump_manifests_is_multi_document_yaml() -> None:
    targets = {"a": argocd("a", "apps/a/values.yaml"), "b": argocd("b", "apps/b/kustomization.yaml")}
    apps = render_applications("checkout-api", "https://git.example.com/gitops.git", "main", targets)
    text = dump_manifests(apps)
    assert text.startswith("---\n") and text.count("\n---\n") == 1
    assert list(yaml.safe_load_all(text)) == apps
    assert dump_manifests([]) == ""


# ---- the command --------------------------------------------------------------------------------------------------


def write_spec(tmp_path: Path, gitops: str, targets: dict[str, dict[str, Any]]) -> Path:
    document = spec_document(
        "shop",
        "https://git.example.com/shop.git",
        gitops,
        targets,
        [{"name": "prod", "targets": list(targets)}],
    )
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_command_reads_layouts_from_a_local_gitops_repo(
    run_aicd: RunAicd, tmp_path: Path, gitops: GitOpsRepo
) -> None:
    spec = write_spec(
        tmp_path,
        gitops.url,
        {
            "kust": argocd("shop-kust", "apps/kust/prod/kustomization.yaml"),
            "chart": argocd("shop-chart", "envs/prod/values.yaml", chart=CHART),
            "plain": argocd("shop-plain", "apps/plain/prod/deployment.yaml"),
        },
    )
    done = run_aicd("argocd", "manifests", str(spec))
    assert done.returncode == 0, done.stderr
    kust, chart, plain = yaml.safe_load_all(done.stdout)
    assert "kustomize" in kust["spec"]["source"] and "helm" not in kust["spec"]["source"]
    assert chart["spec"]["sources"][0]["helm"]["valueFiles"] == ["$values/envs/prod/values.yaml"]
    assert plain["spec"]["source"]["directory"] == {"recurse": False}
    assert done.stderr == ""


def test_command_refuses_an_orphan_values_file_with_exit_2(
    run_aicd: RunAicd, tmp_path: Path, gitops: GitOpsRepo
) -> None:
    spec = write_spec(tmp_path, gitops.url, {"orphan": argocd("shop", "apps/orphan/values.yaml")})
    done = run_aicd("argocd", "manifests", str(spec))
    assert done.returncode == 2 and done.stdout == ""
    assert f"{spec}: targets.orphan.path: apps/orphan/values.yaml is a values file" in done.stderr
    assert "Traceback" not in done.stderr


def test_command_with_a_gitops_dir_for_a_remote_repo(
    run_aicd: RunAicd, tmp_path: Path, gitops: GitOpsRepo
) -> None:
    remote = "https://git.example.com/platform/gitops.git"
    spec = write_spec(tmp_path, remote, {"plain": argocd("shop", "apps/plain/prod/deployment.yaml")})
    done = run_aicd("argocd", "manifests", str(spec), "--gitops-dir", str(gitops.work))
    assert done.returncode == 0, done.stderr
    (app,) = yaml.safe_load_all(done.stdout)
    assert app["spec"]["source"]["repoURL"] == remote and "directory" in app["spec"]["source"]
    as_json = run_aicd("argocd", "manifests", str(spec), "--gitops-dir", str(gitops.work), "-o", "json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == [app]
    done = run_aicd("argocd", "manifests", str(spec), "--gitops-dir", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "--gitops-dir" in done.stderr and "not a Git repository" in done.stderr


def test_command_warns_when_a_remote_repo_cannot_be_read(run_aicd: RunAicd, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path, "http://127.0.0.1:9/gitops.git", {"kust": argocd("shop", "apps/x/kustomization.yaml")}
    )
    done = run_aicd("argocd", "manifests", str(spec))
    assert done.returncode == 0
    assert "warning: cannot read the GitOps repo http://127.0.0.1:9/gitops.git" in done.stderr
    (app,) = yaml.safe_load_all(done.stdout)
    assert "kustomize" in app["spec"]["source"]  # from the file name alone


def test_chart_is_an_argocd_target_key(run_aicd: RunAicd, tmp_path: Path, gitops: GitOpsRepo) -> None:
    spec = write_spec(
        tmp_path, gitops.url, {"web": {"kind": "git", "path": "envs/prod/values.yaml", "chart": CHART}}
    )
    done = run_aicd("validate", str(spec))
    # Each target kind has its own keys: a git target's allowed keys are listed, and chart is not among them.
    assert (
        done.returncode == 2
        and "$.spec.targets.web.chart: unknown key(s) ['chart']; allowed here: [" in done.stdout
    )
    allowed = done.stdout.split("allowed here: ", 1)[1].splitlines()[0]
    assert "'kind'" in allowed and "'path'" in allowed and "'chart'" not in allowed
    spec = write_spec(
        tmp_path, gitops.url, {"web": argocd("shop", "envs/prod/values.yaml", chart={"repo": CHARTS})}
    )
    done = run_aicd("validate", str(spec))
    assert done.returncode == 2 and "chart" in done.stdout and "name" in done.stdout


# ---- target fields -----------------------------------------------------------------------------------------

SPEC_TARGETS: dict[str, dict[str, Any]] = {
    "staging-use1": {
        "kind": "argocd",
        "region": "us-east-1",
        "app": "checkout-api-staging-use1",
        "path": "apps/checkout-api/staging/us-east-1/values.yaml",
    },
    "prod-euw1": {
        "kind": "argocd",
        "region": "eu-west-1",
        "app": "checkout-api-prod-euw1",
        "path": "apps/checkout-api/prod/eu-west-1/values.yaml",
        "namespace": "argocd-eu",
        "destination": {"name": "prod-euw1", "namespace": "payments"},
    },
    "edge-pops": {
        "kind": "edge",
        "sites": {"file": "fleets/edge-pops.yaml"},
        "path": "apps/checkout-api/edge/{{ site }}/values.yaml",
    },
}


def test_render_applications_for_argocd_targets() -> None:
    apps = render_applications(
        "checkout-api", "https://git.example.com/platform/gitops.git", "main", SPEC_TARGETS
    )
    assert [a["metadata"]["name"] for a in apps] == ["checkout-api-staging-use1", "checkout-api-prod-euw1"]
    staging, prod = apps
    assert staging["apiVersion"] == "argoproj.io/v1alpha1" and staging["kind"] == "Application"
    assert staging["metadata"]["namespace"] == "argocd" and prod["metadata"]["namespace"] == "argocd-eu"
    assert staging["metadata"]["labels"] == {
        "aicd.dev/app": "checkout-api",
        "aicd.dev/target": "staging-use1",
    }
    assert staging["spec"]["project"] == "default"
    assert staging["spec"]["source"] == {
        "repoURL": "https://git.example.com/platform/gitops.git",
        "targetRevision": "main",
        "path": "apps/checkout-api/staging/us-east-1",
        "helm": {"valueFiles": ["values.yaml"]},
    }
    assert staging["spec"]["destination"] == {
        "server": "https://kubernetes.default.svc",
        "namespace": "checkout-api",
    }
    assert prod["spec"]["destination"] == {"name": "prod-euw1", "namespace": "payments"}
    assert all("syncPolicy" not in a["spec"] for a in apps)  # aicd drives every sync


@pytest.mark.parametrize(
    ("targets", "error"),
    [
        ({"t": {"kind": "argocd", "path": "a/values.yaml"}}, r"targets\.t\.app: required"),
        ({"t": {"kind": "argocd", "app": "Bad_Name", "path": "a/v.yaml"}}, r"targets\.t\.app: 'Bad_Name'"),
        ({"t": {"kind": "argocd", "app": "a"}}, r"targets\.t\.path: required"),
        ({"t": {"kind": "argocd", "app": "a", "path": "x/{{ site }}/v.yaml"}}, "placeholder"),
        (
            {
                "t": {"kind": "argocd", "app": "a", "path": "v.yaml"},
                "u": {"kind": "argocd", "app": "a", "path": "w.yaml"},
            },
            r"targets\.u\.app: argocd/a is also the app of targets\.t",
        ),
        (
            {"t": {"kind": "argocd", "app": "a", "path": "v.yaml", "destination": {"namespace": "x"}}},
            r"targets\.t\.destination: needs `server` or `name`",
        ),
    ],
)
def test_render_applications_rejects_bad_targets(targets: dict[str, dict[str, Any]], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        render_applications("app", "repo", "main", targets)
