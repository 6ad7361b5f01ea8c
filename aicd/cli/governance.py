"""Governance from the terminal: let a held stage through (`aicd override` a policy's deny, `aicd break-glass`
a freeze or a closed window; listed people only, always with a reason), the organisation's stop button
(`aicd freeze` / `aicd unfreeze`, for one app or all), and the audit trail (`aicd audit`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aicd.cli.app import EXIT_USAGE, app, fail
from aicd.cli.delivery import AsUser, _act_on, _actor, _run
from aicd.governance.audit import TYPE_PREFIX, chained
from aicd.governance.audit import verify as verify_chain
from aicd.spec.durations import parse_duration

if TYPE_CHECKING:  # the CLI's --help must not load Temporal: commands import what they use
    from temporalio.client import Client

DeliveryId = Annotated[str, typer.Argument(metavar="ID", help="Delivery ID.")]
Why = Annotated[str, typer.Option("--reason", help="Why (required): recorded, and announced in Slack.")]
StageOption = Annotated[
    str | None, typer.Option("--stage", help="The held stage (default: the current one).")
]
FreezeApp = Annotated[str | None, typer.Option("--app", help="An app name or glob (default: every app).")]


def _needs_reason(reason: str) -> None:
    if not reason.strip():
        raise fail("--reason is required: it is recorded and announced", EXIT_USAGE)


@app.command()
def override(
    delivery_id: DeliveryId, reason: Why = "", stage: StageOption = None, actor: AsUser = None
) -> None:
    """Let a stage through its policy's deny (only the policy's overriders)."""
    _needs_reason(reason)
    _act_on("override", delivery_id, None, actor, reason, stage=stage)


@app.command(name="break-glass")
def break_glass(
    delivery_id: DeliveryId, reason: Why = "", stage: StageOption = None, actor: AsUser = None
) -> None:
    """Let one delivery's stage through a freeze or outside its deploy window (only listed break-glass people)."""
    _needs_reason(reason)
    _act_on("break_glass", delivery_id, None, actor, reason, stage=stage)


@app.command()
def freeze(
    app_name: FreezeApp = None,
    reason: Why = "",
    actor: AsUser = None,
    show: Annotated[bool, typer.Option("--list", help="Only list what is frozen.")] = False,
) -> None:
    """Stop the line: no stage of a matching delivery starts until `aicd unfreeze` (running steps finish)."""

    async def body(client: Client) -> None:
        from aicd import client as deliveries
        from aicd.messages import HumanAction

        if show:
            for item in await deliveries.list_freezes(client):
                typer.echo(
                    f"{item['app']}: frozen by {item['actor']} since {item['since']}: {item['reason']}"
                )
            return
        _needs_reason(reason)
        typer.echo(
            await deliveries.change_freeze(
                client, "freeze", app_name or "*", HumanAction(_actor(actor), reason, via="cli")
            )
        )

    _run(body)


@app.command()
def unfreeze(app_name: FreezeApp = None, reason: Why = "", actor: AsUser = None) -> None:
    """Lift a freeze set with `aicd freeze` (the same --app, or none for the all-apps freeze)."""

    async def body(client: Client) -> None:
        from aicd import client as deliveries
        from aicd.messages import HumanAction

        typer.echo(
            await deliveries.change_freeze(
                client, "unfreeze", app_name or "*", HumanAction(_actor(actor), reason, via="cli")
            )
        )

    _run(body)


def _since(text: str | None) -> datetime | None:
    """An ISO date or date-time (UTC unless it says), or a duration back from now (24h, 7d)."""
    if not text:
        return None
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"--since {text!r}: not a duration (24h, 7d) or an ISO date/time", EXIT_USAGE) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def audit(
    app_name: Annotated[str | None, typer.Option("--app", help="Only this app's deliveries.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Deliveries started since (ISO date/time, or 24h, 7d ago).")
    ] = None,
    output: Annotated[
        str, typer.Option("-o", "--output", help="json (JSON lines, chained) or text.")
    ] = "text",
    verify_file: Annotated[
        Path | None,
        typer.Option("--verify", help="Check an exported or streamed audit file's hash chain instead."),
    ] = None,
) -> None:
    """The audit trail of past deliveries, rebuilt from Temporal history and Git trailers (CloudEvents)."""
    if verify_file is not None:
        try:
            lines = verify_file.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise fail(f"{verify_file}: {error.strerror}", EXIT_USAGE) from None
        problems = verify_chain(lines)
        for problem in problems:
            typer.echo(f"{verify_file}:{problem}", err=True)
        if problems:
            raise typer.Exit(1)
        typer.echo(f"{verify_file}: {len(lines)} records, chain intact")
        return
    if output not in ("json", "text"):
        raise fail(f"-o {output!r}: one of json, text", EXIT_USAGE)
    start = _since(since)

    async def body(client: Client) -> None:
        from aicd.governance.reconstruct import reconstruct  # reads histories: loaded only here

        records = await reconstruct(client, app_name, start)
        if output == "json":
            for line in chained(records):
                typer.echo(line)
            return
        for record in records:
            data = record["data"]
            detail = ", ".join(
                f"{key}={value}" for key, value in data.items() if value not in (None, "", [], {})
            )
            typer.echo(
                f"{record['time']}  {record['subject']}  {record['type'].removeprefix(TYPE_PREFIX)}  {detail}"
            )

    _run(body)
