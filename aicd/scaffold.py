"""`aicd init`: a new application's delivery from a template, in one command.

The new app directory (a Git repository with one commit on `main`, the app's source repo) holds
- the app from the template (aicd/templates/<name>/files: a Python or Node.js web app with /health and
  Prometheus /metrics, or notes for a bring-your-own image) and `app.yaml` (how the embedded stack runs it);
- `delivery/<app>.yaml`: the delivery spec for clusters (Argo CD targets staging and production, canary steps
  with a Prometheus analysis);
- `gitops/`: the GitOps layout to copy into the platform's GitOps repo - a Helm chart and a values file per
  target under `apps/<app>/<target>/` - and `gitops/argocd/<app>.yaml`, the Argo CD Applications
  (aicd.argocd_manifests, as `aicd argocd manifests` renders them);
- `delivery/<app>.local.yaml`: the same delivery on the embedded stack (`aicd dev`), with `local` targets
  `<app>-staging` and `<app>-production` whose values files are committed to the stack's own GitOps repo
  (aicd.dev.local_gitops), so `aicd deliver delivery/<app>.local.yaml --revision main` runs a first canary
  at once.
Nothing is written when anything is wrong (a name that is no DNS label, a directory that exists).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

APP_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
PLACEHOLDER = "__APP__"
IMAGE_PLACEHOLDER = "__IMAGE__"
CLUSTER_TARGETS = ("staging", "production")
INITIAL_TAG = "initial"  # the version the local targets run before the first delivery
VALUE_KEYS = {"image": "image.tag", "canary": "canary.tag", "weight": "canary.weight"}
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "aicd init",
    "GIT_AUTHOR_EMAIL": "aicd-init@localhost",
    "GIT_COMMITTER_NAME": "aicd init",
    "GIT_COMMITTER_EMAIL": "aicd-init@localhost",
    "GIT_TERMINAL_PROMPT": "0",
}


class ScaffoldError(ValueError):
    """The app cannot be scaffolded as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    port: int
    builds_image: bool  # the template's Dockerfile builds the image; False: bring your own
    root: Traversable

    def files(self) -> dict[str, str]:
        """Relative path -> text of every file the template puts in the app."""
        found: dict[str, str] = {}

        def walk(node: Traversable, prefix: str) -> None:
            for child in sorted(node.iterdir(), key=lambda c: c.name):
                if child.name == "__pycache__":
                    continue
                path = f"{prefix}{child.name}"
                if child.is_dir():
                    walk(child, f"{path}/")
                else:
                    found[path] = child.read_text(encoding="utf-8")

        walk(self.root.joinpath("files"), "")
        return found


def _templates_root() -> Traversable:
    return files("aicd").joinpath("templates")


def templates() -> dict[str, Template]:
    """Every template shipped in the package, by name."""
    found: dict[str, Template] = {}
    for entry in sorted(_templates_root().iterdir(), key=lambda e: e.name):
        card = entry.joinpath("template.yaml")
        if not entry.is_dir() or entry.name.startswith("_") or not card.is_file():
            continue
        data = yaml.safe_load(card.read_text(encoding="utf-8"))
        found[entry.name] = Template(
            entry.name, str(data["description"]), int(data["port"]), data["build"] == "container", entry
        )
    return found


def _chart_files() -> dict[str, str]:
    chart = _templates_root().joinpath("_chart")
    return {
        "Chart.yaml": chart.joinpath("Chart.yaml").read_text(encoding="utf-8"),
        "templates/deployments.yaml": chart.joinpath("templates", "deployments.yaml").read_text(
            encoding="utf-8"
        ),
    }


@dataclass(frozen=True)
class Scaffold:
    """What `aicd init` made."""

    app: str
    directory: Path
    template: Template
    cluster_spec: Path
    local_spec: Path
    argocd_manifests: Path
    local_gitops: Path
    revision: str


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        env={**os.environ, **GIT_IDENTITY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise ScaffoldError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def _header(lines: list[str]) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def _dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, width=1000, default_flow_style=None)


def values_file(image: str, tag: str) -> str:
    """A target's values file: the keys aicd writes (image.tag, canary.tag, canary.weight) and the chart's."""
    return (
        "# Written by aicd: image.tag (the stable version), canary.tag and canary.weight (the canary's share\n"
        "# of requests). Everything else is yours; aicd keeps comments and formatting when it edits a key.\n"
        f"image:\n  repository: {image}\n  tag: {tag!r}\n"
        "canary:\n  tag: ''\n  weight: 0\n"
        "replicas: 4\n"
    )


def cluster_spec(app: str, template: Template, image: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"repo": f"https://git.example.com/you/{app}.git", "branches": ["main", "release/*"]},
    }
    if template.builds_image:
        spec["build"] = {
            "command": ["docker", "build", "--push", "-t", f"{image}:{{{{ revision.short }}}}", "."],
            "artifact": f"{image}:{{{{ revision.short }}}}",
            "timeout": "20m",
        }
    spec["gitops"] = {"repo": "https://git.example.com/platform/gitops.git", "branch": "main"}
    spec["targets"] = {
        target: {"kind": "argocd", "app": f"{app}-{target}", "path": f"apps/{app}/{target}/values.yaml"}
        for target in CLUSTER_TARGETS
    }
    selector = f'app="{app}",track="{{{{ track }}}}"'
    spec["analysis"] = {
        "prometheus": {"url": "http://prometheus.monitoring.svc:9090"},
        "interval": "30s",
        "metrics": [
            {
                "name": "error-rate",
                "query": f'sum(rate(http_requests_total{{{selector},code=~"5.."}}[1m]))',
                "total": f"sum(rate(http_requests_total{{{selector}}}[1m]))",
                "kind": "count",
                "direction": "increase",
                "absoluteTolerance": "1%",
                "critical": True,
            },
            {
                "name": "latency-p90",
                "query": "histogram_quantile(0.9, sum by (le)"
                f"(rate(http_request_duration_seconds_bucket{{{selector}}}[1m])))",
                "kind": "continuous",
                "direction": "increase",
                "tolerance": "20%",
            },
        ],
    }

    def canary() -> list[dict[str, Any]]:  # a fresh list per stage: no YAML anchors in the file
        steps: list[dict[str, Any]] = [{"setWeight": 10}, {"pause": "1m"}, {"analysis": {"duration": "5m"}}]
        steps.append({"setWeight": 50})
        return [*steps, {"analysis": {"duration": "5m"}}, {"setWeight": 100}]

    spec["stages"] = [
        {"name": "staging", "targets": ["staging"], "strategy": {"canary": {"steps": canary()}}},
        {
            "name": "production",
            "targets": ["production"],
            "approval": {"approvers": ["you"], "timeout": "24h"},
            "strategy": {"canary": {"steps": canary()}},
        },
    ]
    spec["rollback"] = {"scope": "stage"}
    return {
        "apiVersion": "aicd.dev/v1alpha1",
        "kind": "DeliverySpec",
        "metadata": {"name": app},
        "spec": spec,
    }


def local_targets(app: str) -> dict[str, str]:
    """Target name -> values file in the embedded stack's GitOps repo (names are unique across apps)."""
    return {f"{app}-{stage}": f"apps/{app}/local/{stage}/values.yaml" for stage in CLUSTER_TARGETS}


def local_spec(app: str, directory: Path, gitops_repo: Path, artifacts: Path) -> dict[str, Any]:
    staging, production = local_targets(app)

    def quick() -> list[dict[str, Any]]:  # a fresh list per stage: no YAML anchors in the file
        return [{"setWeight": 50}, {"pause": "3s"}, {"setWeight": 100}]

    # This aicd's own interpreter: the embedded stack's build runs the stand-in app's build with it.
    build = [sys.executable, "-m", "aicd.dev.demo_app.build", "--source", ".", "--out", str(artifacts)]
    return {
        "apiVersion": "aicd.dev/v1alpha1",
        "kind": "DeliverySpec",
        "metadata": {"name": app},
        "spec": {
            "source": {"repo": str(directory), "branches": ["main", "release/*"]},
            "build": {
                "command": [*build, "--tag", "{{ revision.short }}"],
                "artifact": f"{app}:{{{{ revision.short }}}}",
                "timeout": "2m",
            },
            "gitops": {"repo": str(gitops_repo), "branch": "main"},
            "targets": {
                name: {"kind": "local", "path": path, "progressDeadline": "1m"}
                for name, path in local_targets(app).items()
            },
            "stages": [
                {"name": "staging", "targets": [staging], "strategy": {"canary": {"steps": quick()}}},
                {"name": "production", "targets": [production], "strategy": {"canary": {"steps": quick()}}},
            ],
            "rollback": {"scope": "stage"},
        },
    }


def scaffold(
    app: str, template_name: str, directory: Path, state_dir: Path, image: str | None = None
) -> Scaffold:
    """Make the app `app` from the template in `directory` (which must not exist); the `local` targets' files
    go to the GitOps repo of the embedded stack of `state_dir`, and its first version is built."""
    from aicd.argocd_manifests import dump_manifests, render_applications
    from aicd.dev.demo_app.build import BuildError, build
    from aicd.dev.local_gitops import commit_files, local_artifacts, local_gitops_repo

    if not APP_NAME.fullmatch(app):
        raise ScaffoldError(
            f"app name {app!r}: use lower-case letters, digits and '-' (a DNS label, at most 40, starting with a letter)"
        )
    known = templates()
    if template_name not in known:
        raise ScaffoldError(
            f"unknown template {template_name!r}; templates are {', '.join(known)} (aicd init --list)"
        )
    template = known[template_name]
    directory = directory.expanduser().resolve()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ScaffoldError(f"{directory} exists and is not empty; name a new directory with --dir")
    image = image or f"registry.example.com/you/{app}"
    with tempfile.TemporaryDirectory(prefix=f"aicd-init-{app}-", dir=directory.parent) as scratch:
        work = Path(scratch) / app
        work.mkdir()
        for path, text in template.files().items():
            file = work / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(
                text.replace(PLACEHOLDER, app).replace(IMAGE_PLACEHOLDER, image), encoding="utf-8"
            )
        for target in CLUSTER_TARGETS:
            base = work / "gitops" / "apps" / app / target
            for path, text in _chart_files().items():
                (base / path).parent.mkdir(parents=True, exist_ok=True)
                (base / path).write_text(text.replace(PLACEHOLDER, app), encoding="utf-8")
            (base / "values.yaml").write_text(values_file(image, "latest"), encoding="utf-8")
        document = cluster_spec(app, template, image)
        applications = render_applications(
            app, document["spec"]["gitops"]["repo"], "main", document["spec"]["targets"], tree=None
        )
        manifests = work / "gitops" / "argocd" / f"{app}.yaml"
        manifests.parent.mkdir(parents=True)
        manifests.write_text(
            _header(
                [
                    f"Argo CD Applications of {app}: `kubectl apply -f` once (aicd argocd manifests renders them too)."
                ]
            )
            + dump_manifests(applications),
            encoding="utf-8",
        )
        (work / "delivery").mkdir()
        cluster = work / "delivery" / f"{app}.yaml"
        cluster.write_text(
            _header(
                [
                    f"Delivery of {app} to your clusters: set source.repo, gitops.repo (copy gitops/ into it),",
                    "the Prometheus URL and the approvers; then `aicd validate` and `aicd plan` this file.",
                ]
            )
            + _dump(document),
            encoding="utf-8",
        )
        _git(work, "init", "-q")
        _git(work, "add", "-A")
        _git(work, "commit", "-q", "-m", f"{app}: scaffolded by aicd init ({template.name} template)")
        # Only now in place: a failure above leaves nothing behind.
        if directory.exists():
            directory.rmdir()
        shutil.move(str(work), str(directory))
    # The embedded stack's side: its GitOps repo gets the local targets' files, running a first version.
    gitops = local_gitops_repo(state_dir)
    artifacts = local_artifacts(state_dir)
    try:
        build(directory, artifacts, f"{app}-{INITIAL_TAG}")
    except BuildError as error:
        raise ScaffoldError(f"building the first local version failed: {error}") from None
    commit_files(
        gitops,
        {path: values_file(app, f"{app}-{INITIAL_TAG}") for path in local_targets(app).values()},
        f"{app}: local targets added by aicd init",
    )
    local = directory / "delivery" / f"{app}.local.yaml"
    local.write_text(
        _header(
            [
                f"Delivery of {app} on the embedded stack (`aicd dev --state-dir {state_dir}`): `local` targets",
                "whose values files live in the stack's own GitOps repo; aicd's stand-in app runs each version",
                "(app.yaml). Not committed: the paths are this machine's.",
            ]
        )
        + _dump(local_spec(app, directory, gitops, artifacts)),
        encoding="utf-8",
    )
    with open(directory / ".git" / "info" / "exclude", "a", encoding="utf-8") as exclude:
        exclude.write(f"delivery/{app}.local.yaml\n")
    return Scaffold(
        app,
        directory,
        template,
        directory / cluster.relative_to(work),
        local,
        directory / manifests.relative_to(work),
        gitops,
        _git(directory, "rev-parse", "HEAD"),
    )
