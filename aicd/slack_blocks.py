"""Slack Block Kit messages for deliveries: pure functions from a compact status dict to (text, blocks).

The same builders serve the `notify` activity (which posts and updates the delivery's message) and the
gateway (which redraws it after a button click), so both always show the same thing. Everything a user or a
Git push controls (branch names, reasons, actor names) is escaped: a branch called `<!channel>` must not
ping a whole channel. Nothing here does I/O or decides anything: when a delivery notifies is the workflow's
decision (aicd.workflows.notifications); the workflow imports `compact_status` and `describe_progress`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from aicd.fleet import in_site_order
from aicd.judge.model import Outcome
from aicd.messages import (
    TERMINAL_PHASES,
    DeliveryStatus,
    TargetStatus,
    VerificationStatus,
    target_state_text,
)
from aicd.people import Roster
from aicd.plan import DeliveryPlan

# Action IDs of the buttons; the gateway maps them to the workflow's updates of the same name.
APPROVE, REJECT, PAUSE, RESUME, ABORT = "approve", "reject", "pause", "resume", "abort"
ACTION_IDS = (APPROVE, REJECT, PAUSE, RESUME, ABORT)

PHASE_EMOJI = {
    "pending": ":hourglass_flowing_sand:",
    "building": ":hammer_and_wrench:",
    "testing": ":test_tube:",
    "provisioning": ":building_construction:",
    "awaiting-approval": ":raised_hand:",
    "held": ":no_entry_sign:",
    "queued": ":busstop:",
    "progressing": ":arrows_counterclockwise:",
    "paused": ":double_vertical_bar:",
    "rolling-back": ":rewind:",
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "aborted": ":octagonal_sign:",
    "rejected": ":no_entry:",
    "superseded": ":fast_forward:",
}
EVENT_EMOJI = {
    "stage": ":arrow_forward:",
    "paused": ":double_vertical_bar:",
    "resumed": ":arrow_forward:",
    "queued": ":busstop:",
    "held": ":no_entry_sign:",
    "released": ":arrow_forward:",
}
ALERT_PHASES = frozenset({"failed", "aborted", "rejected"})
MAX_TARGET_LINES = 20  # a section holds 3,000 characters; fleets are summarised anyway
MAX_TEXT = 2900
MAX_SUMMARY = 600  # an analysis summary names each unsettled metric and what would settle it
SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


@dataclass
class ApprovalInfo:
    """Who may approve the pending stage (from the plan); shown on the approval message."""

    approvers: list[str] = field(default_factory=list)
    min_approvals: int = 1


# --- status in, compact dict out (called inside the workflow: pure and deterministic) ----------------
def compact_status(status: DeliveryStatus) -> dict[str, Any]:
    """What a Slack message needs of a status, small enough to carry in every notify call: verdicts are
    reduced to outcome and summary, and only the last human action is kept."""
    last = status.actions[-1] if status.actions else None
    trigger = status.trigger
    return {
        "delivery_id": status.delivery_id,
        "app": status.app,
        "revision": status.revision,
        "artifact": status.artifact,
        "phase": status.phase,
        "stage": status.stage,
        "wave": status.wave,
        "paused": status.paused,
        "pause_reason": status.pause_reason,
        "reason": status.reason,
        "pending_approval": status.pending_approval,
        "approvals": {stage: status.approved_by(stage) for stage in status.approvals},
        "trigger": (
            {
                "source": trigger.source,
                "actor": trigger.actor,
                "branch": trigger.branch,
                "detail": trigger.detail,
            }
            if trigger
            else None
        ),
        "commands": [{"name": c.name, "state": c.state, "detail": c.detail[:200]} for c in status.commands],
        "targets": [_compact_target(target) for target in status.targets.values()],
        **(
            {
                "verifications": {
                    stage: [_compact_run(run) for run in runs] for stage, runs in status.verifications.items()
                }
            }
            if status.verifications
            else {}
        ),
        "last_action": (
            {
                "kind": last.kind,
                "actor": last.actor,
                "reason": last.reason,
                "stage": last.stage,
                # The person behind the identity, only when the spec declares one (aicd.people).
                **({"person": last.person, "via": last.via} if last.person else {}),
            }
            if last
            else None
        ),
        # What holds the stage (a policy's deny, a window, a freeze): each hold's reason, and its messages.
        "holds": [
            {
                "gate": hold.gate,
                "reason": hold.reason[:500],
                "override": hold.override,
                "overriders": hold.overriders[:10],
                "messages": hold.messages[:10],
            }
            for hold in status.holds
        ],
    }


def _compact_target(target: TargetStatus) -> dict[str, Any]:
    verdict = target.last_verdict
    return {
        "target": target.target,
        "stage": target.stage,
        "kind": target.kind,
        "state": target.state,
        "step_index": target.step_index,
        "step_kind": target.step_kind,
        "weight": target.weight,
        "message": target.message[:300],
        "verdict": (
            {"outcome": verdict.outcome.value, "summary": verdict.summary[:MAX_SUMMARY]} if verdict else None
        ),
        "sites_total": target.sites_total,
        "sites_by_state": dict(target.sites_by_state),
        "failed_sites": list(target.failed_sites[:5]),
        # Only when there is something to say, so messages without them stay as they were.
        **({"strategy": target.strategy} if target.strategy else {}),
        **({"verify": _compact_run(target.verifications[-1])} if target.verifications else {}),
        **({"flags": dict(target.flags)} if target.flags else {}),
    }


def _compact_run(run: VerificationStatus) -> dict[str, Any]:
    return {"name": run.name, "state": run.state, "target": run.target, "detail": run.detail[:200]}


def verification_text(run: dict[str, Any]) -> str:
    """A verification run in a message: `verify smoke passed (attempt 1: status 200)`."""
    where = f"`{escape(run['target'])}` " if run.get("target") else ""
    detail = f" ({escape(run['detail'])})" if run.get("detail") else ""
    return f"{where}verify {escape(run['name'])} {run['state']}{detail}"


def approval_info(plan: DeliveryPlan, stage: str | None) -> ApprovalInfo | None:
    if stage is None:
        return None
    try:
        gate = plan.stage(stage).approval
    except KeyError:
        return None
    return ApprovalInfo(Roster.of(plan.people, gate.approvers).names(), gate.min_approvals) if gate else None


def describe_progress(target: TargetStatus) -> str:
    """One line for a thread reply about a target's step."""
    name = f"`{escape(target.target)}`"
    if target.state in ("promoted", "failed", "aborted", "rolled-back"):
        tail = f": {escape(target.message)}" if target.message else ""
        return f"{name} {escape(target_state_text(target))}{tail}"
    if target.state == "awaiting-resume":
        return f"{name} waits for a human: {escape(target.message)}"
    if target.state == "paused":
        return f"{name} paused at step {target.step_index}"
    if (
        target.strategy and target.step_index < 0
    ):  # a strategy's own phase (blue-green's preview, switch, ...)
        parts = [f"{name} {escape(target.strategy)} {escape(target.step_kind)}: {escape(target.message)}"]
    else:
        parts = [f"{name} step {target.step_index} {escape(target.step_kind)}".rstrip()]
    parts.append(f"weight {target.weight}%")
    if target.step_kind == "verify" and target.verifications:
        parts.append(verification_text(_compact_run(target.verifications[-1])))
    if target.step_kind == "setFlag" and target.flags:
        parts.append("flags " + ", ".join(f"{escape(k)} {escape(v)}" for k, v in target.flags.items()))
    verdict = target.last_verdict
    if verdict is not None and verdict.outcome != Outcome.RUNNING:
        parts.append(f"analysis {verdict.outcome}: {escape(verdict.summary[:MAX_SUMMARY])}")
    if target.sites_total:
        parts.append(_sites(target.sites_total, target.sites_by_state))
    return " · ".join(parts)


# --- messages ---------------------------------------------------------------------------------------
def escape(text: str) -> str:
    """Slack's mrkdwn control characters; everything user-controlled goes through here."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def who(actor: str) -> str:
    """A Slack user ID as a mention, anything else as escaped text."""
    return f"<@{actor}>" if SLACK_ID.match(actor) else escape(actor)


def action_value(delivery_id: str, stage: str | None = None) -> str:
    """The button's value: which delivery (and stage) it acts on. The gateway checks it again."""
    return json.dumps({"delivery": delivery_id, "stage": stage}, separators=(",", ":"))


def delivery_message(
    status: dict[str, Any], approval: ApprovalInfo | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """The delivery's one channel message (updated in place): where it stands, per-target progress, the
    approval request when a gate is pending, and the buttons that make sense now."""
    phase = status["phase"]
    app, short = escape(status["app"]), status["revision"][:7]
    headline = f"{PHASE_EMOJI.get(phase, '')} *{app}* `{short}` — *{phase}*"
    if status.get("stage"):
        headline += f" · stage *{escape(status['stage'])}*"
        if status.get("wave"):
            headline += f" wave {status['wave']}"
    if status.get("paused") and status.get("pause_reason"):
        headline += f"\nPaused: {escape(status['pause_reason'])}"
    if status.get("reason"):
        headline += f"\nReason: {escape(status['reason'])}"
    for hold in status.get("holds") or []:
        headline += f"\nHeld: {escape(hold['reason'])}"
        if hold["gate"] == "policy":
            headline += "".join(f"\n  • {escape(message)}" for message in hold["messages"])
        if hold.get("overriders"):
            headline += (
                f"\n  `/aicd {hold['override']} {escape(status['delivery_id'])} REASON`"
                f" — {', '.join(who(person) for person in hold['overriders'][:10])}"
            )
    blocks: list[dict[str, Any]] = [
        _section(headline),
        {"type": "section", "fields": [_mrkdwn(text) for text in _fields(status)]},
    ]
    lines = _target_lines(status)
    if lines:
        blocks.append(_section("\n".join(lines)))
    if status.get("pending_approval"):
        blocks.extend(_approval_blocks(status, approval or ApprovalInfo()))
    elif phase not in TERMINAL_PHASES:
        blocks.append(_control_buttons(status))
    last = status.get("last_action")
    if last:
        stage = f" (stage {escape(last['stage'])})" if last.get("stage") else ""
        reason = f": {escape(last['reason'])}" if last.get("reason") else ""
        actor = who(last["actor"])
        if last.get("person"):
            actor = f"{escape(last['person'])} (as {actor}{' via ' + escape(last['via']) if last.get('via') else ''})"
        blocks.append(_context(f"Last action: *{last['kind']}* by {actor}{stage}{reason}"))
    blocks.append(_context(f"Delivery `{escape(status['delivery_id'])}`"))
    text = f"{status['app']} {short}: {phase}" + (f" ({status['stage']})" if status.get("stage") else "")
    return text, blocks


def _fields(status: dict[str, Any]) -> list[str]:
    fields = [f"*Artifact*\n`{escape(status['artifact'])}`", f"*Changes*\n{changes(status)}"]
    trigger = status.get("trigger")
    if trigger:
        branch = f" on `{escape(trigger['branch'])}`" if trigger.get("branch") else ""
        # A Git host's user name is its owner's choice: only the CLI's actor (--as) may be shown as a Slack user.
        actor = who(trigger["actor"]) if trigger["source"] == "cli" else escape(trigger["actor"])
        fields.append(f"*Triggered by*\n{actor} ({escape(trigger['source'])}){branch}")
    commands = status.get("commands") or []
    if commands:
        fields.append("*Build & tests*\n" + ", ".join(f"{escape(c['name'])} {c['state']}" for c in commands))
    return fields


def changes(status: dict[str, Any]) -> str:
    """What changed since the last release: the pushed commit range when the trigger knew it, else the revision."""
    detail = ((status.get("trigger") or {}).get("detail") or "").strip()
    if detail:
        return escape(detail)
    return f"revision `{status['revision'][:12]}`"


def _target_lines(status: dict[str, Any]) -> list[str]:
    lines = []
    targets = status.get("targets") or []
    for target in targets[:MAX_TARGET_LINES]:
        parts = [f"`{escape(target['target'])}` ({escape(target['stage'])}) {target['state']}"]
        if target["step_index"] >= 0:
            parts.append(f"step {target['step_index']} {escape(target['step_kind'])}")
        elif target.get("strategy"):
            parts.append(f"{escape(target['strategy'])} {escape(target['step_kind'])}")
        parts.append(f"weight {target['weight']}%")
        if target.get("verify"):
            parts.append(verification_text(target["verify"]))
        if target.get("flags"):
            parts.append("flags " + ", ".join(f"{escape(k)} {escape(v)}" for k, v in target["flags"].items()))
        verdict = target.get("verdict")
        if verdict:
            parts.append(f"analysis {verdict['outcome']}")
        if target.get("sites_total"):
            parts.append(_sites(target["sites_total"], target.get("sites_by_state") or {}))
        lines.append(" · ".join(parts))
    if len(targets) > MAX_TARGET_LINES:
        lines.append(f"… and {len(targets) - MAX_TARGET_LINES} more targets")
    for stage, runs in (status.get("verifications") or {}).items():
        lines += [f"stage *{escape(stage)}* " + verification_text(run) for run in runs[:MAX_TARGET_LINES]]
    return lines


def _sites(total: int, by_state: dict[str, int]) -> str:
    counts = ", ".join(f"{count} {state}" for state, count in in_site_order(by_state))
    return f"{total} sites ({counts})" if counts else f"{total} sites"


def previous_analysis(status: dict[str, Any]) -> str:
    """The analysis summary of the stages before the pending one (the evidence an approver looks at)."""
    pending = status.get("pending_approval")
    lines = []
    for target in status.get("targets") or []:
        if target["stage"] == pending:
            continue
        verdict = target.get("verdict")
        if verdict:
            lines.append(f"`{escape(target['target'])}`: *{verdict['outcome']}* {escape(verdict['summary'])}")
        else:
            lines.append(f"`{escape(target['target'])}`: {target['state']}, no analysis step")
    return "\n".join(lines) if lines else "No earlier stage ran an analysis."


def _approval_blocks(status: dict[str, Any], approval: ApprovalInfo) -> list[dict[str, Any]]:
    stage = status["pending_approval"]
    given = (status.get("approvals") or {}).get(stage, [])
    needed = f"{len(given)}/{approval.min_approvals} approvals"
    if given:
        needed += " (" + ", ".join(who(actor) for actor in given) + ")"
    approvers = (
        ", ".join(who(actor) for actor in approval.approvers) if approval.approvers else "see the spec"
    )
    text = (
        f":raised_hand: *Stage {escape(stage)} awaits approval* — {needed}\n"
        f"*Release* `{escape(status['revision'][:12])}` of *{escape(status['app'])}*\n"
        f"*Artifact* `{escape(status['artifact'])}`\n"
        f"*Changes* {changes(status)}\n"
        f"*Approvers* {approvers}"
    )
    value = action_value(status["delivery_id"], stage)
    return [
        _section(text),
        _section("*Analysis of the previous stage*\n" + previous_analysis(status)),
        {
            "type": "actions",
            "block_id": "approval",
            "elements": [
                _button("Approve", APPROVE, value, style="primary"),
                _button(
                    "Reject",
                    REJECT,
                    value,
                    style="danger",
                    confirm=_confirm(
                        "Reject this stage?",
                        f"The delivery of {escape(status['app'])} `{status['revision'][:7]}` ends rejected; "
                        f"stage {escape(stage)} is not rolled out.",
                        "Reject",
                    ),
                ),
                _button(
                    "Abort",
                    ABORT,
                    action_value(status["delivery_id"]),
                    confirm=_abort_confirm(status),
                ),
            ],
        },
    ]


def _control_buttons(status: dict[str, Any]) -> dict[str, Any]:
    value = action_value(status["delivery_id"])
    waiting = any(target["state"] == "awaiting-resume" for target in status.get("targets") or [])
    elements = []
    if status.get("paused") or waiting:
        elements.append(_button("Resume", RESUME, value, style="primary"))
    if not status.get("paused"):
        elements.append(_button("Pause", PAUSE, value))
    elements.append(_button("Abort", ABORT, value, style="danger", confirm=_abort_confirm(status)))
    return {"type": "actions", "block_id": "controls", "elements": elements}


def _abort_confirm(status: dict[str, Any]) -> dict[str, Any]:
    return _confirm(
        "Abort this delivery?",
        f"{escape(status['app'])} `{status['revision'][:7]}` stops and its targets roll back per the spec's rollback scope.",
        "Abort",
    )


def _button(
    label: str, action_id: str, value: str, *, style: str | None = None, confirm: dict[str, Any] | None = None
) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


def _confirm(title: str, text: str, confirm: str) -> dict[str, Any]:
    return {
        "title": {"type": "plain_text", "text": title},
        "text": {"type": "mrkdwn", "text": text},
        "confirm": {"type": "plain_text", "text": confirm},
        "deny": {"type": "plain_text", "text": "Cancel"},
        "style": "danger",
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text[:MAX_TEXT]}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(text)]}


# --- thread replies -----------------------------------------------------------------------------------
def event_reply(
    kind: str, detail: str, status: dict[str, Any], approval: ApprovalInfo | None = None
) -> tuple[str, bool] | None:
    """The thread reply for one delivery event and whether it is an alert (also shown in the channel).
    None: the event needs no reply (the message itself says it)."""
    phase = status["phase"]
    if kind == "started":
        return None
    if kind == "step":
        return detail, False  # already escaped by describe_progress
    if kind == "approval":
        approvers = (
            ", ".join(who(a) for a in approval.approvers)
            if approval and approval.approvers
            else "the approvers"
        )
        return f":raised_hand: {escape(detail)} — {approvers}, please review the message above.", False
    if kind == "rolled-back":
        return (
            f":rotating_light: *{escape(status['app'])}* `{status['revision'][:7]}` rolling back: {escape(detail)}",
            True,
        )
    if kind in ("override", "break-glass"):
        return f":rotating_light: {kind}: {escape(detail)}", True  # announced in the channel too
    if kind == "finished":
        emoji = PHASE_EMOJI.get(phase, "")
        if phase in ALERT_PHASES:
            reason = escape(detail or status.get("reason") or "no reason given")
            return f"{emoji} *{escape(status['app'])}* `{status['revision'][:7]}` {phase}: {reason}", True
        return f"{emoji} {escape(status['app'])} `{status['revision'][:7]}` {phase}", False
    return f"{EVENT_EMOJI.get(kind, '•')} {escape(detail or kind)}", False


# --- slash command texts ----------------------------------------------------------------------------
COMMAND_HELP = (
    "*aicd* — progressive delivery from Slack\n"
    "`/aicd status APP` — the app's deliveries and where they stand\n"
    "`/aicd pause APP [reason]` — pause every running delivery of APP (stop the line; its approvers and"
    " Slack operators only)\n"
    "`/aicd resume APP` — resume them (the same people)\n"
    "`/aicd approve DELIVERY STAGE` — approve a stage (listed approvers only)\n"
    "`/aicd override DELIVERY REASON` — let a stage through its policy (listed overriders only)\n"
    "`/aicd break-glass DELIVERY REASON` — let it through a freeze or a closed window (listed people only)\n"
    "`/aicd help` — this text"
)


def status_line(status: dict[str, Any]) -> str:
    stage = f" · stage {escape(status['stage'])}" if status.get("stage") else ""
    pending = (
        f" · awaiting approval of {escape(status['pending_approval'])}"
        if status.get("pending_approval")
        else ""
    )
    return f"{PHASE_EMOJI.get(status['phase'], '')} `{escape(status['delivery_id'])}` *{status['phase']}*{stage}{pending}"
