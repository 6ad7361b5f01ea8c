"""The `argocd` target driver against the loopback Kubernetes/Argo CD stand-in, through the real kubernetes client
and a real local GitOps repository."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.drivers.argocd import ArgoCDAPIError, ArgoCDDriver, parse_duration
from activities.drivers.base import SyncFailed, SyncRequest, driver_for
from aicd.argocd_manifests import render_applications
from tests.standins.kube_argocd import GitOpsRepo, KubeArgoCD, write_kubeconfig

APP = "checkout-api-prod-use1"
VALUES = "apps/checkout-api/prod/us-east-1/values.yaml"
DELIVERY = "delivery-checkout-api-4f2c1d9e"


class Heartbeats:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *details: Any) -> None:
        self.calls.append(details)


@pytest.fixture
def gitops(tmp_path: Path) -> GitOpsRepo:
    return GitOpsRepo(tmp_path / "git")


@pytest.fixture
def standin() -> Iterator[KubeArgoCD]:
    with KubeArgoCD(bookmark_interval_s=0.5) as s:
        yield s


@pytest.fixture
def kubeconfig(tmp_path: Path, standin: KubeArgoCD) -> Path:
    return standin.write_kubeconfig(tmp_path / "kubeconfig", context="use1")


@pytest.fixture
def driver() -> ArgoCDDriver:
    # short timeouts keep failure tests fast; behaviour is the production code path
    return ArgoCDDriver(
        request_timeout_s=2.0, watch_timeout_s=5, heartbeat_interval_s=0.2, refresh_after_s=0.3
    )


def values(tag: str, weight: int = 10) -> str:
    return f"image:\n  tag: {tag}\ncanary:\n  weight: {weight}\n"


def add_app(standin: KubeArgoCD, gitops: GitOpsRepo, *, name: str = APP, path: str = VALUES) -> None:
    """The Application as `aicd argocd manifests` renders it, with an old Healthy status from an earlier sync."""
    (manifest,) = render_applications(
        "checkout-api", gitops.url, "main", {"prod-use1": {"kind": "argocd", "app": name, "path": path}}
    )
    stale = {
        "sync": {"status": "Synced", "revision": "0" * 40},
        "health": {"status": "Healthy"},
        "reconciledAt": "2020-01-01T00:00:00Z",
    }
    standin.add_application(manifest, status=stale)


def request(
    sha: str,
    *,
    kubeconfig: Path | None,
    app: str = APP,
    context: str | None = "use1",
    step: str = "production/prod-use1/0-setWeight",
    target: str = "prod-use1",
    timeout_s: float = 20.0,
    **extra: Any,
) -> SyncRequest:
    config: dict[str, Any] = {"kind": "argocd", "app": app, "path": VALUES, **extra}
    if context is not None:
        config["context"] = context
    if kubeconfig is not None:
        config["kubeconfig"] = str(kubeconfig)
    return SyncRequest(
        delivery_id=DELIVERY,
        stage="production",
        target=target,
        kind="argocd",
        config=config,
        gitops_repo="unused-by-this-driver",
        gitops_branch="main",
        revision=sha,
        step=step,
        timeout_s=timeout_s,
    )


# ---------------------------------------------------------------------------------------------------------------


def test_registered_for_kind_argocd() -> None:
    assert isinstance(driver_for("argocd"), ArgoCDDriver)


@pytest.mark.parametrize(
    ("text", "seconds"), [("10m", 600.0), ("1h30m", 5400.0), ("45s", 45.0), ("500ms", 0.5), ("90", 90.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


async def test_sync_succeeds_with_exactly_one_sync_per_step(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    gitops.commit({VALUES: values("v1")})
    add_app(standin, gitops)
    beats = Heartbeats()

    sha1 = gitops.commit({VALUES: values("v2", 10)})
    r1 = await driver.sync(request(sha1, kubeconfig=kubeconfig), beats)
    sha2 = gitops.commit({VALUES: values("v2", 50)})
    r2 = await driver.sync(
        request(sha2, kubeconfig=kubeconfig, step="production/prod-use1/2-setWeight"), beats
    )

    assert r1.healthy and r1.revision == sha1 and r1.target == "prod-use1"
    assert r2.healthy and r2.details["syncRevision"] == sha2
    syncs = standin.syncs(APP)
    assert [s.revision for s in syncs] == [sha1, sha2]
    assert syncs[0].info == {"aicd-delivery": DELIVERY, "aicd-step": "production/prod-use1/0-setWeight"}
    assert syncs[0].initiated_by == {"username": "aicd", "automated": False}
    assert standin.refresh_requests(APP) == 2  # each sync came with a hard refresh
    app = standin.app(APP)
    assert "operation" not in app and app["status"]["health"]["status"] == "Healthy"
    assert app["status"]["operationState"]["syncResult"]["revision"] == sha2
    assert beats.calls and all(c[0]["app"] == APP for c in beats.calls)


async def test_without_context_the_current_context_is_used(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    sha = gitops.commit({VALUES: values("v1b")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig, context=None), Heartbeats())
    assert result.healthy and result.details["context"] is None
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request(sha, kubeconfig=kubeconfig, context=None, app="nope"), Heartbeats())
    assert_config_error(info.value, "argocd/nope", "context current")


async def test_retried_activity_does_not_sync_twice(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    sha = gitops.commit({VALUES: values("v2")})
    standin.status_delay_s = 0.3
    first = asyncio.create_task(driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats()))
    while not standin.syncs(APP):
        await asyncio.sleep(0.01)
    first.cancel()  # e.g. the worker died mid-wait; Temporal runs the activity again
    with pytest.raises(asyncio.CancelledError):
        await first
    again = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    done = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())  # and once more after success
    assert again.healthy and done.healthy
    assert [s.revision for s in standin.syncs(APP)] == [sha]


async def test_degraded_raises_sync_failed_with_argo_message(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.broken_tags = {"v3-broken"}
    sha = gitops.commit({VALUES: values("v3-broken")})
    with pytest.raises(SyncFailed) as info:
        await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    message = str(info.value)
    assert "Degraded" in message
    assert 'Deployment "checkout-api-prod-use1" exceeded its progress deadline' in message
    assert "prod-use1" in message and APP in message


async def test_failed_operation_raises_sync_failed_with_operation_message(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.failing_tags = {"v4-denied"}
    sha = gitops.commit({VALUES: values("v4-denied")})
    with pytest.raises(SyncFailed, match=r"sync operation Failed: .*admission webhook.*v4-denied"):
        await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())


async def test_unknown_revision_is_an_errored_operation(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    gitops.commit({VALUES: values("v1")})
    with pytest.raises(SyncFailed, match=r"sync operation Error: ComparisonError"):
        await driver.sync(request("f" * 40, kubeconfig=kubeconfig), Heartbeats())


async def test_stale_healthy_from_before_the_sync_is_not_success(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    # the operation completes at once but health stays the old Healthy report for a while, then turns Degraded:
    # a driver that trusted the stale Healthy would return success
    add_app(standin, gitops)
    standin.stale_health_s = 0.6
    standin.broken_tags = {"v5-broken"}
    sha = gitops.commit({VALUES: values("v5-broken")})
    with pytest.raises(SyncFailed, match="Degraded"):
        await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())


async def test_healthy_only_after_the_post_sync_reconcile(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.stale_health_s = 0.4
    standin.progressing_s = 0.3
    sha = gitops.commit({VALUES: values("v6")})
    beats = Heartbeats()
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), beats)
    assert result.details["reconciledAt"] >= result.details["finishedAt"]
    assert result.details["reconciledAt"] != "2020-01-01T00:00:00Z"
    states = [c[0]["state"] for c in beats.calls]
    assert any("re-assess health" in s for s in states)
    assert any(s.startswith("health Progressing") for s in states)


async def test_reconcile_not_written_driver_asks_for_refresh(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.skip_reconcile_after_sync = True
    sha = gitops.commit({VALUES: values("v7")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.healthy
    assert standin.refresh_requests(APP) == 2  # the one with the sync, and the driver's follow-up
    assert len(standin.syncs(APP)) == 1


async def test_branch_head_moving_on_does_not_block(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    # parallel targets commit to the same branch: Argo CD compares at the new head, still Synced
    add_app(standin, gitops)
    standin.track_branch_head = True
    sha = gitops.commit({VALUES: values("v8")})
    other = gitops.commit({"apps/checkout-api/prod/eu-west-1/values.yaml": values("v8")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.details["syncRevision"] == other and result.details["syncStatus"] == "Synced"
    assert [s.revision for s in standin.syncs(APP)] == [sha]


async def test_waits_for_a_pending_foreign_operation(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    old = gitops.commit({VALUES: values("v0")})
    standin.status_delay_s = 0.3
    standin.create_app(
        APP,
        repo=gitops.url,
        path=VALUES.rsplit("/", 1)[0],
        operation={"sync": {"revision": old}, "initiatedBy": {"username": "alice"}},
    )
    sha = gitops.commit({VALUES: values("v9")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.healthy
    assert [(s.revision, s.initiated_by.get("username")) for s in standin.syncs(APP)] == [
        (old, "alice"),
        (sha, "aicd"),
    ]


async def test_conflict_is_retried_on_a_fresh_read(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.conflict_before_next_patches = 2
    sha = gitops.commit({VALUES: values("v10")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.healthy and result.details["conflicts"] == 2
    assert [s.revision for s in standin.syncs(APP)] == [sha]


async def test_watch_410_relists_and_still_succeeds(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.status_delay_s = 0.3
    # etcd compaction as Argo CD picks up the sync: open watches end and their resourceVersion is gone
    standin.on_operation = lambda _op: standin.compact(drop_watches=True)
    sha = gitops.commit({VALUES: values("v11")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.healthy and result.details["relists"] >= 1
    lists = [
        r for r in standin.requests if r.method == "GET" and "watch" not in r.query and r.path.endswith("s")
    ]
    assert lists and lists[-1].query.get("fieldSelector") == f"metadata.name={APP}"
    assert [s.revision for s in standin.syncs(APP)] == [sha]


async def test_watch_410_as_http_status_also_relists(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.status_delay_s = 0.3
    standin.watch_410_as_http = True
    standin.on_operation = lambda _op: standin.compact(drop_watches=True)
    sha = gitops.commit({VALUES: values("v12")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.healthy and result.details["relists"] >= 1


async def test_dropped_watches_and_transient_watch_errors_are_survived(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.status_delay_s = 0.4

    def flaky_watches(_op: dict[str, Any]) -> None:
        standin.fail_next(2, 503, watch=True)  # the reconnects fail twice, then work
        standin.drop_watches()

    standin.on_operation = flaky_watches
    sha = gitops.commit({VALUES: values("v13")})
    assert (await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())).healthy


def assert_config_error(err: ApplicationError, *needles: str) -> None:
    assert err.non_retryable and err.type == "TargetConfigError"
    for needle in needles:
        assert needle in err.message, (needle, err.message)


async def test_missing_app_is_a_config_error(
    standin: KubeArgoCD, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig, app="nope"), Heartbeats())
    assert_config_error(info.value, "prod-use1", "argocd/nope", "use1", "not found")


async def test_missing_namespace_is_a_config_error(
    standin: KubeArgoCD, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig, namespace="argo-cd"), Heartbeats())
    assert_config_error(info.value, "prod-use1", f"argo-cd/{APP}", "use1")


@pytest.mark.parametrize("verbs", [None, {"patch"}])
async def test_forbidden_is_a_config_error(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver, verbs: set[str] | None
) -> None:
    add_app(standin, gitops)
    standin.forbid(APP, verbs=verbs)
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig), Heartbeats())
    assert_config_error(info.value, "prod-use1", APP, "use1", "forbidden")
    assert standin.syncs(APP) == []


async def test_unknown_context_is_a_config_error(kubeconfig: Path, driver: ArgoCDDriver) -> None:
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig, context="eu-west-9"), Heartbeats())
    assert_config_error(info.value, "prod-use1", APP, "eu-west-9")


async def test_missing_kubeconfig_is_a_config_error(tmp_path: Path, driver: ArgoCDDriver) -> None:
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=tmp_path / "nowhere"), Heartbeats())
    assert_config_error(info.value, "prod-use1", APP, "use1", "nowhere")


async def test_missing_app_field_and_bad_deadline_are_config_errors(
    kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig, app=""), Heartbeats())
    assert_config_error(info.value, "prod-use1", "app")
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig, progressDeadline="soon"), Heartbeats())
    assert_config_error(info.value, "progressDeadline")


async def test_unreachable_api_is_retryable(tmp_path: Path, driver: ArgoCDDriver) -> None:
    with KubeArgoCD() as gone:
        url = gone.url  # a port that nothing listens on once stopped
    kc = write_kubeconfig(tmp_path / "kc", {"use1": url})
    with pytest.raises(ArgoCDAPIError, match="unreachable") as info:
        await driver.sync(request("a" * 40, kubeconfig=kc), Heartbeats())
    assert not isinstance(info.value, ApplicationError)


async def test_server_errors_are_retryable_and_a_retry_succeeds(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    sha = gitops.commit({VALUES: values("v14")})
    standin.fail_next(1, 500)
    with pytest.raises(ArgoCDAPIError, match="HTTP 500"):
        await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    standin.fail_next(1, 503, methods={"PATCH"})
    with pytest.raises(ArgoCDAPIError, match="HTTP 503"):
        await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert (await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())).healthy  # Temporal's retry
    assert [s.revision for s in standin.syncs(APP)] == [sha]


async def test_hanging_api_times_out_retryably(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path
) -> None:
    add_app(standin, gitops)
    standin.hang_next(8, 1.0)  # urllib3 retries a timed-out GET a few times itself
    quick = ArgoCDDriver(request_timeout_s=0.2, watch_timeout_s=2, heartbeat_interval_s=0.2)
    with pytest.raises(ArgoCDAPIError, match="unreachable"):
        await quick.sync(request("a" * 40, kubeconfig=kubeconfig), Heartbeats())


async def test_progress_deadline_raises_sync_failed(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.status_delay_s = 3.0
    sha = gitops.commit({VALUES: values("v15")})
    with pytest.raises(SyncFailed, match=r"progress deadline \(0.5s\): sync operation Running"):
        await driver.sync(request(sha, kubeconfig=kubeconfig, progressDeadline="500ms"), Heartbeats())


async def test_cancellation_stops_waiting_at_once(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.status_delay_s = 30.0
    sha = gitops.commit({VALUES: values("v16")})
    task = asyncio.create_task(driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats()))
    while not standin.syncs(APP):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1.0)
    for _ in range(100):  # the watch thread is stopped (its socket shut down), not left to time out
        if not any(t.name.startswith("argocd-watch-") for t in threading.enumerate()):
            break
        await asyncio.sleep(0.02)
    assert not any(t.name.startswith("argocd-watch-") for t in threading.enumerate())


async def test_deleted_app_while_waiting_is_a_config_error(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.status_delay_s = 0.5
    standin.on_operation = lambda _op: threading.Timer(
        0.1, lambda: standin._delete("argocd", APP, None)
    ).start()
    sha = gitops.commit({VALUES: values("v17")})
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert_config_error(info.value, APP, "deleted")


async def test_two_regions_two_contexts_in_one_process(tmp_path: Path, gitops: GitOpsRepo) -> None:
    driver = ArgoCDDriver(heartbeat_interval_s=0.2)
    with KubeArgoCD(status_delay_s=0.2) as use1, KubeArgoCD(status_delay_s=0.2) as euw1:
        kc = write_kubeconfig(tmp_path / "kubeconfig", {"use1": use1, "euw1": euw1})
        euw1_values = "apps/checkout-api/prod/eu-west-1/values.yaml"
        add_app(use1, gitops)
        add_app(euw1, gitops, name="checkout-api-prod-euw1", path=euw1_values)
        sha = gitops.commit({VALUES: values("v18"), euw1_values: values("v18")})
        r_use1, r_euw1 = await asyncio.gather(
            driver.sync(request(sha, kubeconfig=kc, context="use1"), Heartbeats()),
            driver.sync(
                request(
                    sha,
                    kubeconfig=kc,
                    context="euw1",
                    app="checkout-api-prod-euw1",
                    target="prod-euw1",
                    step="production/prod-euw1/0-setWeight",
                ),
                Heartbeats(),
            ),
        )
        assert r_use1.healthy and r_euw1.healthy
        assert [s.revision for s in use1.syncs(APP)] == [sha]
        assert [s.revision for s in euw1.syncs("checkout-api-prod-euw1")] == [sha]
        assert use1.syncs("checkout-api-prod-euw1") == [] and euw1.syncs(APP) == []
        assert len(driver._clients) == 2  # one cached ApiClient per (kubeconfig, context)


# ---- the Applications aicd renders for its argocd targets --------------------------------------------------------

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


def test_dump_manifests_is_multi_document_yaml() -> None:
    import yaml

    from aicd.argocd_manifests import dump_manifests

    apps = render_applications("checkout-api", "https://git.example.com/gitops.git", "main", SPEC_TARGETS)
    text = dump_manifests(apps)
    assert text.startswith("---\n") and text.count("\n---\n") == 1
    assert list(yaml.safe_load_all(text)) == apps
    assert dump_manifests([]) == ""


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
