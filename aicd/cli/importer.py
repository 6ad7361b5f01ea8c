"""`aicd import argo-rollout FILE`: an Argo Rollouts Rollout's canary strategy as an aicd spec stage, printed as
YAML to paste into a delivery spec; what could not be carried over is listed on stderr, located in its file."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from aicd.cli.app import EXIT_FAILED, EXIT_OK, EXIT_USAGE, app
from aicd.cli.spec import one_line

# The importer and the spec loader (jsonschema) load inside the command: `aicd --help` stays quick.
if TYPE_CHECKING:
    from aicd.argo_rollouts.importer import Imported

import_app = typer.Typer(help="Convert other tools' delivery definitions into aicd's.", no_args_is_help=True)
app.add_typer(import_app, name="import")


class _Dumper(yaml.SafeDumper):
    """Block YAML with multi-line strings (PromQL) as literal blocks, as people write them."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def _dump(value: Any, indent: str = "") -> str:
    text = yaml.dump(
        value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000
    )
    return "".join(f"{indent}{line}\n" for line in text.splitlines())


def _comment(text: str, indent: str = "") -> str:
    return "".join(f"{indent}# {line}\n" for line in textwrap.wrap(text, 110 - len(indent)))


def render(imported: Imported, source: str) -> str:
    """The YAML printed: the stage, then the metrics its analysis steps judge, each with what became of its
    Argo conditions."""
    steps = imported.stage["strategy"]["canary"]["steps"]
    out = _comment(
        f"aicd import argo-rollout {source}: the canary of Rollout {imported.rollout}, {len(steps)} step(s); the"
        " promotion after the last step needs none."
    )
    out += _comment(
        "Paste `stage` into spec.stages (name its targets in spec.targets)"
        + (
            " and `metrics` into spec.analysis.metrics (with spec.analysis.prometheus)."
            if imported.metrics
            else "."
        )
    )
    for note in imported.notes:
        out += _comment(note)
    out += "stage:\n" + _dump(imported.stage, "  ")
    if imported.metrics:
        out += "metrics:\n"
        for metric in imported.metrics:
            out += _comment(metric.describe(), "  ")
            out += _dump([metric.metric], "  ")
    return out


def _argo_siblings(file: Path) -> list[Path]:
    """The other YAML files of FILE's directory that hold Argo Rollouts objects (not its subdirectories)."""
    from aicd.spec.loader import is_argo_manifest_file

    try:
        candidates = sorted(file.resolve().parent.iterdir())
    except OSError:
        return []
    return [
        file.parent / path.name  # named as FILE is
        for path in candidates
        if path.suffix in (".yaml", ".yml")
        and path.is_file()
        and path.resolve() != file.resolve()
        and is_argo_manifest_file(path)
    ]


@import_app.command("argo-rollout")
def argo_rollout(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="A Rollout manifest (several documents allowed).")
    ],
    templates: Annotated[
        list[Path] | None,
        typer.Option(
            "--templates",
            "-t",
            help="Files with the AnalysisTemplates/ClusterAnalysisTemplates its analysis names (repeatable); FILE's"
            " own documents are read too. Default: FILE and the Argo Rollouts manifests in its directory.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="The Rollout to convert, when FILE holds several.")
    ] = None,
    stage: Annotated[str, typer.Option("--stage", help="The aicd stage's name.")] = "production",
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="The stage's targets (repeatable; default the Rollout's name)."),
    ] = None,
    track_label: Annotated[
        str | None,
        typer.Option(
            "--track-label",
            help="The label telling canary from stable series in the queries (default: track).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Convert a Rollout's canary strategy into an aicd spec stage (YAML on stdout).

    setWeight and pause steps carry over; analysis steps whose templates use Prometheus become aicd analysis steps over translated metrics (their successCondition/failureCondition as the canary's min/max; a comment says what the judge does instead). Every other step or field is listed on stderr as `FILE:LINE: not carried over: <json.path>: <why and what to do instead>`; traffic routing, services and replica settings as `left to the chart: ...` (the chart the target's file configures routes and scales by the weight aicd writes).

    Exit status: 0 when every step and check carried over, 1 when the stage was printed but a step or check was left out, 2 when FILE holds no usable canary (not YAML, no Rollout, another strategy) or a templates file cannot be read.
    """
    from aicd.argo_rollouts.importer import RolloutUnusable, convert, read_documents
    from aicd.argo_rollouts.templates import DEFAULT_TRACK_LABEL, Catalog

    try:
        documents = read_documents(str(file), file)
        for template_file in templates or []:
            read_documents(str(template_file), template_file)  # unreadable or not YAML: unusable input
        sources = [(str(file), file), *((str(path), path) for path in templates or [])]
        if not templates:
            # Found where Argo's examples keep them: the Argo Rollouts manifests beside FILE.
            sources += [(str(path), path) for path in _argo_siblings(file)]
        catalog = Catalog.read(sources)
        imported = convert(
            str(file),
            documents,
            catalog,
            rollout_name=name,
            stage_name=stage,
            targets=target or (),
            track_label=track_label or DEFAULT_TRACK_LABEL,
        )
    except RolloutUnusable as unusable:
        typer.echo(one_line(str(unusable.error)), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    typer.echo(render(imported, str(file)), nl=False)
    for error in catalog.errors:
        typer.echo(
            one_line(f"{error.file}:{error.line}: not carried over: {error.path}: {error.message}"), err=True
        )
    for left in dict.fromkeys(imported.left):  # a template named by two steps is reported once
        typer.echo(one_line(str(left)), err=True)
    problems = sum(1 for left in dict.fromkeys(imported.left) if left.lost) + len(catalog.errors)
    if problems:
        typer.echo(
            f"aicd: {problems} thing(s) of Rollout {imported.rollout} not carried over (above)", err=True
        )
    raise typer.Exit(EXIT_FAILED if problems else EXIT_OK)
