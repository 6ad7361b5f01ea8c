"""Argo CD targets (kind `argocd`): sync an Application to the committed GitOps revision and wait until healthy.

Target config (aicd.targets.ArgoCDTarget, in `SyncRequest.settings`; the file in `SyncRequest.path`):
    app               Application name (required)
    namespace         namespace of the Application, i.e. where that Argo CD runs (default `argocd`)
    context           kubeconfig context of the cluster where that Argo CD runs; absent: the kubeconfig's current
                      context, or in-cluster config when running in a pod with no kubeconfig anywhere
    kubeconfig        path of a kubeconfig file (default: the usual KUBECONFIG / ~/.kube/config resolution)
    progressDeadline  how long the sync may take to become healthy, e.g. `10m` (`SyncRequest.timeout_s`)
    path              the target's file in the GitOps repo: tells which source of a multi-source app is aicd's

Application shapes, learnt from the live Application (no spec key says which shape an app has):
- One source (`spec.source`) in Git - a Helm chart directory with its values file, a Kustomize overlay, or plain
  manifests: the sync asks for `revision` = the commit. The source must track the GitOps branch (its
  targetRevision is that branch, `HEAD` or empty): Argo CD compares at targetRevision, so an app pinned elsewhere
  would never report the commit as synced.
- Several sources (`spec.sources`), typically a chart from a chart repository whose value file `$values/<path>`
  comes from a `ref: values` source in the GitOps repo: the sync asks for `revisions`, one per source, the form
  Argo CD's CRD takes (its own API's `sourcePositions` only say which entries of this list a caller overrides,
  and its API server turns them into the full list). aicd's commit goes to the sources aicd writes - the one
  holding the target's file (the file under its `path`, or referenced as `$ref/<path>` by another source) and
  the GitOps repo's other sources tracking the same branch (the app renders from one commit); every other source
  keeps its own targetRevision, so a chart keeps its version: aicd never sends a chart version it does not own.
  Sync and health are judged on the file-holding source's entry of `status.sync.revisions` and of
  `operationState.syncResult.revisions`; `status.sync.revision` (empty for such apps) is never waited on.
- A single source that is a chart from a chart repository reads no file aicd writes: refused at the first step
  with a TargetConfigError naming the app and the fix (a multi-source app with a `ref: values` source, which
  `aicd argocd manifests` emits for a target with `chart`). So is a multi-source app none of whose sources reads
  the target's file from the GitOps repo.

How a sync works, through the official kubernetes client on `applications.argoproj.io/v1alpha1`:
1. GET the Application and learn its shape. If Argo CD already holds our operation (same revision(s),
   `aicd-delivery` and `aicd-step` info) - a retried activity, or a patch replayed after a dropped connection -
   it is not requested again: one sync per committed step.
2. Otherwise, once no other operation is pending, the GitOps branch head is read (aicd.activities.drivers.branch,
   after the Application): a sync never moves Argo CD back behind the branch, so when a newer commit has landed
   on top of ours the head is synced instead (and waited for as below); a head that no longer contains our commit
   (the branch was rewritten) is a non-retryable HumanEdit. Then one JSON merge patch with a resourceVersion
   precondition sets `argocd.argoproj.io/refresh: hard` and an `operation` of Argo CD's own shape
   (`sync.revision` or `sync.revisions`, `initiatedBy`, `info`), exactly what `argocd app sync` asks the
   controller for. A 409 is retried on a fresh read, the head read again. A delivery that pushes after our head
   read syncs after us: its patch either bumps the resourceVersion ours is conditioned on (our 409 re-reads the
   head) or finds our operation there and waits for it; so the last sync to land runs the branch head, no lock.
3. Watch the Application (a field-selected watch from the last seen resourceVersion; a 410 Gone - an ERROR event
   in the stream or an HTTP answer - re-lists and watches on) and judge every version the way `argocd app wait`
   and Kargo do:
   - `status.operationState` for *our* operation: `Failed`/`Error` -> SyncFailed with Argo CD's message;
     `Succeeded` with `finishedAt` -> go on;
   - `status.reconciledAt >= operationState.finishedAt`: health was assessed after the sync, not a stale report
     (if Argo CD does not write one for a while, the refresh annotation is set again to make it);
   - the compared revision of our source is our commit - or `Synced` at a later branch head while our
     operation's sync result for that source is our commit, because parallel targets keep committing to the
     same branch;
   - `status.health.status`: `Healthy` -> done, `Degraded` -> SyncFailed with Argo CD's message, anything else ->
     keep waiting, until the progress deadline -> SyncFailed.
   The watch runs in a thread (the client is synchronous) with short server-side timeouts; the coroutine
   heartbeats every couple of seconds, so a cancelled activity stops waiting at once and closes the watch.

API server realities:
- Once this worker has had an answer from an API server (or seen its connections break), a 403, 429, 5xx or
  broken connection from it is retried with backoff, inside the activity, for up to `api_grace_s` (default 45s,
  env AICD_KUBE_API_GRACE) before it counts: a restarting kube-apiserver refuses connections, may answer 503, and
  answers 403 for a moment while its RBAC caches load (kubernetes/kubernetes#121635). A 403 from a server that
  never answered this worker before counts at once: that is missing RBAC.
- A certificate the kubeconfig does not trust is a configuration error naming the context and the CA it trusts.

Errors: app missing (404), forbidden (403, see above), an invalid request (400/422), TLS verification, an app of
a shape aicd cannot drive, a bad kubeconfig or unknown context -> non-retryable ApplicationError type
`TargetConfigError` naming target, app and context. Unreachable API server, timeouts, 5xx, 429, 401 (credentials
may rotate; the cached client is dropped) -> `ArgoCDAPIError`, retried by Temporal. The worker needs RBAC
`get, list, watch, patch` on `applications.argoproj.io` in the app's namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import posixpath
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from temporalio.exceptions import ApplicationError

from aicd.activities.drivers.base import SyncFailed, SyncRequest, SyncResult, config_error
from aicd.activities.drivers.branch import BranchUnreadable, branch_head, contains
from aicd.errors import ErrorType
from aicd.spec.durations import parse_duration
from aicd.targets import ArgoCDTarget

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "applications"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
INFO_DELIVERY = "aicd-delivery"
INFO_STEP = "aicd-step"
DEFAULT_NAMESPACE = "argocd"
API_GRACE_ENV = "AICD_KUBE_API_GRACE"
DEFAULT_API_GRACE_S = 45.0
IN_CLUSTER_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


class ArgoCDAPIError(RuntimeError):
    """Transient trouble talking to the Kubernetes API (unreachable, timeout, 5xx): Temporal retries the activity."""


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
        try:
            settings = request.typed()
        except (TypeError, KeyError, ValueError) as e:  # a legacy request's fields
            raise config_error(f"target {request.target!r}: kind argocd: {e}") from None
        if not isinstance(settings, ArgoCDTarget) or not settings.app:
            raise config_error(
                f"target {request.target!r}: kind argocd needs `app` (the Argo CD Application name)"
            )
        path = request.file()
        return cls(
            name=request.target,
            app=settings.app,
            namespace=settings.namespace or DEFAULT_NAMESPACE,
            context=settings.context or None,
            kubeconfig=os.path.expanduser(settings.kubeconfig) if settings.kubeconfig else None,
            deadline_s=max(request.timeout_s, 0.0),
            path=_repo_path(path) if path else None,
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


# ---- the Application's shape -----------------------------------------------------------------------------------


def _repo_path(path: str) -> str:
    """A path inside a repository, normalised ("" for the root)."""
    normal = posixpath.normpath(path.strip().lstrip("/"))
    return "" if normal == "." else normal


def _repo_key(url: str) -> str:
    """One spelling per repository, whatever the URL's form: https/ssh/scp-like (`git@host:org/repo.git`), local
    path or file:// URL; case and a `.git` suffix do not matter (as Argo CD's own URL normalisation)."""
    text = url.strip()
    if text.startswith("file://"):
        text = text[len("file://") :]
    if "://" in text:
        parts = urlsplit(text)
        host, path = (parts.hostname or ""), parts.path
    elif re.match(r"^[\w.-]+@[\w.-]+:", text):
        host, _, path = text.split("@", 1)[1].partition(":")
    else:
        host, path = "", os.path.normpath(text)
    path = path.rstrip("/")
    path = path.removesuffix(".git").rstrip("/")
    return f"{host}/{path.lstrip('/')}".lower() if host else path.lower()


def _tracks(target_revision: Any, branch: str) -> bool:
    """Whether a source's targetRevision follows the GitOps branch aicd commits to."""
    revision = str(target_revision or "HEAD")
    return revision in ("HEAD", branch, f"refs/heads/{branch}")


@dataclass(frozen=True)
class _Shape:
    """Which of the Application's sources aicd's commit goes to, and which one sync and health are judged on."""

    multi: bool
    count: int  # sources
    position: int  # 0-based index of the source holding the target's file
    written: tuple[int, ...]  # sources that get aicd's commit

    def revisions(self, sha: str, sources: Sequence[Mapping[str, Any]]) -> list[str]:
        """`operation.sync.revisions`: the commit for the written sources, every other source's own revision."""
        return [
            sha if i in self.written else str(s.get("targetRevision") or "") for i, s in enumerate(sources)
        ]

    def compared(self, status: Mapping[str, Any]) -> Any:
        """The revision Argo CD last compared our source at."""
        sync = status.get("sync") or {}
        return self._pick(sync, "revision", "revisions")

    def synced(self, state: Mapping[str, Any]) -> Any:
        """The revision our source was synced to by an operation."""
        return self._pick(state.get("syncResult") or {}, "revision", "revisions")

    def _pick(self, holder: Mapping[str, Any], single: str, multi: str) -> Any:
        if not self.multi:
            return holder.get(single)
        values = holder.get(multi)
        if isinstance(values, list) and len(values) > self.position:
            return values[self.position]
        return None


def _learn_shape(obj: Mapping[str, Any], target: _Target, gitops_repo: str, branch: str) -> _Shape:
    """The shape of the live Application (see the module docstring); TargetConfigError for shapes aicd cannot
    drive."""
    spec = obj.get("spec") or {}
    sources = spec.get("sources")
    if isinstance(sources, list) and sources:
        return _multi_source_shape(
            [s if isinstance(s, Mapping) else {} for s in sources], target, gitops_repo, branch
        )
    if spec.get("sourceHydrator"):
        raise config_error(
            f"{target.where}: uses Argo CD's source hydrator, which syncs hydrated manifests from another branch; "
            "aicd syncs apps that read the GitOps branch it commits to"
        )
    source = spec.get("source") or {}
    if source.get("chart"):
        values = f"$values/{target.path}" if target.path else "$values/<the target's path>"
        raise config_error(
            f"{target.where}: its only source is Helm chart {source.get('chart')!r} "
            f"{source.get('targetRevision') or ''} from the chart repository {source.get('repoURL')}. aicd commits "
            f"the target's values file to the GitOps repo {gitops_repo}, which this Application never reads, and "
            "never sets a chart version it does not own. Make it a multi-source Application: the chart source "
            f"with helm.valueFiles [{values}] plus a source {{repoURL: {gitops_repo}, targetRevision: {branch}, "
            "ref: values}} (`aicd argocd manifests` emits it when the target names its chart with "
            "`chart: {repo, name, version}`)"
        )
    if not _tracks(source.get("targetRevision"), branch):
        raise config_error(_not_tracking(target, source, branch, "its source"))
    return _Shape(multi=False, count=1, position=0, written=(0,))


def _multi_source_shape(
    sources: list[Mapping[str, Any]], target: _Target, gitops_repo: str, branch: str
) -> _Shape:
    mine_key = _repo_key(gitops_repo)
    git = [i for i, s in enumerate(sources) if not s.get("chart")]
    mine = [i for i in git if _repo_key(str(sources[i].get("repoURL") or "")) == mine_key]
    if not mine and len(git) == 1:
        mine = git  # the only Git source: the GitOps repo under another URL (a mirror Argo CD reads)
    listed = "; ".join(_describe(i, s) for i, s in enumerate(sources))
    if not mine:
        raise config_error(
            f"{target.where}: none of its {len(sources)} sources comes from the GitOps repo {gitops_repo} that "
            f"aicd commits to ({listed})"
        )
    holders = [i for i in mine if target.path is not None and _holds(sources, i, target.path)]
    if not holders:
        raise config_error(
            f"{target.where}: no source reads the target's file {target.path!r} from the GitOps repo: a Git "
            f"source's `path` must contain it, or a chart source must list it as `$<ref>/{target.path}` in "
            f"helm.valueFiles with a `ref` source in {gitops_repo} ({listed})"
        )
    for i in holders:
        if not _tracks(sources[i].get("targetRevision"), branch):
            raise config_error(_not_tracking(target, sources[i], branch, f"source {i + 1}"))
    written = sorted(set(holders) | {i for i in mine if _tracks(sources[i].get("targetRevision"), branch)})
    return _Shape(multi=True, count=len(sources), position=holders[0], written=tuple(written))


def _holds(sources: Sequence[Mapping[str, Any]], index: int, path: str) -> bool:
    """Whether source `index` is where Argo CD reads the file at `path` (a repository path) from."""
    source = sources[index]
    ref = source.get("ref")
    if ref:
        wanted = f"${ref}/{path}"
        for other in sources:
            for value_file in (other.get("helm") or {}).get("valueFiles") or []:
                if isinstance(value_file, str) and _ref_file(value_file) == wanted:
                    return True
    if isinstance(source.get("path"), str):
        base = _repo_path(source["path"])
        return base == "" or path == base or path.startswith(base + "/")
    return False


def _ref_file(value_file: str) -> str:
    ref, _, rest = value_file.partition("/")
    return f"{ref}/{_repo_path(rest)}"


def _describe(index: int, source: Mapping[str, Any]) -> str:
    what = (
        f"chart {source['chart']}"
        if source.get("chart")
        else f"ref {source['ref']}"
        if source.get("ref")
        else ""
    )
    path = f" path {source['path']}" if source.get("path") else ""
    return f"source {index + 1}: {source.get('repoURL')}{path} {what} at {source.get('targetRevision') or 'HEAD'}".strip()


def _not_tracking(target: _Target, source: Mapping[str, Any], branch: str, which: str) -> str:
    return (
        f"{target.where}: {which} ({source.get('repoURL')}) tracks targetRevision "
        f"{source.get('targetRevision')!r}, not the GitOps branch {branch!r} aicd commits to: Argo CD compares "
        f"the app at its targetRevision and would never report aicd's commits as synced; set targetRevision: "
        f"{branch}"
    )


@dataclass(frozen=True)
class _Ours:
    """What identifies the operation this sync asked for (a retried activity finds it again)."""

    revision: str
    delivery: str
    step: str
    shape: _Shape
    revisions: tuple[str, ...] = ()  # multi-source: what `operation.sync.revisions` carries

    def matches(self, operation: Any) -> bool:
        if not isinstance(operation, Mapping):
            return False
        sync = operation.get("sync") or {}
        info = {i.get("name"): i.get("value") for i in operation.get("info") or [] if isinstance(i, Mapping)}
        if info.get(INFO_DELIVERY) != self.delivery or info.get(INFO_STEP) != self.step:
            return False
        if not self.shape.multi:
            return bool(sync.get("revision") == self.revision)
        revisions = sync.get("revisions")
        return (
            isinstance(revisions, list)
            and len(revisions) == self.shape.count
            and all(revisions[i] == self.revision for i in self.shape.written)
        )

    def requested(self, obj: Mapping[str, Any]) -> bool:
        """Argo CD holds our operation: pending, or running/done in operationState."""
        state = (obj.get("status") or {}).get("operationState") or {}
        return self.matches(obj.get("operation")) or self.matches(state.get("operation"))

    def operation(self) -> dict[str, Any]:
        sync: dict[str, Any] = (
            {"revisions": list(self.revisions)} if self.shape.multi else {"revision": self.revision}
        )
        return {
            "sync": sync,
            "initiatedBy": {"username": "aicd", "automated": False},
            "info": [
                {"name": INFO_DELIVERY, "value": self.delivery},
                {"name": INFO_STEP, "value": self.step},
            ],
        }


# ---- judging a version of the Application ------------------------------------------------------------------------


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
    shape = ours.shape
    compared, sync_status = shape.compared(status), (status.get("sync") or {}).get("status")
    if compared == ours.revision:
        if same_second and sync_status != "Synced":
            return _Verdict(
                "wait",
                f"app {sync_status} in the sync's own second; waiting for a newer assessment",
                refresh=True,
            )
    elif sync_status == "Synced" and shape.synced(mine) == ours.revision:
        # parallel targets keep committing to the branch: Argo CD compares at its newer head and finds the live
        # state (our sync's) Synced with it. The revision alone cannot tell that from an older report (the
        # previous step's), so only a strictly later report counts here.
        if same_second:
            return _Verdict("wait", "waiting for an assessment newer than the sync", refresh=True)
    else:
        where = f"source {shape.position + 1} " if shape.multi else ""
        return _Verdict(
            "wait", f"app {where}compared at {str(compared)[:12]} ({sync_status}), not at our revision"
        )
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


# ---- talking to the API server ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """One failed API call, classified."""

    kind: str  # tls | conflict | gone | config | auth | forbidden | transient
    message: str
    status: int = 0
    connection: bool = False  # never got an HTTP answer


def _tls_failure(error: BaseException) -> str | None:
    """The verification failure's reason when `error` is (or wraps) a certificate the client does not trust."""
    seen: set[int] = set()
    stack: list[Any] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(current.verify_message or current.reason or current)
        text = str(current)
        if isinstance(current, BaseException | str) and "CERTIFICATE_VERIFY_FAILED" in text:
            found = re.search(r"certificate verify failed: ([^()\]'\"]+)", text)
            return found.group(1).strip() if found else "certificate verify failed"
        if isinstance(current, BaseException):
            stack.extend(
                [getattr(current, "reason", None), current.__cause__, current.__context__, *current.args]
            )
    return None


def _classify(error: BaseException) -> _Failure:
    tls = _tls_failure(error)
    if tls is not None:
        return _Failure("tls", tls, connection=True)
    if isinstance(error, ApiException):
        status = error.status or 0
        if status == 0:  # the client's own report of a failed connection (e.g. an SSL error)
            return _Failure("transient", str(error.reason or error).strip(), connection=True)
        message = _status_message(error)
        kind = {409: "conflict", 410: "gone", 401: "auth", 403: "forbidden"}.get(status)
        if kind is None:
            kind = "transient" if status == 429 or status >= 500 else "config"
        return _Failure(kind, message, status=status)
    return _Failure("transient", str(error) or type(error).__name__, connection=True)


class _Link:
    """What this worker knows of its connection to one API server (one per kubeconfig and context), shared by the
    syncs and watch threads that use it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.answered = False  # the server has answered a request of ours
        self.broken = False  # connections to it failed since its last answer
        self.failing_since: float | None = None

    def succeeded(self) -> None:
        with self._lock:
            self.answered, self.broken, self.failing_since = True, False, None

    def retry_in(self, failure: _Failure, first_failure: float, grace_s: float, now: float) -> float | None:
        """Seconds to wait before trying `failure`'s call again, or None when it counts as it is.

        Only a server this worker has talked to (or whose connections broke) gets the benefit of the doubt: its
        403/429/5xx or broken connection is what a restarting API server looks like. The grace runs from the
        call's first failure or the link's, whichever is older, so repeated attempts do not stretch it."""
        with self._lock:
            known = self.answered or self.broken
            if failure.kind == "transient":
                self.broken = True
            if failure.kind not in ("forbidden", "transient") or not known:
                return None
            if self.failing_since is None:
                self.failing_since = now
            left = grace_s - (now - min(first_failure, self.failing_since))
        if left <= 0:
            return None
        return min(max(0.1, (now - first_failure) / 2), 2.0, left)


@dataclass
class _Session:
    """One sync's way to the API server."""

    api: k8s.CustomObjectsApi
    target: _Target
    link: _Link
    heartbeat: Callable[..., None]
    revision: str


class _Conflict(Exception):
    """The write's resourceVersion precondition failed (409)."""


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
        link: _Link,
        *,
        watch_timeout_s: int,
        request_timeout_s: float,
        grace_s: float,
    ) -> None:
        self._api, self._ns, self._name = api, namespace, name
        self._rv: str | None = resource_version
        self._loop = loop
        self._link = link
        self._watch_timeout_s = watch_timeout_s
        self._request_timeout_s = request_timeout_s
        self._grace_s = grace_s
        self._items: deque[_Item] = deque()
        self._ready = asyncio.Event()
        self._stopped = threading.Event()
        self._watch = k8s_watch.Watch()
        self.relists = 0
        self.retries = 0
        self.last_heard = loop.time()  # when a version last came (or the app was last read instead)
        self._thread = threading.Thread(target=self._run, name=f"argocd-watch-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()  # shuts the socket down, so the blocked read returns now

    async def next(self, timeout: float) -> list[_Item]:
        """Everything that arrived, or [] after `timeout` seconds."""
        if not self._items:
            # not asyncio.wait_for: on Python 3.11 it loses a cancellation that arrives as the wait completes
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
        self._ready.clear()
        items = list(self._items)
        self._items.clear()
        if items:
            self.last_heard = self._loop.time()
        return items

    def _emit(self, item: _Item) -> None:
        def put() -> None:
            self._items.append(item)
            self._ready.set()

        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(put)

    def _relist(self, field_selector: str) -> None:
        """What we watched from is gone (410): list for the current state and go on from there."""
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

    def _run(self) -> None:
        field_selector = f"metadata.name={self._name}"
        first_failure: float | None = None
        while not self._stopped.is_set():
            try:
                if self._rv is None:
                    self._relist(field_selector)
                    self._link.succeeded()
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
                    self._link.succeeded()
                    first_failure = None
                    raw = event.get("raw_object") or {}
                    rv = (raw.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self._rv = str(rv)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._emit(_Item("object", raw))
                    elif event.get("type") == "DELETED":
                        self._emit(_Item("deleted"))
            except Exception as e:
                # a dropped connection or read timeout is normal for long watches: reconnect from the last version
                if self._stopped.is_set():
                    return
                failure = _classify(e)
                if failure.kind == "gone":
                    self._rv = None  # 410: re-list
                    continue
                now = time.monotonic()
                first_failure = first_failure or now
                wait = self._link.retry_in(failure, first_failure, self._grace_s, now)
                if wait is None:
                    self._emit(_Item("error", error=e))
                    return
                self.retries += 1
                self._stopped.wait(wait)


class ArgoCDDriver:
    """Target driver for kind `argocd` (see the module docstring)."""

    name: ClassVar[str] = "argocd"

    def __init__(
        self,
        *,
        request_timeout_s: float = 15.0,
        watch_timeout_s: int = 20,
        heartbeat_interval_s: float = 2.0,
        quiet_reread_s: float = 5.0,
        refresh_after_s: float = 10.0,
        max_conflicts: int = 5,
        api_grace_s: float | None = None,
    ) -> None:
        self.request_timeout_s = request_timeout_s
        self.watch_timeout_s = watch_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.quiet_reread_s = quiet_reread_s
        self.refresh_after_s = refresh_after_s
        self.max_conflicts = max_conflicts
        if api_grace_s is None:
            configured = os.environ.get(API_GRACE_ENV)
            api_grace_s = parse_duration(configured) if configured else DEFAULT_API_GRACE_S
        self.api_grace_s = api_grace_s
        self._clients: dict[tuple[str | None, str | None], k8s.ApiClient] = {}
        self._links: dict[tuple[str | None, str | None], _Link] = {}
        self._clients_lock = threading.Lock()

    # ---- clients ---------------------------------------------------------------------------------------------

    def _client(self, target: _Target) -> tuple[k8s.ApiClient, _Link]:
        """One ApiClient per (kubeconfig, context): targets of one delivery may live in different regions' Argo CDs.
        Blocking (reads files, may run auth plugins): call in a thread."""
        key = (target.kubeconfig, target.context)
        with self._clients_lock:
            cached = self._clients.get(key)
            link = self._links.setdefault(key, _Link())
        if cached is not None:
            return cached, link
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
            raise config_error(f"{target.where}: cannot load kubeconfig {source}: {e}") from None
        with self._clients_lock:
            return self._clients.setdefault(key, api_client), link

    def _forget_client(self, target: _Target) -> None:
        with self._clients_lock:
            self._clients.pop((target.kubeconfig, target.context), None)

    async def _call(
        self,
        session: _Session,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        conflict_ok: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run one blocking API call in a thread, retrying what a restarting API server answers (see `_Link`);
        failures that count are mapped to config errors vs retryable ones."""
        first_failure: float | None = None
        while True:
            try:
                result = await asyncio.to_thread(fn, *args, _request_timeout=self.request_timeout_s, **kwargs)
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
                failure = _classify(e)
                if failure.kind == "conflict" and conflict_ok:
                    session.link.succeeded()
                    raise _Conflict from None
                now = time.monotonic()
                first_failure = first_failure or now
                wait = session.link.retry_in(failure, first_failure, self.api_grace_s, now)
                if wait is None:
                    raise self._error(session, what, failure, now - first_failure) from e
                session.heartbeat(
                    {
                        "target": session.target.name,
                        "app": session.target.app,
                        "revision": session.revision,
                        "state": f"{what}: {failure.message}; retrying",
                    }
                )
                await asyncio.sleep(wait)
                continue
            session.link.succeeded()
            return result

    def _error(self, session: _Session, what: str, failure: _Failure, waited_s: float = 0.0) -> Exception:
        target = session.target
        if failure.kind == "tls":
            return config_error(_tls_message(target, what, failure.message, session.api.api_client))
        if failure.status == 404:
            return config_error(f"{target.where}: {what}: not found ({failure.message})")
        if failure.kind == "forbidden":
            still = f"; still forbidden after {waited_s:.0f}s" if waited_s >= 1 else ""
            return config_error(f"{target.where}: {what}: forbidden ({failure.message}){still}")
        if failure.kind in ("config", "conflict", "gone"):
            return config_error(f"{target.where}: {what}: rejected by the API server ({failure.message})")
        if failure.kind == "auth":
            self._forget_client(target)  # credentials may have rotated: reload the kubeconfig next attempt
        if failure.connection:
            return ArgoCDAPIError(f"{target.where}: {what}: Kubernetes API unreachable: {failure.message}")
        return ArgoCDAPIError(f"{target.where}: {what}: HTTP {failure.status}: {failure.message}")

    # ---- sync ------------------------------------------------------------------------------------------------

    async def sync(self, request: SyncRequest, heartbeat: Callable[..., None]) -> SyncResult:
        target = _Target.from_request(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + target.deadline_s
        api_client, link = await asyncio.to_thread(self._client, target)
        session = _Session(k8s.CustomObjectsApi(api_client), target, link, heartbeat, request.revision)
        progress = _Progress()

        obj = await self._get(session)
        shape = _learn_shape(obj, target, request.gitops_repo, request.gitops_branch)
        sources = ((obj.get("spec") or {}).get("sources") or []) if shape.multi else []
        ours = _Ours(
            request.revision,
            request.delivery_id,
            request.step,
            shape,
            tuple(shape.revisions(request.revision, sources)),
        )
        # watch from the version we read, concurrently with our write: no event in between is missed
        watch = _AppWatch(
            session.api,
            target.namespace,
            target.app,
            obj["metadata"]["resourceVersion"],
            loop,
            link,
            watch_timeout_s=self.watch_timeout_s,
            request_timeout_s=self.request_timeout_s,
            grace_s=self.api_grace_s,
        )
        watch.start()
        try:
            reason = "starting"
            while True:
                if not progress.written:
                    if ours.requested(obj):
                        # a retried activity, or our own patch applied before its answer was lost
                        progress.written = True
                        continue
                    if obj.get("operation"):
                        reason = "another operation is pending on the app; waiting for it to finish"
                    else:
                        # read after the app: a commit that lands after this read is synced by its own
                        # delivery, whose write bumps the resourceVersion our patch is conditioned on
                        ours = await self._at_branch_head(request, target, ours, sources)
                        if ours.requested(obj):
                            progress.written = True
                            continue
                        obj = await self._request_sync(session, ours, obj, progress)
                        continue
                else:
                    verdict = _assess(obj, ours, progress)
                    if verdict.kind == "done":
                        return self._result(request, target, obj, ours, progress, watch, verdict.reason)
                    if verdict.kind == "failed":
                        raise SyncFailed(f"{target.where} at {request.revision[:12]}: {verdict.reason}")
                    if verdict.kind == "lost":
                        # a version from before our write (queued watch event, racing re-list) looks the same:
                        # only a fresh read, which is ordered after our write, may make us ask again
                        fresh = await self._get(session)
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
                    await self._maybe_refresh(session, verdict, progress, loop.time())
                obj = await self._next_version(watch, session, request, deadline, reason, obj)
        finally:
            watch.stop()

    async def _at_branch_head(
        self, request: SyncRequest, target: _Target, ours: _Ours, sources: Sequence[Mapping[str, Any]]
    ) -> _Ours:
        """What to sync: the branch head, which contains our revision (a newer commit landed on top of it: Argo
        CD must never run something older than the branch says). HumanEdit when the head no longer contains it:
        the branch was rewritten, and Git no longer says our commit should run."""
        repo, branch = request.gitops_repo, request.gitops_branch
        try:
            head = await branch_head(repo, branch)
            landed = head is not None and await contains(repo, branch, head, request.revision)
        except BranchUnreadable as e:
            raise ArgoCDAPIError(f"{target.where}: {e}") from None
        if head is None or not landed:
            now = f"head {head[:7]}" if head else "the branch is gone"
            raise ApplicationError(
                f"{target.where}: the history of the GitOps branch {branch} was rewritten: "
                f"{request.revision[:7]} is no longer on it ({now}); not syncing a commit Git no longer has",
                {"sha": request.revision, "author": "", "subject": "history rewritten"},
                non_retryable=True,
                type=str(ErrorType.HUMAN_EDIT),
            )
        if head == ours.revision:
            return ours
        return dataclasses.replace(ours, revision=head, revisions=tuple(ours.shape.revisions(head, sources)))

    async def _get(self, session: _Session) -> dict[str, Any]:
        target = session.target
        obj = await self._call(
            session,
            "read application",
            session.api.get_namespaced_custom_object,
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
        self, session: _Session, ours: _Ours, obj: dict[str, Any], progress: _Progress
    ) -> dict[str, Any]:
        """Write our operation with a resourceVersion precondition; on 409 return a fresh read (the caller looks
        again: another operation, or our own replayed write, may be there now)."""
        target = session.target
        body = {
            "metadata": {
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "annotations": {REFRESH_ANNOTATION: "hard"},
            },
            "operation": ours.operation(),
        }
        try:
            written = await self._call(
                session,
                "request sync",
                session.api.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                target.namespace,
                PLURAL,
                target.app,
                body,
                _content_type="application/merge-patch+json",
                conflict_ok=True,
            )
        except _Conflict:
            progress.conflicts += 1
            if progress.conflicts > self.max_conflicts:
                raise ArgoCDAPIError(
                    f"{target.where}: request sync: still conflicting after {progress.conflicts} tries"
                ) from None
            return await self._get(session)
        progress.written = True
        if not isinstance(written, dict):
            raise ArgoCDAPIError(f"{target.where}: unexpected answer to the sync request: {written!r:.200}")
        return written

    async def _maybe_refresh(
        self, session: _Session, verdict: _Verdict, progress: _Progress, now: float
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
        target = session.target
        await self._call(
            session,
            "request refresh",
            session.api.patch_namespaced_custom_object,
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
        session: _Session,
        request: SyncRequest,
        deadline: float,
        reason: str,
        current: dict[str, Any],
    ) -> dict[str, Any]:
        """Wait for the next version of the app worth judging, heartbeating; the deadline raises SyncFailed.
        Returns `current` again after a quiet heartbeat interval so time-based decisions are re-taken."""
        target = session.target
        loop = asyncio.get_running_loop()
        session.heartbeat(
            {"target": target.name, "app": target.app, "revision": request.revision, "state": reason}
        )
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise SyncFailed(
                f"{target.where}: not healthy at {request.revision[:12]} within the progress deadline "
                f"({target.deadline_s:g}s): {reason}"
            )
        latest = current
        items = await watch.next(min(self.heartbeat_interval_s, remaining))
        if not items:
            if loop.time() - watch.last_heard >= self.quiet_reread_s:
                # A watch can go quiet with versions in flight (a client that buffers a stream's last event
                # until more bytes come, a proxy that stalls an idle connection): read the app itself.
                watch.last_heard = loop.time()
                return await self._get(session)
            return latest
        for item in items:
            if item.kind == "error":
                assert item.error is not None
                raise self._error(session, "watch application", _classify(item.error)) from item.error
            if item.kind == "deleted":
                raise config_error(f"{target.where}: the application was deleted while waiting for the sync")
            assert item.obj is not None
            latest = item.obj
        return latest

    def _result(
        self,
        request: SyncRequest,
        target: _Target,
        obj: Mapping[str, Any],
        ours: _Ours,
        progress: _Progress,
        watch: _AppWatch,
        message: str,
    ) -> SyncResult:
        status = obj.get("status") or {}
        mine = progress.ours or {}
        shape = ours.shape
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
                "sources": shape.count if shape.multi else 1,
                "sourcePosition": shape.position + 1,  # 1-based, as Argo CD counts sources
                "health": (status.get("health") or {}).get("status"),
                "syncStatus": (status.get("sync") or {}).get("status"),
                "syncRevision": shape.compared(status),
                "operationPhase": mine.get("phase"),
                "startedAt": mine.get("startedAt"),
                "finishedAt": mine.get("finishedAt"),
                "reconciledAt": status.get("reconciledAt"),
                "relists": watch.relists,
                "watchRetries": watch.retries,
                "conflicts": progress.conflicts,
                "operationRevision": ours.revision,  # the branch head synced, when newer than our revision
            },
        )


# ---- TLS verification failures, explained -------------------------------------------------------------------------


@dataclass
class _Trust:
    context: str
    ca: str
    server: str = ""


def _kubeconfig_files(target: _Target) -> list[Path]:
    if target.kubeconfig:
        return [Path(target.kubeconfig)]
    configured = os.environ.get("KUBECONFIG")
    names = [n for n in configured.split(os.pathsep) if n] if configured else ["~/.kube/config"]
    return [Path(os.path.expanduser(n)) for n in names]


def _trust_of(target: _Target, api_client: Any) -> _Trust:
    """Which kubeconfig context and which CA the failed verification used (best effort: only for the message)."""
    configured = getattr(getattr(api_client, "configuration", None), "ssl_ca_cert", None)
    fallback = f"CA file {configured}" if configured else "the system's trusted CAs"
    if _use_in_cluster(target.kubeconfig, target.context):
        return _Trust("in-cluster", f"the service account's CA {IN_CLUSTER_CA}")
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in _kubeconfig_files(target):
        with contextlib.suppress(OSError, yaml.YAMLError):
            doc = yaml.safe_load(path.read_text())
            if isinstance(doc, dict):
                docs.append((path, doc))
    context = target.context or next(
        (str(d["current-context"]) for _, d in docs if d.get("current-context")), ""
    )
    cluster_name = next(
        (
            (c.get("context") or {}).get("cluster")
            for _, d in docs
            for c in d.get("contexts") or []
            if isinstance(c, dict) and c.get("name") == context
        ),
        None,
    )
    for path, doc in docs:
        for entry in doc.get("clusters") or []:
            if not isinstance(entry, dict) or entry.get("name") != cluster_name:
                continue
            cluster = entry.get("cluster") or {}
            server = str(cluster.get("server") or "")
            if cluster.get("certificate-authority"):
                return _Trust(context, f"certificate-authority {cluster['certificate-authority']}", server)
            if cluster.get("certificate-authority-data"):
                return _Trust(
                    context, f"the certificate-authority-data of cluster {cluster_name!r} in {path}", server
                )
            return _Trust(
                context, "the system's trusted CAs (the cluster names no certificate-authority)", server
            )
    return _Trust(context or "?", fallback)


def _tls_message(target: _Target, what: str, reason: str, api_client: Any) -> str:
    trust = _trust_of(target, api_client)
    server = (
        trust.server or getattr(getattr(api_client, "configuration", None), "host", "") or "the API server"
    )
    return (
        f"{target.where}: {what}: the certificate of {server} failed TLS verification ({reason}); kubeconfig "
        f"context {trust.context!r} trusts {trust.ca}. Point the cluster's certificate-authority at the CA that "
        "signed the API server's certificate (retrying cannot help)"
    )


__all__ = ["ArgoCDAPIError", "ArgoCDDriver"]
