"""`aicd argocd manifests`: the Argo CD Application objects a team applies once to onboard a spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aicd.argocd_manifests import dump_manifests, render_applications
from aicd.cli.app import EXIT_USAGE, app, fail
from aicd.spec.errors import SpecInvalid
from aicd.spec.loader import load_spec

argocd_app = typer.Typer(help="Argo CD helpers.", no_args_is_help=True)
app.add_typer(argocd_app, name="argocd")


@argocd_app.command()
def manifests(spec: Annotated[Path, typer.Argument(help="The delivery spec.")]) -> None:
    """Print one Application per argocd target (automated sync off: aicd drives the syncs)."""
    try:
        loaded = load_spec(spec)
    except SpecInvalid as invalid:
        for error in invalid.errors:
            typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    targets = {name: {"kind": target.kind, **target.config} for name, target in loaded.targets.items()}
    applications = render_applications(loaded.name, loaded.gitops_repo, loaded.gitops_branch, targets)
    if not applications:
        raise fail(f"{spec}: no argocd targets", EXIT_USAGE)
    typer.echo(dump_manifests(applications), nl=False)
