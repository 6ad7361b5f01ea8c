"""The Kubernetes/Argo CD stand-in behaves like kube-apiserver with Argo CD's CRD (and like Argo CD), as seen
through the official kubernetes client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from aicd.argocd_manifests import render_applications
from tests.standins.kube_argocd import GitOpsRepo, KubeArgoCD, write_kubeconfig

G, V, P = "argoproj.io", "v1alpha1", "applications"
NS = "argocd"
JSON_PATCH = "application/json-patch+json"


class Apps:
    """The real CustomObjectsApi, narrowed to Applications and typed (the client's methods return `object`)."""

    def __init__(self, api: client.CustomObjectsApi, namespace: str = NS) -> None:
        self.api, self.ns = api, namespace

    def get(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.api.get_namespaced_custom_object(G, V, namespace or self.ns, P, name)
        )

    def list_apps(self, namespace: str | None = None, **kwargs: Any) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.api.list_namespaced_custom_object(G, V, namespace or self.ns, P, **kwargs)
        )

    def create(self, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.api.create_namespaced_custom_object(G, V, namespace or self.ns, P, body)
        )

    def patch(self, name: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.api.patch_namespaced_custom_object(G, V, self.ns, P, name, body, **kwargs)
        )

    def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], self.api.replace_namespaced_custom_object(G, V, self.ns, P, name, body))

    def delete(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.api.delete_namespaced_custom_object(G, V, self.ns, P, name))

    def events(self, timeout: int = 1, **kwargs: Any) -> list[dict[str, Any]]:
        stream = watch.Watch().stream(
            self.api.list_namespaced_custom_object, G, V, self.ns, P, timeout_seconds=timeout, **kwargs
        )
        return list(stream)

    def raw_watch_lines(self, **kwargs: Any) -> tuple[int, list[dict[str, Any]]]:
        resp: Any = self.api.list_namespaced_custom_object(
            G, V, self.ns, P, watch=True, _preload_content=False, **kwargs
        )
        return resp.status, [json.loads(line) for line in resp.data.decode().splitlines() if line]


@pytest.fixture
def standin() -> Iterator[KubeArgoCD]:
    with KubeArgoCD(bookmark_interval_s=0.2) as s:
        yield s


def apps_for(kubeconfig: Path, context: str | None = None) -> Apps:
    api_client = config.new_client_from_config(
        config_file=str(kubeconfig), context=context, persist_config=False
    )
    return Apps(client.CustomObjectsApi(api_client))


@pytest.fixture
def apps(standin: KubeArgoCD, tmp_path: Path) -> Apps:
    return apps_for(standin.write_kubeconfig(tmp_path / "kubeconfig"))


def new_app(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "Application",
        "metadata": {"name": name, **extra.pop("metadata", {})},
        "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc"}},
        **extra,
    }


def status_of(e: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(e.body or "{}")
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == e.status
    return body


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


# ---- API server behaviour -------------------------------------------------------------------------------------


def test_status_subresource_does_not_exist(apps: Apps) -> None:
    apps.create(new_app("a"))
    with pytest.raises(ApiException) as info:
        apps.api.get_namespaced_custom_object_status(G, V, NS, P, "a")
    assert info.value.status == 404 and status_of(info.value)["reason"] == "NotFound"
    with pytest.raises(ApiException) as info:
        apps.api.patch_namespaced_custom_object_status(
            G, V, NS, P, "a", {"status": {"health": {"status": "Healthy"}}}
        )
    assert info.value.status == 404
    # status is written through the object itself
    assert (
        apps.patch("a", {"status": {"health": {"status": "Healthy"}}})["status"]["health"]["status"]
        == "Healthy"
    )


def test_strategic_merge_patch_is_unsupported(apps: Apps) -> None:
    apps.create(new_app("a"))
    with pytest.raises(ApiException) as info:
        apps.patch(
            "a", {"metadata": {"labels": {"x": "y"}}}, _content_type="application/strategic-merge-patch+json"
        )
    assert info.value.status == 415 and status_of(info.value)["reason"] == "UnsupportedMediaType"


def test_json_merge_and_apply_patches(apps: Apps) -> None:
    apps.create(new_app("a", metadata={"labels": {"keep": "1", "drop": "1"}}))
    merged = apps.patch("a", {"metadata": {"labels": {"drop": None, "new": "1"}}})
    assert merged["metadata"]["labels"] == {"keep": "1", "new": "1"}
    patched = apps.patch(
        "a",
        [
            {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "c"}},
            {"op": "replace", "path": "/spec/project", "value": "payments"},
            {"op": "remove", "path": "/metadata/labels/new"},
        ],
        _content_type=JSON_PATCH,
    )
    assert patched["metadata"]["annotations"] == {"a/b": "c"} and patched["spec"]["project"] == "payments"
    assert patched["metadata"]["labels"] == {"keep": "1"}
    applied = apps.patch(
        "a",
        new_app("a", spec={"project": "edge"}),
        _content_type="application/apply-patch+yaml",
        field_manager="aicd",
    )
    assert applied["spec"]["project"] == "edge"
    with pytest.raises(ApiException) as info:  # apply needs a field manager
        apps.patch("a", new_app("a"), _content_type="application/apply-patch+yaml")
    assert info.value.status == 422
    with pytest.raises(ApiException) as info:  # a failed JSON-patch test
        apps.patch("a", [{"op": "test", "path": "/spec/project", "value": "nope"}], _content_type=JSON_PATCH)
    assert info.value.status == 422


def test_stale_resource_version_conflicts(apps: Apps) -> None:
    old = apps.create(new_app("a"))
    rv0 = old["metadata"]["resourceVersion"]
    apps.patch("a", {"metadata": {"labels": {"x": "1"}}})
    stale_writes: list[tuple[Any, str]] = [
        ({"metadata": {"resourceVersion": rv0, "labels": {"x": "2"}}}, "application/merge-patch+json"),
        (
            [
                {"op": "replace", "path": "/metadata/resourceVersion", "value": rv0},
                {"op": "add", "path": "/metadata/labels/x", "value": "2"},
            ],
            JSON_PATCH,
        ),
    ]
    for body, ctype in stale_writes:
        with pytest.raises(ApiException) as info:
            apps.patch("a", body, _content_type=ctype)
        assert info.value.status == 409 and status_of(info.value)["reason"] == "Conflict"
    with pytest.raises(ApiException) as info:
        apps.replace("a", old)
    assert info.value.status == 409
    current = apps.get("a")
    assert current["metadata"]["labels"] == {"x": "1"}
    # with the current version the same write goes through
    current["metadata"]["labels"]["x"] = "3"
    assert apps.replace("a", current)["metadata"]["labels"] == {"x": "3"}


def test_noop_patch_bumps_no_version_and_sends_no_event(apps: Apps) -> None:
    rv = apps.create(new_app("a", metadata={"labels": {"x": "1"}}))["metadata"]["resourceVersion"]
    assert apps.patch("a", {"metadata": {"labels": {"x": "1"}}})["metadata"]["resourceVersion"] == rv
    assert apps.patch("a", {"metadata": {"labels": {"x": "2"}}})["metadata"]["resourceVersion"] != rv
    seen = apps.events(resource_version=rv)
    assert [(e["type"], e["raw_object"]["metadata"]["labels"]["x"]) for e in seen] == [("MODIFIED", "2")]


def test_watch_without_resource_version_lists_first(apps: Apps) -> None:
    apps.create(new_app("a"))
    apps.create(new_app("b"))
    one = apps.events(field_selector="metadata.name=b")
    assert [(e["type"], e["raw_object"]["metadata"]["name"]) for e in one] == [("ADDED", "b")]
    both = apps.events()
    assert [(e["type"], e["raw_object"]["metadata"]["name"]) for e in both] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    listed = apps.list_apps(field_selector="metadata.name=a")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"] and listed["metadata"]["resourceVersion"]


def test_watch_bookmarks(apps: Apps) -> None:
    apps.create(new_app("a"))
    rv = apps.list_apps()["metadata"]["resourceVersion"]
    seen = apps.events(resource_version=rv, allow_watch_bookmarks=True)
    assert seen and all(e["type"] == "BOOKMARK" for e in seen)
    assert seen[0]["raw_object"]["metadata"]["resourceVersion"] == rv


def test_expired_resource_version_is_410(standin: KubeArgoCD, apps: Apps) -> None:
    old = apps.create(new_app("a"))["metadata"]["resourceVersion"]
    standin.compact()
    # as kube-apiserver: HTTP 200 and an ERROR event carrying a Status with code 410
    status, lines = apps.raw_watch_lines(resource_version=old)
    assert status == 200 and len(lines) == 1 and lines[0]["type"] == "ERROR"
    assert lines[0]["object"]["kind"] == "Status" and lines[0]["object"]["code"] == 410
    assert lines[0]["object"]["reason"] == "Expired"
    # ... which the client's Watch turns into ApiException(410): clients must re-list
    with pytest.raises(ApiException) as info:
        apps.events(resource_version=old)
    assert info.value.status == 410
    standin.watch_410_as_http = True
    with pytest.raises(ApiException) as info:
        apps.events(resource_version=old)
    assert info.value.status == 410
    # a fresh list's version is watchable again
    assert apps.events(resource_version=apps.list_apps()["metadata"]["resourceVersion"]) == []


def test_missing_namespace(apps: Apps) -> None:
    with pytest.raises(ApiException) as info:
        apps.get("a", namespace="nope")
    body = status_of(info.value)
    assert info.value.status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'applications.argoproj.io "a" not found'
    with pytest.raises(ApiException) as info:
        apps.create(new_app("a"), namespace="nope")
    assert info.value.status == 404 and status_of(info.value)["message"] == 'namespaces "nope" not found'
    assert apps.list_apps(namespace="nope")["items"] == []


def test_finalizers_keep_a_deleted_object(apps: Apps) -> None:
    created = apps.create(new_app("a", metadata={"finalizers": ["resources-finalizer.argocd.argoproj.io"]}))
    rv = created["metadata"]["resourceVersion"]
    assert apps.delete("a")["metadata"]["deletionTimestamp"]
    assert apps.get("a")["metadata"]["deletionTimestamp"]
    apps.patch("a", [{"op": "remove", "path": "/metadata/finalizers"}], _content_type=JSON_PATCH)
    with pytest.raises(ApiException) as info:
        apps.get("a")
    assert info.value.status == 404
    assert [e["type"] for e in apps.events(resource_version=rv)] == ["MODIFIED", "DELETED"]


def test_errors_and_hooks(standin: KubeArgoCD, apps: Apps) -> None:
    apps.create(new_app("a"))
    standin.fail_next(1, 500)
    with pytest.raises(ApiException) as info:
        apps.get("a")
    assert info.value.status == 500 and status_of(info.value)["reason"] == "InternalError"
    assert apps.get("a")  # only one failure was injected
    standin.forbid("a", verbs={"patch"})
    assert apps.get("a")
    with pytest.raises(ApiException) as info:
        apps.patch("a", {"metadata": {"labels": {"x": "1"}}})
    body = status_of(info.value)
    assert info.value.status == 403 and body["reason"] == "Forbidden" and "cannot patch" in body["message"]
    standin.hang_next(10, 1.0, watch=False)  # urllib3 itself retries a timed-out GET a few times
    with pytest.raises(Exception, match=r"(?i)read timed out"):
        apps.api.get_namespaced_custom_object(G, V, NS, P, "a", _request_timeout=0.2)


def test_operation_schema_is_enforced(standin: KubeArgoCD, apps: Apps) -> None:
    apps.create(new_app("a"))
    with pytest.raises(ApiException) as info:
        apps.patch("a", {"operation": {"sync": {"revision": 42}}})
    assert info.value.status == 422 and "operation.sync.revision" in status_of(info.value)["message"]
    with pytest.raises(ApiException) as info:
        apps.patch("a", {"operation": {"info": {"aicd-step": "x"}}})
    assert info.value.status == 422
    # unknown fields are pruned, as for any structural schema
    apps.patch("a", {"operation": {"sync": {"revison": "typo"}, "bogus": 1}})
    assert standin.syncs("a")[0].revision == ""
    wait_for(
        lambda: "operation" not in standin.app("a")
    )  # Argo CD took it (and errored: the app has no source)
    assert standin.app("a")["status"]["operationState"]["operation"] == {"sync": {}}


def test_two_clusters_in_one_kubeconfig(tmp_path: Path) -> None:
    with KubeArgoCD() as one, KubeArgoCD() as two:
        kc = write_kubeconfig(tmp_path / "kc", {"use1": one, "euw1": two})
        for ctx, standin in (("use1", one), ("euw1", two)):
            apps_for(kc, ctx).create(new_app(f"app-{ctx}"))
            assert standin.app(f"app-{ctx}")["metadata"]["name"] == f"app-{ctx}"
        assert len(one.requests) == 1 and len(two.requests) == 1


# ---- playing Argo CD ------------------------------------------------------------------------------------------


@pytest.fixture
def gitops(tmp_path: Path) -> GitOpsRepo:
    return GitOpsRepo(tmp_path / "git")


def rendered(gitops: GitOpsRepo) -> dict[str, Any]:
    targets = {
        "staging-use1": {
            "kind": "argocd",
            "app": "checkout-staging",
            "path": "apps/checkout/staging/values.yaml",
        }
    }
    (app,) = render_applications("checkout-api", gitops.url, "main", targets)
    return app


def sync_op(revision: str) -> dict[str, Any]:
    return {
        "sync": {"revision": revision},
        "initiatedBy": {"username": "aicd", "automated": False},
        "info": [{"name": "aicd-delivery", "value": "d-1"}, {"name": "aicd-step", "value": "staging/0"}],
    }


def test_syncs_from_git_and_reports_health(standin: KubeArgoCD, apps: Apps, gitops: GitOpsRepo) -> None:
    standin.broken_tags = {"bad"}
    good = gitops.commit({"apps/checkout/staging/values.yaml": "image:\n  tag: good\n"})
    bad = gitops.commit({"apps/checkout/staging/values.yaml": "image:\n  tag: bad\n"})
    apps.create(rendered(gitops))

    def synced_to(revision: str) -> Callable[[], bool]:
        return lambda: (
            standin.app("checkout-staging").get("status", {}).get("sync", {}).get("revision") == revision
        )

    app: dict[str, Any] = {}
    for revision, health in ((good, "Healthy"), (bad, "Degraded")):
        refresh = {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}}
        apps.patch("checkout-staging", {**refresh, "operation": sync_op(revision)})
        wait_for(synced_to(revision))
        app = standin.app("checkout-staging")
        state = app["status"]["operationState"]
        assert "operation" not in app and "annotations" not in app["metadata"]
        assert state["phase"] == "Succeeded" and state["syncResult"]["revision"] == revision
        assert state["operation"]["info"][0] == {"name": "aicd-delivery", "value": "d-1"}
        assert state["startedAt"] <= state["finishedAt"] <= app["status"]["reconciledAt"]
        assert app["status"]["sync"]["status"] == "Synced" and app["status"]["health"]["status"] == health
    assert 'image tag "bad"' in app["status"]["health"]["message"]
    assert [(s.revision, s.info["aicd-step"]) for s in standin.syncs("checkout-staging")] == [
        (good, "staging/0"),
        (bad, "staging/0"),
    ]
    assert [h["revision"] for h in app["status"]["history"]] == [good, bad]


def test_stale_health_mode_keeps_the_old_report_for_a_while(
    standin: KubeArgoCD, apps: Apps, gitops: GitOpsRepo
) -> None:
    sha = gitops.commit({"apps/checkout/staging/values.yaml": "image:\n  tag: v2\n"})
    old = {
        "health": {"status": "Healthy"},
        "reconciledAt": "2020-01-01T00:00:00Z",
        "sync": {"status": "Synced"},
    }
    standin.add_application(rendered(gitops), status=old)
    standin.stale_health_s = 0.5
    apps.patch("checkout-staging", {"operation": sync_op(sha)})
    wait_for(lambda: standin.app("checkout-staging")["status"]["operationState"]["phase"] == "Succeeded")
    early = standin.app("checkout-staging")["status"]
    assert early["reconciledAt"] == "2020-01-01T00:00:00Z" and early["health"] == {"status": "Healthy"}
    wait_for(lambda: standin.app("checkout-staging")["status"]["reconciledAt"] != "2020-01-01T00:00:00Z")
    assert standin.app("checkout-staging")["status"]["sync"]["revision"] == sha
