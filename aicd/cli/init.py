"""`aicd init`: scaffold a new application's delivery from a template (aicd.scaffold)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aicd.cli.app import EXIT_USAGE, OutputFormat, OutputOption, app, fail


@app.command()
def init(
    app_name: Annotated[
        str | None,
        typer.Argument(
            metavar="[APP]",
            help="Name of the new app (a DNS label: lower-case, digits, '-').",
            show_default=False,
        ),
    ] = None,
    template: Annotated[
        str, typer.Option("--template", "-t", help="The app template (see --list).")
    ] = "python",
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Where the app goes (a new or empty directory; default ./APP).", show_default=False
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image", help="Image repository (default registry.example.com/you/APP).", show_default=False
        ),
    ] = None,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            envvar="AICD_STATE_DIR",
            help="The embedded stack (`aicd dev`) the local targets join.",
        ),
    ] = Path(".aicd"),
    list_templates: Annotated[bool, typer.Option("--list", help="List the templates and exit.")] = False,
    output: OutputOption = OutputFormat.text,
) -> None:
    """Scaffold APP from a template: the app (/health, Prometheus /metrics), its delivery spec, the GitOps
    layout with a values file per target, the Argo CD Applications, and local targets on `aicd dev`.

    Then, with `aicd dev` running: `aicd deliver APP/delivery/APP.local.yaml --revision main --wait`.
    """
    from aicd.scaffold import ScaffoldError, scaffold, templates

    if list_templates:
        known = templates()
        if output is OutputFormat.json:
            typer.echo(json.dumps({name: t.description for name, t in known.items()}, indent=2))
        else:
            width = max(len(name) for name in known)
            for name, found in known.items():
                typer.echo(f"{name:<{width}}  {found.description}")
        return
    if app_name is None:
        raise fail(
            "name the app: aicd init APP [--template NAME] (aicd init --list shows the templates)", EXIT_USAGE
        )
    try:
        made = scaffold(app_name, template, directory or Path(app_name), state_dir, image)
    except ScaffoldError as error:
        raise fail(str(error), EXIT_USAGE) from None
    local = made.local_spec
    if output is OutputFormat.json:
        document = {
            "app": made.app,
            "template": made.template.name,
            "directory": str(made.directory),
            "spec": str(made.cluster_spec),
            "local_spec": str(local),
            "argocd": str(made.argocd_manifests),
            "local_gitops": str(made.local_gitops),
            "revision": made.revision,
        }
        typer.echo(json.dumps(document, indent=2))
        return
    shown = _relative(local)
    typer.echo(f"created {made.app} ({made.template.name} template) in {_relative(made.directory)}:")
    typer.echo(
        f"  app            {_relative(made.directory)} (a Git repository, first commit {made.revision[:12]})"
    )
    typer.echo(f"  delivery spec  {_relative(made.cluster_spec)} (Argo CD targets staging, production)")
    typer.echo(
        f"  GitOps layout  {_relative(made.directory / 'gitops')} (a chart and values file per target)"
    )
    typer.echo(f"  Argo CD apps   {_relative(made.argocd_manifests)}")
    typer.echo(f"  local spec     {shown} (targets on `aicd dev`, GitOps repo {made.local_gitops})")
    typer.echo("Next, with `aicd dev` running in another shell:")
    typer.echo(f"  aicd deliver {shown} --revision main --wait")


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
