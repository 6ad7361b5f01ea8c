"""Deliveries from the terminal: deliver, status, list, and the human actions on-call and approvers take."""

from __future__ import annotations

import getpass
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from aicd.cli.app import (
    EXIT_USAGE,
    JsonFlag,
    OutputFormat,
    OutputOption,
    app,
    fail,
    temporal_unreachable,
    wants_json,
)

# Temporal's client, the spec loader and rich load inside the commands: `aicd --help` stays quick.
if TYPE_CHECKING:
    from temporalio.client import Client


T = TypeVar("T")
STATE_DIR_ENV = "AICD_STATE_DIR"
WATCH_BRANCH_EVERY_S = 5.0  # `status --watch` reads the GitOps branch this often (its mirror: every 30 s)


def _actor(given: str | None) -> str:
    return given or os.environ.get("AICD_ACTOR") or getpass.getuser()


def _dev_address() -> str | None:
    """Where a running `aicd dev` (or demo) of AICD_STATE_DIR has its Temporal, unless TEMPORAL_ADDRESS says."""
    if os.environ.get("TEMPORAL_ADDRESS"):
        return None
    try:
        from aicd.dev.temporal import dev_address
    except ImportError:
        return None
    return dev_address(Path(os.environ.get(STATE_DIR_ENV, ".aicd")))


def _run(body: Callable[[Client], Awaitable[T]]) -> T:
    import asyncio  # not at module level: `aicd --help` stays quick

    from aicd import client as deliveries
    from aicd.temporal import DEFAULT_ADDRESS, connect

    async def main() -> T:
        address = _dev_address()
        try:
            client = await connect(address)
        except Exception as error:
            where = address or os.environ.get("TEMPORAL_ADDRESS") or DEFAULT_ADDRESS
            raise temporal_unreachable(where, error) from None
        try:
            return await body(client)
        except deliveries.ActionRefused as refused:
            raise fail(str(refused)) from None

    return asyncio.run(main())


AsUser = Annotated[str | None, typer.Option("--as", help="Who acts (default $AICD_ACTOR or the login name).")]
Reason = Annotated[
    str, typer.Option("--reason", help="Why; kept in the action log and the commits it causes.")
]


@app.command()
def deliver(
    spec: Annotated[Path, typer.Argument(help="The delivery spec.")],
    revision: Annotated[
        str,
        typer.Option(
            "--revision",
            help="What to deliver: a commit SHA (short or full), a branch or a tag of the source repo.",
        ),
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the delivery ends; exit 1 unless it succeeded.")
    ] = False,
    actor: AsUser = None,
) -> None:
    """Start the delivery of REVISION, resolved to its full commit SHA in the spec's source repository; a
    repeated call while it runs finds the same delivery, a call after it ended delivers it again (a re-deploy,
    which wins over older deliveries still running). Prints the delivery's ID."""
    import asyncio  # not at module level: `aicd --help` stays quick

    from aicd import client as deliveries
    from aicd.messages import Trigger
    from aicd.plan import build_plan
    from aicd.source import RevisionUnknown, SourceError, resolve_revision
    from aicd.spec.errors import SpecInvalid
    from aicd.spec.loader import load_spec

    try:
        loaded = load_spec(spec)
    except SpecInvalid as invalid:
        for error in invalid.errors:
            typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        full = asyncio.run(resolve_revision(loaded.source_repo, revision))
    except RevisionUnknown as unknown:
        raise fail(f"cannot deliver: {unknown}") from None
    except SourceError as error:
        raise fail(f"cannot read the source repository: {error}") from None
    plan = build_plan(loaded, full)

    async def body(client: Client) -> None:
        started = await deliveries.start_delivery(client, plan, Trigger("cli", _actor(actor)))
        typer.echo(started.delivery_id if started.started else f"{started.delivery_id} (already started)")
        if wait:
            result = await deliveries.handle_for(client, started.delivery_id).result()
            typer.echo(
                f"{result.delivery_id}: {result.phase}" + (f": {result.reason}" if result.reason else "")
            )
            if result.phase != "succeeded":
                raise typer.Exit(1)

    _run(body)


@app.command()
def status(
    delivery_id: Annotated[str, typer.Argument(metavar="ID", help="Delivery ID.")],
    watch: Annotated[bool, typer.Option("--watch", help="Live view until the delivery ends.")] = False,
    output: OutputOption = OutputFormat.text,
    as_json: JsonFlag = False,
    details: Annotated[
        bool, typer.Option("--details", help="Also the judge's statistics: every test's bounds and evidence.")
    ] = False,
) -> None:
    """Phase, stage and wave, per-target step, weight, analysis verdict and commits, and the human action log."""
    import asyncio  # not at module level: `aicd --help` stays quick

    from rich.console import Console
    from rich.live import Live

    from aicd import client as deliveries
    from aicd.dashboard.gitops import GitOpsReader
    from aicd.status_view import render_status

    async def body(client: Client) -> None:
        reader = GitOpsReader()  # one mirror for the whole watch, fetched at most every BRANCH_RECHECK_S
        current = await deliveries.get_status(client, delivery_id)
        await deliveries.read_branch_since(client, current, reader)
        if wants_json(output, as_json):
            typer.echo(json.dumps(asdict(current), indent=2))
            return
        console = Console()
        if not watch:
            # soft_wrap: a long line (a hint with a delivery ID to copy) is never broken by a newline
            console.print(render_status(current, details), soft_wrap=True)
            return
        with Live(render_status(current, details), console=console, refresh_per_second=4) as live:
            branch_read = time.monotonic()
            while not current.terminal:
                await asyncio.sleep(0.5)
                since = current.off_branch, current.changed_since
                current = await deliveries.get_status(client, delivery_id)
                if current.terminal or time.monotonic() - branch_read >= WATCH_BRANCH_EVERY_S:
                    await deliveries.read_branch_since(client, current, reader)
                    branch_read = time.monotonic()
                else:
                    current.off_branch, current.changed_since = since
                live.update(render_status(current, details))

    _run(body)


@app.command(name="list")
def list_deliveries(
    app_name: Annotated[str | None, typer.Option("--app", help="Only this app's deliveries.")] = None,
    running: Annotated[bool, typer.Option("--running", help="Only running deliveries.")] = False,
    output: OutputOption = OutputFormat.text,
) -> None:
    """Deliveries, newest first: ID, Temporal status, phase (-o json: a list of {"id", "status", "phase"})."""
    from aicd import client as deliveries

    async def body(client: Client) -> None:
        rows = await deliveries.list_deliveries(client, app_name, running)
        if output is OutputFormat.json:
            document = [
                {"id": delivery_id, "status": state, "phase": phase} for delivery_id, state, phase in rows
            ]
            typer.echo(json.dumps(document, indent=2))
            return
        for delivery_id, state, phase in rows:
            typer.echo(f"{delivery_id}\t{state}\t{phase}")

    _run(body)


def _act_on(
    kind: str,
    delivery_id: str | None,
    app_name: str | None,
    actor: str | None,
    reason: str = "",
    stage: str | None = None,
) -> None:
    from aicd import client as deliveries
    from aicd.messages import HumanAction

    action = HumanAction(_actor(actor), reason, stage=stage, via="cli")

    if (delivery_id is None) == (app_name is None):
        raise fail("name a delivery ID or --app APP (one of them)", EXIT_USAGE)

    async def body(client: Client) -> None:
        if delivery_id is not None:
            typer.echo(await deliveries.send_action(client, delivery_id, kind, action))
            return
        assert app_name is not None
        results = await deliveries.act_on_app(client, app_name, kind, action)
        if not results:
            raise fail(f"no running delivery of {app_name}")
        refused = 0
        for target_id, outcome in results:
            typer.echo(f"{target_id}: {outcome}")
            refused += outcome.startswith("refused")
        if refused == len(results):
            raise typer.Exit(1)

    _run(body)


DeliveryArg = Annotated[str | None, typer.Argument(metavar="[ID]", help="Delivery ID.")]
AppOption = Annotated[
    str | None, typer.Option("--app", help="Every running delivery of this app (stop the line).")
]


@app.command()
def pause(
    delivery_id: DeliveryArg = None, app_name: AppOption = None, reason: Reason = "", actor: AsUser = None
) -> None:
    """Pause: no new step starts; a timed pause stops its clock."""
    _act_on("pause", delivery_id, app_name, actor, reason)


@app.command()
def resume(delivery_id: DeliveryArg = None, app_name: AppOption = None, actor: AsUser = None) -> None:
    """Resume a paused delivery, a `pause: {}` step, or an inconclusive analysis (treated as a pass)."""
    _act_on("resume", delivery_id, app_name, actor)


@app.command()
def abort(
    delivery_id: Annotated[str, typer.Argument(metavar="ID", help="Delivery ID.")],
    reason: Reason = "",
    actor: AsUser = None,
) -> None:
    """Abort: roll back what this delivery touched (per rollback.scope) and end as aborted."""
    _act_on("abort", delivery_id, None, actor, reason)


@app.command()
def approve(
    delivery_id: Annotated[str, typer.Argument(metavar="ID", help="Delivery ID.")],
    stage: Annotated[str, typer.Option("--stage", help="The stage whose gate you approve.")],
    actor: AsUser = None,
) -> None:
    """Approve a stage's gate (only listed approvers count, each once)."""
    _act_on("approve", delivery_id, None, actor, stage=stage)


@app.command()
def reject(
    delivery_id: Annotated[str, typer.Argument(metavar="ID", help="Delivery ID.")],
    stage: Annotated[str, typer.Option("--stage", help="The stage whose gate you reject.")],
    reason: Reason = "",
    actor: AsUser = None,
) -> None:
    """Reject a stage's gate: the delivery ends rejected without touching any target."""
    _act_on("reject", delivery_id, None, actor, reason, stage=stage)
