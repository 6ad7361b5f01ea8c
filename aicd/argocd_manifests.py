"""Argo CD `Application` manifests for a delivery spec's `argocd` targets (`aicd argocd manifests SPEC`).

One Application per target of kind `argocd`, pointing at the directory of the target's values file in the GitOps
repo with that file as its Helm values file. No `syncPolicy.automated`: aicd requests every sync itself (one per
committed step) and judges health after it; Argo CD auto-sync would race those syncs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

DEFAULT_NAMESPACE = "argocd"
IN_CLUSTER = "https://kubernetes.default.svc"
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


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


def render_applications(
    app_name: str,
    gitops_repo: str,
    gitops_branch: str,
    targets: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One Application per `kind: argocd` target, in spec order."""
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
        path = cfg.get("path")
        if not isinstance(path, str) or not path.strip("/"):
            raise ValueError(f"{where}.path: required for kind argocd (the values file in the GitOps repo)")
        if "{{" in path:
            raise ValueError(f"{where}.path: {path!r} has a placeholder; an Application needs one fixed file")
        directory, filename = posixpath.split(path.strip("/"))
        namespace = str(cfg.get("namespace") or DEFAULT_NAMESPACE)
        if (namespace, name) in seen:
            raise ValueError(
                f"{where}.app: {namespace}/{name} is also the app of targets.{seen[(namespace, name)]}"
            )
        seen[(namespace, name)] = target
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
                    "source": {
                        "repoURL": gitops_repo,
                        "targetRevision": gitops_branch,
                        "path": directory or ".",
                        "helm": {"valueFiles": [filename]},
                    },
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
