"""`aicd argocd manifests`: the Argo CD Application objects a team applies once to onboard a spec."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aicd.cli.app import EXIT_USAGE, OutputFormat, OutputOption, app, fail

if TYPE_CHECKING:  # GitPython loads inside the command: `aicd --help` stays quick
    from aicd.argocd_manifests import GitOpsTree

argocd_app = typer.Typer(help="Argo CD helpers.", no_args_is_help=True)
app.add_typer(argocd_app, name="argocd")


@contextlib.contextmanager
def _gitops_tree(repo: str, branch: str, gitops_dir: Path | None) -> Iterator[GitOpsTree | None]:
    """The GitOps repo at its branch: `--gitops-dir`, else the spec's repo itself when it is on this machine, else a
    shallow clone of it; None (with a warning) when a remote one cannot be read."""
    import git

    from aicd.argocd_manifests import GitOpsTree, is_local_repo

    if gitops_dir is not None or is_local_repo(repo):
        location = gitops_dir if gitops_dir is not None else repo
        try:
            local = GitOpsTree.open(location, branch)
        except ValueError as error:
            raise fail(f"{'--gitops-dir' if gitops_dir else 'gitops.repo'} {error}", EXIT_USAGE) from None
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="aicd-gitops-") as scratch:
        try:
            tree: GitOpsTree | None = GitOpsTree.clone(repo, branch, Path(scratch) / "gitops.git")
        except (git.GitCommandError, ValueError) as error:
            reason = str(getattr(error, "stderr", "") or error).strip().splitlines()
            typer.echo(
                f"aicd: warning: cannot read the GitOps repo {repo} at {branch} ({reason[-1] if reason else error}); "
                "layouts follow the targets' file names only (kustomization.yaml: Kustomize; `chart`: a "
                "multi-source app; any other file: a values file beside its chart). Pass --gitops-dir with a "
                "clone to have them read from the repo",
                err=True,
            )
            tree = None
        yield tree


@argocd_app.command()
def manifests(
    spec: Annotated[Path, typer.Argument(help="The delivery spec.")],
    gitops_dir: Annotated[
        Path | None,
        typer.Option(
            "--gitops-dir",
            help="A clone of the GitOps repo to read the targets' files from (default: gitops.repo itself when "
            "it is on this machine, else a shallow clone of it).",
        ),
    ] = None,
    output: OutputOption = OutputFormat.text,
) -> None:
    """Print one Application per argocd target, its source shaped by the target's file in the GitOps repo
    (Helm chart directory, Kustomize, plain manifests, or a chart from a chart repository with `ref: values`).
    Automated sync is off: aicd drives the syncs. Text is multi-document YAML for `kubectl apply -f -`;
    -o json a list of the Applications."""
    from aicd.argocd_manifests import dump_manifests, render_applications
    from aicd.spec.errors import SpecInvalid
    from aicd.spec.loader import load_spec

    try:
        loaded = load_spec(spec)
    except SpecInvalid as invalid:
        for error in invalid.errors:
            typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    targets = dict(loaded.raw["spec"]["targets"])  # as written: the manifests follow the spec's own keys
    if not any(target["kind"] == "argocd" for target in targets.values()):
        raise fail(f"{spec}: no argocd targets", EXIT_USAGE)
    with _gitops_tree(loaded.gitops_repo, loaded.gitops_branch, gitops_dir) as tree:
        try:
            applications = render_applications(
                loaded.name, loaded.gitops_repo, loaded.gitops_branch, targets, tree=tree
            )
        except ValueError as error:
            raise fail(f"{spec}: {error}", EXIT_USAGE) from None
    if output is OutputFormat.json:
        typer.echo(json.dumps(applications, indent=2))
    else:
        typer.echo(dump_manifests(applications), nl=False)
