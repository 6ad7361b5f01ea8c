"""Argo CD `Application` manifests for a delivery spec's `argocd` targets (`aicd argocd manifests SPEC`).

One Application per target of kind `argocd`, whose source is the layout of the target's file in the GitOps repo -
the way Argo CD itself tells a directory's type:
- `kustomization.yaml` (or a file in a directory that has one): a Kustomize source at that directory;
- a values file beside a `Chart.yaml`: a Helm source at that directory with the file as its value file;
- a Kubernetes manifest (apiVersion and kind) in a directory of plain manifests: a directory source;
- a values file for a chart from a chart repository, named by the target's `chart: {repo, name, version}`: a
  multi-source Application - the chart at its version with value file `$values/<path>`, plus the GitOps repo at
  the branch as a `ref: values` source. aicd's syncs then move only that source; the chart keeps its version.
A values file with neither a chart beside it nor `chart` is refused: no Application could read it.

The layout is read from the GitOps repo at its branch (`GitOpsTree`). Without the repo, only the file name and
`chart` are known: a kustomization is Kustomize, anything else is taken for a values file beside its chart.

No `syncPolicy.automated`: aicd requests every sync itself (one per committed step) and judges health after it;
Argo CD auto-sync would race those syncs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import git
import yaml

DEFAULT_NAMESPACE = "argocd"
IN_CLUSTER = "https://kubernetes.default.svc"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
VALUES_REF = "values"
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


class TreeReader(Protocol):
    """The GitOps repository's files at the branch aicd commits to."""

    def names_in(self, directory: str) -> set[str] | None:
        """Names directly in `directory` ("" is the root), or None when there is no such directory."""
        ...

    def read(self, path: str) -> str | None:
        """A file's text, or None when there is no such file."""
        ...


class GitOpsTree:
    """A `TreeReader` on a Git repository (a clone, a bare repository, or a shallow clone made for the purpose)."""

    def __init__(self, repo: git.Repo, branch: str) -> None:
        self.location = str(repo.git_dir)
        for ref in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}", branch):
            try:
                self._tree = repo.commit(ref).tree
                return
            except (git.BadName, ValueError, git.GitCommandError):
                continue
        raise ValueError(f"{self.location}: no branch {branch!r}")

    @classmethod
    def open(cls, location: str | Path, branch: str) -> GitOpsTree:
        """A repository on this machine: a path or a file:// URL."""
        path = str(location).removeprefix("file://")
        try:
            return cls(git.Repo(path), branch)
        except (git.NoSuchPathError, git.InvalidGitRepositoryError):
            raise ValueError(f"{location}: not a Git repository") from None

    @classmethod
    def clone(cls, url: str, branch: str, into: Path) -> GitOpsTree:
        """A shallow bare clone of the branch into `into` (which must outlive the tree)."""
        repo = git.Repo.clone_from(
            url, into, bare=True, depth=1, branch=branch, env={"GIT_TERMINAL_PROMPT": "0"}
        )
        return cls(repo, branch)

    def _node(self, path: str) -> Any:
        if not path:
            return self._tree
        try:
            return self._tree / path
        except KeyError:
            return None

    def names_in(self, directory: str) -> set[str] | None:
        node = self._node(directory)
        if not isinstance(node, git.Tree):
            return None
        return {item.name for item in node}

    def read(self, path: str) -> str | None:
        node = self._node(path)
        if not isinstance(node, git.Blob):
            return None
        return bytes(node.data_stream.read()).decode("utf-8", errors="replace")


def is_local_repo(url: str) -> bool:
    """A repository URL that names a path on this machine (what tests and `aicd dev` use)."""
    return url.startswith("file://") or ("://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url))


def _destination(target: str, value: Any, app_name: str) -> dict[str, Any]:
    """`destination` may be a mapping (Argo CD's own shape), a server URL or a cluster name."""
    if value is None:
        return {"server": IN_CLUSTER, "namespace": app_name}
    if isinstance(value, Mapping):
        dest = dict(value)
        if not (dest.get("server") or dest.get("name")):
            raise ValueError(f"targets.{target}.destination: needs `server` or `name`")
        return dest
    if isinstance(value, str) and value:
        key = "server" if "://" in value else "name"
        return {key: value, "namespace": app_name}
    raise ValueError(f"targets.{target}.destination: expected a mapping, a server URL or a cluster name")


def _chart(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}.chart: expected {{repo, name, version}} of a chart in a chart repository")
    chart: dict[str, str] = {}
    for key in ("repo", "name", "version"):
        item = value.get(key)
        if not isinstance(item, str) or not item.strip():
            raise ValueError(
                f"{where}.chart.{key}: required (the chart repository's URL, the chart, its version)"
            )
        chart[key] = item.strip()
    return chart


def _is_manifest(text: str) -> bool:
    """Kubernetes objects, as Argo CD's directory sources want them: every document has apiVersion and kind."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        return False
    return bool(docs) and all(isinstance(d, dict) and d.get("apiVersion") and d.get("kind") for d in docs)


def _layout(where: str, path: str, chart: dict[str, str] | None, tree: TreeReader | None) -> str:
    """Helm | Kustomize | Directory | Chart (a chart from a chart repository) for the target's file."""
    directory, filename = posixpath.split(path)
    if chart is not None:
        if filename in KUSTOMIZATION_FILES:
            raise ValueError(f"{where}.chart: {path} is a kustomization, not a values file for a chart")
        if tree is not None and tree.read(path) is None:
            raise ValueError(
                f"{where}.path: {path} is not in the GitOps repo (aicd writes into an existing file)"
            )
        return "Chart"
    if filename in KUSTOMIZATION_FILES:
        return "Kustomize"
    if tree is None:
        return "Helm"  # not knowable without the repository: the common case, a values file beside its chart
    text = tree.read(path)
    if text is None:
        raise ValueError(
            f"{where}.path: {path} is not in the GitOps repo (aicd writes into an existing file)"
        )
    beside = tree.names_in(directory) or set()
    if "Chart.yaml" in beside:
        return "Helm"
    if beside & set(KUSTOMIZATION_FILES):
        return "Kustomize"  # a file the overlay's kustomization uses (a patch, a generator's env file)
    if _is_manifest(text):
        return "Directory"
    raise ValueError(
        f"{where}.path: {path} is a values file, but {directory or 'the root'} holds no Chart.yaml in the GitOps "
        "repo: name the chart it configures with `chart: {repo, name, version}` (a chart from a chart "
        "repository), or keep the chart beside it"
    )


def _spec_sources(
    layout: str, path: str, chart: dict[str, str] | None, repo: str, branch: str
) -> dict[str, Any]:
    directory, filename = posixpath.split(path)
    if layout == "Chart":
        assert chart is not None
        return {
            "sources": [
                {
                    "repoURL": chart["repo"],
                    "chart": chart["name"],
                    "targetRevision": chart["version"],
                    "helm": {"valueFiles": [f"${VALUES_REF}/{path}"]},
                },
                {"repoURL": repo, "targetRevision": branch, "ref": VALUES_REF},
            ]
        }
    source: dict[str, Any] = {"repoURL": repo, "targetRevision": branch, "path": directory or "."}
    if layout == "Helm":
        source["helm"] = {"valueFiles": [filename]}
    elif layout == "Kustomize":
        source["kustomize"] = {}
    else:
        source["directory"] = {"recurse": False}
    return {"source": source}


def render_applications(
    app_name: str,
    gitops_repo: str,
    gitops_branch: str,
    targets: Mapping[str, Mapping[str, Any]],
    tree: TreeReader | None = None,
) -> list[dict[str, Any]]:
    """One Application per `kind: argocd` target, in spec order; `tree` is the GitOps repo, to read layouts
    from. ValueError names the target field that is wrong."""
    if not _LABEL_VALUE.fullmatch(app_name) or len(app_name) > 63:
        raise ValueError(f"metadata.name {app_name!r}: not usable as a label value")
    apps: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for target, cfg in targets.items():
        if cfg.get("kind") != "argocd":
            continue
        where = f"targets.{target}"
        name = cfg.get("app")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.app: required for kind argocd (the Argo CD Application name)")
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            raise ValueError(f"{where}.app: {name!r} is not a valid Kubernetes object name")
        if not _LABEL_VALUE.fullmatch(target) or len(target) > 63:
            raise ValueError(f"{where}: target name {target!r} is not usable as a label value")
        raw_path = cfg.get("path")
        if not isinstance(raw_path, str) or not raw_path.strip("/"):
            raise ValueError(f"{where}.path: required for kind argocd (the target's file in the GitOps repo)")
        if "{{" in raw_path:
            raise ValueError(
                f"{where}.path: {raw_path!r} has a placeholder; an Application needs one fixed file"
            )
        path = posixpath.normpath(raw_path.strip("/"))
        if path.startswith("../"):
            raise ValueError(f"{where}.path: {raw_path!r} leaves the GitOps repository")
        chart = _chart(where, cfg["chart"]) if cfg.get("chart") is not None else None
        namespace = str(cfg.get("namespace") or DEFAULT_NAMESPACE)
        if (namespace, name) in seen:
            raise ValueError(
                f"{where}.app: {namespace}/{name} is also the app of targets.{seen[(namespace, name)]}"
            )
        seen[(namespace, name)] = target
        layout = _layout(where, path, chart, tree)
        apps.append(
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"aicd.dev/app": app_name, "aicd.dev/target": target},
                },
                "spec": {
                    "project": str(cfg.get("project") or "default"),
                    **_spec_sources(layout, path, chart, gitops_repo, gitops_branch),
                    "destination": _destination(target, cfg.get("destination"), app_name),
                },
            }
        )
    return apps


def dump_manifests(apps: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML, ready for `kubectl apply -f -`."""
    if not apps:
        return ""
    return yaml.safe_dump_all([dict(a) for a in apps], sort_keys=False, explicit_start=True)
