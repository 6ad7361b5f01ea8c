"""How a delivery's status reads to a human: the CLI's `status`/`--watch`, the demo's live view."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from aicd.fleet import in_site_order
from aicd.judge import AnalysisVerdict, Outcome
from aicd.messages import DeliveryStatus, TargetStatus, VerificationStatus, target_state_text

PHASE_STYLE = {
    "succeeded": "bold green",
    "failed": "bold red",
    "aborted": "bold red",
    "rejected": "bold red",
    "superseded": "bold magenta",
    "queued": "bold cyan",
    "rolling-back": "bold yellow",
    "paused": "bold yellow",
    "awaiting-approval": "bold cyan",
    "held": "bold yellow",
}
BAR_WIDTH = 20


def weight_bar(weight: int) -> str:
    filled = round(BAR_WIDTH * max(0, min(weight, 100)) / 100)
    return "█" * filled + "░" * (BAR_WIDTH - filled) + f" {weight:3d}%"


def verdict_lines(verdict: AnalysisVerdict | None, details: bool = False) -> list[str]:
    """The judge's latest verdict in words and a table; with ``details`` also every test's bounds and
    evidence (e-values, p-values, thresholds)."""
    if verdict is None:
        return []
    from aicd.judge import render_details, render_table  # numpy and scipy load only when there is a verdict

    lines = render_table(verdict).splitlines()
    if verdict.outcome == Outcome.RUNNING:
        lines[0] = f"analysis RUNNING (evidence so far): {verdict.summary}"
    if details:
        lines += ["", *render_details(verdict).splitlines()]
    return lines


def status_text(status: DeliveryStatus, details: bool = False, width: int = 160) -> str:
    """The status as plain text (what `aicd status` prints, without colours)."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(render_status(status, details))
    return console.export_text()


def time_left(until: str, now: datetime | None = None) -> str:
    """`4m10s left` until the ISO time `until` (`0s left` once it passed); "" when `until` is not a time."""
    from aicd.spec.durations import format_duration

    try:
        end = datetime.fromisoformat(until)
    except ValueError:
        return ""
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    seconds = max(0, round((end - (now or datetime.now(UTC))).total_seconds()))
    return f"{format_duration(seconds) if seconds else '0s'} left"


def _target_row(target: TargetStatus, paused: bool, now: datetime | None) -> list[str]:
    step = f"{target.step_index}:{target.step_kind}" if target.step_index >= 0 else target.step_kind or "-"
    if target.wait_until and target.state == "progressing":
        # The timer's clock stops while the delivery is paused: the time left then is only an upper bound.
        left = time_left(target.wait_until, now)
        step = f"{step} ({'clock stopped' if paused else left})" if left else step
    if target.sites_total:
        counts = ", ".join(f"{state} {count}" for state, count in in_site_order(target.sites_by_state))
        step = f"{step}  sites {target.sites_total}: {counts}"
    return [
        target.stage,
        target.target,
        target.kind,
        target_state_text(target),
        step,
        weight_bar(target.weight),
        str(len(target.commits)),
    ]


def off_branch_note(status: DeliveryStatus) -> str:
    """What it means that the GitOps branch no longer holds some of the delivery's commits."""
    made = [(target.target, sha) for target in status.targets.values() for sha in target.commits]
    dropped = [(target, sha) for target, sha in made if sha in status.off_branch]
    targets = ", ".join(dict.fromkeys(target for target, _sha in dropped))
    return (
        f"{len(dropped)} of this delivery's {len(made)} commits are no longer on the GitOps branch: its history"
        f" was rewritten after aicd pushed them (a force-push back, or a deleted branch). For {targets}, what"
        " Argo CD deploys is what the branch holds now, not what this delivery wrote."
    )


def waiting_line(status: DeliveryStatus) -> str:
    """Which older deliveries this one waits for, and why."""
    older = ", ".join(status.waiting_for)
    if status.phase == "queued":
        return f"queued behind {older} (spec.concurrency: queue)"
    return (
        f"waiting for {older} to withdraw its canaries before the first write (spec.concurrency: supersede)"
    )


def changed_since_lines(status: DeliveryStatus) -> list[str]:
    """Per target that a later commit changed: whose content runs there now."""
    lines = []
    for target, later in status.changed_since.items():
        if not later:
            continue
        newest = later[0]
        by = f"delivery {newest.delivery_id}" if newest.delivery_id else newest.author
        more = f" (and {len(later) - 1} more)" if len(later) > 1 else ""
        lines.append(
            f"{target}: changed since this delivery by {by} in {newest.sha[:7]} ({newest.subject}){more}: what"
            " runs there is what the branch holds now, not what this delivery wrote."
        )
    return lines


def verification_line(run: VerificationStatus) -> str:
    """One verification run: where, what, how many attempts, what the last one saw."""
    where = f"{run.target} " if run.target else ""
    attempts = f" {run.attempts}/{run.max_attempts}" if run.max_attempts > 1 else ""
    return f"{where}verify {run.name} [{run.step}] {run.state}{attempts}: {run.detail}".rstrip(": ")


def verification_lines(run: VerificationStatus, details: bool = False) -> list[str]:
    """The run's line, and with `details` (or when it failed) its masked output tail."""
    lines = [verification_line(run)]
    if run.output_tail and (details or run.state == "failed"):
        lines += [f"    | {line}" for line in run.output_tail.rstrip().splitlines()[-10:]]
    if run.log and (details or run.state == "failed"):
        lines.append(f"    whole output: {run.log}")
    return lines


def resume_hint(status: DeliveryStatus) -> str:
    """How to release a target that waits for a human (`pause: {}`, an inconclusive analysis, a human's edit)."""
    return f"`aicd resume {status.delivery_id}` releases it, `aicd abort {status.delivery_id}` rolls back"


def render_status(
    status: DeliveryStatus, details: bool = False, now: datetime | None = None
) -> RenderableType:
    header = Text()
    header.append(f"{status.delivery_id}  ", style="bold")
    header.append(status.phase, style=PHASE_STYLE.get(status.phase, "bold blue"))
    where = " ".join(
        part
        for part in (
            f"stage {status.stage}" if status.stage else "",
            f"wave {status.wave}" if status.wave else "",
        )
        if part
    )
    header.append(f"  {status.app} @ {status.revision[:12]}  {status.artifact}  {where}")
    parts: list[RenderableType] = [header]
    if status.paused:
        parts.append(
            Text(
                f"paused: {status.pause_reason or 'no reason given'} (`aicd resume {status.delivery_id}` resumes)",
                style="yellow",
            )
        )
    if status.pending_approval:
        approvals = ", ".join(status.approved_by(status.pending_approval)) or "none yet"
        parts.append(
            Text(
                f"awaiting approval of stage {status.pending_approval} (approved by: {approvals})",
                style="cyan",
            )
        )
    for hold in status.holds:
        parts.append(Text(f"held ({hold.gate}): {hold.reason}", style="yellow"))
        if hold.gate == "policy":
            parts += [Text(f"  deny: {message}", style="yellow") for message in hold.messages]
        if hold.overriders:
            command = "aicd override" if hold.override == "override" else "aicd break-glass"
            parts.append(
                Text(f"  `{command} {status.delivery_id} --reason ...` by {', '.join(hold.overriders)}")
            )
    for warning in status.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    for retry in status.retrying:
        parts.append(Text(f"retrying: {retry}", style="yellow"))
    if status.waiting_for:
        parts.append(Text(waiting_line(status), style="cyan"))
    if status.reason:
        parts.append(Text(f"reason: {status.reason}", style="red" if status.phase != "succeeded" else ""))
    if status.off_branch:
        parts.append(Text(off_branch_note(status), style="red"))
    parts += [Text(line, style="yellow") for line in changed_since_lines(status)]
    if status.commands:
        parts.append(
            Text("commands: " + ", ".join(f"{c.name} {c.state} {c.detail}".strip() for c in status.commands))
        )
    if status.targets:
        table = Table(show_edge=False, pad_edge=False, box=None)
        for column in ("stage", "target", "kind", "state", "step", "canary weight", "commits"):
            table.add_column(column)
        for target in status.targets.values():
            table.add_row(*_target_row(target, status.paused, now))
        parts.append(table)
        shown = [status.reason] if status.reason else []
        for target in status.targets.values():
            lines = verdict_lines(target.last_verdict, details)
            if lines:
                parts.append(Text(f"{target.target}: " + "\n".join(lines)))
                shown.append("\n".join(lines))
            for run in target.verifications:
                style = "red" if run.state == "failed" else ""
                parts.append(
                    Text(f"{target.target}: " + "\n".join(verification_lines(run, details)), style=style)
                )
            if target.flags:
                flags = ", ".join(f"{flag} {what}" for flag, what in target.flags.items())
                parts.append(Text(f"{target.target}: flags {flags}"))
            if target.failed_sites:
                parts.append(
                    Text(f"{target.target}: failed sites {', '.join(target.failed_sites[:20])}", style="red")
                )
            if target.state == "awaiting-resume":
                parts.append(
                    Text(f"{target.target}: {target.message}: {resume_hint(status)}", style="yellow")
                )
            elif (
                target.message
                and target.state in ("failed", "rolled-back", "aborted", "superseded")
                # said once: the delivery's reason or the verdict above often carries the same words
                and not any(target.message in text for text in shown)
            ):
                parts.append(Text(f"{target.target}: {target.message}"))
    for stage, runs in status.verifications.items():
        parts.append(Text(f"stage {stage} verification:"))
        for run in runs:
            style = "red" if run.state == "failed" else ""
            parts.append(
                Text("\n".join(f"  {line}" for line in verification_lines(run, details)), style=style)
            )
    if status.actions:
        parts.append(Text("actions:"))
        for action in status.actions:
            stage = f" stage {action.stage}" if action.stage else ""
            reason = f": {action.reason}" if action.reason else ""
            parts.append(Text(f"  {action.at[:19]} {action.kind} by {action.who()}{stage}{reason}"))
    return Group(*parts)
