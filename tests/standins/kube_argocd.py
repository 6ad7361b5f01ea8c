"""Loopback Kubernetes API server for Argo CD `Application`s that also plays Argo CD's application controller.

The real `kubernetes` client talks to it through a kubeconfig written by `write_kubeconfig`, so the driver runs the
same code path as against a real cluster. What it mimics, and why each matters to a client:

API server (kube-apiserver with Argo CD's CRD installed)
- Argo CD's CRD has no status subresource (`+genclient:noStatus`): status lives in the object itself and any
  `/status` (or other subresource) path answers 404.
- PATCH accepts JSON patch, merge patch and server-side apply; strategic merge answers 415 (custom resources have
  no patch strategy metadata). A `metadata.resourceVersion` that is not the current one (in a PUT body or a patch
  result) answers 409 Conflict. A write that changes nothing bumps no resourceVersion and sends no watch event.
- Resource versions are one global counter (like etcd's revision). Watches replay from their resourceVersion;
  `compact()` expires every version issued so far, after which a watch from an older version gets a 410 `Expired`
  ERROR event (what kube-apiserver sends for a too-old watch) or, with `watch_410_as_http`, an HTTP 410.
  A watch without resourceVersion (or "0") first sends the current objects as ADDED. BOOKMARKs are sent every
  `bookmark_interval_s` to watches that allow them.
- GET of an object in a namespace that does not exist answers 404 NotFound for the object; create there answers
  404 `namespaces "x" not found`; list there answers an empty list - all as kube-apiserver does.
- DELETE of an object with finalizers only sets `deletionTimestamp`; it goes away when its finalizers are removed.
- Errors are `Status` bodies. The `operation` field is checked against the CRD's structural schema subset that
  matters here: unknown fields are pruned, wrong types answer 422 Invalid.

Argo CD (application controller)
- When an Application gets an `operation` with `sync`, it records the request (`syncs()`), sets
  `operationState.phase=Running`, waits `status_delay_s`, resolves the revision in the GitOps repo with real git
  (`spec.source.repoURL` is a local repository path or file:// URL), reads the values files
  `spec.source.path/<each spec.source.helm.valueFiles>` (default `values.yaml`) at that revision, then - like the
  controller, in two writes - completes the operation (`operationState` Succeeded/Failed/Error with finishedAt and
  syncResult, `operation` removed, history appended) and reconciles (`sync`, `health`, `resources`,
  `reconciledAt`, refresh annotation removed).
- Health comes from the committed values: any scalar equal to a tag in `broken_tags` -> Degraded with a
  Deployment message; a tag in `failing_tags` makes the sync operation itself Fail.
- `stale_health_s` leaves the pre-sync health/reconciledAt in place that long after the operation completed;
  `skip_reconcile_after_sync` never reconciles after a sync until the refresh annotation is set again (Argo CD can
  skip the status write when nothing changed); `progressing_s` reports Progressing that long first;
  `track_branch_head` compares against the branch head like the real controller, so `status.sync.revision` moves
  on when other commits land.
- Test hooks: `fail_next`/`hang_next` for N requests, `forbid` (403 per app and verb), `on_operation` callback,
  `conflict_before_next_patches` (a concurrent writer bumps the object just before the next PATCH).
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import datetime as dt
import json
import logging
import posixpath
import re
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

log = logging.getLogger(__name__)

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "applications"
KIND = "Application"
API_VERSION = f"{GROUP}/{VERSION}"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
RESOURCE = f"{PLURAL}.{GROUP}"
SERVICE_ACCOUNT = "system:serviceaccount:aicd:aicd-worker"

_PATH = re.compile(
    rf"^/apis/{re.escape(GROUP)}/{VERSION}/namespaces/(?P<ns>[^/]+)/{PLURAL}"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?/?$"
)
Key = tuple[str, str]  # (namespace, name)


def ts(t: float | None = None) -> str:
    """RFC 3339 at second precision, as metav1.Time serialises."""
    return dt.datetime.fromtimestamp(time.time() if t is None else t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _not_found(name: str) -> KubeError:
    return KubeError(
        404, "NotFound", f'{RESOURCE} "{name}" not found', {"name": name, "group": GROUP, "kind": PLURAL}
    )


def _no_route() -> KubeError:
    return KubeError(404, "NotFound", "the server could not find the requested resource", {})


def _conflict(name: str) -> KubeError:
    return KubeError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {RESOURCE} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        {"name": name, "group": GROUP, "kind": PLURAL},
    )


def _invalid(name: str, causes: str) -> KubeError:
    return KubeError(
        422,
        "Invalid",
        f'{KIND}.{GROUP} "{name}" is invalid: {causes}',
        {"name": name, "group": GROUP, "kind": KIND},
    )


# --------------------------------------------------------------------------------------------------------------
# patch formats


class _PatchError(Exception):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(p: str) -> list[str]:
    if p == "":
        return []
    if not p.startswith("/"):
        raise _PatchError(f"invalid JSON pointer {p!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in p[1:].split("/")]


def _resolve(doc: Any, path: list[str]) -> Any:
    cur = doc
    for part in path:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise _PatchError(f"path {'/' + '/'.join(path)!r} not found")
    return cur


def _add(doc: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent = _resolve(doc, path[:-1])
    key = path[-1]
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        idx = len(parent) if key == "-" else int(key) if key.isdigit() else -1
        if not 0 <= idx <= len(parent):
            raise _PatchError(f"index {key!r} out of range")
        parent.insert(idx, value)
    else:
        raise _PatchError(f"cannot add below a scalar at {path!r}")
    return doc


def _remove(doc: Any, path: list[str]) -> Any:
    if not path:
        raise _PatchError("cannot remove the whole document")
    parent = _resolve(doc, path[:-1])
    key = path[-1]
    if isinstance(parent, dict) and key in parent:
        del parent[key]
    elif isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        del parent[int(key)]
    else:
        raise _PatchError(f"path {'/' + '/'.join(path)!r} not found")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise _PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _PatchError(f"malformed operation {op!r}")
        kind, path = op["op"], _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            doc = _add(_remove(doc, path), path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            src = _pointer(op["from"])
            value = _resolve(doc, src)
            doc = _add(_remove(doc, src), path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_resolve(doc, _pointer(op["from"]))))
        elif kind == "test":
            if _resolve(doc, path) != op.get("value"):
                raise _PatchError(f"testing value {op['path']} failed")
        else:
            raise _PatchError(f"unknown operation {kind!r}")
    return doc


# --------------------------------------------------------------------------------------------------------------
# the bit of Argo CD's CRD schema that the driver writes


_SYNC_FIELDS: dict[str, type] = {
    "revision": str,
    "prune": bool,
    "dryRun": bool,
    "syncStrategy": dict,
    "resources": list,
    "source": dict,
    "manifests": list,
    "syncOptions": list,
    "sources": list,
    "revisions": list,
    "sourcePositions": list,
    "autoHealAttemptsCount": int,
}
_TYPE_NAMES = {str: "string", bool: "boolean", dict: "object", list: "array", int: "integer"}


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    return {str: "string", dict: "object", list: "array", type(None): "null"}.get(type(v), "unknown")


def _check(name: str, where: str, value: Any, want: type) -> None:
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if not ok:
        got = _json_type(value)
        raise _invalid(
            name,
            f'{where}: Invalid value: "{got}": {where} in body must be of type {_TYPE_NAMES[want]}: "{got}"',
        )


def _prune_operation(name: str, op: Any) -> dict[str, Any]:
    """Structural-schema treatment of `operation`: unknown fields pruned, wrong types rejected."""
    _check(name, "operation", op, dict)
    out: dict[str, Any] = {}
    if "sync" in op:
        _check(name, "operation.sync", op["sync"], dict)
        out["sync"] = {}
        for k, v in op["sync"].items():
            if k in _SYNC_FIELDS:
                _check(name, f"operation.sync.{k}", v, _SYNC_FIELDS[k])
                out["sync"][k] = v
    if "initiatedBy" in op:
        _check(name, "operation.initiatedBy", op["initiatedBy"], dict)
        out["initiatedBy"] = {}
        for k, want in (("username", str), ("automated", bool)):
            if k in op["initiatedBy"]:
                _check(name, f"operation.initiatedBy.{k}", op["initiatedBy"][k], want)
                out["initiatedBy"][k] = op["initiatedBy"][k]
    if "info" in op:
        _check(name, "operation.info", op["info"], list)
        out["info"] = []
        for i, item in enumerate(op["info"]):
            _check(name, f"operation.info[{i}]", item, dict)
            for k in ("name", "value"):
                if k not in item:
                    raise _invalid(name, f"operation.info[{i}].{k}: Required value")
                _check(name, f"operation.info[{i}].{k}", item[k], str)
            out["info"].append({"name": item["name"], "value": item["value"]})
    if "retry" in op:
        _check(name, "operation.retry", op["retry"], dict)
        out["retry"] = op["retry"]
    return out


# --------------------------------------------------------------------------------------------------------------
# records and hooks


@dataclass
class SyncRecord:
    """One sync operation Argo CD received."""

    revision: str
    info: dict[str, str]
    initiated_by: dict[str, Any]
    at: float


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    content_type: str


@dataclass
class _Fault:
    kind: str  # "status" | "hang"
    remaining: int
    status: int = 500
    seconds: float = 0.0
    methods: frozenset[str] | None = None
    watch: bool | None = None  # None: any request; True: only watches; False: only non-watch requests


@dataclass
class _Live:
    """What "runs" for an app: the last successfully synced revision, its values and their health."""

    sha: str
    files: dict[str, str]
    health: str
    message: str


@dataclass
class _Event:
    rv: int
    type: str
    obj: dict[str, Any]


@dataclass
class _Stats:
    operations: int = 0
    controller_busy_s: float = 0.0  # time spent playing Argo CD (git + status writes), sleeps excluded
    rvs: list[int] = field(default_factory=list)


class GitError(Exception):
    pass


def _repo_dir(repo_url: str) -> str:
    return repo_url[len("file://") :] if repo_url.startswith("file://") else repo_url


def _git(repo: str, *args: str) -> str:
    proc = subprocess.run(["git", "-C", _repo_dir(repo), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GitError(proc.stderr.strip() or f"git {' '.join(args)} failed")
    return proc.stdout


def _scalars(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for v in node.values():
            yield from _scalars(v)
    elif isinstance(node, list):
        for v in node:
            yield from _scalars(v)
    elif node is not None:
        yield str(node)


def _selector_match(
    obj: dict[str, Any], fields: list[tuple[str, bool, str]], labels: list[tuple[str, str]]
) -> bool:
    meta = obj.get("metadata") or {}
    for key, eq, value in fields:
        actual = meta.get(key.split(".", 1)[1])
        if (actual == value) != eq:
            return False
    obj_labels = meta.get("labels") or {}
    return all(obj_labels.get(k) == v for k, v in labels)


def _parse_field_selector(sel: str | None) -> list[tuple[str, bool, str]]:
    out: list[tuple[str, bool, str]] = []
    for term in filter(None, (sel or "").split(",")):
        m = re.fullmatch(r"\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*", term)
        if not m:
            raise KubeError(
                400, "BadRequest", f'unable to parse requirement: invalid field selector "{term}"'
            )
        key, op, value = m.groups()
        if key not in ("metadata.name", "metadata.namespace"):
            raise KubeError(
                400,
                "BadRequest",
                f'"{key}" is not a known field selector: only "metadata.name", "metadata.namespace"',
            )
        out.append((key, op != "!=", value))
    return out


def _parse_label_selector(sel: str | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for term in filter(None, (sel or "").split(",")):
        k, _, v = term.partition("=")
        out.append((k.strip(), v.lstrip("=").strip()))
    return out


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    o = copy.deepcopy(obj)
    (o.get("metadata") or {}).pop("resourceVersion", None)
    return o


# --------------------------------------------------------------------------------------------------------------


class KubeArgoCD:
    """One cluster's API server with Argo CD running in it. Start with `start()` or as a context manager."""

    def __init__(
        self,
        *,
        namespaces: Iterable[str] = ("argocd",),
        status_delay_s: float = 0.0,
        bookmark_interval_s: float = 1.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.status_delay_s = status_delay_s
        self.bookmark_interval_s = bookmark_interval_s
        self.stale_health_s = 0.0
        self.progressing_s = 0.0
        self.skip_reconcile_after_sync = False
        self.track_branch_head = False
        self.watch_410_as_http = False
        self.broken_tags: set[str] = set()
        self.failing_tags: set[str] = set()
        self.on_operation: Callable[[dict[str, Any]], None] | None = None
        self.conflict_before_next_patches = 0
        self.requests: list[RequestRecord] = []
        self.stats = _Stats()

        self._cond = threading.Condition()
        self._namespaces = set(namespaces)
        self._objects: dict[Key, dict[str, Any]] = {}
        self._rv = 1000
        self._history: list[_Event] = []
        self._history_rvs: list[int] = []
        self._expired_below = 0  # a watch from resourceVersion r is valid iff r >= this
        self._watch_gen = 0  # bumped to end every open watch
        self._syncs: dict[Key, list[SyncRecord]] = {}
        self._refreshes: dict[Key, int] = {}
        self._forbidden: dict[Key, frozenset[str] | None] = {}
        self._faults: list[_Fault] = []
        self._live: dict[Key, _Live] = {}
        self._busy: set[Key] = set()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> KubeArgoCD:
        handler = type("_BoundHandler", (_Handler,), {"standin": self})
        self._server = _Server((self.host, 0), handler)
        # a short poll interval makes stop() (server.shutdown) quick, which matters for per-test fixtures
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="kube-argocd", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> KubeArgoCD:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "stand-in not started"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: str | Path, context: str = "standin") -> Path:
        return write_kubeconfig(path, {context: self})

    # ---- objects --------------------------------------------------------------------------------------------

    def add_namespace(self, namespace: str) -> None:
        with self._cond:
            self._namespaces.add(namespace)

    def add_application(
        self, obj: Mapping[str, Any], *, status: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store an Application as if `kubectl apply`-ed (namespace is created if missing)."""
        o = copy.deepcopy(dict(obj))
        o.setdefault("apiVersion", API_VERSION)
        o.setdefault("kind", KIND)
        meta = o.setdefault("metadata", {})
        ns = meta.setdefault("namespace", "argocd")
        if status is not None:
            o["status"] = copy.deepcopy(dict(status))
        with self._cond:
            self._namespaces.add(ns)
            self._init_meta(o)
            created = self._commit_locked((ns, meta["name"]), o, "ADDED")
        self._after_write((ns, meta["name"]), created)
        return copy.deepcopy(created)

    def create_app(
        self,
        name: str,
        *,
        repo: str,
        path: str,
        values_file: str = "values.yaml",
        namespace: str = "argocd",
        target_revision: str = "main",
        synced_revision: str = "",
        health: str = "Healthy",
        finalizers: Iterable[str] = (),
        operation: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An Application with an old, Healthy status from an earlier sync (the "stale" report drivers must
        not mistake for the result of a new sync)."""
        long_ago = time.time() - 3600
        obj: dict[str, Any] = {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "project": "default",
                "source": {
                    "repoURL": repo,
                    "targetRevision": target_revision,
                    "path": path,
                    "helm": {"valueFiles": [values_file]},
                },
                "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
            },
        }
        if finalizers:
            obj["metadata"]["finalizers"] = list(finalizers)
        if operation is not None:
            obj["operation"] = copy.deepcopy(dict(operation))
        status: dict[str, Any] = {
            "sync": {"status": "Synced", "revision": synced_revision},
            "health": {"status": health},
            "reconciledAt": ts(long_ago),
        }
        if synced_revision:
            status["operationState"] = {
                "operation": {"sync": {"revision": synced_revision}, "initiatedBy": {"username": "admin"}},
                "phase": "Succeeded",
                "message": "successfully synced (all tasks run)",
                "startedAt": ts(long_ago - 5),
                "finishedAt": ts(long_ago - 1),
                "syncResult": {"revision": synced_revision},
            }
        return self.add_application(obj, status=status)

    def app(self, name: str, namespace: str = "argocd") -> dict[str, Any]:
        with self._cond:
            return copy.deepcopy(self._objects[(namespace, name)])

    def syncs(self, name: str, namespace: str = "argocd") -> list[SyncRecord]:
        with self._cond:
            return list(self._syncs.get((namespace, name), []))

    def refresh_requests(self, name: str, namespace: str = "argocd") -> int:
        """How many times a hard/normal refresh was requested through the annotation."""
        with self._cond:
            return self._refreshes.get((namespace, name), 0)

    @property
    def resource_version(self) -> str:
        with self._cond:
            return str(self._rv)

    # ---- test hooks -----------------------------------------------------------------------------------------

    def fail_next(
        self, n: int, status: int = 500, *, methods: Iterable[str] | None = None, watch: bool | None = None
    ) -> None:
        with self._cond:
            self._faults.append(
                _Fault(
                    "status", n, status=status, methods=frozenset(methods) if methods else None, watch=watch
                )
            )

    def hang_next(
        self, n: int, seconds: float, *, methods: Iterable[str] | None = None, watch: bool | None = None
    ) -> None:
        with self._cond:
            self._faults.append(
                _Fault(
                    "hang", n, seconds=seconds, methods=frozenset(methods) if methods else None, watch=watch
                )
            )

    def forbid(self, name: str, namespace: str = "argocd", verbs: Iterable[str] | None = None) -> None:
        """RBAC denies these verbs (default: all) on this Application."""
        with self._cond:
            self._forbidden[(namespace, name)] = frozenset(verbs) if verbs is not None else None

    def compact(self, *, drop_watches: bool = True) -> None:
        """Expire every resourceVersion issued so far (etcd compaction) and, by default, end open watches so
        that clients reconnect - and get 410 Gone."""
        with self._cond:
            self._rv += 1  # other objects in the cluster move the revision on
            self._expired_below = self._rv
            if drop_watches:
                self._watch_gen += 1
            self._cond.notify_all()

    def drop_watches(self) -> None:
        with self._cond:
            self._watch_gen += 1
            self._cond.notify_all()

    # ---- store internals (call with self._cond held) ----------------------------------------------------------

    def _init_meta(self, o: dict[str, Any]) -> None:
        meta = o["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", ts())
        meta["generation"] = 1
        for k in ("resourceVersion", "deletionTimestamp"):
            meta.pop(k, None)

    def _commit_locked(self, key: Key, obj: dict[str, Any], typ: str) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if typ == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        self._history.append(_Event(self._rv, typ, copy.deepcopy(obj)))
        self._history_rvs.append(self._rv)
        self._cond.notify_all()
        return obj

    def _write_locked(self, key: Key, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Store `new` over `old` with API-server semantics: no-op writes change nothing; a deleting object whose
        finalizers are all gone is removed."""
        meta = new.setdefault("metadata", {})
        for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        meta["generation"] = old["metadata"].get("generation", 1)
        if _without_rv(new) == _without_rv(old):
            return old
        strip = {k: v for k, v in new.items() if k != "metadata"}
        if strip != {k: v for k, v in old.items() if k != "metadata"}:
            meta["generation"] = meta["generation"] + 1
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._commit_locked(key, new, "DELETED")
        return self._commit_locked(key, new, "MODIFIED")

    def _mutate(self, key: Key, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
        """A controller-side write (Argo CD patches status without preconditions)."""
        with self._cond:
            old = self._objects.get(key)
            if old is None:
                return None
            new = copy.deepcopy(old)
            fn(new)
            return copy.deepcopy(self._write_locked(key, old, new))

    # ---- Argo CD controller -----------------------------------------------------------------------------------

    def _after_write(self, key: Key, obj: dict[str, Any] | None) -> None:
        if obj is None or self._stop.is_set():
            return
        with self._cond:
            current = self._objects.get(key)
            if current is None or key in self._busy or current["metadata"].get("deletionTimestamp"):
                return
            op = current.get("operation")
            annotations = current["metadata"].get("annotations") or {}
            if isinstance(op, dict) and isinstance(op.get("sync"), dict):
                self._busy.add(key)
                info = {i["name"]: i["value"] for i in op.get("info") or []}
                self._syncs.setdefault(key, []).append(
                    SyncRecord(
                        op["sync"].get("revision", ""), info, dict(op.get("initiatedBy") or {}), time.time()
                    )
                )
                if REFRESH_ANNOTATION in annotations:
                    self._refreshes[key] = self._refreshes.get(key, 0) + 1
                target: Callable[..., None] = self._run_operation
                args: tuple[Any, ...] = (key, copy.deepcopy(op))
            elif REFRESH_ANNOTATION in annotations:
                self._busy.add(key)
                self._refreshes[key] = self._refreshes.get(key, 0) + 1
                target, args = self._run_refresh, (key,)
            else:
                return
        threading.Thread(target=self._guarded, args=(key, target, *args), daemon=True).start()

    def _guarded(self, key: Key, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except Exception:
            log.exception("stand-in Argo CD controller failed for %s/%s", *key)
        finally:
            with self._cond:
                self._busy.discard(key)
                current = copy.deepcopy(self._objects.get(key))
            # work that arrived while busy (a new operation or refresh request)
            self._after_write(key, current)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def _values_paths(self, source: Mapping[str, Any]) -> list[str]:
        base = posixpath.normpath(str(source.get("path") or ".")).strip("/")
        base = "" if base == "." else base
        files = (source.get("helm") or {}).get("valueFiles") or ["values.yaml"]
        return [f"{base}/{f}" if base else f for f in files]

    def _read(self, source: Mapping[str, Any], revision: str) -> tuple[str, dict[str, str]]:
        repo = str(source.get("repoURL") or "")
        sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").strip()
        return sha, {p: _git(repo, "show", f"{sha}:{p}") for p in self._values_paths(source)}

    def _tags(self, files: Mapping[str, str]) -> set[str]:
        return {v for text in files.values() for doc in yaml.safe_load_all(text) for v in _scalars(doc)}

    def _health(self, app: dict[str, Any], tags: set[str]) -> tuple[str, str]:
        broken = sorted(tags & self.broken_tags)
        if broken:
            return "Degraded", (
                f'Deployment "{app["metadata"]["name"]}" exceeded its progress deadline: '
                f'pods with image tag "{broken[0]}" are in CrashLoopBackOff'
            )
        return "Healthy", ""

    def _run_operation(self, key: Key, op: dict[str, Any]) -> None:
        busy_start = time.perf_counter()
        self.stats.operations += 1
        if self.on_operation is not None:
            self.on_operation(copy.deepcopy(op))
        started = ts()

        def running(o: dict[str, Any]) -> None:
            o.setdefault("status", {})["operationState"] = {
                "operation": op,
                "phase": "Running",
                "message": "",
                "startedAt": started,
            }

        self._mutate(key, running)
        busy = time.perf_counter() - busy_start
        self._sleep(self.status_delay_s)
        busy_start = time.perf_counter()
        with self._cond:
            app = copy.deepcopy(self._objects.get(key))
        if app is None:
            return
        source = (app.get("spec") or {}).get("source") or {}
        revision = op["sync"].get("revision") or source.get("targetRevision") or "HEAD"
        sha = ""
        try:
            sha, files = self._read(source, revision)
        except GitError as e:
            phase = "Error"
            message = (
                "ComparisonError: Failed to load target state: failed to generate manifest for source 1 of 1: "
                f"rpc error: code = Unknown desc = {e}"
            )
        else:
            tags = self._tags(files)
            failing = sorted(tags & self.failing_tags)
            if failing:
                phase = "Failed"
                message = (
                    'one or more objects failed to apply, reason: admission webhook "policy.example.com" denied '
                    f'the request: image tag "{failing[0]}" is not allowed'
                )
            else:
                phase, message = "Succeeded", "successfully synced (all tasks run)"
                health, hmsg = self._health(app, tags)
                with self._cond:
                    self._live[key] = _Live(sha, files, health, hmsg)
        finished = ts()

        def complete(o: dict[str, Any]) -> None:
            o.pop("operation", None)
            status = o.setdefault("status", {})
            state: dict[str, Any] = {
                "operation": op,
                "phase": phase,
                "message": message,
                "startedAt": started,
                "finishedAt": finished,
            }
            if sha:
                state["syncResult"] = {"revision": sha, "source": source, "resources": []}
            status["operationState"] = state
            if phase == "Succeeded":
                history = status.setdefault("history", [])
                history.append(
                    {
                        "id": len(history),
                        "revision": sha,
                        "deployStartedAt": started,
                        "deployedAt": finished,
                        "source": source,
                        "initiatedBy": op.get("initiatedBy") or {},
                    }
                )

        self._mutate(key, complete)
        busy += time.perf_counter() - busy_start
        if self.skip_reconcile_after_sync:
            self.stats.controller_busy_s += busy
            return
        self._sleep(self.stale_health_s)
        if phase == "Succeeded" and self.progressing_s > 0:
            self._reconcile(key, progressing=True)
            self._sleep(self.progressing_s)
        busy_start = time.perf_counter()
        self._reconcile(key)
        self.stats.controller_busy_s += busy + time.perf_counter() - busy_start

    def _run_refresh(self, key: Key) -> None:
        self._reconcile(key)

    def _reconcile(self, key: Key, *, progressing: bool = False) -> None:
        with self._cond:
            app = copy.deepcopy(self._objects.get(key))
            live = self._live.get(key)
        if app is None:
            return
        source = (app.get("spec") or {}).get("source") or {}
        sync: dict[str, Any] | None = None
        health: dict[str, Any] | None = None
        if live is not None:
            revision, sync_status = live.sha, "Synced"
            if self.track_branch_head:
                try:
                    head, files = self._read(source, source.get("targetRevision") or "HEAD")
                    revision, sync_status = head, ("Synced" if files == live.files else "OutOfSync")
                except GitError:
                    sync_status = "Unknown"
            sync = {
                "status": sync_status,
                "revision": revision,
                "comparedTo": {
                    "source": source,
                    "destination": (app.get("spec") or {}).get("destination") or {},
                },
            }
            health = (
                {"status": "Progressing", "message": ""}
                if progressing
                else {
                    "status": live.health,
                    "message": live.message,
                }
            )
        now = ts()

        def reconcile(o: dict[str, Any]) -> None:
            status = o.setdefault("status", {})
            if sync is not None and health is not None:
                status["sync"] = sync
                status["health"] = {k: v for k, v in health.items() if v}
                dest_ns = ((o.get("spec") or {}).get("destination") or {}).get("namespace", "")
                status["resources"] = [
                    {
                        "group": "apps",
                        "version": "v1",
                        "kind": "Deployment",
                        "namespace": dest_ns,
                        "name": o["metadata"]["name"],
                        "status": sync["status"],
                        "health": {k: v for k, v in health.items() if v},
                    }
                ]
            status["reconciledAt"] = now
            (o["metadata"].get("annotations") or {}).pop(REFRESH_ANNOTATION, None)
            if o["metadata"].get("annotations") == {}:
                del o["metadata"]["annotations"]

        self._mutate(key, reconcile)

    # ---- request handling (called from _Handler) --------------------------------------------------------------

    def _take_fault(self, method: str, is_watch: bool) -> _Fault | None:
        with self._cond:
            for f in self._faults:
                if f.remaining <= 0:
                    continue
                if f.methods is not None and method not in f.methods:
                    continue
                if f.watch is not None and f.watch != is_watch:
                    continue
                f.remaining -= 1
                return f
        return None

    def _authorize(self, verb: str, ns: str, name: str | None) -> None:
        if name is None:
            return
        with self._cond:
            if (ns, name) not in self._forbidden:
                return
            verbs = self._forbidden[(ns, name)]
        if verbs is None or verb in verbs:
            raise KubeError(
                403,
                "Forbidden",
                f'{RESOURCE} "{name}" is forbidden: User "{SERVICE_ACCOUNT}" cannot {verb} resource "{PLURAL}" '
                f'in API group "{GROUP}" in the namespace "{ns}"',
                {"name": name, "group": GROUP, "kind": PLURAL},
            )

    def _get(self, ns: str, name: str) -> dict[str, Any]:
        with self._cond:
            obj = self._objects.get((ns, name))
            if obj is None:
                raise _not_found(name)
            return copy.deepcopy(obj)

    def _list(self, ns: str, query: Mapping[str, str]) -> dict[str, Any]:
        fields = _parse_field_selector(query.get("fieldSelector"))
        labels = _parse_label_selector(query.get("labelSelector"))
        with self._cond:
            items = [
                copy.deepcopy(o)
                for (ons, _), o in sorted(self._objects.items())
                if ons == ns and _selector_match(o, fields, labels)
            ]
            rv = self._rv
        return {
            "apiVersion": API_VERSION,
            "kind": f"{KIND}List",
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    def _create(self, ns: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
            raise KubeError(
                422,
                "Invalid",
                f"{KIND}.{GROUP} is invalid: metadata.name: Required value: name or generateName is required",
            )
        if body.get("kind", KIND) != KIND or body.get("apiVersion", API_VERSION) != API_VERSION:
            raise KubeError(
                400,
                "BadRequest",
                f"the API version in the data ({body.get('apiVersion')}) does not "
                f"match the expected API version ({API_VERSION})",
            )
        name = body["metadata"]["name"]
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = API_VERSION, KIND
        obj["metadata"]["namespace"] = ns
        if "operation" in obj:
            obj["operation"] = _prune_operation(name, obj["operation"])
        with self._cond:
            if ns not in self._namespaces:
                raise KubeError(
                    404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}
                )
            if (ns, name) in self._objects:
                raise KubeError(
                    409,
                    "AlreadyExists",
                    f'{RESOURCE} "{name}" already exists',
                    {"name": name, "group": GROUP, "kind": PLURAL},
                )
            self._init_meta(obj)
            created = copy.deepcopy(self._commit_locked((ns, name), obj, "ADDED"))
        self._after_write((ns, name), created)
        return created

    def _update(
        self,
        ns: str,
        name: str,
        compute: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        require_rv: bool = False,
    ) -> dict[str, Any]:
        """Compute the new object from the stored one and write it, atomically (the real server retries a patch
        internally on a concurrent write, so only a client-supplied resourceVersion can make it conflict)."""
        with self._cond:
            current = self._objects.get((ns, name))
            if current is None:
                raise _not_found(name)
            new = compute(copy.deepcopy(current))
            if not isinstance(new, dict):
                raise KubeError(400, "BadRequest", "the patched object is not a JSON object")
            meta = new.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise _invalid(name, "metadata: Invalid value: must be an object")
            if meta.get("name", name) != name or meta.get("namespace", ns) != ns:
                raise KubeError(
                    400,
                    "BadRequest",
                    f"the name of the object ({meta.get('name')}) does not match "
                    f"the name on the URL ({name})",
                )
            want_rv = meta.get("resourceVersion")
            if require_rv and not want_rv:
                raise _invalid(
                    name, "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                )
            if want_rv and want_rv != current["metadata"]["resourceVersion"]:
                raise _conflict(name)
            if "operation" in new:
                new["operation"] = _prune_operation(name, new["operation"])
            new["apiVersion"], new["kind"] = API_VERSION, KIND
            written = copy.deepcopy(self._write_locked((ns, name), copy.deepcopy(current), new))
        self._after_write((ns, name), written)
        return written

    def _patch(
        self, ns: str, name: str, content_type: str, raw: bytes, query: Mapping[str, str]
    ) -> dict[str, Any]:
        ctype = content_type.split(";")[0].strip().lower()
        if ctype not in (
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ):
            raise KubeError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            )
        with self._cond:
            concurrent = self.conflict_before_next_patches > 0
            if concurrent:
                self.conflict_before_next_patches -= 1
        if concurrent:
            # another writer (e.g. Argo CD's controller) gets in between the client's read and its patch
            self._mutate(
                (ns, name),
                lambda o: (
                    o["metadata"]
                    .setdefault("annotations", {})
                    .update({"example.com/touched": str(time.time())})
                ),
            )
        try:
            if ctype == "application/apply-patch+yaml":
                if not query.get("fieldManager"):
                    raise KubeError(
                        422,
                        "Invalid",
                        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required '
                        "value: is required for apply patch",
                    )
                applied = yaml.safe_load(raw.decode() or "{}")
                with self._cond:
                    exists = (ns, name) in self._objects
                if not exists:
                    if isinstance(applied, dict):
                        applied.setdefault("metadata", {}).setdefault("name", name)
                    return self._create(ns, applied)
                return self._update(ns, name, lambda o: merge_patch(o, applied))
            body = json.loads(raw.decode() or "null")
        except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise KubeError(400, "BadRequest", f"error decoding patch: {e}") from None
        if ctype == "application/merge-patch+json":
            if not isinstance(body, dict):
                raise KubeError(400, "BadRequest", "a merge patch must be a JSON object")
            return self._update(ns, name, lambda o: merge_patch(o, body))

        def apply_json_patch(o: dict[str, Any]) -> dict[str, Any]:
            try:
                result = json_patch(o, body)
            except _PatchError as e:
                raise KubeError(
                    422, "Invalid", f"the server rejected our request due to an error in our request: {e}", {}
                ) from None
            if not isinstance(result, dict):
                raise KubeError(422, "Invalid", "the patched object is not a JSON object", {})
            return result

        return self._update(ns, name, apply_json_patch)

    def _delete(self, ns: str, name: str, body: Any) -> dict[str, Any]:
        pre = (body or {}).get("preconditions") or {} if isinstance(body, dict) else {}
        with self._cond:
            current = self._objects.get((ns, name))
            if current is None:
                raise _not_found(name)
            if (
                pre.get("resourceVersion")
                and pre["resourceVersion"] != current["metadata"]["resourceVersion"]
            ):
                raise _conflict(name)
            if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
                raise _conflict(name)
            if current["metadata"].get("finalizers"):
                if current["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(current)
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = ts()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                return copy.deepcopy(self._commit_locked((ns, name), new, "MODIFIED"))
            return copy.deepcopy(self._commit_locked((ns, name), copy.deepcopy(current), "DELETED"))

    def _watch(self, handler: _Handler, ns: str, query: Mapping[str, str]) -> None:
        fields = _parse_field_selector(query.get("fieldSelector"))
        labels = _parse_label_selector(query.get("labelSelector"))
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        rv_param = query.get("resourceVersion") or ""
        initial: list[dict[str, Any]] = []
        with self._cond:
            gen = self._watch_gen
            if rv_param in ("", "0"):
                initial = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for (ons, _), o in sorted(self._objects.items())
                    if ons == ns and _selector_match(o, fields, labels)
                ]
                cursor = self._rv
            else:
                if not rv_param.isdigit():
                    raise KubeError(400, "BadRequest", f'invalid resource version "{rv_param}"')
                cursor = int(rv_param)
                if cursor < self._expired_below:
                    expired = KubeError(
                        410, "Expired", f"too old resource version: {cursor} ({self._expired_below})", {}
                    )
                    if self.watch_410_as_http:
                        raise expired
                    handler.start_stream()
                    handler.send_event({"type": "ERROR", "object": expired.status()})
                    handler.end_stream()
                    return
        handler.start_stream()
        for ev in initial:
            handler.send_event(ev)
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + self.bookmark_interval_s
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    done = self._stop.is_set() or gen != self._watch_gen or now >= deadline
                    pending = self._history_rvs and self._history_rvs[-1] > cursor
                    if done or pending or (bookmarks and now >= next_bookmark):
                        break
                    wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                    self._cond.wait(timeout=max(0.0, min(wait, 0.25)))
                    if handler.client_gone():
                        return
                start = bisect.bisect_right(self._history_rvs, cursor)
                events = [
                    {"type": e.type, "object": copy.deepcopy(e.obj)}
                    for e in self._history[start:]
                    if e.obj["metadata"].get("namespace") == ns and _selector_match(e.obj, fields, labels)
                ]
                cursor = self._rv
            if done:
                break
            for ev in events:
                handler.send_event(ev)
            if bookmarks and time.monotonic() >= next_bookmark:
                handler.send_event(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": KIND,
                            "apiVersion": API_VERSION,
                            "metadata": {"resourceVersion": str(cursor)},
                        },
                    }
                )
                next_bookmark = time.monotonic() + self.bookmark_interval_s
        handler.end_stream()


class _ClientGone(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints tracebacks to stderr; keep them in the log (a vanished client is routine here)
        log.debug("kube-argocd: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    standin: KubeArgoCD
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked watch streams

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without NODELAY, Nagle holds the body back until the
        # client's delayed ACK (~40 ms per response on loopback)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("kube-argocd: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- responses --

    def send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_event(self, event: Mapping[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError:
            raise _ClientGone from None

    def end_stream(self) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def client_gone(self) -> bool:
        """A watch client sends nothing after its request, so readability means it hung up."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- routing --

    def _dispatch(self, method: str) -> None:
        st = self.standin
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        st.requests.append(RequestRecord(method, url.path, query, content_type))
        is_watch = method == "GET" and query.get("watch") in ("true", "1")
        try:
            fault = st._take_fault(method, is_watch)
            if fault is not None and fault.kind == "hang":
                st._stop.wait(fault.seconds)
            elif fault is not None:
                reasons = {
                    500: "InternalError",
                    503: "ServiceUnavailable",
                    429: "TooManyRequests",
                    504: "Timeout",
                    502: "InternalError",
                }
                raise KubeError(
                    fault.status,
                    reasons.get(fault.status, "InternalError"),
                    f"Internal error occurred: injected failure (HTTP {fault.status})",
                    {},
                )
            m = _PATH.match(url.path)
            if not m or m.group("sub"):
                raise _no_route()
            ns, name = m.group("ns"), m.group("name")
            if method == "GET" and name:
                st._authorize("get", ns, name)
                self.send_json(200, st._get(ns, name))
            elif method == "GET":
                selected = next(
                    (
                        v
                        for k, eq, v in _parse_field_selector(query.get("fieldSelector"))
                        if k == "metadata.name" and eq
                    ),
                    None,
                )
                st._authorize("watch" if is_watch else "list", ns, selected)
                if is_watch:
                    st._watch(self, ns, query)
                    self.close_connection = True
                else:
                    self.send_json(200, st._list(ns, query))
            elif method == "POST" and not name:
                body = self._json(raw)
                st._authorize(
                    "create", ns, (body.get("metadata") or {}).get("name") if isinstance(body, dict) else None
                )
                self.send_json(201, st._create(ns, body))
            elif method == "PUT" and name:
                st._authorize("update", ns, name)
                body = self._json(raw)
                self.send_json(200, st._update(ns, name, lambda _old: copy.deepcopy(body), require_rv=True))
            elif method == "PATCH" and name:
                st._authorize("patch", ns, name)
                self.send_json(200, st._patch(ns, name, content_type, raw, query))
            elif method == "DELETE" and name:
                st._authorize("delete", ns, name)
                self.send_json(200, st._delete(ns, name, self._json(raw) if raw else None))
            else:
                raise KubeError(405, "MethodNotAllowed", f"{method} is not supported on {url.path}", {})
        except KubeError as e:
            with contextlib.suppress(OSError):
                self.send_json(e.code, e.status())
        except (_ClientGone, ConnectionError):
            # the client hung up (e.g. timed out on an injected hang): nothing to answer
            self.close_connection = True

    @staticmethod
    def _json(raw: bytes) -> Any:
        try:
            return json.loads(raw.decode() or "null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise KubeError(400, "BadRequest", f"error decoding request body: {e}") from None


def write_kubeconfig(
    path: str | Path,
    contexts: Mapping[str, KubeArgoCD | str],
    current: str | None = None,
    token: str = "standin-token",
) -> Path:
    """One kubeconfig with a context (and cluster/user) per stand-in; a str value is a server URL (e.g. a port
    nothing listens on, for "unreachable" tests)."""
    if not contexts:
        raise ValueError("write_kubeconfig needs at least one context")
    clusters, users, ctxs = [], [], []
    for name, server in contexts.items():
        url = server if isinstance(server, str) else server.url
        clusters.append({"name": f"{name}-cluster", "cluster": {"server": url}})
        users.append({"name": f"{name}-user", "user": {"token": token}})
        ctxs.append({"name": name, "context": {"cluster": f"{name}-cluster", "user": f"{name}-user"}})
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": users,
        "contexts": ctxs,
        "current-context": current or next(iter(contexts)),
        "preferences": {},
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


class GitOpsRepo:
    """A bare GitOps repository plus a work tree that commits and pushes into it (test and bench support)."""

    def __init__(self, root: str | Path, branch: str = "main") -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self.branch = branch
        self.bare = root / "gitops.git"
        self.work = root / "gitops-work"
        self._run(root, "init", "--quiet", "--bare", "-b", branch, str(self.bare))
        self._run(root, "init", "--quiet", "-b", branch, str(self.work))
        self._run(self.work, "remote", "add", "origin", str(self.bare))

    @property
    def url(self) -> str:
        return str(self.bare)

    @staticmethod
    def _run(cwd: Path, *args: str) -> str:
        env_args = [
            "-c",
            "user.name=aicd-test",
            "-c",
            "user.email=aicd-test@example.com",
            "-c",
            "commit.gpgsign=false",
        ]
        proc = subprocess.run(["git", *env_args, *args], cwd=cwd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise GitError(f"git {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def commit(self, files: Mapping[str, str], message: str = "update") -> str:
        """Write `files` (repo path -> content), commit, push; return the commit SHA."""
        for rel, content in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        self._run(self.work, "add", "--all")
        self._run(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        self._run(self.work, "push", "--quiet", "origin", f"HEAD:{self.branch}")
        return self._run(self.work, "rev-parse", "HEAD").strip()
