"""Target kind `argocd`: an Argo CD Application that aicd syncs to each commit and waits for, Synced and
Healthy (the driver: aicd.activities.drivers.argocd; the Application to onboard: aicd.argocd_manifests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aicd.targets.base import TargetKind

DEFAULT_NAMESPACE = "argocd"

# The keys naming an Application and where its Argo CD runs; an edge fleet of Argo CD sites has them too.
APPLICATION_PROPERTIES: dict[str, Any] = {
    "app": {
        "type": "string",
        "minLength": 1,
        "description": "Name of the Argo CD Application (edge with siteKind argocd: a template with {{ site }}).",
    },
    "namespace": {
        "type": "string",
        "minLength": 1,
        "description": "Namespace of the Application, where that Argo CD runs (default argocd).",
    },
    "context": {
        "type": "string",
        "minLength": 1,
        "description": "kubeconfig context of the cluster where that Argo CD runs (default: in-cluster or current context).",
    },
    "kubeconfig": {
        "type": "string",
        "minLength": 1,
        "description": "Path of the kubeconfig file (default: KUBECONFIG or ~/.kube/config).",
    },
}


@dataclass(frozen=True)
class ChartRef:
    """A Helm chart from a chart repository that the target's values file configures."""

    repo: str
    name: str
    version: str


@dataclass(frozen=True)
class ArgoCDTarget(TargetKind):
    app: str
    namespace: str = DEFAULT_NAMESPACE
    context: str | None = None
    kubeconfig: str | None = None
    destination: dict[str, Any] | None = None  # the Application's spec.destination (aicd argocd manifests)
    chart: ChartRef | None = None
    kind: Literal["argocd"] = "argocd"

    name: ClassVar[str] = "argocd"
    description: ClassVar[str] = "argocd: an Argo CD Application synced by aicd"
    required: ClassVar[tuple[str, ...]] = ("app",)
    properties: ClassVar[dict[str, Any]] = {
        **APPLICATION_PROPERTIES,
        "destination": {
            "type": "object",
            "description": "The Application's spec.destination for `aicd argocd manifests` (default the in-cluster server).",
        },
        "chart": {
            "type": "object",
            "additionalProperties": False,
            "required": ["repo", "name", "version"],
            "description": "The Helm chart this target's values file configures, when the chart comes from a chart repository. `aicd argocd manifests` then emits a multi-source Application: the chart at this version reading `$values/<path>`, plus the GitOps repo as a `ref: values` source. aicd's syncs move only the values source; the chart keeps its version.",
            "properties": {
                "repo": {
                    "type": "string",
                    "minLength": 1,
                    "description": "URL of the chart repository (an OCI registry without oci://, as Argo CD takes it).",
                },
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Name of the chart in that repository.",
                },
                "version": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Chart version: the chart source's targetRevision.",
                },
            },
        },
    }

    @classmethod
    def convert(cls, fields: dict[str, Any]) -> dict[str, Any]:
        if isinstance(fields.get("chart"), dict):
            fields["chart"] = ChartRef(**fields["chart"])
        return fields

    def plan_lines(self) -> list[str]:
        where = f" (context {self.context})" if self.context else ""
        return [f"Argo CD Application {self.namespace}/{self.app}{where}"]
