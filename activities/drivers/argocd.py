"""Argo CD targets (kind `argocd`): sync an Application to the committed GitOps revision and wait until healthy.

Target config (the target's spec fields, in `SyncRequest.config`):
    app               Application name (required)
    namespace         namespace of the Application, i.e. where that Argo CD runs (default `argocd`)
    context           kubeconfig context of the cluster where that Argo CD runs; absent: the kubeconfig's current
                      context, or in-cluster config when running in a pod with no kubeconfig anywhere
    kubeconfig        path of a kubeconfig file (default: the usual KUBECONFIG / ~/.kube/config resolution)
    progressDeadline  how long the sync may take to become healthy, e.g. `10m` (default: request.timeout_s)
    path              the target's values file in the GitOps repo (reported back, not needed to sync)

How a sync works, through the official kubernetes client on `applications.argoproj.io/v1alpha1`:
1. GET the Application. If Argo CD already holds our operation (same revision, `aicd-delivery` and `aicd-step`
   info) - a retried activity - it is not requested again: one sync per committed step.
2. Otherwise, once no other operation is pending, one JSON merge patch with a resourceVersion precondition sets
   `argocd.argoproj.io/refresh: hard` and an `operation` of Argo CD's own shape (`sync.revision`, `initiatedBy`,
   `info`), exactly what `argocd app sync --revision` asks the controller for. A 409 is retried on a fresh read.
3. Watch the Application (a field-selected watch from the last seen resourceVersion; a 410 Gone re-lists and
   watches on) and judge every version the way `argocd app wait` and Kargo do:
   - `status.operationState` for *our* operation: `Failed`/`Error` -> SyncFailed with Argo CD's message;
     `Succeeded` with `finishedAt` -> go on;
   - `status.reconciledAt >= operationState.finishedAt`: health was assessed after the sync, not a stale report
     (if Argo CD does not write one for a while, the refresh annotation is set again to make it);
   - `status.sync.revision == sha` - or `Synced` at a later branch head while our operation's
     `syncResult.revision == sha`, because parallel targets keep committing to the same branch;
   - `status.health.status`: `Healthy` -> done, `Degraded` -> SyncFailed with Argo CD's message, anything else ->
     keep waiting, until the progress deadline -> SyncFailed.
   The watch runs in a thread (the client is synchronous) with short server-side timeouts; the coroutine
   heartbeats every couple of seconds, so a cancelled activity stops waiting at once and closes the watch.

Errors: app missing (404), forbidden (403), an invalid request (400/422), a bad kubeconfig or unknown context ->
non-retryable ApplicationError type `TargetConfigError` naming target, app and context. Unreachable API server,
timeouts, 5xx, 429, 401 (credentials may rotate; the cached client is dropped) -> `ArgoCDAPIError`, retried by
Temporal. The worker needs RBAC `get, list, watch, patch` on `applications.argoproj.io` in the app's namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from temporalio.exceptions import ApplicationError

from activities.drivers.base import SyncFailed, SyncRequest, SyncResult, register

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "applications"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
INFO_DELIVERY = "aicd-delivery"
INFO_STEP = "aicd-step"
DEFAULT_NAMESPACE = "argocd"
CONFIG_ERROR = "TargetConfigError"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ArgoCDAPIError(RuntimeError):
    """Transient trouble talking to the Kubernetes API (unreachable, timeout, 5xx): Temporal retries the activity."""


def parse_duration(value: str | float | int) -> float:
    """`10m`, `1h30m`, `45s`, `500ms` or plain seconds -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {value!r} (expected e.g. 30s, 10m, 1h30m)")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _status_message(e: ApiException) -> str:
    """The `message` of a Kubernetes Status body, else the HTTP reason."""
    try:
        body = json.loads(e.body) if e.body else {}
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"HTTP {e.status} {e.reason or ''}".strip()


def _config_error(message: str) -> ApplicationError:
    return ApplicationError(message, non_retryable=True, type=CONFIG_ERROR)


@dataclass(frozen=True)
class _Target:
    """The request's target config, validated."""

    name: str
    app: str
    namespace: str
    context: str | None
    kubeconfig: str | None
    deadline_s: float
    path: str | None

    @property
    def where(self) -> str:
        ctx = self.context or ("in-cluster" if _use_in_cluster(self.kubeconfig, self.context) else "current")
        return f"target {self.name!r}: Argo CD Application {self.namespace}/{self.app} (context {ctx})"

    @classmethod
    def from_request(cls, request: SyncRequest) -> _Target:
        cfg = request.config or {}
        app = cfg.get("app")
        if not isinstance(app, str) or not app:
            raise _config_error(
                f"target {request.target!r}: kind argocd needs `app` (the Argo CD Application name)"
            )
        deadline: float = request.timeout_s
        if cfg.get("progressDeadline") is not None:
            try:
                deadline = parse_duration(cfg["progressDeadline"])
            except (ValueError, TypeError) as e:
                raise _config_error(f"target {request.target!r}: progressDeadline: {e}") from None
        kubeconfig = cfg.get("kubeconfig")
        return cls(
            name=request.target,
            app=app,
            namespace=str(cfg.get("namespace") or DEFAULT_NAMESPACE),
            context=str(cfg["context"]) if cfg.get("context") else None,
            kubeconfig=os.path.expanduser(str(kubeconfig)) if kubeconfig else None,
            deadline_s=max(deadline, 0.0),
            path=cfg.get("path"),
        )


def _use_in_cluster(kubeconfig: str | None, context: str | None) -> bool:
    """In a pod with no kubeconfig named anywhere (config, KUBECONFIG, ~/.kube/config): the pod's service account,
    as client-go decides."""
    return (
        kubeconfig is None
        and context is None
        and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and not os.environ.get("KUBECONFIG")
        and not os.path.exists(os.path.expanduser("~/.kube/config"))
    )


@dataclass(frozen=True)
class _Ours:
    """What identifies the operation this sync asked for (a retried activity finds it again)."""

    revision: str
    delivery: str
    step: str

    def matches(self, operation: Any) -> bool:
        if not isinstance(operation, Mapping):
            return False
        sync = operation.get("sync") or {}
        info = {i.get("name"): i.get("value") for i in operation.get("info") or [] if isinstance(i, Mapping)}
        return (
            sync.get("revision") == self.revision
            and info.get(INFO_DELIVERY) == self.delivery
            and info.get(INFO_STEP) == self.step
        )

    def operation(self) -> dict[str, Any]:
        return {
            "sync": {"revision": self.revision},
            "initiatedBy": {"username": "aicd", "automated": False},
            "info": [
                {"name": INFO_DELIVERY, "value": self.delivery},
                {"name": INFO_STEP, "value": self.step},
            ],
        }


@dataclass
class _Verdict:
    kind: str  # "wait" | "done" | "failed" | "lost"
    reason: str
    refresh: bool = False  # health not re-assessed since our operation finished


@dataclass
class _Progress:
    written: bool = False
    ours: dict[str, Any] | None = None  # our operationState, once seen
    stale_since: float | None = None
    refreshed_at: float = 0.0
    rewrites: int = 0
    conflicts: int = 0


def _assess(obj: Mapping[str, Any], ours: _Ours, progress: _Progress) -> _Verdict:
    """Judge one version of the Application (pure: no I/O)."""
    status = obj.get("status") or {}
    pending = obj.get("operation")
    state = status.get("operationState") or {}
    if ours.matches(state.get("operation")):
        progress.ours = dict(state)
    mine = progress.ours
    if mine is None:
        if ours.matches(pending):
            return _Verdict("wait", "sync operation requested; waiting for Argo CD to start it")
        if pending:
            return _Verdict("wait", "another operation is pending on the app")
        return _Verdict("lost", "our sync operation was replaced before Argo CD ran it")
    phase = mine.get("phase") or "Pending"
    message = mine.get("message") or ""
    if phase in ("Failed", "Error"):
        return _Verdict("failed", f"sync operation {phase}: {message or 'no message from Argo CD'}")
    finished = _parse_time(mine.get("finishedAt"))
    if phase != "Succeeded" or finished is None:
        return _Verdict("wait", f"sync operation {phase}" + (f": {message}" if message else ""))
    reconciled = _parse_time(status.get("reconciledAt"))
    # Argo CD syncs and assesses health in separate loops: only a reconcile after finishedAt reflects the sync.
    if reconciled is None or reconciled < finished:
        return _Verdict("wait", "sync succeeded; waiting for Argo CD to re-assess health", refresh=True)
    # Both times have one-second precision, so a reconcile in the same second may still be from before the sync
    # (e.g. the previous step's, or a refresh racing the operation). Such a report only counts when it compared
    # *our* revision and found the live state Synced with it - which a pre-sync report cannot, unless the commit
    # changed nothing for this app. A strictly later report counts as it is.
    same_second = reconciled == finished
    sync = status.get("sync") or {}
    compared, sync_status = sync.get("revision"), sync.get("status")
    result_rev = (mine.get("syncResult") or {}).get("revision")
    if compared == ours.revision:
        if same_second and sync_status != "Synced":
            return _Verdict(
                "wait",
                f"app {sync_status} in the sync's own second; waiting for a newer assessment",
                refresh=True,
            )
    elif sync_status == "Synced" and result_rev == ours.revision:
        # parallel targets keep committing to the branch: Argo CD compares at its newer head and finds the live
        # state (our sync's) Synced with it. The revision alone cannot tell that from an older report (the
        # previous step's), so only a strictly later report counts here.
        if same_second:
            return _Verdict("wait", "waiting for an assessment newer than the sync", refresh=True)
    else:
        return _Verdict("wait", f"app compared at {str(compared)[:12]} ({sync_status}), not at our revision")
    health = status.get("health") or {}
    hstatus = health.get("status") or "Unknown"
    if hstatus == "Degraded":
        return _Verdict("failed", f"health Degraded: {_health_message(status)}")
    if hstatus != "Healthy":
        msg = _health_message(status, default="")
        return _Verdict("wait", f"health {hstatus}" + (f": {msg}" if msg else ""))
    return _Verdict("done", f"Healthy at {ours.revision[:12]}")


def _health_message(status: Mapping[str, Any], default: str = "no message from Argo CD") -> str:
    """The app's health message; newer Argo CD leaves it empty and puts it on the resources."""
    msg = (status.get("health") or {}).get("message")
    if msg:
        return str(msg)
    parts = []
    for r in status.get("resources") or []:
        h = r.get("health") or {}
        if h.get("status") in ("Degraded", "Progressing", "Missing") and h.get("message"):
            parts.append(f"{r.get('kind')} {r.get('namespace') or ''}/{r.get('name')}: {h['message']}")
    return "; ".join(parts) or default


@dataclass
class _Item:
    kind: str  # "object" | "deleted" | "error"
    obj: dict[str, Any] | None = None
    error: BaseException | None = None
    relisted: bool = False


class _AppWatch:
    """Watches one Application from a thread and hands versions to the coroutine (without ever dropping one)."""

    def __init__(
        self,
        api: k8s.CustomObjectsApi,
        namespace: str,
        name: str,
        resource_version: str,
        loop: asyncio.AbstractEventLoop,
        *,
        watch_timeout_s: int,
        request_timeout_s: float,
        max_failures: int = 5,
    ) -> None:
        self._api, self._ns, self._name = api, namespace, name
        self._rv: str | None = resource_version
        self._loop = loop
        self._watch_timeout_s = watch_timeout_s
        self._request_timeout_s = request_timeout_s
        self._max_failures = max_failures
        self._items: deque[_Item] = deque()
        self._ready = asyncio.Event()
        self._stopped = threading.Event()
        self._watch = k8s_watch.Watch()
        self.relists = 0
        self._thread = threading.Thread(target=self._run, name=f"argocd-watch-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()  # shuts the socket down, so the blocked read returns now

    async def next(self, timeout: float) -> list[_Item]:
        """Everything that arrived, or [] after `timeout` seconds."""
        if not self._items:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        self._ready.clear()
        items = list(self._items)
        self._items.clear()
        return items

    def _emit(self, item: _Item) -> None:
        def put() -> None:
            self._items.append(item)
            self._ready.set()

        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(put)

    def _run(self) -> None:
        failures = 0
        field_selector = f"metadata.name={self._name}"
        while not self._stopped.is_set():
            try:
                if self._rv is None:
                    # 410 Gone: what we watched from is compacted away; list for the current state and go on
                    listed = self._api.list_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        self._ns,
                        PLURAL,
                        field_selector=field_selector,
                        _request_timeout=self._request_timeout_s,
                    )
                    self.relists += 1
                    if not isinstance(listed, dict):
                        raise ArgoCDAPIError(f"unexpected list answer: {listed!r:.200}")
                    items = listed.get("items") or []
                    self._emit(_Item("object", items[0], relisted=True) if items else _Item("deleted"))
                    self._rv = str((listed.get("metadata") or {}).get("resourceVersion") or "") or None
                    if self._rv is None:
                        raise ArgoCDAPIError("list answered without a resourceVersion")
                for event in self._watch.stream(
                    self._api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self._ns,
                    PLURAL,
                    field_selector=field_selector,
                    resource_version=self._rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self._watch_timeout_s,
                    _request_timeout=(
                        self._request_timeout_s,
                        self._watch_timeout_s + self._request_timeout_s,
                    ),
                ):
                    if self._stopped.is_set():
                        return
                    raw = event.get("raw_object") or {}
                    rv = (raw.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self._rv = str(rv)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._emit(_Item("object", raw))
                    elif event.get("type") == "DELETED":
                        self._emit(_Item("deleted"))
                    failures = 0
            except ApiException as e:
                if self._stopped.is_set():
                    return
                if e.status == 410:
                    self._rv = None
                    continue
                failures += 1
                if e.status in (400, 401, 403, 404, 422) or failures >= self._max_failures:
                    self._emit(_Item("error", error=e))
                    return
                self._stopped.wait(min(0.2 * 2**failures, 2.0))
            except Exception as e:
                # a dropped connection or read timeout is normal for long watches: reconnect from the last version
                if self._stopped.is_set():
                    return
                failures += 1
                if failures >= self._max_failures:
                    self._emit(_Item("error", error=e))
                    return
                self._stopped.wait(min(0.2 * 2**failures, 2.0))


class ArgoCDDriver:
    """Target driver for kind `argocd` (see the module docstring)."""

    kind: ClassVar[str] = "argocd"

    def __init__(
        self,
        *,
        request_timeout_s: float = 15.0,
        watch_timeout_s: int = 20,
        heartbeat_interval_s: float = 2.0,
        refresh_after_s: float = 10.0,
        max_conflicts: int = 5,
    ) -> None:
        self.request_timeout_s = request_timeout_s
        self.watch_timeout_s = watch_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.refresh_after_s = refresh_after_s
        self.max_conflicts = max_conflicts
        self._clients: dict[tuple[str | None, str | None], k8s.ApiClient] = {}
        self._clients_lock = threading.Lock()

    # ---- clients ---------------------------------------------------------------------------------------------

    def _client(self, target: _Target) -> k8s.ApiClient:
        """One ApiClient per (kubeconfig, context): targets of one delivery may live in different regions' Argo CDs.
        Blocking (reads files, may run auth plugins): call in a thread."""
        key = (target.kubeconfig, target.context)
        with self._clients_lock:
            cached = self._clients.get(key)
        if cached is not None:
            return cached
        try:
            if _use_in_cluster(target.kubeconfig, target.context):
                configuration = k8s.Configuration()
                k8s_config.load_incluster_config(client_configuration=configuration)
                api_client = k8s.ApiClient(configuration)
            else:
                # persist_config=False: a worker must not rewrite the operator's kubeconfig with refreshed tokens
                api_client = k8s_config.new_client_from_config(
                    config_file=target.kubeconfig, context=target.context, persist_config=False
                )
        except (ConfigException, OSError, ValueError, TypeError, KeyError) as e:
            source = target.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise _config_error(f"{target.where}: cannot load kubeconfig {source}: {e}") from None
        with self._clients_lock:
            return self._clients.setdefault(key, api_client)

    def _forget_client(self, target: _Target) -> None:
        with self._clients_lock:
            self._clients.pop((target.kubeconfig, target.context), None)

    async def _call(
        self, target: _Target, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Run one blocking API call in a thread; map failures to config errors vs retryable ones."""
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=self.request_timeout_s, **kwargs)
        except ApiException as e:
            raise self._api_error(target, what, e) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise ArgoCDAPIError(f"{target.where}: {what}: Kubernetes API unreachable: {e}") from e

    def _api_error(self, target: _Target, what: str, e: ApiException) -> Exception:
        msg = _status_message(e)
        if e.status == 404:
            return _config_error(f"{target.where}: {what}: not found ({msg})")
        if e.status == 403:
            return _config_error(f"{target.where}: {what}: forbidden ({msg})")
        if e.status in (400, 422):
            return _config_error(f"{target.where}: {what}: rejected by the API server ({msg})")
        if e.status == 401:
            self._forget_client(target)  # credentials may have rotated: reload the kubeconfig next attempt
        return ArgoCDAPIError(f"{target.where}: {what}: HTTP {e.status}: {msg}")

    # ---- sync ------------------------------------------------------------------------------------------------

    async def sync(self, request: SyncRequest, heartbeat: Callable[..., None]) -> SyncResult:
        target = _Target.from_request(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + target.deadline_s
        api = k8s.CustomObjectsApi(await asyncio.to_thread(self._client, target))
        ours = _Ours(request.revision, request.delivery_id, request.step)
        progress = _Progress()

        obj = await self._get(api, target)
        progress.written = ours.matches(obj.get("operation")) or ours.matches(
            ((obj.get("status") or {}).get("operationState") or {}).get("operation")
        )
        # watch from the version we read, concurrently with our write: no event in between is missed
        watch = _AppWatch(
            api,
            target.namespace,
            target.app,
            obj["metadata"]["resourceVersion"],
            loop,
            watch_timeout_s=self.watch_timeout_s,
            request_timeout_s=self.request_timeout_s,
        )
        watch.start()
        try:
            reason = "starting"
            while True:
                if not progress.written:
                    if obj.get("operation"):
                        reason = "another operation is pending on the app; waiting for it to finish"
                    else:
                        obj = await self._request_sync(api, target, ours, obj, progress)
                        continue
                else:
                    verdict = _assess(obj, ours, progress)
                    if verdict.kind == "done":
                        return self._result(request, target, obj, progress, watch, verdict.reason)
                    if verdict.kind == "failed":
                        raise SyncFailed(f"{target.where} at {request.revision[:12]}: {verdict.reason}")
                    if verdict.kind == "lost":
                        # a version from before our write (queued watch event, racing re-list) looks the same:
                        # only a fresh read, which is ordered after our write, may make us ask again
                        fresh = await self._get(api, target)
                        if _assess(fresh, ours, progress).kind == "lost":
                            progress.rewrites += 1
                            if progress.rewrites > 3:
                                raise SyncFailed(
                                    f"{target.where}: {verdict.reason} (gave up after 3 attempts)"
                                )
                            progress.written = False
                        obj = fresh
                        continue
                    reason = verdict.reason
                    await self._maybe_refresh(api, target, verdict, progress, loop.time())
                obj = await self._next_version(
                    watch, target, request, heartbeat, deadline, reason, obj, progress
                )
        finally:
            watch.stop()

    async def _get(self, api: k8s.CustomObjectsApi, target: _Target) -> dict[str, Any]:
        obj = await self._call(
            target,
            "read application",
            api.get_namespaced_custom_object,
            GROUP,
            VERSION,
            target.namespace,
            PLURAL,
            target.app,
        )
        if not isinstance(obj, dict) or "metadata" not in obj:
            raise ArgoCDAPIError(f"{target.where}: unexpected answer reading the application: {obj!r:.200}")
        return obj

    async def _request_sync(
        self,
        api: k8s.CustomObjectsApi,
        target: _Target,
        ours: _Ours,
        obj: dict[str, Any],
        progress: _Progress,
    ) -> dict[str, Any]:
        """Write our operation with a resourceVersion precondition; on 409 return a fresh read (the caller looks
        again: another operation may have arrived meanwhile)."""
        body = {
            "metadata": {
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "annotations": {REFRESH_ANNOTATION: "hard"},
            },
            "operation": ours.operation(),
        }
        try:
            written = await asyncio.to_thread(
                api.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                target.namespace,
                PLURAL,
                target.app,
                body,
                _content_type="application/merge-patch+json",
                _request_timeout=self.request_timeout_s,
            )
        except ApiException as e:
            if e.status != 409:
                raise self._api_error(target, "request sync", e) from None
            progress.conflicts += 1
            if progress.conflicts > self.max_conflicts:
                raise ArgoCDAPIError(
                    f"{target.where}: request sync: still conflicting after {progress.conflicts} tries"
                ) from None
            return await self._get(api, target)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise ArgoCDAPIError(f"{target.where}: request sync: Kubernetes API unreachable: {e}") from e
        progress.written = True
        if not isinstance(written, dict):
            raise ArgoCDAPIError(f"{target.where}: unexpected answer to the sync request: {written!r:.200}")
        return written

    async def _maybe_refresh(
        self, api: k8s.CustomObjectsApi, target: _Target, verdict: _Verdict, progress: _Progress, now: float
    ) -> None:
        """Argo CD may skip writing status after a sync when nothing changed, leaving reconciledAt stale until its
        next periodic refresh (minutes): ask for a refresh if that goes on for `refresh_after_s`."""
        if not verdict.refresh:
            progress.stale_since = None
            return
        if progress.stale_since is None:
            progress.stale_since = now
        if (
            now - progress.stale_since < self.refresh_after_s
            or now - progress.refreshed_at < self.refresh_after_s
        ):
            return
        progress.refreshed_at = now
        await self._call(
            target,
            "request refresh",
            api.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            target.namespace,
            PLURAL,
            target.app,
            {"metadata": {"annotations": {REFRESH_ANNOTATION: "hard"}}},
            _content_type="application/merge-patch+json",
        )

    async def _next_version(
        self,
        watch: _AppWatch,
        target: _Target,
        request: SyncRequest,
        heartbeat: Callable[..., None],
        deadline: float,
        reason: str,
        current: dict[str, Any],
        progress: _Progress,
    ) -> dict[str, Any]:
        """Wait for the next version of the app worth judging, heartbeating; the deadline raises SyncFailed.
        Returns `current` again after a quiet heartbeat interval so time-based decisions are re-taken."""
        loop = asyncio.get_running_loop()
        heartbeat({"target": target.name, "app": target.app, "revision": request.revision, "state": reason})
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise SyncFailed(
                f"{target.where}: not healthy at {request.revision[:12]} within the progress deadline "
                f"({target.deadline_s:g}s): {reason}"
            )
        latest = current
        for item in await watch.next(min(self.heartbeat_interval_s, remaining)):
            if item.kind == "error":
                err = item.error
                if isinstance(err, ApiException):
                    raise self._api_error(target, "watch application", err) from err
                raise ArgoCDAPIError(f"{target.where}: watch application: {err}") from err
            if item.kind == "deleted":
                raise _config_error(f"{target.where}: the application was deleted while waiting for the sync")
            assert item.obj is not None
            latest = item.obj
        return latest

    def _result(
        self,
        request: SyncRequest,
        target: _Target,
        obj: Mapping[str, Any],
        progress: _Progress,
        watch: _AppWatch,
        message: str,
    ) -> SyncResult:
        status = obj.get("status") or {}
        mine = progress.ours or {}
        return SyncResult(
            target=request.target,
            revision=request.revision,
            healthy=True,
            message=f"Argo CD app {target.namespace}/{target.app} {message}",
            details={
                "app": target.app,
                "namespace": target.namespace,
                "context": target.context,
                "path": target.path,
                "health": (status.get("health") or {}).get("status"),
                "syncStatus": (status.get("sync") or {}).get("status"),
                "syncRevision": (status.get("sync") or {}).get("revision"),
                "operationPhase": mine.get("phase"),
                "startedAt": mine.get("startedAt"),
                "finishedAt": mine.get("finishedAt"),
                "reconciledAt": status.get("reconciledAt"),
                "relists": watch.relists,
                "conflicts": progress.conflicts,
            },
        )


register(ArgoCDDriver())

__all__ = ["ArgoCDAPIError", "ArgoCDDriver", "parse_duration"]
