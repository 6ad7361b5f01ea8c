"""Governance from the terminal: let a held stage through (`aicd override` a policy's deny, `aicd break-glass`
a freeze or a closed window; listed people only, always with a reason), and the organisation's stop button
(`aicd freeze` / `aicd unfreeze`, for one app or all)."""

from __future__ import annotations

from typing import Annotated

import typer
from temporalio.client import Client

from aicd import client as deliveries
from aicd.cli.app import EXIT_USAGE, app, fail
from aicd.cli.delivery import AsUser, _act_on, _actor, _run
from aicd.messages import HumanAction

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
    _act_on("override", delivery_id, None, HumanAction(_actor(actor), reason, stage=stage))


@app.command(name="break-glass")
def break_glass(
    delivery_id: DeliveryId, reason: Why = "", stage: StageOption = None, actor: AsUser = None
) -> None:
    """Let one delivery's stage through a freeze or outside its deploy window (only listed break-glass people)."""
    _needs_reason(reason)
    _act_on("break_glass", delivery_id, None, HumanAction(_actor(actor), reason, stage=stage))


@app.command()
def freeze(
    app_name: FreezeApp = None,
    reason: Why = "",
    actor: AsUser = None,
    show: Annotated[bool, typer.Option("--list", help="Only list what is frozen.")] = False,
) -> None:
    """Stop the line: no stage of a matching delivery starts until `aicd unfreeze` (running steps finish)."""

    async def body(client: Client) -> None:
        if show:
            for item in await deliveries.list_freezes(client):
                typer.echo(
                    f"{item['app']}: frozen by {item['actor']} since {item['since']}: {item['reason']}"
                )
            return
        _needs_reason(reason)
        typer.echo(
            await deliveries.change_freeze(
                client, "freeze", app_name or "*", HumanAction(_actor(actor), reason)
            )
        )

    _run(body)


@app.command()
def unfreeze(app_name: FreezeApp = None, reason: Why = "", actor: AsUser = None) -> None:
    """Lift a freeze set with `aicd freeze` (the same --app, or none for the all-apps freeze)."""

    async def body(client: Client) -> None:
        typer.echo(
            await deliveries.change_freeze(
                client, "unfreeze", app_name or "*", HumanAction(_actor(actor), reason)
            )
        )

    _run(body)
