"""The Kubernetes/Argo CD stand-in behaves like kube-apiserver with Argo CD's CRD (and like Argo CD), as seen
through the official kubernetes client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from aicd.argocd_manifests import render_applications
from aicd.testing.standins.kube_argocd import GitOpsRepo, KubeArgoCD, write_kubeconfig

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

    def create(self, body: dict[str, Any], namespace: str | None = None, **kwargs: Any) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.api.create_namespaced_custom_object(G, V, namespace or self.ns, P, body, **kwargs),
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


class Collector:
    """A watch running in a thread, collecting its events (the stream stays open while the test acts)."""

    def __init__(self, apps: Apps, **kwargs: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(apps, kwargs), daemon=True)
        self._thread.start()

    def _run(self, apps: Apps, kwargs: dict[str, Any]) -> None:
        try:
            for event in watch.Watch().stream(
                apps.api.list_namespaced_custom_object, G, V, apps.ns, P, **kwargs
            ):
                self.events.append(event)
        except Exception as e:  # reported to the test
            self.error = e

    def join(self) -> None:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def test_bookmarks_come_only_after_a_change_at_their_interval(standin: KubeArgoCD, apps: Apps) -> None:
    apps.create(new_app("a"))
    rv = apps.list_apps()["metadata"]["resourceVersion"]
    # nothing changes: kube-apiserver sends no bookmark, however long the watch is open
    assert apps.events(timeout=1, resource_version=rv, allow_watch_bookmarks=True) == []
    quiet = Collector(apps, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=2)
    time.sleep(0.3)
    standin.add_namespace("argocd-eu")
    moved = apps.create(new_app("elsewhere"), namespace="argocd-eu")["metadata"]["resourceVersion"]
    quiet.join()
    # a change this watch does not see (another namespace) moves the version on: one bookmark tells it so,
    # and no more follow while nothing else changes
    assert quiet.types() == ["BOOKMARK"] and quiet.error is None
    assert quiet.events[0]["raw_object"]["metadata"]["resourceVersion"] == moved
    assert apps.events(timeout=1, resource_version=rv) == []  # without allowWatchBookmarks: none at all


def test_watch_cache_window_410_is_an_error_event_in_a_200_stream(standin: KubeArgoCD, apps: Apps) -> None:
    standin.watch_cache_size = 3
    old = apps.create(new_app("a"))["metadata"]["resourceVersion"]
    for i in range(5):
        apps.patch("a", {"metadata": {"labels": {"n": str(i)}}})
    # as kube-apiserver: HTTP 200 and an ERROR event carrying a Status with code 410
    status, lines = apps.raw_watch_lines(resource_version=old, timeout_seconds=1)
    assert status == 200 and len(lines) == 1 and lines[0]["type"] == "ERROR"
    assert lines[0]["object"]["kind"] == "Status" and lines[0]["object"]["code"] == 410
    assert (
        lines[0]["object"]["reason"] == "Expired"
        and "too old resource version" in lines[0]["object"]["message"]
    )
    # ... which the client's Watch turns into ApiException(410): clients must re-list
    with pytest.raises(ApiException) as info:
        apps.events(resource_version=old)
    assert info.value.status == 410
    standin.watch_410_as_http = True
    with pytest.raises(ApiException) as info:
        apps.events(resource_version=old)
    assert info.value.status == 410
    standin.watch_410_as_http = False
    # a version still inside the window replays from there: only older ones are gone
    current = int(apps.get("a")["metadata"]["resourceVersion"])
    replay = apps.events(resource_version=str(current - 2))
    assert [e["raw_object"]["metadata"]["labels"]["n"] for e in replay] == ["3", "4"]


def test_the_window_moving_on_ends_no_open_watch(standin: KubeArgoCD, apps: Apps) -> None:
    standin.watch_cache_size = 3
    rv = apps.create(new_app("a"))["metadata"]["resourceVersion"]
    open_watch = Collector(apps, resource_version=rv, timeout_seconds=2)
    time.sleep(0.2)
    for i in range(10):  # far more changes than the window holds
        apps.patch("a", {"metadata": {"labels": {"n": str(i)}}})
    open_watch.join()
    assert open_watch.error is None
    assert [e["raw_object"]["metadata"]["labels"]["n"] for e in open_watch.events] == [
        str(i) for i in range(10)
    ]


def test_restart_cuts_connections_refuses_then_answers_503_then_403(standin: KubeArgoCD, apps: Apps) -> None:
    rv = apps.create(new_app("a"))["metadata"]["resourceVersion"]
    before = Collector(apps, resource_version=rv, timeout_seconds=5)
    time.sleep(0.2)
    restarting = threading.Thread(
        target=lambda: standin.restart(down_s=0.5, unavailable_s=0.5, forbidden_s=0.5)
    )
    restarting.start()
    time.sleep(0.1)
    with pytest.raises(Exception, match=r"(?i)refused"):  # down: nothing listens
        apps.api.get_namespaced_custom_object(G, V, NS, P, "a", _request_timeout=1)
    before.join()  # the open watch was cut, not left hanging
    restarting.join()
    with pytest.raises(ApiException) as info:
        apps.get("a")
    assert info.value.status == 503 and status_of(info.value)["reason"] == "ServiceUnavailable"
    time.sleep(0.55)
    with pytest.raises(ApiException) as info:  # RBAC caches still loading
        apps.get("a")
    body = status_of(info.value)
    assert info.value.status == 403 and "cannot get resource" in body["message"] and "RBAC" in body["message"]
    time.sleep(0.55)
    assert apps.get("a")["metadata"]["name"] == "a"
    # the watch cache started afresh after the restart: what the old watch held is too old now
    with pytest.raises(ApiException) as info:
        apps.events(resource_version=rv)
    assert info.value.status == 410
    assert standin.restarts == 1


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
    with pytest.raises(ApiException) as info:
        apps.patch("a", {"operation": {"info": [{"name": "aicd-step"}]}})
    assert (
        info.value.status == 422
        and "operation.info[0].value: Required value" in status_of(info.value)["message"]
    )
    # unknown fields are pruned, as for any structural schema - `sourcePositions` too: the CRD has no such field
    apps.patch("a", {"operation": {"sync": {"revison": "typo", "sourcePositions": [2]}, "bogus": 1}})
    assert standin.syncs("a")[0].revision == ""
    wait_for(
        lambda: "operation" not in standin.app("a")
    )  # Argo CD took it (and errored: the app has no source)
    state = standin.app("a")["status"]["operationState"]
    assert state["operation"] == {"sync": {}} and state["phase"] == "Error"


@pytest.mark.parametrize(
    ("patch", "cause"),
    [
        ({"status": {"sync": {"status": "Synced", "revisions": "abc"}}}, 'status.sync.revisions: Invalid value: "string"'),
        ({"status": {"sync": {"revision": "abc"}}}, "status.sync.status: Required value"),
        ({"status": {"operationState": {"phase": "Running"}}}, "status.operationState.operation: Required value"),
        ({"status": {"reconciledAt": "yesterday"}}, "status.reconciledAt: Invalid value"),
        ({"status": {"history": [{"revision": "abc", "deployedAt": "2024-01-01T00:00:00Z"}]}},
         "status.history[0].id: Required value"),
        ({"status": {"health": {"status": 1}}}, "status.health.status in body must be of type string"),
        ({"spec": {"sources": [{"path": "x"}]}}, "spec.sources[0].repoURL: Required value"),
        ({"spec": {"source": {"repoURL": "r", "helm": {"valueFiles": "values.yaml"}}}},
         "spec.source.helm.valueFiles: Invalid value"),
        ({"spec": {"destination": None}}, "spec.destination: Required value"),
    ],
)  # fmt: skip
def test_status_and_spec_are_checked_against_the_crd_schema(
    apps: Apps, patch: dict[str, Any], cause: str
) -> None:
    apps.create(new_app("a"))
    with pytest.raises(ApiException) as info:
        apps.patch("a", patch)
    body = status_of(info.value)
    assert info.value.status == 422 and body["reason"] == "Invalid" and cause in body["message"], body[
        "message"
    ]
    assert body["message"].startswith('Application.argoproj.io "a" is invalid: ')


def test_unknown_fields_are_pruned_or_refused_when_strict(apps: Apps) -> None:
    created = apps.create(
        new_app("a", status={"health": {"status": "Healthy", "colour": "green"}, "bogus": 1})
    )
    assert created["status"] == {"health": {"status": "Healthy"}}
    with pytest.raises(ApiException) as info:
        apps.create(
            new_app("b", spec={"project": "default", "destination": {}, "sauce": {}}),
            field_validation="Strict",
        )
    assert info.value.status == 400 and 'unknown field "spec.sauce"' in status_of(info.value)["message"]
    with pytest.raises(ApiException) as info:
        apps.create({"apiVersion": f"{G}/{V}", "kind": "Application", "metadata": {"name": "c"}})
    assert info.value.status == 422 and "spec: Required value" in status_of(info.value)["message"]


def test_a_write_that_changes_nothing_is_not_seen_by_argo_cd(standin: KubeArgoCD, apps: Apps) -> None:
    apps.create(new_app("a"))
    # the refresh annotation is there already (say, from before Argo CD restarted) but Argo CD never saw it come
    standin._mutate(
        ("argocd", "a"), lambda o: o["metadata"].update(annotations={"argocd.argoproj.io/refresh": "hard"})
    )
    rv = apps.get("a")["metadata"]["resourceVersion"]
    same = apps.patch("a", {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}})
    assert same["metadata"]["resourceVersion"] == rv
    time.sleep(0.3)
    assert standin.refresh_requests("a") == 0  # no event, so no refresh
    apps.patch(
        "a", {"metadata": {"labels": {"x": "1"}}}
    )  # a real change: Argo CD sees the app, and the request
    wait_for(lambda: standin.refresh_requests("a") == 1)


def test_https_with_the_stand_ins_certificate(tmp_path: Path) -> None:
    with KubeArgoCD(tls=True) as secure:
        trusted = apps_for(secure.write_kubeconfig(tmp_path / "kc"))
        assert trusted.create(new_app("a"))["metadata"]["name"] == "a"
        assert [e["type"] for e in trusted.events(timeout=1)] == ["ADDED"]  # watches over TLS too
        untrusted = apps_for(write_kubeconfig(tmp_path / "kc-system-cas", {"standin": secure.url}))
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.get("a")


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


CHARTS = "https://charts.example.com/stable"


def multi_source(gitops: GitOpsRepo, version: str = "1.4.2") -> dict[str, Any]:
    return new_app(
        "checkout",
        spec={
            "project": "default",
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "checkout"},
            "sources": [
                {
                    "repoURL": CHARTS,
                    "chart": "checkout-api",
                    "targetRevision": version,
                    "helm": {"valueFiles": ["$values/apps/checkout/prod/values.yaml"]},
                },
                {"repoURL": gitops.url, "targetRevision": "main", "ref": "values"},
            ],
        },
    )


def test_multi_source_sync_takes_one_revision_per_source(
    standin: KubeArgoCD, apps: Apps, gitops: GitOpsRepo
) -> None:
    standin.add_chart(CHARTS, "checkout-api", ["1.4.2", "1.5.0"])
    standin.broken_tags = {"bad"}
    first = gitops.commit({"apps/checkout/prod/values.yaml": "image:\n  tag: good\n"})
    gitops.commit({"apps/checkout/prod/values.yaml": "image:\n  tag: bad\n"})  # the branch head is broken
    apps.create(multi_source(gitops))
    op = {**sync_op(""), "sync": {"revisions": ["1.5.0", first]}}
    apps.patch("checkout", {"operation": op})
    wait_for(lambda: "health" in standin.app("checkout").get("status", {}))
    status = standin.app("checkout")["status"]
    # the values came from the ref source at the requested commit, not from the branch head
    assert status["health"]["status"] == "Healthy" and status["sync"]["revisions"] == ["1.5.0", first]
    assert (
        "revision" not in status["sync"]
        and status["sync"]["comparedTo"]["sources"][0]["chart"] == "checkout-api"
    )
    result = status["operationState"]["syncResult"]
    assert (
        result["revision"] == "" and result["revisions"] == ["1.5.0", first] and len(result["sources"]) == 2
    )
    assert status["history"][-1]["revisions"] == ["1.5.0", first] and "revision" not in status["history"][-1]


def test_multi_source_app_ignores_a_single_revision(
    standin: KubeArgoCD, apps: Apps, gitops: GitOpsRepo
) -> None:
    # what aicd used to send: Argo CD syncs every source at its targetRevision and never reports
    # `status.sync.revision` for such an app - a driver waiting on it waits forever
    standin.add_chart(CHARTS, "checkout-api", ["1.4.2"])
    first = gitops.commit({"apps/checkout/prod/values.yaml": "image:\n  tag: v1\n"})
    head = gitops.commit({"apps/checkout/prod/values.yaml": "image:\n  tag: v2\n"})
    apps.create(multi_source(gitops))
    apps.patch("checkout", {"operation": sync_op(first)})
    wait_for(lambda: "health" in standin.app("checkout").get("status", {}))
    sync = standin.app("checkout")["status"]["sync"]
    assert sync["revisions"] == ["1.4.2", head] and "revision" not in sync


@pytest.mark.parametrize(
    ("revisions", "error"),
    [
        (["9.9.9", "main"], 'chart "checkout-api" version "9.9.9" not found'),
        (["main", "main"], 'version "main" not found'),  # a branch or SHA sent where a chart version belongs
        (["1.4.2"], "1 revisions for 2 sources"),
        (["1.4.2", "f" * 40], "failed to generate manifest for source 2 of 2"),
    ],
)
def test_multi_source_operation_errors(
    standin: KubeArgoCD, apps: Apps, gitops: GitOpsRepo, revisions: list[str], error: str
) -> None:
    standin.add_chart(CHARTS, "checkout-api", ["1.4.2"])
    gitops.commit({"apps/checkout/prod/values.yaml": "image:\n  tag: v1\n"})
    apps.create(multi_source(gitops))
    apps.patch("checkout", {"operation": {**sync_op(""), "sync": {"revisions": revisions}}})
    wait_for(lambda: "operation" not in standin.app("checkout"))
    state = standin.app("checkout")["status"]["operationState"]
    assert (
        state["phase"] == "Error"
        and state["message"].startswith("ComparisonError")
        and error in state["message"]
    )


@pytest.mark.parametrize(
    ("files", "source", "health", "error"),
    [
        (  # Chart.yaml: Helm, values.yaml by default
            {"x/Chart.yaml": "name: x\n", "x/values.yaml": "image:\n  tag: bad\n"}, {}, "Degraded", None,
        ),
        (  # kustomization.yaml: Kustomize, tags from its images
            {"x/kustomization.yaml": "resources: [d.yaml]\nimages:\n- name: x\n  newTag: bad\n", "x/d.yaml": "kind: A\n"},
            {}, "Degraded", None,
        ),
        (  # a kustomization with a stray key
            {"x/kustomization.yaml": "resources: [d.yaml]\ncanary:\n  weight: 10\n"}, {}, None,
            'json: unknown field "canary"',
        ),
        (  # images turned into a mapping
            {"x/kustomization.yaml": "images:\n  '0':\n    newTag: v2\n"}, {"kustomize": {}}, None,
            "cannot unmarshal object into Go struct field Kustomization.images",
        ),
        (  # plain manifests: Directory
            {"x/d.yaml": "apiVersion: v1\nkind: ConfigMap\ndata:\n  tag: bad\n"}, {}, "Degraded", None,
        ),
        (  # nested manifests only with directory.recurse
            {"x/sub/d.yaml": "apiVersion: v1\nkind: ConfigMap\ndata:\n  tag: bad\n"}, {"directory": {"recurse": True}},
            "Degraded", None,
        ),
        (
            {"x/sub/d.yaml": "apiVersion: v1\nkind: ConfigMap\ndata:\n  tag: bad\n"}, {}, "Healthy", None,
        ),
        (  # an explicit value file that is not there
            {"x/Chart.yaml": "name: x\n"}, {"helm": {"valueFiles": ["prod.yaml"]}}, None, "open x/prod.yaml: no such file",
        ),
        (
            {"x/Chart.yaml": "name: x\n"}, {"helm": {"valueFiles": ["prod.yaml"], "ignoreMissingValueFiles": True}},
            "Healthy", None,
        ),
    ],
)  # fmt: skip
def test_source_types_render_like_argo_cd(
    standin: KubeArgoCD,
    apps: Apps,
    gitops: GitOpsRepo,
    files: dict[str, str],
    source: dict[str, Any],
    health: str | None,
    error: str | None,
) -> None:
    standin.broken_tags = {"bad"}
    sha = gitops.commit(files)
    spec = {
        "project": "default",
        "destination": {"server": "https://kubernetes.default.svc"},
        "source": {"repoURL": gitops.url, "targetRevision": "main", "path": "x", **source},
    }
    apps.create(new_app("app", spec=spec))
    apps.patch("app", {"operation": sync_op(sha)})
    wait_for(lambda: "operation" not in standin.app("app") and "reconciledAt" in standin.app("app")["status"])
    status = standin.app("app")["status"]
    if error is None:
        assert status["operationState"]["phase"] == "Succeeded" and status["health"]["status"] == health
    else:
        assert status["operationState"]["phase"] == "Error" and error in status["operationState"]["message"]
