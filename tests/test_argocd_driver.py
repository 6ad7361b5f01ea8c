"""The `argocd` target driver against the loopback Kubernetes/Argo CD stand-in, through the real kubernetes client
and a real local GitOps repository."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from aicd.activities.drivers import DRIVERS, branch, driver_for
from aicd.activities.drivers import argocd as argocd_driver_module
from aicd.activities.drivers.argocd import ArgoCDAPIError, ArgoCDDriver, _repo_key
from aicd.activities.drivers.base import SyncFailed, SyncRequest
from aicd.argocd_manifests import render_applications
from aicd.errors import ErrorType
from aicd.spec.durations import parse_duration
from aicd.targets import TARGET_KINDS, GitTarget
from aicd.testing.standins.git_http import GitHttpStandIn
from aicd.testing.standins.kube_argocd import GitOpsRepo, KubeArgoCD, write_kubeconfig

APP = "checkout-api-prod-use1"
VALUES = "apps/checkout-api/prod/us-east-1/values.yaml"
DELIVERY = "delivery-checkout-api-4f2c1d9e"


class Heartbeats:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *details: Any) -> None:
        self.calls.append(details)


# The GitOps repository of the running test: the driver reads its branch head before every sync.
_GITOPS_URL = ["unused: no sync reaches the branch check"]


@pytest.fixture
def gitops(tmp_path: Path) -> Iterator[GitOpsRepo]:
    repo = GitOpsRepo(tmp_path / "git")
    _GITOPS_URL[0] = repo.url
    yield repo
    _GITOPS_URL[0] = "unused: no sync reaches the branch check"


@pytest.fixture
def standin() -> Iterator[KubeArgoCD]:
    with KubeArgoCD() as s:  # bookmarks as kube-apiserver sends them: about once a minute, after a change
        yield s


@pytest.fixture
def kubeconfig(tmp_path: Path, standin: KubeArgoCD) -> Path:
    return standin.write_kubeconfig(tmp_path / "kubeconfig", context="use1")


@pytest.fixture
def driver() -> ArgoCDDriver:
    # short timeouts keep failure tests fast; behaviour is the production code path
    return ArgoCDDriver(
        request_timeout_s=2.0,
        watch_timeout_s=5,
        heartbeat_interval_s=0.2,
        refresh_after_s=0.3,
        api_grace_s=1.5,
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
    gitops_repo: str | None = None,  # the test's GitOps repository
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
        gitops_repo=gitops_repo or _GITOPS_URL[0],
        gitops_branch="main",
        revision=sha,
        step=step,
        timeout_s=timeout_s,
    )


# ---------------------------------------------------------------------------------------------------------------


def test_registered_for_kind_argocd() -> None:
    assert isinstance(driver_for("argocd"), ArgoCDDriver)


def test_every_target_kind_but_a_fleet_has_one_driver() -> None:
    assert sorted(DRIVERS.names) == sorted(kind.name for kind in TARGET_KINDS if not kind.fleet)
    with pytest.raises(KeyError, match=r"no target driver kind 'edge'; known: \['argocd', 'git', 'local'\]"):
        driver_for("edge")


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


async def test_a_watch_that_goes_quiet_does_not_stall_the_sync(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch stream can stop delivering versions without breaking (a client that buffers the stream's last
    event until more bytes come, a proxy stalling an idle connection): after a quiet while the driver reads the
    app itself, so the sync ends when Argo CD is done, not at the deadline or the watch's reconnect."""
    gitops.commit({VALUES: values("v1")})
    add_app(standin, gitops)
    monkeypatch.setattr(argocd_driver_module._AppWatch, "_emit", lambda self, item: None)  # hears nothing
    quiet = ArgoCDDriver(
        request_timeout_s=2.0,
        watch_timeout_s=60,
        heartbeat_interval_s=0.2,
        quiet_reread_s=0.5,
        api_grace_s=1.5,
    )
    sha = gitops.commit({VALUES: values("v2")})
    result = await quiet.sync(request(sha, kubeconfig=kubeconfig, timeout_s=15.0), Heartbeats())
    assert result.healthy and result.details["syncRevision"] == sha
    assert [s.revision for s in standin.syncs(APP)] == [sha]


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


async def test_a_revision_the_branch_does_not_have_is_refused_before_any_sync(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    # Git no longer says it should run (the branch was rewritten, or it never was there): never synced
    add_app(standin, gitops)
    gitops.commit({VALUES: values("v1")})
    with pytest.raises(ApplicationError, match="rewritten") as refused:
        await driver.sync(request("f" * 40, kubeconfig=kubeconfig), Heartbeats())
    assert refused.value.type == ErrorType.HUMAN_EDIT and refused.value.non_retryable
    assert standin.syncs(APP) == []


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
    landed: list[str] = []

    def lands_on_top(_op: dict[str, Any]) -> None:  # another target's commit, while Argo CD syncs ours
        landed.append(gitops.commit({"apps/checkout-api/prod/eu-west-1/values.yaml": values("v8")}))

    standin.on_operation = lands_on_top
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.details["syncRevision"] == landed[0] and result.details["syncStatus"] == "Synced"
    assert [s.revision for s in standin.syncs(APP)] == [sha]
    assert result.details["operationRevision"] == sha


async def test_a_commit_landed_on_top_before_the_sync_gets_the_branch_head_synced(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    # Argo CD must never run something older than the branch says: the head, which contains our commit, is synced
    add_app(standin, gitops)
    sha = gitops.commit({VALUES: values("v8")})
    other = gitops.commit({VALUES: values("v9")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.healthy and result.revision == sha
    assert result.details["operationRevision"] == other and result.details["syncRevision"] == other
    assert [s.revision for s in standin.syncs(APP)] == [other]
    again = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())  # a retry: not synced again
    assert again.healthy and [s.revision for s in standin.syncs(APP)] == [other]


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


def churn(standin: KubeArgoCD, writes: int) -> None:
    """Other Applications in the cluster change: the watch cache's window moves on."""
    standin.add_application(
        {
            "metadata": {"name": "other", "namespace": "argocd"},
            "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc"}},
        }
    )
    for i in range(writes):
        standin._mutate(("argocd", "other"), lambda o, i=i: o["metadata"].update(labels={"n": str(i)}))


async def test_watch_cache_window_moving_on_relists_and_still_succeeds(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.status_delay_s = 0.3
    standin.watch_cache_size = 5

    def moved_on(_op: dict[str, Any]) -> None:
        # the driver's watch reconnects from a version the window no longer holds: an ERROR event with 410
        churn(standin, 10)
        standin.drop_watches()

    standin.on_operation = moved_on
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
    standin.watch_cache_size = 5
    standin.watch_410_as_http = True

    def moved_on(_op: dict[str, Any]) -> None:
        churn(standin, 10)
        standin.drop_watches()

    standin.on_operation = moved_on
    sha = gitops.commit({VALUES: values("v12")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.healthy and result.details["relists"] >= 1


def answered(
    standin: KubeArgoCD, status: int, *, method: str | None = None, watch: bool | None = None
) -> int:
    """How many requests the stand-in answered with `status`."""
    return sum(
        1
        for r in standin.requests
        if r.status == status
        and (method is None or r.method == method)
        and (watch is None or (r.query.get("watch") == "true") == watch)
    )


async def test_api_server_restart_mid_watch_with_403_window_does_not_fail_the_sync(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.status_delay_s = 1.5
    # while Argo CD works on the sync the API server restarts: the watch is cut, connections are refused, then
    # the fresh server answers 403 while its RBAC caches load; its watch cache starts afresh (410 for old versions)
    standin.on_operation = lambda _op: threading.Timer(
        0.2, lambda: standin.restart(down_s=0.3, forbidden_s=0.6)
    ).start()
    sha = gitops.commit({VALUES: values("v19")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.healthy and standin.restarts == 1
    assert (
        answered(standin, 403, watch=True) >= 1
    )  # the driver did meet the startup 403s, and waited them out
    assert result.details["watchRetries"] >= 1 and result.details["relists"] >= 1
    assert [s.revision for s in standin.syncs(APP)] == [sha]


async def test_403_right_after_a_successful_read_is_retried_within_the_grace(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    sha = gitops.commit({VALUES: values("v20")})
    standin.fail_next(2, 403, methods={"PATCH"})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.healthy
    assert answered(standin, 403, method="PATCH") == 2 and answered(standin, 200, method="PATCH") == 1
    assert [s.revision for s in standin.syncs(APP)] == [sha]


async def test_403_after_the_connection_broke_is_retried_even_on_a_first_call(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path
) -> None:
    driver = ArgoCDDriver(
        request_timeout_s=2.0, watch_timeout_s=5, heartbeat_interval_s=0.2, api_grace_s=10.0
    )
    add_app(standin, gitops)
    sha = gitops.commit({VALUES: values("v21")})
    restarting = threading.Thread(target=lambda: standin.restart(down_s=0.8, forbidden_s=1.0))
    restarting.start()
    await asyncio.sleep(0.2)
    # the worker has never talked to this server: its first attempt finds it down (Temporal would retry) ...
    with pytest.raises(ArgoCDAPIError, match="unreachable"):
        await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    await asyncio.to_thread(restarting.join)
    # ... and the next attempt meets the startup 403s: a broken connection makes them worth waiting out
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.healthy and answered(standin, 403, method="GET") >= 1
    assert [s.revision for s in standin.syncs(APP)] == [sha]


async def test_lost_answer_to_the_sync_request_is_not_a_second_sync(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.status_delay_s = 0.3
    standin.cut_next(1, methods={"PATCH"})  # the operation is written, but its answer never arrives
    sha = gitops.commit({VALUES: values("v22")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert result.healthy and answered(standin, 0, method="PATCH") == 1
    assert answered(standin, 409, method="PATCH") == 1  # the replayed write met its own precondition ...
    assert [s.revision for s in standin.syncs(APP)] == [sha]  # ... and the fresh read found it: one sync


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
    assert err.non_retryable and err.type == ErrorType.TARGET_CONFIG_ERROR
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


async def test_forbidden_by_a_server_that_never_answered_is_a_config_error_at_once(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.forbid(APP)
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig), Heartbeats())
    assert_config_error(info.value, "prod-use1", APP, "use1", "forbidden", "cannot get")
    assert answered(standin, 403) == 1  # missing RBAC: no waiting, no retry
    assert standin.syncs(APP) == []


async def test_forbidden_that_lasts_past_the_grace_is_a_config_error(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    sha = gitops.commit({VALUES: values("v1")})
    standin.forbid(APP, verbs={"patch"})
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert_config_error(info.value, "prod-use1", APP, "use1", "forbidden", "cannot patch", "still forbidden")
    assert answered(standin, 403, method="PATCH") >= 2  # retried within the grace, then it counted
    assert standin.syncs(APP) == []


async def test_unknown_context_is_a_config_error(kubeconfig: Path, driver: ArgoCDDriver) -> None:
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig, context="eu-west-9"), Heartbeats())
    assert_config_error(info.value, "prod-use1", APP, "eu-west-9")


async def test_missing_kubeconfig_is_a_config_error(tmp_path: Path, driver: ArgoCDDriver) -> None:
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=tmp_path / "nowhere"), Heartbeats())
    assert_config_error(info.value, "prod-use1", APP, "use1", "nowhere")


async def test_missing_app_field_and_a_target_of_another_kind_are_config_errors(
    kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig, app=""), Heartbeats())
    assert_config_error(info.value, "prod-use1", "app")
    with pytest.raises(ApplicationError) as info:
        await driver.sync(
            replace(request("a" * 40, kubeconfig=kubeconfig), kind="git", settings=GitTarget()), Heartbeats()
        )
    assert_config_error(info.value, "prod-use1", "kind argocd needs `app`")


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
    with pytest.raises(ArgoCDAPIError, match="HTTP 500"):  # a server never heard from: Temporal retries
        await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    standin.fail_next(100, 503, methods={"PATCH"})
    with pytest.raises(ArgoCDAPIError, match="HTTP 503"):  # still 503 when the grace is up
        await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())
    assert answered(standin, 503, method="PATCH") >= 2
    standin._faults.clear()
    standin.fail_next(
        1, 503, methods={"PATCH"}
    )  # a passing 503 after a good read is waited out in the activity
    assert (await driver.sync(request(sha, kubeconfig=kubeconfig), Heartbeats())).healthy
    assert [s.revision for s in standin.syncs(APP)] == [sha]


async def test_hanging_api_times_out_retryably(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path
) -> None:
    add_app(standin, gitops)
    standin.hang_next(8, 1.0)  # urllib3 retries a timed-out GET a few times itself
    quick = ArgoCDDriver(request_timeout_s=0.2, watch_timeout_s=2, heartbeat_interval_s=0.2, api_grace_s=1.0)
    with pytest.raises(ArgoCDAPIError, match="unreachable"):
        await quick.sync(request("a" * 40, kubeconfig=kubeconfig), Heartbeats())


async def test_progress_deadline_raises_sync_failed(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_app(standin, gitops)
    standin.status_delay_s = 3.0
    sha = gitops.commit({VALUES: values("v15")})
    with pytest.raises(SyncFailed, match=r"progress deadline \(0.5s\): sync operation Running"):
        await driver.sync(request(sha, kubeconfig=kubeconfig, timeout_s=0.5), Heartbeats())


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
    driver = ArgoCDDriver(heartbeat_interval_s=0.2, api_grace_s=1.0)
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


# ---- Application shapes -------------------------------------------------------------------------------------

CHARTS = "https://charts.example.com/stable"
STALE = {
    "sync": {"status": "Synced", "revision": "0" * 40},
    "health": {"status": "Healthy"},
    "reconciledAt": "2020-01-01T00:00:00Z",
}


def application(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "project": "default",
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
            **spec,
        },
    }


def chart_source(version: str = "1.4.2", value_file: str = f"$values/{VALUES}") -> dict[str, Any]:
    return {
        "repoURL": CHARTS,
        "chart": "checkout-api",
        "targetRevision": version,
        "helm": {"valueFiles": [value_file]},
    }


def add_multi_source_app(standin: KubeArgoCD, gitops: GitOpsRepo, *sources: dict[str, Any]) -> None:
    """A chart from a chart repository with its values file from a `ref: values` source in the GitOps repo."""
    standin.add_chart(CHARTS, "checkout-api", ["1.4.2", "1.5.0"])
    chosen = list(sources) or [
        chart_source(),
        {"repoURL": gitops.url, "targetRevision": "main", "ref": "values"},
    ]
    standin.add_application(application(APP, sources=chosen), status={**STALE, "sync": {"status": "Synced"}})


async def test_multi_source_chart_with_ref_values_syncs_only_the_values_source(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_multi_source_app(standin, gitops)
    sha = gitops.commit({VALUES: values("v30")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig, gitops_repo=gitops.url), Heartbeats())
    assert result.healthy and result.details["sources"] == 2 and result.details["sourcePosition"] == 2
    assert result.details["syncRevision"] == sha
    (sync,) = standin.syncs(APP)
    assert sync.revisions == ["1.4.2", sha] and sync.revision == ""  # the chart keeps its version
    app = standin.app(APP)
    assert app["status"]["sync"]["revisions"] == ["1.4.2", sha] and "revision" not in app["status"]["sync"]
    assert app["status"]["operationState"]["syncResult"]["revisions"] == ["1.4.2", sha]
    assert app["status"]["health"]["status"] == "Healthy"


async def test_multi_source_health_is_judged_on_the_values_source(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_multi_source_app(standin, gitops)
    standin.broken_tags = {"v31-broken"}
    sha = gitops.commit({VALUES: values("v31-broken")})
    with pytest.raises(SyncFailed, match="Degraded"):
        await driver.sync(request(sha, kubeconfig=kubeconfig, gitops_repo=gitops.url), Heartbeats())


async def test_multi_source_retried_activity_does_not_sync_twice_and_head_moving_on_is_fine(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_multi_source_app(standin, gitops)
    standin.track_branch_head = True
    sha = gitops.commit({VALUES: values("v32")})
    landed: list[str] = []

    def lands_on_top(_op: dict[str, Any]) -> None:  # another target's commit, while Argo CD syncs ours
        landed.append(gitops.commit({"apps/checkout-api/prod/eu-west-1/values.yaml": values("v32")}))

    standin.on_operation = lands_on_top
    first = await driver.sync(request(sha, kubeconfig=kubeconfig, gitops_repo=gitops.url), Heartbeats())
    standin.on_operation = None
    again = await driver.sync(request(sha, kubeconfig=kubeconfig, gitops_repo=gitops.url), Heartbeats())
    assert first.healthy and again.healthy and first.details["syncRevision"] == landed[0]
    assert [s.revisions for s in standin.syncs(APP)] == [["1.4.2", sha]]


async def test_multi_source_a_commit_landed_on_top_gets_the_head_in_the_written_sources_only(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    add_multi_source_app(standin, gitops)
    sha = gitops.commit({VALUES: values("v34")})
    other = gitops.commit({VALUES: values("v35")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig, gitops_repo=gitops.url), Heartbeats())
    assert result.healthy and result.details["operationRevision"] == other
    assert [s.revisions for s in standin.syncs(APP)] == [["1.4.2", other]]  # the chart keeps its version


async def test_multi_source_gitops_sources_tracking_the_branch_all_get_the_commit(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    # a chart kept in the GitOps repo itself next to the environments' values: one commit renders the app
    gitops.commit({"charts/checkout-api/Chart.yaml": "apiVersion: v2\nname: checkout-api\nversion: 1.0.0\n"})
    chart_in_git = {
        "repoURL": gitops.url,
        "path": "charts/checkout-api",
        "targetRevision": "main",
        "helm": {"valueFiles": [f"$values/{VALUES}"]},
    }
    add_multi_source_app(
        standin, gitops, chart_in_git, {"repoURL": gitops.url, "targetRevision": "main", "ref": "values"}
    )
    sha = gitops.commit({VALUES: values("v33")})
    result = await driver.sync(request(sha, kubeconfig=kubeconfig, gitops_repo=gitops.url), Heartbeats())
    assert result.healthy and result.details["sourcePosition"] == 2
    assert [s.revisions for s in standin.syncs(APP)] == [[sha, sha]]


async def test_single_source_chart_from_a_chart_repository_is_refused_at_the_first_step(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    standin.add_chart(CHARTS, "checkout-api", ["1.4.2"])
    standin.add_application(
        application(APP, source=chart_source(value_file="values-prod.yaml")), status=STALE
    )
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig, gitops_repo=gitops.url), Heartbeats())
    assert_config_error(
        info.value, APP, "use1", "chart 'checkout-api'", CHARTS, "never sets a chart version", "ref: values",
        f"$values/{VALUES}", "aicd argocd manifests",
    )  # fmt: skip
    assert standin.syncs(APP) == []  # no SHA sent where Argo CD expects a chart version


@pytest.mark.parametrize(
    ("sources", "needles"),
    [
        (  # nothing from the GitOps repo
            [chart_source(), {"repoURL": "https://git.example.com/a.git", "ref": "values"},
             {"repoURL": "https://git.example.com/b.git", "path": "x"}],
            ["none of its 3 sources comes from the GitOps repo", "source 2: https://git.example.com/a.git"],
        ),
        (  # the values file aicd writes is not the one the chart reads
            [chart_source(value_file="$values/apps/checkout-api/prod/values-other.yaml"),
             {"repoURL": "GITOPS", "targetRevision": "main", "ref": "values"}],
            ["no source reads the target's file", VALUES],
        ),
        (  # the values source is pinned to a tag
            [chart_source(), {"repoURL": "GITOPS", "targetRevision": "v1.0.0", "ref": "values"}],
            ["source 2", "tracks targetRevision 'v1.0.0'", "set targetRevision: main"],
        ),
    ],
)  # fmt: skip
async def test_multi_source_apps_aicd_cannot_drive_are_config_errors(
    standin: KubeArgoCD,
    gitops: GitOpsRepo,
    kubeconfig: Path,
    driver: ArgoCDDriver,
    sources: list[dict[str, Any]],
    needles: list[str],
) -> None:
    for source in sources:
        if source["repoURL"] == "GITOPS":
            source["repoURL"] = gitops.url
    add_multi_source_app(standin, gitops, *sources)
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig, gitops_repo=gitops.url), Heartbeats())
    assert_config_error(info.value, APP, *needles)
    assert standin.syncs(APP) == []


async def test_single_source_tracking_another_revision_is_a_config_error(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    standin.create_app(
        APP, repo=gitops.url, path="apps/checkout-api/prod/us-east-1", target_revision="release-1"
    )
    with pytest.raises(ApplicationError) as info:
        await driver.sync(request("a" * 40, kubeconfig=kubeconfig), Heartbeats())
    assert_config_error(info.value, APP, "tracks targetRevision 'release-1'", "'main'")


KUSTOMIZATION = "apps/shop/prod/kustomization.yaml"


def kustomization(tag: str) -> str:
    return (
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [deployment.yaml]\n"
        f"images:\n- name: shop\n  newTag: {tag}\n"
    )


DEPLOYMENT = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\n"


async def test_kustomize_app_syncs_and_a_corrupted_kustomization_fails_the_sync(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    gitops.commit({KUSTOMIZATION: kustomization("v1"), "apps/shop/prod/deployment.yaml": DEPLOYMENT})
    source = {"repoURL": gitops.url, "targetRevision": "main", "path": "apps/shop/prod", "kustomize": {}}
    standin.add_application(application(APP, source=source), status=STALE)
    standin.broken_tags = {"v3-broken"}
    good = gitops.commit({KUSTOMIZATION: kustomization("v2")})
    assert (await driver.sync(request(good, kubeconfig=kubeconfig, path=KUSTOMIZATION), Heartbeats())).healthy
    broken = gitops.commit({KUSTOMIZATION: kustomization("v3-broken")})
    with pytest.raises(SyncFailed, match="Degraded"):  # the new tag is read from the kustomization's images
        await driver.sync(
            request(broken, kubeconfig=kubeconfig, path=KUSTOMIZATION, step="s/1"), Heartbeats()
        )
    # the write the issue found: a list turned into a mapping, plus a stray key - kustomize refuses it
    corrupted = gitops.commit(
        {
            KUSTOMIZATION: "resources: [deployment.yaml]\nimages:\n  '0':\n    newTag: v4\ncanary:\n  weight: 10\n"
        }
    )
    with pytest.raises(SyncFailed, match=r"sync operation Error: ComparisonError.*kustomize build failed"):
        await driver.sync(
            request(corrupted, kubeconfig=kubeconfig, path=KUSTOMIZATION, step="s/2"), Heartbeats()
        )


async def test_plain_directory_app_syncs_and_invalid_manifests_fail_the_sync(
    standin: KubeArgoCD, gitops: GitOpsRepo, kubeconfig: Path, driver: ArgoCDDriver
) -> None:
    manifest = "apps/shop/prod/deployment.yaml"
    gitops.commit({manifest: DEPLOYMENT})
    source = {
        "repoURL": gitops.url,
        "targetRevision": "main",
        "path": "apps/shop/prod",
    }  # detected: Directory
    standin.add_application(application(APP, source=source), status=STALE)
    good = gitops.commit({manifest: DEPLOYMENT + "  labels:\n    release: v2\n"})
    result = await driver.sync(request(good, kubeconfig=kubeconfig, path=manifest), Heartbeats())
    assert result.healthy
    bad = gitops.commit({manifest: "image:\n  tag: v3\n"})  # a values file where Argo CD wants objects
    with pytest.raises(SyncFailed, match="Object 'Kind' is missing"):
        await driver.sync(request(bad, kubeconfig=kubeconfig, path=manifest, step="s/1"), Heartbeats())


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("https://git.example.com/platform/gitops.git", "https://git.example.com/platform/gitops"),
        ("https://git.example.com/platform/gitops.git", "git@git.example.com:platform/gitops.git"),
        ("https://git.example.com/Platform/GitOps/", "ssh://git@git.example.com:7999/platform/gitops.git"),
        ("/srv/git/gitops.git", "file:///srv/git/gitops.git"),
        ("/srv/git/gitops.git/", "/srv/git/./gitops"),
    ],
)
def test_repo_urls_of_one_repository_match(left: str, right: str) -> None:
    assert _repo_key(left) == _repo_key(right)


def test_repo_urls_of_different_repositories_differ() -> None:
    assert _repo_key("https://git.example.com/platform/gitops.git") != _repo_key(
        "https://git.example.com/platform/apps.git"
    )
    assert _repo_key("https://a.example.com/x/gitops") != _repo_key("https://b.example.com/x/gitops")


# ---- TLS ------------------------------------------------------------------------------------------------------


async def test_untrusted_server_certificate_is_a_config_error_naming_context_and_ca(
    tmp_path: Path, gitops: GitOpsRepo, driver: ArgoCDDriver
) -> None:
    with KubeArgoCD(tls=True) as other:
        wrong_ca = tmp_path / "other-ca.crt"
        wrong_ca.write_bytes(other.ca_file.read_bytes())
    with KubeArgoCD(tls=True) as secure:
        add_app(secure, gitops)
        kc = write_kubeconfig(tmp_path / "kc", {"use1": secure}, ca_file=wrong_ca)
        with pytest.raises(ApplicationError) as info:
            await driver.sync(request("a" * 40, kubeconfig=kc), Heartbeats())
        assert_config_error(
            info.value, "prod-use1", APP, "failed TLS verification", "context 'use1'",
            f"certificate-authority {wrong_ca}", secure.url, "retrying cannot help",
        )  # fmt: skip
        assert secure.requests == []  # the handshake failed: no request was ever read
        # a cluster that names no CA at all trusts the system's CAs, which never signed a self-signed certificate
        plain = write_kubeconfig(tmp_path / "kc-plain", {"use1": secure.url})
        with pytest.raises(ApplicationError) as info:
            await driver.sync(request("a" * 40, kubeconfig=plain), Heartbeats())
        assert_config_error(info.value, "failed TLS verification", "the system's trusted CAs")


async def test_trusted_server_certificate_syncs(
    tmp_path: Path, gitops: GitOpsRepo, driver: ArgoCDDriver
) -> None:
    with KubeArgoCD(tls=True) as secure:
        add_app(secure, gitops)
        kc = secure.write_kubeconfig(tmp_path / "kc", context="use1")
        sha = gitops.commit({VALUES: values("v34")})
        result = await driver.sync(request(sha, kubeconfig=kc), Heartbeats())
        assert result.healthy and secure.url.startswith("https://")
        assert [s.revision for s in secure.syncs(APP)] == [sha]


# ---- the branch head read before every sync (aicd.activities.drivers.branch) -----------------------------------


async def test_the_head_of_a_remote_is_read_with_credentials_kept_out_of_argv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[tuple[tuple[str, ...], dict[str, str]]] = []
    real_exec = asyncio.create_subprocess_exec

    async def recorded(*argv: str, **kwargs: Any) -> Any:
        started.append((argv, dict(kwargs.get("env") or {})))
        return await real_exec(*argv, **kwargs)

    monkeypatch.setattr(branch.asyncio, "create_subprocess_exec", recorded)
    with GitHttpStandIn() as server:
        server.refs = {"refs/heads/main": "c" * 40, "refs/heads/other": "d" * 40}
        url = server.url().replace("http://", "http://aicd:s3cret-token@")
        assert await branch.branch_head(url, "main") == "c" * 40
        assert await branch.branch_head(url, "gone") is None
    ((argv, env), _) = started
    assert argv[:3] == ("git", "ls-remote", "--") and argv[-1] == "refs/heads/main"
    assert not any("s3cret-token" in arg for arg in argv)
    count = int(env["GIT_CONFIG_COUNT"]) - 1
    assert env[f"GIT_CONFIG_KEY_{count}"] == f"url.{url}.insteadOf"
    assert env[f"GIT_CONFIG_VALUE_{count}"] == server.url()


async def test_a_remote_branch_is_fetched_to_tell_a_commit_landed_on_top_from_a_rewrite(
    gitops: GitOpsRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(branch, "local_git_dir", lambda _url: None)  # as a remote on another machine
    monkeypatch.setenv("AICD_CACHE_DIR", str(tmp_path / "cache"))
    gitops.commit({VALUES: values("v0")})
    ours = gitops.commit({VALUES: values("v1")})
    head = gitops.commit({VALUES: values("v2")})
    assert await branch.branch_head(gitops.url, "main") == head
    assert await branch.contains(gitops.url, "main", head, ours)
    gitops._run(gitops.work, "reset", "--quiet", "--hard", f"{ours}~1")
    gitops._run(gitops.work, "push", "--quiet", "--force", "origin", "HEAD:main")
    rewritten = gitops.commit({VALUES: values("v3")})
    assert not await branch.contains(gitops.url, "main", rewritten, ours)


async def test_concurrent_syncs_fetch_a_remote_branch_once(
    gitops: GitOpsRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Syncs at once of one remote branch (an edge wave) share one fetch: concurrent fetches into one cache
    fail on its ref lock."""
    monkeypatch.setattr(branch, "local_git_dir", lambda _url: None)
    monkeypatch.setenv("AICD_CACHE_DIR", str(tmp_path / "cache"))
    ours = gitops.commit({VALUES: values("v1")})
    head = gitops.commit({VALUES: values("v2")})
    fetches: list[tuple[str, ...]] = []
    real_exec = asyncio.create_subprocess_exec

    async def recorded(*argv: str, **kwargs: Any) -> asyncio.subprocess.Process:
        if "fetch" in argv:
            fetches.append(argv)
        return await real_exec(*argv, **kwargs)

    monkeypatch.setattr(branch.asyncio, "create_subprocess_exec", recorded)
    answers = await asyncio.gather(*(branch.contains(gitops.url, "main", head, ours) for _ in range(8)))
    assert answers == [True] * 8
    assert len(fetches) == 1
    newer = gitops.commit({VALUES: values("v3")})
    assert await branch.contains(gitops.url, "main", newer, ours)  # a head the cache lacks is fetched
    assert len(fetches) == 2
