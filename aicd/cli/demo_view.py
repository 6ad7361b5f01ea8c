"""The demo (aicd.dev.demo) in the terminal: a live view of each delivery, the approval prompt, and a summary
at the end. Loaded by `aicd demo` only (rich's live view is not needed to start any other command)."""

from __future__ import annotations

import dataclasses
import select
import sys
import threading
import urllib.parse
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from aicd.dev.demo import DemoReport, LiveState, Release, ReleaseOutcome, Traffic
    from aicd.messages import DeliveryStatus

# --- rendering ----------------------------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def _version(tag: str | None, versions: dict[str, str]) -> str:
    if not tag:
        return "-"
    return f"{versions[tag]} ({tag})" if tag in versions else tag


def _focus(status: DeliveryStatus) -> DeliveryStatus:
    """The status with the verdict tables of promoted targets left out: their analysis passed (the state
    says so), and a frame with one full table per target would not fit a terminal."""
    targets = {
        name: target if target.state != "promoted" else dataclasses.replace(target, last_verdict=None)
        for name, target in status.targets.items()
    }
    return dataclasses.replace(status, targets=targets)


def render_live(state: LiveState) -> RenderableType:
    """One frame: the delivery's status, what the reconciler runs on each target, recent traffic."""
    from aicd.status_view import render_status

    title = (
        f"release {state.release.version} → {state.release.branch} · {state.status.delivery_id}"
        f" · {_clock(state.elapsed)}"
    )
    running = Table(title="running now (local reconciler)", title_justify="left", box=None, pad_edge=False)
    for column in ("target", "stable", "canary", "weight", "blue-green", "health"):
        running.add_column(column)
    for name, target in state.running.items():
        # A blue-green target's preview (its own port, no live traffic) and, after the switch, the previous
        # version kept warm until it is retired.
        blue_green = [
            f"{role} {_version(target.get(role), state.versions)}"
            for role in ("preview", "previous")
            if target.get(role)
        ]
        running.add_row(
            name,
            _version(target.get("stable"), state.versions),
            _version(target.get("canary"), state.versions),
            f"{target.get('weight', 0)}%",
            ", ".join(blue_green) or "-",
            str(target.get("phase", "?")),
        )
    return Group(
        Rule(title, align="left"),
        render_status(_focus(state.status)),
        Text(""),
        running,
        *traffic_lines(state.traffic, state.versions),
    )


BAD_RELEASE_SHARE = 0.02  # a version whose own answers are 5xx more often than this looks like a bad release


def traffic_lines(traffic: Traffic, versions: dict[str, str]) -> list[Text]:
    """Recent traffic in two lines that keep apart what a release does (its own 5xx, per version: red when
    a version fails) and what a busy machine does (requests the app did not answer in time: yellow, named
    as such, never counted against a version)."""
    served = " · ".join(
        f"{_version(v, versions)} {share:.0%}"
        + (f" (5xx {traffic.error_share_by_version[v]:.1%})" if traffic.error_share_by_version.get(v) else "")
        for v, share in traffic.by_version.items()
    )
    failing = any(share > BAD_RELEASE_SHARE for share in traffic.error_share_by_version.values())
    lines = [
        Text(
            f"traffic (last 5 s): {traffic.rate:.0f} req/s · answered by: {served or '-'}",
            style="red" if failing else "",
        )
    ]
    if traffic.no_answer_share > 0:
        lines.append(
            Text(
                f"slow machine: {traffic.no_answer_share:.0%} of requests got no answer in time"
                " (timeouts under load, not a release's errors)",
                style="yellow",
            )
        )
    return lines


def _outcome_text(outcome: ReleaseOutcome, order: list[str]) -> str:
    status = outcome.status
    if status.phase == "succeeded":
        text = "promoted on " + ", ".join(
            f"{name} (blue-green switch)" if status.targets[name].strategy == "blueGreen" else name
            for name in sorted(status.targets, key=lambda t: order.index(t) if t in order else 0)
        )
        flags = [
            f"{name} {flag} {what}"
            for name, target in status.targets.items()
            for flag, what in target.flags.items()
        ]
        if flags:
            text += "; flags: " + ", ".join(flags)
    else:
        text = status.reason or status.phase
    if outcome.rollback_commits:
        text += " → rolled back in Git: " + ", ".join(
            f"{c.sha[:8]} ({c.step})" for c in outcome.rollback_commits
        )
    return text


def _prometheus_graph(url: str, app_name: str) -> str:
    expr = f'sum by (target, track, version) (rate(http_requests_total{{app="{app_name}",code=~"5.."}}[15s]))'
    return f"{url}/graph?" + urllib.parse.urlencode({"g0.expr": expr, "g0.tab": "0", "g0.range_input": "15m"})


def render_summary(report: DemoReport, *, kept: bool = False) -> RenderableType:
    parts: list[RenderableType] = [Rule("aicd demo: summary", align="left")]
    releases = Table(box=None, pad_edge=False)
    for column in ("release", "branch", "revision", "outcome", "time", "what happened"):
        releases.add_column(column, overflow="fold")
    for outcome in report.outcomes:
        style = "green" if outcome.as_expected else "red"
        releases.add_row(
            outcome.release.version,
            outcome.release.branch,
            outcome.revision[:12],
            Text(outcome.status.phase, style=style),
            _clock(outcome.seconds),
            _outcome_text(outcome, report.targets),
        )
    parts.append(releases)
    for outcome in report.outcomes:
        for problem in outcome.problems:
            parts.append(Text(f"release {outcome.release.version}: {problem}", style="red"))
        for note in outcome.notes:
            parts.append(Text(f"release {outcome.release.version}: {note}", style="yellow"))
    if report.serving:
        serving = "; ".join(
            f"{target}: "
            + ", ".join(
                f"{_version(v, report.versions)} {n}/{sum(counts.values())}" for v, n in counts.items()
            )
            for target, counts in report.serving.items()
        )
        canaries = [f"{t} {c}" for t, c in report.canaries.items() if c]
        parts.append(Text(f"now serving (requests through each target's proxy): {serving}"))
        parts.append(Text(f"canaries running: {', '.join(canaries) or 'none'}"))
    if report.traffic is not None:
        traffic = report.traffic
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(traffic.by_status.items()))
        release_errors = ", ".join(
            f"{_version(v, report.versions)} {n}" for v, n in sorted(traffic.errors_by_version.items())
        )
        # Answers without a version came from the proxy: the app did not answer in time (the machine).
        slow = traffic.failed + traffic.by_version.get("?", 0)
        parts.append(
            Text(
                f"traffic during the demo: {traffic.sent} requests ({codes}); 5xx from the releases:"
                f" {release_errors or 'none'}; not answered in time (load): {slow}"
            )
        )
    for note in report.load_notes:
        parts.append(Text(f"slow machine (not a failure): {note}", style="yellow"))
    times = [f"setup {_clock(report.setup_seconds)}"]
    times += [f"release {o.release.version} {_clock(o.seconds)}" for o in report.outcomes]
    times.append(f"total {_clock(report.total_seconds)}")
    parts.append(Text("times: " + ", ".join(times)))
    parts.append(Text(""))
    # One link per line, never folded (print the summary with soft_wrap=True): a URL broken by a newline
    # cannot be clicked or copied.
    links: list[tuple[str, str]] = []
    if report.dashboard_url:
        links.append(("dashboard", report.dashboard_url))
    for outcome in report.outcomes:
        url = report.workflow_url(outcome.delivery_id)
        links.append(
            (
                f"release {outcome.release.version}",
                url or f"{outcome.delivery_id} (Temporal at {report.temporal_address})",
            )
        )
    if report.prometheus_url:
        links.append(("Prometheus", _prometheus_graph(report.prometheus_url, report.app)))
    if report.spec_path:
        links.append(("effective spec", str(report.spec_path)))
    links.append(("logs", str(report.state_dir / "logs")))
    width = max(len(label) for label, _ in links)
    for label, link in links:
        parts.append(Text.assemble((f"{label:<{width}}  ", "bold"), link))
    if kept:
        parts.append(Text("The links work while the stack runs: Ctrl-C stops it.", style="bold"))
    else:
        parts.append(
            Text(
                "The links work while the stack runs, and it stops now: `aicd demo --keep` keeps it up after"
                f" the summary; `aicd dev --state-dir {report.state_dir}` reopens this history in the Temporal UI.",
                style="bold",
            )
        )
    parts.append(Text(""))
    parts.append(
        Text(
            f"git log of the GitOps repo ({report.state_dir / 'gitops.git'}, {report.gitops_branch}):",
            style="bold",
        )
    )
    log = Table(box=None, pad_edge=False, show_header=True)
    # The commit and its step must stay readable on a narrow terminal; the subject gives way.
    log.add_column("commit", no_wrap=True, min_width=8)
    log.add_column(
        "Aicd-Step", no_wrap=True, min_width=max((len(c.step) for c in report.gitops_log), default=9)
    )
    log.add_column("subject", no_wrap=True, overflow="ellipsis")
    for commit in report.gitops_log:
        step_style = "red" if commit.step.endswith("/rollback") else "cyan"
        log.add_row(commit.sha[:8], Text(commit.step or "-", style=step_style), commit.subject)
    parts.append(log)
    parts.append(Text(""))
    if report.ok:
        parts.append(
            Text(
                "demo OK: the good release went out everywhere (canary, flag rollout, blue-green switch),"
                " the bad one was caught and rolled back.",
                style="bold green",
            )
        )
    else:
        parts.append(Text("demo NOT as expected:", style="bold red"))
        problems = [f"release {o.release.version}: {p}" for o in report.outcomes for p in o.problems]
        if not report.outcomes:
            problems.append("no release was delivered")
        for problem in [*problems, *report.problems]:
            parts.append(Text(f"  {problem}", style="red"))
    return Group(*parts)


# --- the terminal observer ------------------------------------------------------------------------------------


class TerminalObserver:
    """Live view while a delivery runs; prompts (interruptible by Ctrl-C) for approvals and resumes."""

    def __init__(self, console: Console, cancel: threading.Event) -> None:
        self.console = console
        self.cancel = cancel
        self.live: Live | None = None
        self._lock = threading.Lock()

    def note(self, text: str) -> None:
        self.console.print(Text(f"• {text}", style="dim"))

    def release_started(self, release: Release, revision: str, delivery_id: str) -> None:
        self.console.print(
            Text(
                f"▶ release {release.version}: {release.summary}; delivery {delivery_id} started",
                style="bold",
            )
        )
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def progress(self, state: LiveState) -> None:
        with self._lock:
            if self.live is not None:
                self.live.update(render_live(state), refresh=True)

    def _pause_live(self) -> None:
        with self._lock:
            if self.live is not None:
                self.live.stop()

    def _resume_live(self) -> None:
        with self._lock:
            if self.live is not None:
                self.live.start()

    def approve(self, release: Release, status: DeliveryStatus, stage: str, approver: str) -> bool:
        self._pause_live()
        try:
            return self._ask(
                f"Approve stage [bold]{escape(stage)}[/] of {escape(status.app)} {release.version}"
                f" ({status.revision[:12]}) as [bold]{escape(approver)}[/]? \\[Y/n] ",
                default=True,
                what=f"stage {stage}",
            )
        finally:
            self._resume_live()

    def resume(self, release: Release, status: DeliveryStatus, target: str, actor: str) -> bool:
        self._pause_live()
        try:
            return self._ask(
                f"The analysis on [bold]{escape(target)}[/] was inconclusive."
                f" Resume as {escape(actor)} (treat it as a pass)? \\[y/N] ",
                default=False,
                what=f"the resume of {target}",
            )
        finally:
            self._resume_live()

    def _ask(self, question: str, *, default: bool, what: str) -> bool:
        """A y/n answer from stdin, polled so Ctrl-C (which only sets `cancel`) ends the wait too."""
        self.console.print(question, end="")
        if sys.stdin is None:  # started without any stdin at all
            self.console.print(f"\nno stdin: declining {what}; `aicd demo --yes` approves automatically")
            return False
        while not self.cancel.is_set():
            try:
                ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            except (ValueError, OSError):  # no usable stdin
                ready = [sys.stdin]
            if not ready:
                continue
            try:
                line = sys.stdin.readline()
            except (ValueError, OSError):
                line = ""
            if line == "":
                self.console.print(
                    f"\nno answer (stdin closed): declining {what}; `aicd demo --yes` approves automatically"
                )
                return False
            answer = line.strip().lower()
            if answer in ("y", "yes") or (answer == "" and default):
                return True
            if answer in ("n", "no") or answer == "":
                return False
            self.console.print("please answer y or n: ", end="")
        return False

    def release_finished(self, outcome: ReleaseOutcome) -> None:
        with self._lock:
            if self.live is not None:
                self.live.stop()
                self.live = None
        style = "green" if outcome.as_expected else "red"
        self.console.print(
            Text(
                f"■ release {outcome.release.version}: {outcome.status.phase} after {_clock(outcome.seconds)}"
                f" (expected {outcome.release.expect})",
                style=f"bold {style}",
            )
        )
        self.console.print()
