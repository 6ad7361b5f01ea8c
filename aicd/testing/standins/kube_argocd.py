"""Loopback Kubernetes API server for Argo CD `Application`s that also plays Argo CD's application controller.

The real `kubernetes` client talks to it through a kubeconfig written by `write_kubeconfig`, so the driver runs the
same code path as against a real cluster. What it mimics, and why each matters to a client:

API server (kube-apiserver with Argo CD's CRD installed and its watch cache on, the default)
- Argo CD's CRD has no status subresource (`+genclient:noStatus`): status lives in the object itself and any
  `/status` (or other subresource) path answers 404.
- Every stored object is checked against the CRD's structural schema (`argocd_schema`): a wrong type or a missing
  required field in spec, status or operation answers 422 Invalid with kube's field paths; unknown fields are
  pruned (`fieldValidation=Strict`: 400). `operation.sync.sourcePositions` is such an unknown field: it exists
  only in Argo CD's own sync API, which turns it into the full per-source `revisions` list.
- PATCH accepts JSON patch, merge patch and server-side apply; strategic merge answers 415 (custom resources have
  no patch strategy metadata). A `metadata.resourceVersion` that is not the current one (in a PUT body or a patch
  result) answers 409 Conflict. A write that changes nothing bumps no resourceVersion, sends no watch event - and
  so Argo CD, which works from watch events, does not react to it either.
- Resource versions are one global counter (like etcd's revision). Watches are served from the watch cache: a
  window of the last `watch_cache_size` events. A watch from a version still inside the window replays from it;
  from an older one it gets HTTP 200 and one ERROR event carrying a 410 `Expired` Status (with
  `watch_410_as_http`, an HTTP 410 answer instead). The window moving on ends no open watch. A watch without
  resourceVersion (or "0") first sends the current objects as ADDED. BOOKMARKs go to watches that allow them
  every `bookmark_interval_s` (kube-apiserver: about a minute), and only when the resourceVersion moved on since
  that watch last heard of one.
- `restart()` is an API server restart: open connections are cut, connections are refused for `down_s`, then
  requests answer 503 for `unavailable_s` and 403 for `forbidden_s` (a fresh kube-apiserver answers 403 while
  its RBAC caches load, kubernetes/kubernetes#121635); the watch cache starts afresh at the current version, so
  watches from any older version get 410.
- GET of an object in a namespace that does not exist answers 404 NotFound for the object; create there answers
  404 `namespaces "x" not found`; list there answers an empty list - all as kube-apiserver does.
- DELETE of an object with finalizers only sets `deletionTimestamp`; it goes away when its finalizers are removed.
- `tls=True` serves HTTPS with a fresh self-signed certificate (`ca_file`), for kubeconfigs that do or do not
  trust it.

Argo CD (application controller)
- When an Application gets an `operation` with `sync`, it records the request (`syncs()`), sets
  `operationState.phase=Running`, waits `status_delay_s`, then renders every source at its revision (from
  `operation.sync.revision`, or for multi-source apps `operation.sync.revisions`, one per source; missing ones
  fall back to the sources' targetRevision) and - like the controller, in two writes - completes the operation
  (`operationState` Succeeded/Failed/Error with finishedAt and `syncResult.revision`, or `revisions`/`sources` for
  a multi-source app, `operation` removed, history appended) and reconciles (`sync.revision` or `sync.revisions`,
  `health`, `resources`, `reconciledAt`, refresh annotation removed).
- Rendering, per source type (explicit `helm`/`kustomize`/`directory`, else detected from the files as Argo CD
  does: Chart.yaml -> Helm, kustomization.yaml -> Kustomize, else Directory), with real git on local repositories
  (`repoURL` a path or file:// URL):
  Helm in Git reads `path/<valueFiles>` (default values.yaml); a chart from a chart repository (`chart`) must be a
  version registered with `add_chart`, else the operation errors as a failed `helm pull` would; `$ref/file` value
  files come from the source with `ref: ref` at that source's revision. Kustomize reads the kustomization (whose
  fields are checked the way kustomize checks them: no unknown field, `images` a list of `{name, newTag, ...}`)
  and the YAML beside it; Directory reads every manifest in `path` (each must have apiVersion and kind).
  A source that cannot be rendered makes the operation Error with Argo CD's ComparisonError wording.
- Health comes from the rendered files: any scalar equal to a tag in `broken_tags` -> Degraded with a Deployment
  message; a tag in `failing_tags` makes the sync operation itself Fail.
- `stale_health_s` leaves the pre-sync health/reconciledAt in place that long after the operation completed;
  `skip_reconcile_after_sync` consumes the refresh request without writing a reconcile after a sync, until a new
  refresh is requested (Argo CD can skip the status write when nothing changed); `progressing_s` reports
  Progressing that long first; `track_branch_head` compares against the sources' targetRevision like the real
  controller, so the compared revision moves on when other commits land.
- Test hooks: `fail_next`/`hang_next` for N requests, `forbid` (403 per app and verb), `on_operation` callback,
  `conflict_before_next_patches` (a concurrent writer bumps the object just before the next PATCH).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import logging
import posixpath
import re
import select
import socket
import ssl
import subprocess
import tempfile
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

from aicd.testing.standins.argocd_schema import validate_application

log = logging.getLogger(__name__)

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "applications"
KIND = "Application"
API_VERSION = f"{GROUP}/{VERSION}"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
RESOURCE = f"{PLURAL}.{GROUP}"
SERVICE_ACCOUNT = "system:serviceaccount:aicd:aicd-worker"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

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


def _invalid(name: str, causes: str | list[str]) -> KubeError:
    """kube's 422: one cause as is, several in brackets."""
    if isinstance(causes, list):
        text = causes[0] if len(causes) == 1 else "[" + ", ".join(causes) + "]"
    else:
        text = causes
    return KubeError(
        422,
        "Invalid",
        f'{KIND}.{GROUP} "{name}" is invalid: {text}',
        {"name": name, "group": GROUP, "kind": KIND},
    )


def _forbidden(verb: str, ns: str, name: str | None, why: str = "") -> KubeError:
    subject = f'{RESOURCE} "{name}"' if name else RESOURCE
    return KubeError(
        403,
        "Forbidden",
        f'{subject} is forbidden: User "{SERVICE_ACCOUNT}" cannot {verb} resource "{PLURAL}" '
        f'in API group "{GROUP}" in the namespace "{ns}"' + (f": {why}" if why else ""),
        {"name": name or "", "group": GROUP, "kind": PLURAL},
    )


_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


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
# records and hooks


@dataclass
class SyncRecord:
    """One sync operation Argo CD received."""

    revision: str  # operation.sync.revision (single-source apps)
    info: dict[str, str]
    initiated_by: dict[str, Any]
    at: float
    revisions: list[str] = field(default_factory=list)  # operation.sync.revisions (multi-source apps)


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    status: int = 0  # the HTTP status answered (0: none, e.g. the connection was cut)


@dataclass
class _Fault:
    kind: str  # "status" | "hang" | "cut" (the request takes effect, then the connection drops unanswered)
    remaining: int
    status: int = 500
    seconds: float = 0.0
    methods: frozenset[str] | None = None
    watch: bool | None = None  # None: any request; True: only watches; False: only non-watch requests


@dataclass
class _Rendered:
    """What the sources render from at given revisions: the resolved revision per source and the files read."""

    revisions: list[str]
    files: dict[str, str]


@dataclass
class _Live:
    """What "runs" for an app: the last successfully synced revisions, their files and their health."""

    revisions: list[str]
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


@dataclass
class _Startup:
    """After `restart()`: until when connections are refused, then 503s, then 403s are answered."""

    down_until: float = 0.0
    unavailable_until: float = 0.0
    forbidden_until: float = 0.0


class _RenderError(Exception):
    """A source cannot be rendered: the sync operation errors with this message."""


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


def _show(repo: str, sha: str, path: str) -> str | None:
    """A file's text at a commit, or None when it is not there."""
    try:
        return _git(repo, "show", f"{sha}:{path}")
    except GitError:
        return None


def _listing(repo: str, sha: str, directory: str, *, recursive: bool = False) -> list[str]:
    """Paths of the files under `directory` at a commit (directly in it unless `recursive`)."""
    args = ["ls-tree", "--name-only", "--full-tree"]
    if recursive:
        args.append("-r")
    spec = f"{directory}/" if directory else "."
    try:
        out = _git(repo, *args, sha, "--", spec)
    except GitError:
        return []
    return [line for line in out.splitlines() if line]


def _join(base: str, relative: str) -> str:
    """A repository path: `relative` under the source's `path`, normalised ("" for the repository's root)."""
    joined = posixpath.normpath(posixpath.join(base or "", relative))
    return "" if joined == "." else joined.lstrip("/")


def _chart_key(repo: str, chart: str) -> tuple[str, str]:
    return repo.strip().rstrip("/").lower(), chart


# kustomize's Kustomization fields (api/types/kustomization.go): anything else is "json: unknown field"
_KUSTOMIZATION_FIELDS = frozenset(
    {
        "apiVersion", "kind", "metadata", "openapi", "namePrefix", "nameSuffix", "namespace", "commonLabels",
        "labels", "commonAnnotations", "patchesStrategicMerge", "patchesJson6902", "patches", "images",
        "replacements", "replicas", "vars", "sortOptions", "resources", "components", "crds", "bases",
        "configMapGenerator", "secretGenerator", "helmGlobals", "helmCharts", "helmChartInflationGenerator",
        "generatorOptions", "configurations", "generators", "transformers", "validators", "buildMetadata",
    }
)  # fmt: skip
_IMAGE_FIELDS = frozenset({"name", "newName", "newTag", "digest", "tagSuffix"})
_LIST_FIELDS = ("resources", "components", "bases", "crds", "patches", "images", "replicas", "labels")


def _check_kustomization(text: str, path: str) -> Any:
    """The kustomization's document, or _RenderError with the message `kustomize build` would give."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _RenderError(f"kustomize build failed: {path}: {e}") from None
    if not isinstance(doc, dict):
        raise _RenderError(f"kustomize build failed: {path}: invalid Kustomization: not a mapping")
    for key in doc:
        if key not in _KUSTOMIZATION_FIELDS:
            raise _RenderError(f'kustomize build failed: invalid Kustomization: json: unknown field "{key}"')
    for key in _LIST_FIELDS:
        if key in doc and not isinstance(doc[key], list):
            raise _RenderError(
                f"kustomize build failed: invalid Kustomization: json: cannot unmarshal object into Go struct "
                f"field Kustomization.{key} of type []"
            )
    for i, image in enumerate(doc.get("images") or []):
        if not isinstance(image, dict) or not isinstance(image.get("name"), str):
            raise _RenderError(f"kustomize build failed: invalid Kustomization: images[{i}] needs a name")
        for key, value in image.items():
            if key not in _IMAGE_FIELDS:
                raise _RenderError(
                    f'kustomize build failed: invalid Kustomization: json: unknown field "{key}"'
                )
            if isinstance(value, dict | list):
                raise _RenderError(
                    f"kustomize build failed: invalid Kustomization: images[{i}].{key} must be a string"
                )
    for key in ("commonLabels", "commonAnnotations"):
        if key in doc and not isinstance(doc[key], dict):
            raise _RenderError(f"kustomize build failed: invalid Kustomization: {key} must be a map")
        for value in (doc.get(key) or {}).values():
            if not isinstance(value, str):
                raise _RenderError(
                    f"kustomize build failed: invalid Kustomization: json: cannot unmarshal "
                    f"{type(value).__name__} into Go struct field Kustomization.{key} of type string"
                )
    return doc


def _check_manifests(text: str, path: str) -> None:
    """What Argo CD requires of a plain manifest file: YAML documents that are Kubernetes objects."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise _RenderError(f"Failed to unmarshal {posixpath.basename(path)}: {e}") from None
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            raise _RenderError(f"Object 'Kind' is missing in '{path}'")


# --------------------------------------------------------------------------------------------------------------


class KubeArgoCD:
    """One cluster's API server with Argo CD running in it. Start with `start()` or as a context manager."""

    def __init__(
        self,
        *,
        namespaces: Iterable[str] = ("argocd",),
        status_delay_s: float = 0.0,
        bookmark_interval_s: float = 60.0,
        watch_cache_size: int = 100,
        host: str = "127.0.0.1",
        tls: bool = False,
    ) -> None:
        self.host = host
        self.tls = tls
        self.status_delay_s = status_delay_s
        self.bookmark_interval_s = bookmark_interval_s
        self.watch_cache_size = watch_cache_size
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
        self.restarts = 0

        self._cond = threading.Condition()
        self._namespaces = set(namespaces)
        self._objects: dict[Key, dict[str, Any]] = {}
        self._rv = 1000
        self._history: list[_Event] = []  # the watch cache's window
        # Each open watch's own queue (the API server's per-watcher channel): the window moving on loses
        # nothing for a watch that is already open, however slowly it reads.
        self._open_watches: list[list[_Event]] = []
        self._history_rvs: list[int] = []
        self._cache_floor = self._rv  # a watch from resourceVersion r is served iff r >= this
        self._watch_gen = 0  # bumped to end every open watch
        self._syncs: dict[Key, list[SyncRecord]] = {}
        self._refreshes: dict[Key, int] = {}
        self._forbidden: dict[Key, frozenset[str] | None] = {}
        self._faults: list[_Fault] = []
        self._live: dict[Key, _Live] = {}
        self._busy: set[Key] = set()
        self._charts: dict[tuple[str, str], set[str]] = {}
        self._startup = _Startup()
        self._connections: set[socket.socket] = set()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self._ssl: ssl.SSLContext | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> KubeArgoCD:
        if self.tls and self._ssl is None:
            self._ssl = self._make_certificate()
        self._serve()
        return self

    def _serve(self) -> None:
        handler = type("_BoundHandler", (_Handler,), {"standin": self})
        server = _Server((self.host, self._port), handler)
        self._port = server.server_address[1]
        self._server = server
        # a short poll interval makes stop() (server.shutdown) quick, which matters for per-test fixtures
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="kube-argocd", daemon=True
        )
        self._thread.start()

    def _close_server(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._close_server()
        self._cut_connections()
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None

    def restart(self, *, down_s: float = 0.2, unavailable_s: float = 0.0, forbidden_s: float = 0.5) -> None:
        """An API server restart (blocks for `down_s`): open connections are cut, new ones refused for `down_s`;
        then requests answer 503 for `unavailable_s`, then 403 for `forbidden_s`, as a kube-apiserver does while
        its RBAC caches load. The watch cache starts afresh: watches from any older version get 410."""
        with self._cond:
            self.restarts += 1
            self._watch_gen += 1
            self._history.clear()
            self._history_rvs.clear()
            # the revision is etcd's, shared by every resource: leases and events written meanwhile move it on,
            # so the fresh cache starts after any version a client holds
            self._rv += 1
            self._cache_floor = self._rv
            self._cond.notify_all()
        self._close_server()
        self._cut_connections()
        now = time.monotonic()
        with self._cond:
            self._startup = _Startup(
                down_until=now + down_s,
                unavailable_until=now + down_s + unavailable_s,
                forbidden_until=now + down_s + unavailable_s + forbidden_s,
            )
        if down_s > 0:
            self._stop.wait(down_s)
        if not self._stop.is_set():
            self._serve()

    def _cut_connections(self) -> None:
        with self._cond:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> KubeArgoCD:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._port, "stand-in not started"
        return f"{'https' if self.tls else 'http'}://{self.host}:{self._port}"

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate a kubeconfig must trust (tls=True only)."""
        assert self._tls_dir is not None, "stand-in not started with tls=True"
        return Path(self._tls_dir.name) / "ca.crt"

    def _make_certificate(self) -> ssl.SSLContext:
        self._tls_dir = tempfile.TemporaryDirectory(prefix="kube-argocd-tls-")
        cert, key = Path(self._tls_dir.name) / "ca.crt", Path(self._tls_dir.name) / "ca.key"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={self.host}",
                "-addext", f"subjectAltName=IP:{self.host}",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context

    def write_kubeconfig(self, path: str | Path, context: str = "standin") -> Path:
        return write_kubeconfig(path, {context: self})

    # ---- objects --------------------------------------------------------------------------------------------

    def add_namespace(self, namespace: str) -> None:
        with self._cond:
            self._namespaces.add(namespace)

    def add_chart(self, repo_url: str, chart: str, versions: Iterable[str]) -> None:
        """Publish chart versions in a chart repository (what `helm pull` finds)."""
        with self._cond:
            self._charts.setdefault(_chart_key(repo_url, chart), set()).update(versions)

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
        o = self._admit(meta["name"], o, strict=True)
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

    def cut_next(self, n: int, *, methods: Iterable[str] | None = None) -> None:
        """The next `n` requests take effect, but their connection drops before the answer (a lost response)."""
        with self._cond:
            self._faults.append(
                _Fault("cut", n, methods=frozenset(methods) if methods else None, watch=False)
            )

    def forbid(self, name: str, namespace: str = "argocd", verbs: Iterable[str] | None = None) -> None:
        """RBAC denies these verbs (default: all) on this Application."""
        with self._cond:
            self._forbidden[(namespace, name)] = frozenset(verbs) if verbs is not None else None

    def drop_watches(self) -> None:
        """End every open watch (as the server does when a watch's timeout is up); clients reconnect."""
        with self._cond:
            self._watch_gen += 1
            self._cond.notify_all()

    # ---- store internals (call with self._cond held) ----------------------------------------------------------

    def _admit(self, name: str, obj: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
        """The object as the CRD's structural schema lets it be stored (see argocd_schema)."""
        pruned, findings = validate_application(obj)
        if findings.invalid:
            raise _invalid(name, findings.invalid)
        if strict and findings.unknown:
            raise KubeError(
                400,
                "BadRequest",
                "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in findings.unknown),
            )
        return pruned

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
        event = _Event(self._rv, typ, copy.deepcopy(obj))
        self._history.append(event)
        self._history_rvs.append(self._rv)
        for queue in self._open_watches:
            queue.append(event)
        if len(self._history) > self.watch_cache_size:
            # the window moves on: a watch from before its oldest event can no longer be served
            drop = len(self._history) - self.watch_cache_size
            del self._history[:drop]
            del self._history_rvs[:drop]
            self._cache_floor = self._history_rvs[0] - 1
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
        """A controller-side write (Argo CD updates the object without preconditions); it meets the CRD's schema
        like any other write, so a malformed status is a stand-in bug that surfaces at once."""
        with self._cond:
            old = self._objects.get(key)
            if old is None:
                return None
            new = copy.deepcopy(old)
            fn(new)
            new = self._admit(key[1], new, strict=True)
            return copy.deepcopy(self._write_locked(key, old, new))

    # ---- Argo CD controller -----------------------------------------------------------------------------------

    def _after_write(self, key: Key, obj: dict[str, Any] | None) -> None:
        """Argo CD's informer saw a new version of the app: start work it asks for (an operation, a refresh)."""
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
                        op["sync"].get("revision", ""),
                        info,
                        dict(op.get("initiatedBy") or {}),
                        time.time(),
                        list(op["sync"].get("revisions") or []),
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

    # -- rendering the sources, as Argo CD's repo server does

    @staticmethod
    def _sources(app: Mapping[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        spec = app.get("spec") or {}
        if spec.get("sources"):
            return [dict(s) for s in spec["sources"]], True
        return [dict(spec.get("source") or {})], False

    def _resolve(self, source: Mapping[str, Any], revision: str) -> str:
        """A source's revision made concrete: a chart version that exists, or a commit SHA."""
        repo = str(source.get("repoURL") or "")
        if not repo:
            raise _RenderError("the source has no repoURL")
        if source.get("chart"):
            chart = str(source["chart"])
            with self._cond:
                known = self._charts.get(_chart_key(repo, chart), set())
            if revision not in known:
                raise _RenderError(
                    f'error pulling helm chart: chart "{chart}" version "{revision}" not found in {repo} repository'
                )
            return revision
        try:
            return _git(repo, "rev-parse", "--verify", "--quiet", f"{revision or 'HEAD'}^{{commit}}").strip()
        except GitError as e:
            raise _RenderError(f"Unable to resolve '{revision}' to a commit SHA: {e}") from None

    def _source_type(self, source: Mapping[str, Any], sha: str) -> str:
        if source.get("chart") or source.get("helm") is not None:
            return "Helm"
        if source.get("kustomize") is not None:
            return "Kustomize"
        if source.get("directory") is not None:
            return "Directory"
        if source.get("plugin") is not None:
            return "Plugin"
        names = {
            posixpath.basename(p)
            for p in _listing(str(source["repoURL"]), sha, _join(source.get("path") or "", ""))
        }
        if "Chart.yaml" in names:
            return "Helm"
        if names & set(KUSTOMIZATION_FILES):
            return "Kustomize"
        return "Directory"

    def _render(self, sources: list[dict[str, Any]], requested: list[str]) -> _Rendered:
        n = len(sources)
        resolved: list[str] = []
        for i, (source, revision) in enumerate(zip(sources, requested, strict=True)):
            try:
                resolved.append(self._resolve(source, revision))
            except _RenderError as e:
                raise _RenderError(_source_failure(i, n, str(e))) from None
        refs = {
            str(s["ref"]): (str(s["repoURL"]), resolved[i]) for i, s in enumerate(sources) if s.get("ref")
        }
        files: dict[str, str] = {}
        for i, source in enumerate(sources):
            if source.get("ref") and not source.get("path") and not source.get("chart"):
                continue  # it only lends its files to `$ref/...` value files
            try:
                files.update(self._source_files(source, resolved[i], refs))
            except _RenderError as e:
                raise _RenderError(_source_failure(i, n, str(e))) from None
        return _Rendered(resolved, files)

    def _source_files(
        self, source: Mapping[str, Any], sha: str, refs: Mapping[str, tuple[str, str]]
    ) -> dict[str, str]:
        repo = str(source.get("repoURL") or "")
        base = _join(source.get("path") or "", "")
        kind = self._source_type(source, sha)
        files: dict[str, str] = {}
        if kind == "Plugin":
            raise _RenderError("config management plugins are not played by this stand-in")
        if kind == "Helm":
            helm = source.get("helm") or {}
            value_files = list(helm.get("valueFiles") or [])
            if not value_files and not source.get("chart") and _show(repo, sha, _join(base, "values.yaml")):
                value_files = ["values.yaml"]
            for value_file in value_files:
                if value_file.startswith("$"):
                    ref, _, relative = value_file[1:].partition("/")
                    if ref not in refs:
                        raise _RenderError(f"source referenced {value_file!r}, but no source has ref {ref!r}")
                    file_repo, file_sha, path = refs[ref][0], refs[ref][1], _join("", relative)
                elif source.get("chart"):
                    continue  # a file inside the chart package
                else:
                    file_repo, file_sha, path = repo, sha, _join(base, value_file)
                text = _show(file_repo, file_sha, path)
                if text is None:
                    if helm.get("ignoreMissingValueFiles"):
                        continue
                    raise _RenderError(f"open {path}: no such file or directory")
                files[f"{file_repo}@{path}"] = text
            return files
        recursive = kind == "Directory" and bool((source.get("directory") or {}).get("recurse"))
        listing = _listing(repo, sha, base, recursive=recursive)
        if kind == "Kustomize":
            names = [p for p in listing if posixpath.basename(p) in KUSTOMIZATION_FILES]
            if not names:
                raise _RenderError(
                    f"kustomize build failed: unable to find one of {list(KUSTOMIZATION_FILES)} in {base}"
                )
            _check_kustomization(_show(repo, sha, names[0]) or "", names[0])
        for path in listing:
            if not path.endswith(MANIFEST_SUFFIXES):
                continue
            text = _show(repo, sha, path)
            if text is None:
                continue
            if kind == "Directory":
                _check_manifests(text, path)
            files[f"{repo}@{path}"] = text
        return files

    def _tags(self, files: Mapping[str, str]) -> set[str]:
        tags: set[str] = set()
        for text in files.values():
            with contextlib.suppress(yaml.YAMLError):
                for doc in yaml.safe_load_all(text):
                    tags.update(_scalars(doc))
        return tags

    def _health(self, app: dict[str, Any], tags: set[str]) -> tuple[str, str]:
        broken = sorted(tags & self.broken_tags)
        if broken:
            return "Degraded", (
                f'Deployment "{app["metadata"]["name"]}" exceeded its progress deadline: '
                f'pods with image tag "{broken[0]}" are in CrashLoopBackOff'
            )
        return "Healthy", ""

    @staticmethod
    def _requested(sources: list[dict[str, Any]], multi: bool, sync: Mapping[str, Any]) -> list[str]:
        """The revision to render each source at: the operation's, else the source's targetRevision."""
        targets = [str(s.get("targetRevision") or "") for s in sources]
        if not multi:
            # a single-source app takes `revision` (`revisions` is for multi-source apps only)
            return [str(sync.get("revision") or targets[0] or "HEAD")]
        revisions = list(sync.get("revisions") or [])
        if not revisions:
            return targets  # `revision` alone means nothing to a multi-source app
        if len(revisions) != len(sources):
            raise _RenderError(
                f"the operation has {len(revisions)} revisions for {len(sources)} sources (one each is needed)"
            )
        return [str(r) for r in revisions]

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
        sources, multi = self._sources(app)
        rendered: _Rendered | None = None
        try:
            rendered = self._render(sources, self._requested(sources, multi, op["sync"]))
        except _RenderError as e:
            phase = "Error"
            message = f"ComparisonError: Failed to load target state: {e}"
        else:
            tags = self._tags(rendered.files)
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
                    self._live[key] = _Live(rendered.revisions, rendered.files, health, hmsg)
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
            if rendered is not None:
                state["syncResult"] = _by_shape(multi, rendered.revisions, sources, {"resources": []})
                if multi:
                    state["syncResult"]["revision"] = ""  # `revision` has no omitempty in Argo CD's types
            status["operationState"] = state
            if phase == "Succeeded" and rendered is not None:
                history = status.setdefault("history", [])
                entry = {
                    "id": len(history),
                    "deployStartedAt": started,
                    "deployedAt": finished,
                    "initiatedBy": op.get("initiatedBy") or {},
                }
                history.append(_by_shape(multi, rendered.revisions, sources, entry))
            if self.skip_reconcile_after_sync:
                # the refresh request is consumed, but nothing new is written about sync or health
                (o["metadata"].get("annotations") or {}).pop(REFRESH_ANNOTATION, None)
                if o["metadata"].get("annotations") == {}:
                    del o["metadata"]["annotations"]

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
        sources, multi = self._sources(app)
        sync: dict[str, Any] | None = None
        health: dict[str, Any] | None = None
        if live is not None:
            revisions, sync_status = live.revisions, "Synced"
            if self.track_branch_head:
                try:
                    head = self._render(sources, [str(s.get("targetRevision") or "") for s in sources])
                    revisions = head.revisions
                    sync_status = "Synced" if head.files == live.files else "OutOfSync"
                except _RenderError:
                    sync_status = "Unknown"
            destination = (app.get("spec") or {}).get("destination") or {}
            if multi:
                sync = {"status": sync_status, "revisions": list(revisions)}
                sync["comparedTo"] = {"sources": sources, "destination": destination}
            else:
                sync = {"status": sync_status, "revision": revisions[0]}
                sync["comparedTo"] = {"source": sources[0], "destination": destination}
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

    def _startup_answer(self, method: str, ns: str, name: str | None, is_watch: bool) -> KubeError | None:
        """What a just-restarted API server answers before it is fully up, or None once it is."""
        with self._cond:
            startup = self._startup
        now = time.monotonic()
        if now < startup.unavailable_until:
            return KubeError(
                503, "ServiceUnavailable", "the server is currently unable to handle the request", {}
            )
        if now < startup.forbidden_until:
            verb = (
                "watch"
                if is_watch
                else ("list" if method == "GET" and not name else _VERBS.get(method, "get"))
            )
            return _forbidden(verb, ns, name, 'RBAC: role.rbac.authorization.k8s.io "aicd-worker" not found')
        return None

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
            raise _forbidden(verb, ns, name)

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

    def _create(self, ns: str, body: Any, query: Mapping[str, str]) -> dict[str, Any]:
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
        obj = self._admit(name, obj, strict=_strict(query))
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
        query: Mapping[str, str],
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
            new["apiVersion"], new["kind"] = API_VERSION, KIND
            new = self._admit(name, new, strict=_strict(query))
            before = current["metadata"]["resourceVersion"]
            written = copy.deepcopy(self._write_locked((ns, name), copy.deepcopy(current), new))
        if written["metadata"].get("resourceVersion") != before:
            # a write that changed nothing sent no watch event: Argo CD never hears of it
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
                    return self._create(ns, applied, query)
                return self._update(ns, name, lambda o: merge_patch(o, applied), query)
            body = json.loads(raw.decode() or "null")
        except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise KubeError(400, "BadRequest", f"error decoding patch: {e}") from None
        if ctype == "application/merge-patch+json":
            if not isinstance(body, dict):
                raise KubeError(400, "BadRequest", "a merge patch must be a JSON object")
            return self._update(ns, name, lambda o: merge_patch(o, body), query)

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

        return self._update(ns, name, apply_json_patch, query)

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
                if cursor < self._cache_floor:
                    expired = KubeError(
                        410, "Expired", f"too old resource version: {cursor} ({self._cache_floor})", {}
                    )
                    if self.watch_410_as_http:
                        raise expired
                    handler.start_stream()
                    handler.send_event({"type": "ERROR", "object": expired.status()})
                    handler.end_stream()
                    return
            queue = [e for e in self._history if e.rv > cursor]  # from its version, then every new event
            self._open_watches.append(queue)
        try:
            self._stream_watch(handler, ns, fields, labels, timeout, bookmarks, gen, cursor, initial, queue)
        finally:
            with self._cond:
                self._open_watches.remove(queue)

    def _stream_watch(
        self,
        handler: _Handler,
        ns: str,
        fields: Any,
        labels: Any,
        timeout: float,
        bookmarks: bool,
        gen: int,
        cursor: int,
        initial: list[dict[str, Any]],
        queue: list[_Event],
    ) -> None:
        handler.start_stream()
        for ev in initial:
            handler.send_event(ev)
        heard = cursor  # the newest version this watch has been told about (event or bookmark)
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + self.bookmark_interval_s
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    done = self._stop.is_set() or gen != self._watch_gen or now >= deadline
                    pending = bool(queue)
                    bookmark_due = bookmarks and now >= next_bookmark
                    if done or pending or bookmark_due:
                        break
                    wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                    self._cond.wait(timeout=max(0.0, min(wait, 0.25)))
                    if handler.client_gone():
                        return
                events: list[dict[str, Any]] = [
                    {"type": e.type, "object": copy.deepcopy(e.obj)}
                    for e in queue
                    if e.obj["metadata"].get("namespace") == ns and _selector_match(e.obj, fields, labels)
                ]
                queue.clear()
                cursor = self._rv
            if done:
                break
            for ev in events:
                handler.send_event(ev)
                heard = int(ev["object"]["metadata"]["resourceVersion"])
            if bookmark_due:
                # kube-apiserver bookmarks only a watch that has something new to hear: the version moved on
                if cursor > heard:
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
                    heard = cursor
                next_bookmark = time.monotonic() + self.bookmark_interval_s
        handler.end_stream()


def _source_failure(index: int, count: int, detail: str) -> str:
    return f"failed to generate manifest for source {index + 1} of {count}: rpc error: code = Unknown desc = {detail}"


def _by_shape(
    multi: bool, revisions: list[str], sources: list[dict[str, Any]], into: dict[str, Any]
) -> dict[str, Any]:
    """`into` plus `revision`/`source` (single-source) or `revisions`/`sources` (multi-source)."""
    out = dict(into)
    if multi:
        out["revisions"], out["sources"] = list(revisions), copy.deepcopy(sources)
    else:
        out["revision"], out["source"] = revisions[0], copy.deepcopy(sources[0])
    return out


def _strict(query: Mapping[str, str]) -> bool:
    return query.get("fieldValidation") == "Strict"


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
        st = self.standin
        if st._ssl is not None:
            # the handshake runs here, in the connection's own thread: a client refusing the certificate
            # costs that thread an SSLError, not the accept loop
            self.request = st._ssl.wrap_socket(self.request, server_side=True)
        super().setup()
        # headers and body go out in separate writes: without NODELAY, Nagle holds the body back until the
        # client's delayed ACK (~40 ms per response on loopback)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with st._cond:
            st._connections.add(self.connection)

    def finish(self) -> None:
        with self.standin._cond:
            self.standin._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()
        if isinstance(self.connection, ssl.SSLSocket):
            # the server closes the plain socket it accepted, which wrapping detached: close what we use
            with contextlib.suppress(OSError):
                self.connection.close()

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

    record: RequestRecord | None = None
    cut: bool = False  # drop the connection instead of answering

    def send_json(self, code: int, body: Any) -> None:
        if self.cut:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.record is not None:
            self.record.status = code
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        if self.record is not None:
            self.record.status = 200
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
            if isinstance(self.connection, ssl.SSLSocket) and self.connection.pending():
                return False
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    # -- routing --

    def _dispatch(self, method: str) -> None:
        st = self.standin
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        self.record = RequestRecord(method, url.path, query, content_type)
        self.cut = False
        st.requests.append(self.record)
        is_watch = method == "GET" and query.get("watch") in ("true", "1")
        try:
            m = _PATH.match(url.path)
            not_ready = st._startup_answer(
                method, m.group("ns") if m else "", m.group("name") if m else None, is_watch
            )
            if not_ready is not None:
                raise not_ready
            fault = st._take_fault(method, is_watch)
            if fault is not None and fault.kind == "hang":
                st._stop.wait(fault.seconds)
            elif fault is not None and fault.kind == "cut":
                self.cut = True
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
                self.send_json(201, st._create(ns, body, query))
            elif method == "PUT" and name:
                st._authorize("update", ns, name)
                body = self._json(raw)
                self.send_json(
                    200, st._update(ns, name, lambda _old: copy.deepcopy(body), query, require_rv=True)
                )
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
    ca_file: str | Path | None = None,
) -> Path:
    """One kubeconfig with a context (and cluster/user) per stand-in; a str value is a server URL (e.g. a port
    nothing listens on, for "unreachable" tests). An HTTPS stand-in's clusters trust its own certificate unless
    `ca_file` names another one."""
    if not contexts:
        raise ValueError("write_kubeconfig needs at least one context")
    clusters, users, ctxs = [], [], []
    for name, server in contexts.items():
        url = server if isinstance(server, str) else server.url
        cluster: dict[str, Any] = {"server": url}
        if ca_file is not None:
            cluster["certificate-authority"] = str(ca_file)
        elif isinstance(server, KubeArgoCD) and server.tls:
            cluster["certificate-authority"] = str(server.ca_file)
        clusters.append({"name": f"{name}-cluster", "cluster": cluster})
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
