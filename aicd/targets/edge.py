"""Target kind `edge`: a fleet of sites rolled out in batches (aicd.workflows.edge_fleet), each site synced
and checked by its `siteKind` (aicd.activities.edge)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from aicd.spec.durations import parse_percent
from aicd.spec.paths import repo_path_problem
from aicd.spec.yamlsafe import Path
from aicd.targets.argocd import APPLICATION_PROPERTIES, DEFAULT_NAMESPACE
from aicd.targets.base import Finding, TargetKind

DEFAULT_PARALLELISM = 50


@dataclass(frozen=True)
class SitesFile:
    file: str  # a YAML list in the GitOps repository


@dataclass(frozen=True)
class EdgeTarget(TargetKind):
    # SitesFile first: Temporal's converter tries a union in order, and a list would take a mapping's keys.
    sites: SitesFile | list[str] = field(
        default_factory=list
    )  # empty once the fleet travels in its own state
    batches: list[str] = field(default_factory=lambda: ["100%"])
    max_failures: int | str = 0
    site_kind: Literal["git", "argocd"] = "git"
    parallelism: int = DEFAULT_PARALLELISM
    # siteKind argocd: each site's Application (`app` a template with {{ site }}) and where its Argo CD runs.
    app: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    context: str | None = None
    kubeconfig: str | None = None
    kind: Literal["edge"] = "edge"

    name: ClassVar[str] = "edge"
    description: ClassVar[str] = "edge: a fleet of sites in batches"
    fleet: ClassVar[bool] = True
    required: ClassVar[tuple[str, ...]] = ("sites", "batches")
    properties: ClassVar[dict[str, Any]] = {
        "sites": {
            "description": "The fleet, inline as a list of site names or as {file: path} of a YAML list in the GitOps repository.",
            "oneOf": [
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
                },
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "$ref": "#/$defs/repoPath",
                            "description": "Path of the fleet file in the GitOps repository.",
                        }
                    },
                },
            ],
        },
        "siteKind": {
            "enum": ["git", "argocd"],
            "description": "How each site is synced and checked (default git).",
        },
        "batches": {
            "type": "array",
            "minItems": 1,
            "items": {"$ref": "#/$defs/percent"},
            "description": "Cumulative share of the fleet after each batch, increasing, ending at 100%.",
        },
        "maxFailures": {
            "description": "Failed sites tolerated, as a count or a percentage of the fleet (default 0).",
            "oneOf": [{"type": "integer", "minimum": 0}, {"$ref": "#/$defs/percent"}],
        },
        "parallelism": {
            "type": "integer",
            "minimum": 1,
            "maximum": 1000,
            "description": "Sites checked at once in a batch (default 50).",
        },
        **APPLICATION_PROPERTIES,
    }

    @classmethod
    def convert(cls, fields: dict[str, Any]) -> dict[str, Any]:
        renamed = {"maxFailures": "max_failures", "siteKind": "site_kind"}
        converted = {renamed.get(key, key): value for key, value in fields.items()}
        if isinstance(converted.get("sites"), dict):
            converted["sites"] = SitesFile(converted["sites"]["file"])
        elif "sites" in converted:
            converted["sites"] = list(converted["sites"])
        return converted

    @classmethod
    def checks(cls, raw: Mapping[str, Any], path: Path) -> Iterator[Finding]:
        if "{{ site }}" not in str(raw.get("path", "")).replace("{{site}}", "{{ site }}"):
            yield (*path, "path"), "an edge target's path must contain {{ site }}"
        previous = 0.0
        for index, batch in enumerate(raw.get("batches", [])):
            try:
                share = parse_percent(batch)
            except ValueError:
                continue
            if share <= previous or share > 1.0:
                yield (
                    (*path, "batches", index),
                    f"batch {batch} must be above the one before and at most 100%",
                )
            previous = share
        if raw.get("batches") and previous != 1.0:
            yield (*path, "batches"), "the last batch must be 100%"
        sites = raw.get("sites")
        fleet_file = sites.get("file") if isinstance(sites, dict) else None
        if isinstance(fleet_file, str) and (
            problem := repo_path_problem(fleet_file, placeholders=frozenset())
        ):
            yield (*path, "sites", "file"), f"fleet file {fleet_file!r} {problem}"
        if raw.get("siteKind") == "argocd" and not raw.get("app"):
            yield (
                (*path, "app"),
                "siteKind argocd needs `app`, the Application of each site (a template with {{ site }})",
            )

    def without_sites(self) -> EdgeTarget:
        """The config without the fleet, which travels in the fleet workflow's own state."""
        return EdgeTarget(**{**self.__dict__, "sites": []})

    def plan_lines(self) -> list[str]:
        sites = f"file {self.sites.file}" if isinstance(self.sites, SitesFile) else f"{len(self.sites)} sites"
        return [f"fleet {sites} in batches {', '.join(self.batches)}, max failures {self.max_failures}"]
