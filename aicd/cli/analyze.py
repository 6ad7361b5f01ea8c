"""`aicd analyze`: the canary judge once against live Prometheus, for tuning metrics before trusting them
(run it in the background of real canaries first, as Spinnaker's and Waze's advice goes)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from aicd.cli.app import EXIT_USAGE, JsonFlag, OutputFormat, OutputOption, app, fail, wants_json

PLAN_REVISION = "0" * 40  # the analysis does not depend on a revision


@app.command()
def analyze(
    spec: Annotated[Path, typer.Argument(help="The delivery spec (its spec.analysis is used).")],
    target: Annotated[
        str, typer.Option("--target", help="Target whose canary and baseline to compare ({{ target }}).")
    ],
    since: Annotated[str, typer.Option("--since", help="How far back to look, e.g. 10m.")] = "10m",
    stage: Annotated[str | None, typer.Option("--stage", help="Value of {{ stage }} in queries.")] = None,
    weight: Annotated[
        float | None, typer.Option("--weight", help="Canary traffic share (0..100) if no total query says.")
    ] = None,
    output: OutputOption = OutputFormat.text,
    as_json: JsonFlag = False,
    details: Annotated[
        bool, typer.Option("--details", help="Also every test's bounds and evidence (e-values, thresholds).")
    ] = False,
) -> None:
    """Judge the last --since of canary vs baseline as one look and print the verdict; exit 1 unless every
    metric is shown within tolerance (-o json: the verdict with every test's statistics)."""
    from aicd.activities.analysis import (
        analyze as run_analysis,  # the Prometheus provider lives with the activities
    )
    from aicd.judge import Outcome
    from aicd.plan import build_plan
    from aicd.spec.durations import parse_duration
    from aicd.spec.errors import SpecInvalid
    from aicd.spec.loader import load_spec

    try:
        loaded = load_spec(spec)
        window = parse_duration(since)
    except SpecInvalid as invalid:
        for error in invalid.errors:
            typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except ValueError as error:
        raise fail(f"--since: {error}", EXIT_USAGE) from None
    if target not in loaded.targets:
        raise fail(f"--target: unknown target {target!r}; targets are {sorted(loaded.targets)}", EXIT_USAGE)
    plan = build_plan(loaded, PLAN_REVISION).analysis
    if plan is None:
        raise fail(f"{spec}: spec.analysis is not configured", EXIT_USAGE)
    now = time.time()
    variables = {"target": target, **({"stage": stage} if stage else {})}
    verdict = run_analysis(plan, now - window, now, canary_weight=weight, variables=variables)
    if wants_json(output, as_json):
        typer.echo(json.dumps(verdict.to_dict(), indent=2))
    else:
        from aicd.judge import render_details, render_table

        typer.echo(f"{loaded.name} {target}:")
        typer.echo(render_table(verdict))
        if details:
            typer.echo("")
            typer.echo(render_details(verdict))
    if verdict.outcome != Outcome.PASS:
        raise typer.Exit(1)
