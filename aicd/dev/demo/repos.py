"""The demo's Git repositories: the app's source repo and the GitOps repo, created afresh each run, and
commits made the way a developer would (a topic branch merged into a release branch)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aicd.dev.demo.model import INITIAL, DemoError, GitOpsCommit, Release
from aicd.dev.demo_app.build import BuildError, build
from aicd.spec.model import DeliverySpec
from aicd.yamledit import get_path, set_keys

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dana Demo",
    "GIT_AUTHOR_EMAIL": "dana@demo.invalid",
    "GIT_COMMITTER_NAME": "Dana Demo",
    "GIT_COMMITTER_EMAIL": "dana@demo.invalid",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}

# The flags the demo app defines (flagd's flag-definition format), seeded for every target with `flags`: the
# good release rolls `new-checkout` out to part of staging's users with a setFlag step.
DEMO_FLAGS = (
    json.dumps(
        {
            "$schema": "https://flagd.dev/schema/v0/flags.json",
            "flags": {
                "new-checkout": {
                    "state": "ENABLED",
                    "variants": {"on": True, "off": False},
                    "defaultVariant": "off",
                }
            },
        },
        indent=2,
    )
    + "\n"
)


@dataclass(frozen=True)
class DemoLayout:
    """Everything under `<state>/demo/`. The Temporal dev server and the worker use the directory itself
    (temporal.db, dev.json, logs/, the worker's clones), so `aicd dev --state-dir <state>/demo` reopens the
    demo's history later."""

    root: Path

    @property
    def source_repo(self) -> Path:
        return self.root / "source.git"

    @property
    def gitops_repo(self) -> Path:
        return self.root / "gitops.git"

    @property
    def checkouts(self) -> Path:
        return self.root / "checkouts"  # working clones the demo commits from, as a developer would

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def spec(self) -> Path:
        return self.root / "demo.yaml"


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise DemoError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result.stdout.strip()


def _new_repo(bare: Path, work: Path) -> None:
    git(bare.parent, "init", "-q", "--bare", str(bare))
    git(work.parent, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-B", "main")


class DemoRepos:
    """The demo's source repo (the app's app.yaml) and GitOps repo (one values file per target)."""

    def __init__(self, layout: DemoLayout, spec: DeliverySpec) -> None:
        self.layout = layout
        self.spec = spec
        self.source = layout.checkouts / "source"
        self.gitops = layout.checkouts / "gitops"

    def create(self) -> str:
        """Both repositories, with release 1.0 committed, built and desired on every target; its tag."""
        self.layout.checkouts.mkdir(parents=True, exist_ok=True)
        _new_repo(self.layout.source_repo, self.source)
        (self.source / "app.yaml").write_text(INITIAL.app_yaml(self.spec.name), encoding="utf-8")
        (self.source / "README.md").write_text(
            f"# {self.spec.name}\n\nThe demo service; `app.yaml` sets how each version behaves.\n",
            encoding="utf-8",
        )
        git(self.source, "add", "-A")
        git(self.source, "commit", "-q", "-m", f"{self.spec.name} {INITIAL.version}")
        git(self.source, "push", "-q", "origin", "main")
        tag = self.build(git(self.source, "rev-parse", "HEAD"))

        _new_repo(self.layout.gitops_repo, self.gitops)
        for target in self.spec.targets.values():
            path = self.gitops / target.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(set_keys("", {self.spec.write.image: tag}), encoding="utf-8")
            if target.flags:
                (self.gitops / target.flags).parent.mkdir(parents=True, exist_ok=True)
                (self.gitops / target.flags).write_text(DEMO_FLAGS, encoding="utf-8")
        git(self.gitops, "add", "-A")
        names = ", ".join(self.spec.targets)
        git(self.gitops, "commit", "-q", "-m", f"{self.spec.name} {INITIAL.version} on {names}")
        git(self.gitops, "push", "-q", "origin", "main")
        return tag

    def build(self, revision: str) -> str:
        """The artifact of `revision` built up front (the stable version must exist before any delivery)."""
        tag = revision[:7]  # what the spec's `{{ revision.short }}` makes of it
        try:
            build(self.source, self.layout.artifacts, tag)
        except BuildError as error:
            raise DemoError(f"building {self.spec.name} {tag}: {error}") from error
        return tag

    def merge_release(self, release: Release) -> str:
        """A change on a topic branch, merged into the release branch and pushed: the merge commit is what
        a webhook would announce. Returns its SHA."""
        topic = f"change/{release.version}"
        git(self.source, "checkout", "-q", "-B", topic, "main")
        (self.source / "app.yaml").write_text(release.app_yaml(self.spec.name), encoding="utf-8")
        git(self.source, "commit", "-q", "-am", f"{self.spec.name} {release.version}: {release.summary}")
        git(self.source, "checkout", "-q", "-B", release.branch, "main")
        git(self.source, "merge", "-q", "--no-ff", topic, "-m", f"Merge {topic} into {release.branch}")
        git(self.source, "push", "-q", "origin", release.branch)
        return git(self.source, "rev-parse", "HEAD")


def gitops_log(repo: Path, branch: str = "main") -> list[GitOpsCommit]:
    """The branch's history, newest first, with the aicd trailers of each commit."""
    # \x01 / \x02 separate fields and records: unlike \x1c-\x1f they are not whitespace to str.strip().
    trailers = "(trailers:key=Aicd-Step,valueonly,separator=%x2C)%x01%(trailers:key=Aicd-Delivery,valueonly,separator=%x2C)"
    out = git(repo, "log", f"--format=%H%x01%s%x01%{trailers}%x02", branch)
    commits = []
    for record in out.split("\x02"):
        parts = [part.strip() for part in record.split("\x01")]
        if len(parts) == 4 and parts[0]:
            commits.append(GitOpsCommit(*parts))
    return commits


def stable_at_head(layout: DemoLayout, spec: DeliverySpec) -> dict[str, str]:
    """Per target, the version Git says should run (its values file's image key at the branch head)."""
    return {
        name: str(get_path(values, spec.write.image)) for name, values in values_at_head(layout, spec).items()
    }


def values_at_head(layout: DemoLayout, spec: DeliverySpec) -> Mapping[str, Any]:
    """Each target's values file at the GitOps branch head (what Git says should run)."""
    return {
        name: yaml.safe_load(git(layout.gitops_repo, "show", f"{spec.gitops_branch}:{target.path}"))
        for name, target in spec.targets.items()
    }
