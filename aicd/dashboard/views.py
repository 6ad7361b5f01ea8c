"""What each page shows, assembled from a delivery's status, the digests of its histories and its commits.
Plain data for the templates: every number a chart draws is computed here (through aicd.dashboard.charts),
so the pages read without JavaScript and the tests can check the values the DOM carries."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from aicd.dashboard import charts
from aicd.dashboard.charts import Linear, Log, Tick
from aicd.dashboard.gitops import CommitInfo, commit_url
from aicd.dashboard.history import DeliveryDigest, Look, StepMark
from aicd.fleet import in_site_order, rolled_back, sites_of
from aicd.gates import GateHold
from aicd.judge.model import MetricVerdict, TestName, TestResult
from aicd.messages import (
    TERMINAL_PHASES,
    ActionRecord,
    CommandStatus,
    DeliveryStatus,
    TargetStatus,
    as_phase,
)
from aicd.people import Roster, resolve
from aicd.plan import DeliveryPlan, StagePlan
from aicd.status_view import changed_since_lines, off_branch_note, verification_line, waiting_line
from aicd.steering import plan_approvers
from aicd.steps.set_weight import SetWeightStep

WAITING_STATES = ("paused", "awaiting-resume")


def parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def clock(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def duration_text(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


# --- the deliveries list -----------------------------------------------------------------------------------


@dataclass
class DeliveryRow:
    delivery_id: str
    app: str
    revision: str
    trigger: str  # "github push by alice (release/1.2)"
    phase: str
    stage: str
    state: str  # Temporal's execution status
    started: datetime
    closed: datetime | None
    duration: str

    @property
    def running(self) -> bool:
        return self.state == "running"


# --- the delivery page -------------------------------------------------------------------------------------


@dataclass
class TargetNode:
    name: str
    kind: str
    region: str
    state: str  # pending (not started) or the TargetStatus state
    weight: int
    step: str  # "2: analysis 20s"
    message: str
    verdict: str  # the latest analysis outcome, or ""
    verdict_summary: str
    commits: int
    strategy: str = ""  # blueGreen while its phases (preview, promote, ...) are the step
    verifications: list[str] = field(default_factory=list)  # its verify steps, one line each
    flags: str = ""  # what its setFlag steps made each flag


@dataclass
class WaveView:
    number: int
    nodes: list[TargetNode]


@dataclass
class StageView:
    name: str
    state: str  # pending | current | done
    approvers: list[str]
    min_approvals: int
    approved_by: list[str]
    awaiting_approval: bool
    waves: list[WaveView]
    steps: list[str]
    strategy: str = "canary"
    verifications: list[str] = field(default_factory=list)  # its `verify:` runs after promotion


@dataclass
class TimelinePoint:
    x: float
    y: float
    at: datetime
    weight: int
    state: str
    step: str


@dataclass
class Span:
    x: float
    width: float
    label: str
    kind: str  # a phase, or paused | awaiting-resume


@dataclass
class Marker:
    x: float
    label: str
    kind: str
    actor: str = ""
    at: datetime | None = None
    short: str = ""  # the label drawn on the chart ("" when a neighbour is too close to leave room)
    row: int = 0  # which row of labels (actions close to each other alternate)


@dataclass
class Lane:
    target: str
    stage: str
    top: float
    height: float
    baseline_y: float  # weight 0
    full_y: float  # weight 100
    path: str
    points: list[TimelinePoint]
    pauses: list[Span]
    steps: list[Marker]
    rollbacks: list[Marker]
    started: bool


@dataclass
class WeightTimeline:
    width: float
    height: float
    plot_left: float
    plot_right: float
    axis_y: float
    ticks: list[Tick]
    phases: list[Span]
    actions: list[Marker]
    lanes: list[Lane]
    start: datetime
    end: datetime
    phase_y: float = 0.0
    phase_height: float = 0.0
    lanes_top: float = 0.0
    action_rows: tuple[float, ...] = ()


@dataclass
class LookPoint:
    """One look on a metric chart; None fields had no value at that look."""

    x: float
    seconds: float  # since the analysis step began
    verdict: str
    canary: float | None
    baseline: float | None
    canary_y: float | None
    baseline_y: float | None
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    estimate_y: float | None
    absolute: float | None = None
    absolute_y: float | None = None


@dataclass
class Panel:
    title: str
    top: float
    height: float
    ticks: list[Tick]
    lines: dict[str, str]  # series name -> path
    band: str  # the judge's confidence band (path)
    tolerance: list[tuple[float, float]]  # (y, value) of each tolerance edge
    bad_zone: tuple[float, float] | None  # y range beyond the tolerance (drawn shaded)
    reference: tuple[float, str] | None  # (y, label): "no change"


@dataclass
class MetricChart:
    metric: str
    kind: str
    direction: str
    critical: bool
    verdict: str  # at the latest look
    explanation: str
    settle: str
    tolerance_text: str
    width: float
    height: float
    plot_left: float
    plot_right: float
    axis_y: float
    x_ticks: list[Tick]
    panels: list[Panel]
    looks: list[LookPoint]


@dataclass
class AnalysisView:
    target: str
    stage: str
    started: datetime
    weight: int
    outcome: str  # the latest look's outcome
    summary: str
    looks: int
    charts: list[MetricChart]


@dataclass
class FleetGrid:
    target: str
    total: int
    per_cell: int  # sites one cell stands for
    columns: int
    cell: float
    cells: list[str]  # state of each cell, in order
    counts: list[tuple[str, int]]
    failed_sites: list[str]

    @property
    def rows(self) -> int:
        return math.ceil(len(self.cells) / self.columns) if self.cells else 0


@dataclass
class CommitRow:
    sha: str
    target: str
    stage: str
    step: str
    subject: str
    author: str
    date: str
    url: str  # the Git host's page when a template is set, else the built-in diff view
    external: bool
    dropped: bool = False  # no longer on the GitOps branch: its history was rewritten after the push


@dataclass
class DeliveryView:
    delivery_id: str
    app: str
    revision: str
    artifact: str
    trigger: str
    phase: str
    stage: str
    wave: int | None
    paused: bool
    pause_reason: str
    reason: str
    started: datetime | None
    closed: datetime | None
    duration: str
    pending_approval: str | None
    superseded_by: str | None
    waiting: str  # which older deliveries it waits for, and why (empty: none)
    commands: list[CommandStatus]
    stages: list[StageView]
    timeline: WeightTimeline | None
    analyses: list[AnalysisView]
    commits: list[CommitRow]
    actions: list[ActionRecord]
    fleets: list[FleetGrid]
    available: list[str]  # the actions that make sense now (pause, resume, abort, approve, reject)
    approvers: Roster  # everyone listed in any stage's approval of this delivery (aicd.people)
    status_source: str  # "query" (live) or "history" (no worker answered: reconstructed)
    running: bool = True
    notes: list[str] = field(default_factory=list)
    holds: list[GateHold] = field(default_factory=list)  # what holds the stage (aicd.gates)
    warnings: list[str] = field(default_factory=list)  # a policy's warn messages
    retrying: list[str] = field(default_factory=list)  # what is retried now, and why

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


# --- assembling -----------------------------------------------------------------------------------------------


def trigger_text(status: DeliveryStatus | None, digest: DeliveryDigest | None) -> str:
    trigger = status.trigger if status is not None and status.trigger else None
    if trigger is None and digest is not None and digest.input is not None:
        trigger = digest.input.trigger
    if trigger is None:
        return "-"
    text = f"{trigger.source} by {trigger.actor}"
    return f"{text} ({trigger.branch})" if trigger.branch else text


def available_actions(status: DeliveryStatus) -> list[str]:
    if status.terminal:
        return []
    actions = []
    if not status.paused:
        actions.append("pause")
    if status.paused or any(t.state == "awaiting-resume" for t in status.targets.values()):
        actions.append("resume")
    actions.append("abort")
    if status.pending_approval:
        actions += ["approve", "reject"]
    return actions


def status_from_history(digest: DeliveryDigest, phase: str) -> DeliveryStatus:
    """The status as the history records it, for a delivery no worker answers queries for (workers down):
    every target's last reported snapshot, the accepted human actions, how it ended."""
    plan = digest.input.plan if digest.input else None
    status = DeliveryStatus(
        delivery_id=plan.delivery_id if plan else "",
        app=plan.app if plan else "",
        revision=plan.revision if plan else "",
        artifact=plan.artifact if plan else "",
        phase=as_phase(
            digest.result.phase
            if digest.result
            else (phase or (digest.phases[-1][1] if digest.phases else "")),
            default="pending",
        ),
        stage=digest.stages[-1][1] if digest.stages else None,
        reason=digest.result.reason if digest.result else "",
        trigger=digest.input.trigger if digest.input else None,
        started=digest.started.isoformat() if digest.started else "",
    )
    for target, snapshots in digest.progress.items():
        status.targets[target] = snapshots[-1][1]
    for rollback in digest.rollbacks:  # the delivery rolls targets back itself, without a progress report
        for target in rollback.targets:
            if target in status.targets:
                # Counted as the delivery counts them (DeliveryWorkflow._rollback).
                rolled = status.targets[target]
                template = plan.targets[target].path if plan and target in plan.targets else ""
                left = sites_of(template, rollback.left.get(target, []))
                restored = rollback.left_restored.get(target)
                by_state = rolled_back(rolled.sites_by_state, left, rolled.failed_sites, restored)
                if target in rollback.all_left:
                    status.targets[target] = replace(rolled, sites_by_state=by_state)
                else:
                    status.targets[target] = replace(
                        rolled, state="rolled-back", weight=0, sites_by_state=by_state
                    )
    for recorded in digest.actions:
        action = recorded.action
        person = resolve(plan.people if plan else [], action.actor, action.via)
        status.actions.append(
            ActionRecord(
                recorded.kind,
                action.actor,
                recorded.at.isoformat(),
                action.reason,
                action.stage,
                action.via,
                person.name if person.declared else "",
            )
        )
    return status


def build_view(
    status: DeliveryStatus,
    digest: DeliveryDigest,
    looks: dict[str, list[Look]],
    infos: dict[str, CommitInfo],
    *,
    steps: dict[str, list[StepMark]] | None = None,
    now: datetime,
    commit_template: str | None,
    status_source: str = "query",
    running: bool = True,
) -> DeliveryView:
    plan = digest.input.plan if digest.input else None
    started = digest.started or parse_time(status.started)
    closed = digest.closed
    end = closed or now
    # A running delivery's timeline reaches a little past now, in steps, so a page followed live redraws it
    # every few seconds rather than at every poll.
    drawn_until = closed or datetime.fromtimestamp(
        math.ceil(now.timestamp() / TIMELINE_STEP_S) * TIMELINE_STEP_S, UTC
    )
    view = DeliveryView(
        delivery_id=status.delivery_id,
        app=status.app,
        revision=status.revision,
        artifact=status.artifact,
        trigger=trigger_text(status, digest),
        phase=status.phase,
        stage=status.stage or "",
        wave=status.wave,
        paused=status.paused,
        pause_reason=status.pause_reason,
        reason=status.reason,
        started=started,
        closed=closed,
        duration=duration_text((end - started).total_seconds() if started else None),
        pending_approval=status.pending_approval,
        superseded_by=status.superseded_by,
        waiting=waiting_line(status) if status.waiting_for else "",
        commands=list(status.commands),
        stages=stage_views(plan, status) if plan else [],
        timeline=(
            weight_timeline(plan, status, digest, started, drawn_until, steps or {})
            if plan and started
            else None
        ),
        analyses=analysis_views(plan, status, looks) if plan else [],
        commits=commit_rows(plan, status, infos, commit_template) if plan else [],
        actions=list(status.actions),
        fleets=[fleet_grid(target) for target in status.targets.values() if target.sites_total],
        available=available_actions(status) if running else [],
        approvers=plan_approvers(plan),
        status_source=status_source,
        running=running,
        holds=list(status.holds),
        warnings=list(status.warnings),
        retrying=list(status.retrying),
    )
    if status_source == "history":
        view.notes.append(
            "No worker answered the status query: this page shows what the workflow history records."
        )
    if status.off_branch:
        view.notes.append(off_branch_note(status))
    view.notes += changed_since_lines(status)
    return view


def step_label(stage: StagePlan | None, index: int, kind: str) -> str:
    steps = stage.rollout_strategy().steps() if stage is not None else []
    if 0 <= index < len(steps) and steps[index].name == kind:
        return f"{index}: {steps[index].describe()}"
    return f"{index}: {kind}" if index >= 0 else kind


def _until(target: TargetStatus) -> str:
    """When a timed wait (`pause: 5m`) ends, as a clock time: right however long the page stays open."""
    if not target.wait_until or target.state != "progressing":
        return ""
    try:
        return f" (until {datetime.fromisoformat(target.wait_until):%H:%M:%S} UTC)"
    except ValueError:
        return ""


def _stage_of(plan: DeliveryPlan, name: str) -> StagePlan | None:
    for stage in plan.stages:
        if stage.name == name:
            return stage
    return None


def _state_in(stage: StagePlan, target: TargetStatus | None) -> str:
    """A target's state as its node in `stage` shows it: a target that went on to a later stage shows there
    what it is now, and here `promoted` while the release this stage promoted stands."""
    if target is None:
        return "not-started"
    if target.stage != stage.name and stage.name in target.promoted_in:
        return "promoted"
    return target.state


def stage_views(plan: DeliveryPlan, status: DeliveryStatus) -> list[StageView]:
    views = []
    names = [stage.name for stage in plan.stages]
    reached = names.index(status.stage) if status.stage in names else -1
    for index, stage in enumerate(plan.stages):
        waves = []
        for number, wave in enumerate(stage.waves, start=1):
            nodes = []
            for name in wave:
                target_plan = plan.targets[name]
                target = status.targets.get(name)
                verdict = target.last_verdict if target else None
                nodes.append(
                    TargetNode(
                        name=name,
                        kind=target_plan.kind,
                        region=target_plan.region or "",
                        state=_state_in(stage, target),
                        weight=target.weight if target else 0,
                        step=(step_label(stage, target.step_index, target.step_kind) + _until(target))
                        if target
                        else "",
                        message=target.message if target else "",
                        verdict=str(verdict.outcome) if verdict else "",
                        verdict_summary=verdict.summary if verdict else "",
                        commits=len(target.commits) if target else 0,
                        strategy=target.strategy if target else "",
                        verifications=[verification_line(run) for run in target.verifications]
                        if target
                        else [],
                        flags=", ".join(f"{flag} {what}" for flag, what in target.flags.items())
                        if target
                        else "",
                    )
                )
            waves.append(WaveView(number, nodes))
        approval = stage.approval
        state = "done" if index < reached or (index == reached and status.terminal) else "pending"
        if index == reached and not status.terminal:
            state = "current"
        views.append(
            StageView(
                name=stage.name,
                state=state,
                approvers=Roster.of(plan.people, approval.approvers).names() if approval else [],
                min_approvals=approval.min_approvals if approval else 0,
                approved_by=status.approved_by(stage.name),
                awaiting_approval=status.pending_approval == stage.name,
                waves=waves,
                steps=[step.describe() for step in stage.rollout_strategy().steps()],
                strategy=stage.rollout_strategy().name,
                verifications=[verification_line(run) for run in status.verifications.get(stage.name, [])],
            )
        )
    return views


# --- the weight timeline ------------------------------------------------------------------------------------

TIMELINE_WIDTH = 960.0
TIMELINE_LEFT = 150.0
TIMELINE_RIGHT = 16.0
PHASE_BAND_Y = 6.0
PHASE_BAND_HEIGHT = 14.0
ACTION_ROWS_Y = (32.0, 43.0)  # action labels alternate between two rows when they would overlap
LANES_TOP = 50.0
LANE_HEIGHT = 58.0
AXIS_HEIGHT = 26.0
TIMELINE_STEP_S = 5.0


def weight_timeline(
    plan: DeliveryPlan,
    status: DeliveryStatus,
    digest: DeliveryDigest,
    start: datetime,
    end: datetime,
    steps: dict[str, list[StepMark]],
) -> WeightTimeline:
    t0, t1 = start.timestamp(), max(end.timestamp(), start.timestamp() + 1.0)
    x = Linear(t0, t1, TIMELINE_LEFT, TIMELINE_WIDTH - TIMELINE_RIGHT)
    order = [(stage.name, name) for stage in plan.stages for name in stage.targets]
    lanes = [
        _lane(stage, name, index, x, plan, status, digest, steps.get(name, []), t1)
        for index, (stage, name) in enumerate(order)
    ]
    axis_y = LANES_TOP + LANE_HEIGHT * len(lanes) + 4
    phases = []
    for index, (at, phase) in enumerate(digest.phases):
        until = digest.phases[index + 1][0].timestamp() if index + 1 < len(digest.phases) else t1
        if phase in TERMINAL_PHASES:
            until = max(until, at.timestamp())
        left = x(at.timestamp())
        phases.append(Span(left, max(x(until) - left, 1.0), phase, phase))
    actions = []
    for action in status.actions:
        moment = parse_time(action.at)
        if moment is None:
            continue
        label = f"{action.kind} by {action.actor}" + (f": {action.reason}" if action.reason else "")
        actions.append(Marker(x(moment.timestamp()), label, action.kind, action.actor, moment))
    for previous, marker in itertools.pairwise(actions):
        close = marker.x - previous.x < 110 and previous.row == 0
        marker.row = 1 if close else 0
    return WeightTimeline(
        width=TIMELINE_WIDTH,
        height=axis_y + AXIS_HEIGHT,
        plot_left=TIMELINE_LEFT,
        plot_right=TIMELINE_WIDTH - TIMELINE_RIGHT,
        axis_y=axis_y,
        ticks=charts.time_ticks(t0, t1, x),
        phases=phases,
        actions=actions,
        lanes=lanes,
        start=start,
        end=end,
        phase_y=PHASE_BAND_Y,
        action_rows=ACTION_ROWS_Y,
        phase_height=PHASE_BAND_HEIGHT,
        lanes_top=LANES_TOP,
    )


def _lane(
    stage_name: str,
    target: str,
    index: int,
    x: Linear,
    plan: DeliveryPlan,
    status: DeliveryStatus,
    digest: DeliveryDigest,
    marks: list[StepMark],
    t1: float,
) -> Lane:
    top = LANES_TOP + index * LANE_HEIGHT
    y = Linear(0, 100, top + LANE_HEIGHT - 10, top + 8)
    stage = _stage_of(plan, stage_name)
    kind = plan.targets[target].kind if target in plan.targets else ""
    snapshots = progress_over_time(
        digest.progress.get(target, []), marks, stage, TargetStatus(target, stage_name, kind)
    )
    child = digest.children.get(target)
    begun = child.started if child and child.started else (snapshots[0][0] if snapshots else None)
    points: list[TimelinePoint] = []
    steps: list[Marker] = []
    pauses: list[Span] = []
    rollbacks: list[Marker] = []
    if begun is not None:
        points.append(TimelinePoint(x(begun.timestamp()), y(0), begun, 0, "progressing", "start"))
    last_key: tuple[object, ...] | None = None
    last_step = -2
    pause_from: tuple[datetime, str, str] | None = None
    for at, snapshot in snapshots:
        label = step_label(stage, snapshot.step_index, snapshot.step_kind)
        key = (snapshot.weight, snapshot.state, snapshot.step_index, snapshot.step_kind)
        if key != last_key:
            points.append(
                TimelinePoint(
                    x(at.timestamp()), y(snapshot.weight), at, snapshot.weight, snapshot.state, label
                )
            )
            last_key = key
        if snapshot.step_index != last_step:
            short = (
                f"{snapshot.step_index} {snapshot.step_kind}"
                if snapshot.step_index >= 0
                else snapshot.step_kind
            )
            steps.append(Marker(x(at.timestamp()), label, snapshot.step_kind, at=at, short=short))
            last_step = snapshot.step_index
        waiting = snapshot.state in WAITING_STATES
        if waiting and pause_from is None:
            pause_from = (at, snapshot.state, snapshot.message)
        elif not waiting and pause_from is not None:
            pauses.append(_pause_span(x, pause_from, at.timestamp()))
            pause_from = None
    if pause_from is not None:
        pauses.append(_pause_span(x, pause_from, t1))
    for rollback in digest.rollbacks:
        if target in rollback.targets:
            rollbacks.append(
                Marker(x(rollback.at.timestamp()), f"rollback: {rollback.reason}", "rollback", at=rollback.at)
            )
            points.append(
                TimelinePoint(x(rollback.at.timestamp()), y(0), rollback.at, 0, "rolled-back", "rollback")
            )
    current = status.targets.get(target)
    if (
        current is not None
        and points
        and (points[-1].weight != current.weight or points[-1].state != current.state)
    ):
        moment = datetime.fromtimestamp(t1, UTC)
        points.append(TimelinePoint(x(t1), y(current.weight), moment, current.weight, current.state, "now"))
    points.sort(key=lambda point: point.at)
    _make_room(steps)
    path = charts.step_path([(p.x, p.y) for p in points], x(t1) if points else None)
    return Lane(
        target=target,
        stage=stage_name,
        top=top,
        height=LANE_HEIGHT,
        baseline_y=y(0),
        full_y=y(100),
        path=path,
        points=points,
        pauses=pauses,
        steps=steps,
        rollbacks=rollbacks,
        started=begun is not None,
    )


def progress_over_time(
    reported: list[tuple[datetime, TargetStatus]],
    marks: list[StepMark],
    stage: StagePlan | None,
    initial: TargetStatus,
) -> list[tuple[datetime, TargetStatus]]:
    """A target's progress over time: what its rollout reported to the delivery (as it starts waiting, and its
    final status) and, from the rollout's own history, each step's commit - a rollout of PROGRESS_IN_RESULT
    reports no step it does not wait on. A commit is drawn when it landed (the weight changes then); one begun
    while the target waited ends that wait."""
    steps = stage.rollout_strategy().steps() if stage is not None else []
    timed: list[tuple[datetime, int, TargetStatus | StepMark]] = [(at, 1, status) for at, status in reported]
    timed += [(mark.scheduled, 0, mark) for mark in marks] + [(mark.at, 2, mark) for mark in marks]
    timed.sort(key=lambda entry: (entry[0], entry[1]))
    last = initial
    snapshots: list[tuple[datetime, TargetStatus]] = []
    for at, order, what in timed:
        if isinstance(what, TargetStatus):
            last = what
        elif order == 0:
            if last.state not in WAITING_STATES:
                continue
            last = replace(last, state="progressing", message="")
        else:
            index_text, _, step_kind = what.step.partition("-")
            if what.step == "promote":
                last = replace(last, state="progressing", step_kind="promote", weight=100, message="")
            elif index_text.isdigit() and step_kind:
                index = int(index_text)
                step = steps[index] if index < len(steps) else None
                weight = step.weight if isinstance(step, SetWeightStep) else last.weight
                last = replace(
                    last,
                    state="progressing",
                    step_index=index,
                    step_kind=step_kind,
                    weight=weight,
                    message="",
                )
            else:
                continue  # a commit of another strategy (blue-green): its phases are reported
        snapshots.append((at, last))
    return snapshots


def _make_room(markers: list[Marker], room: float = 64.0) -> None:
    """Drop the drawn label of a marker whose next neighbour is too close (its title still says it)."""
    for marker, following in itertools.pairwise(markers):
        if following.x - marker.x < room:
            marker.short = ""


def _pause_span(x: Linear, began: tuple[datetime, str, str], until: float) -> Span:
    at, state, message = began
    left = x(at.timestamp())
    seconds = until - at.timestamp()
    what = "paused" if state == "paused" else "waiting for a human"
    return Span(left, max(x(until) - left, 2.0), f"{what} {duration_text(seconds)}: {message}", state)


# --- analysis charts ------------------------------------------------------------------------------------------

CHART_WIDTH = 480.0
CHART_LEFT = 64.0
CHART_RIGHT = 14.0
PANEL_HEIGHT = 112.0
PANEL_GAP = 30.0
CHART_TOP = 22.0
RATIO_FLOOR, RATIO_CEILING = 1e-3, 1e4


def analysis_views(
    plan: DeliveryPlan, status: DeliveryStatus, looks: dict[str, list[Look]]
) -> list[AnalysisView]:
    views = []
    for stage in plan.stages:
        for target in stage.targets:
            by_step: dict[float, list[Look]] = {}
            for look in looks.get(target, []):
                by_step.setdefault(look.step_start, []).append(look)
            for step_start, step_looks in sorted(by_step.items()):
                views.append(_analysis_view(stage.name, target, step_start, step_looks))
    return views


def _analysis_view(stage: str, target: str, step_start: float, looks: list[Look]) -> AnalysisView:
    judged = [look for look in looks if look.verdict is not None]
    latest = judged[-1].verdict if judged else None
    names: list[str] = []
    for look in judged:
        assert look.verdict is not None
        names += [metric.name for metric in look.verdict.metrics if metric.name not in names]
    return AnalysisView(
        target=target,
        stage=stage,
        started=datetime.fromtimestamp(step_start, UTC),
        weight=looks[-1].weight,
        outcome=str(latest.outcome) if latest else "error",
        summary=latest.summary if latest else (looks[-1].error or "the analysis could not run"),
        looks=len(looks),
        charts=[metric_chart(name, step_start, looks) for name in names],
    )


def _metric_at(look: Look, name: str) -> MetricVerdict | None:
    if look.verdict is None:
        return None
    for metric in look.verdict.metrics:
        if metric.name == name:
            return metric
    return None


def _test(metric: MetricVerdict | None, name: TestName | None = None) -> TestResult | None:
    if metric is None or not metric.tests:
        return None
    if name is None:
        return metric.tests[0]  # the main test: the one `estimate` and the bounds repeat
    return next((test for test in metric.tests if test.name == name), None)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def metric_chart(name: str, step_start: float, looks: list[Look]) -> MetricChart:
    metrics = [_metric_at(look, name) for look in looks]
    latest = next((metric for metric in reversed(metrics) if metric is not None), None)
    assert latest is not None, "a chart is made for metrics that some look judged"
    seconds = [max(look.end - step_start, 0.0) for look in looks]
    x = Linear(0.0, max(max(seconds, default=1.0), 1.0), CHART_LEFT, CHART_WIDTH - CHART_RIGHT)
    has_absolute = any(_test(metric, TestName.ABSOLUTE) is not None for metric in metrics)

    panels: list[Panel] = []
    top = CHART_TOP
    # 1. canary vs baseline, each side's level as the judge summarised it
    canaries = [_finite(metric.canary_value) if metric else None for metric in metrics]
    baselines = [_finite(metric.baseline_value) if metric else None for metric in metrics]
    levels = [value for value in canaries + baselines if value is not None]
    lo = min([0.0, *levels])
    hi = max(levels, default=1.0)
    hi = hi * 1.15 if hi > lo else lo + 1.0
    level_y = Linear(lo, hi, top + PANEL_HEIGHT, top)
    canary_points = [
        (x(s), level_y(v)) if v is not None else None for s, v in zip(seconds, canaries, strict=True)
    ]
    baseline_points = [
        (x(s), level_y(v)) if v is not None else None for s, v in zip(seconds, baselines, strict=True)
    ]
    panels.append(
        Panel(
            title="canary vs baseline",
            top=top,
            height=PANEL_HEIGHT,
            ticks=charts.value_ticks(lo, hi, level_y),
            lines={"canary": charts.line_path(canary_points), "baseline": charts.line_path(baseline_points)},
            band="",
            tolerance=[],
            bad_zone=None,
            reference=None,
        )
    )
    top += PANEL_HEIGHT + PANEL_GAP
    # 2. the main test: canary / baseline with the judge's confidence band and the tolerance
    ratio_panel, ratio_y = _ratio_panel(metrics, seconds, x, top)
    panels.append(ratio_panel)
    top += PANEL_HEIGHT + PANEL_GAP
    absolute_y: Linear | None = None
    if has_absolute:
        absolute_panel, absolute_y = _absolute_panel(metrics, seconds, x, top)
        panels.append(absolute_panel)
        top += PANEL_HEIGHT + PANEL_GAP
    axis_y = top - PANEL_GAP + 4

    points = []
    for look, metric, second, canary, baseline in zip(
        looks, metrics, seconds, canaries, baselines, strict=True
    ):
        main = _test(metric, None)
        estimate = _finite(metric.estimate) if metric else None
        absolute = _test(metric, TestName.ABSOLUTE)
        absolute_value = _finite(absolute.estimate) if absolute else None
        points.append(
            LookPoint(
                x=x(second),
                seconds=round(second, 3),
                verdict=str(metric.verdict) if metric else ("error" if look.verdict is None else "nodata"),
                canary=canary,
                baseline=baseline,
                canary_y=level_y(canary) if canary is not None else None,
                baseline_y=level_y(baseline) if baseline is not None else None,
                estimate=estimate,
                ci_low=_finite(main.ci_low) if main else None,
                ci_high=_finite(main.ci_high) if main else None,
                estimate_y=ratio_y(estimate) if estimate is not None else None,
                absolute=absolute_value,
                absolute_y=absolute_y(absolute_value) if absolute_y and absolute_value is not None else None,
            )
        )
    return MetricChart(
        metric=name,
        kind=str(latest.kind),
        direction=str(latest.direction),
        critical=latest.critical,
        verdict=str(latest.verdict),
        explanation=latest.explanation,
        settle=latest.settle,
        tolerance_text=_tolerance_text(latest),
        width=CHART_WIDTH,
        height=axis_y + 26,
        plot_left=CHART_LEFT,
        plot_right=CHART_WIDTH - CHART_RIGHT,
        axis_y=axis_y,
        x_ticks=charts.time_ticks(0.0, x.hi, x, relative=True),
        panels=panels,
        looks=points,
    )


def _bounds_points(
    metrics: list[MetricVerdict | None],
    seconds: list[float],
    x: Linear,
    y: Linear | Log,
    name: TestName | None,
) -> tuple[
    list[tuple[float, float] | None], list[tuple[float, float] | None], list[tuple[float, float] | None]
]:
    estimates, uppers, lowers = [], [], []
    for metric, second in zip(metrics, seconds, strict=True):
        test = _test(metric, name)
        estimate = _finite(test.estimate) if test else None
        low, high = (_finite(test.ci_low), _finite(test.ci_high)) if test else (None, None)
        estimates.append((x(second), y(estimate)) if estimate is not None else None)
        uppers.append((x(second), y(high)) if high is not None and low is not None else None)
        lowers.append((x(second), y(low)) if high is not None and low is not None else None)
    return estimates, uppers, lowers


def _ratio_panel(
    metrics: list[MetricVerdict | None], seconds: list[float], x: Linear, top: float
) -> tuple[Panel, Log]:
    values = [1.0]
    allowed_low = allowed_high = None
    for metric in metrics:
        test = _test(metric)
        if test is None:
            continue
        values += [
            v
            for v in (test.estimate, test.ci_low, test.ci_high)
            if v is not None and math.isfinite(v) and v > 0
        ]
        allowed_low = test.allowed_low if test.allowed_low is not None else allowed_low
        allowed_high = test.allowed_high if test.allowed_high is not None else allowed_high
    values += [v for v in (allowed_low, allowed_high) if v is not None and v > 0]
    lo = max(min(values) / 1.25, RATIO_FLOOR)
    hi = min(max(values) * 1.25, RATIO_CEILING)
    y = Log(lo, hi, top + PANEL_HEIGHT, top)
    estimates, uppers, lowers = _bounds_points(metrics, seconds, x, y, None)
    tolerance = [(y(edge), edge) for edge in (allowed_high, allowed_low) if edge is not None and edge > 0]
    bad_zone = (top, y(allowed_high)) if allowed_high is not None else None
    return (
        Panel(
            title="canary / baseline, log scale: confidence band, tolerance",
            top=top,
            height=PANEL_HEIGHT,
            ticks=charts.log_ticks(lo, hi, y),
            lines={"estimate": charts.line_path(estimates)},
            band=charts.band_path(uppers, lowers),
            tolerance=tolerance,
            bad_zone=bad_zone,
            reference=(y(1.0), "no change"),
        ),
        y,
    )


def _absolute_panel(
    metrics: list[MetricVerdict | None], seconds: list[float], x: Linear, top: float
) -> tuple[Panel, Linear]:
    values = [0.0]
    allowed = None
    for metric in metrics:
        test = _test(metric, TestName.ABSOLUTE)
        if test is None:
            continue
        values += [
            v for v in (test.estimate, test.ci_low, test.ci_high) if v is not None and math.isfinite(v)
        ]
        allowed = test.allowed_high if test.allowed_high is not None else allowed
    if allowed is not None:
        values.append(allowed)
    lo, hi = min(values), max(values)
    hi = hi + (hi - lo) * 0.15 if hi > lo else lo + 1.0
    y = Linear(lo, hi, top + PANEL_HEIGHT, top)
    estimates, uppers, lowers = _bounds_points(metrics, seconds, x, y, TestName.ABSOLUTE)
    return (
        Panel(
            title="event ratio, canary minus baseline: confidence band, tolerance",
            top=top,
            height=PANEL_HEIGHT,
            ticks=charts.value_ticks(lo, hi, y),
            lines={"estimate": charts.line_path(estimates)},
            band=charts.band_path(uppers, lowers),
            tolerance=[(y(allowed), allowed)] if allowed is not None else [],
            bad_zone=(top, y(allowed)) if allowed is not None else None,
            reference=(y(0.0), "no change") if lo <= 0 <= hi else None,
        ),
        y,
    )


def _tolerance_text(metric: MetricVerdict) -> str:
    main = _test(metric)
    parts = []
    if main is not None:
        if main.allowed_high is not None:
            parts.append(f"up to {charts.format_ratio(main.allowed_high)} the baseline")
        if main.allowed_low is not None:
            parts.append(f"down to {charts.format_ratio(main.allowed_low)} the baseline")
    absolute = _test(metric, TestName.ABSOLUTE)
    if absolute is not None and absolute.allowed_high is not None:
        parts.append(
            f"or an event ratio up to {charts.format_number(absolute.allowed_high)} above the baseline's"
        )
    return "tolerated: " + ", ".join(parts) if parts else ""


# --- fleets ---------------------------------------------------------------------------------------------------

MAX_CELLS = 1000
FLEET_COLUMNS = 50


def fleet_grid(target: TargetStatus) -> FleetGrid:
    """The fleet as a grid of sites coloured by state (from the status summary: counts per state and the
    failed sites' names); beyond MAX_CELLS sites a cell stands for several, and says so."""
    total = max(target.sites_total, sum(target.sites_by_state.values()))
    per_cell = max(1, math.ceil(total / MAX_CELLS))
    by_state = dict(target.sites_by_state)
    unaccounted = total - sum(by_state.values())
    if unaccounted > 0:  # sites the summary has not counted yet have not been touched
        by_state["pending"] = by_state.get("pending", 0) + unaccounted
    counts = in_site_order(by_state)  # as the grid fills: sites move in fleet order
    cells: list[str] = []
    for state, count in counts:
        cells += [state] * math.ceil(count / per_cell)
    columns = min(FLEET_COLUMNS, max(len(cells), 1))
    return FleetGrid(
        target=target.target,
        total=total,
        per_cell=per_cell,
        columns=columns,
        cell=12.0,
        cells=cells,
        counts=counts,
        failed_sites=list(target.failed_sites),
    )


# --- commits --------------------------------------------------------------------------------------------------


def commit_rows(
    plan: DeliveryPlan, status: DeliveryStatus, infos: dict[str, CommitInfo], template: str | None
) -> list[CommitRow]:
    rows = []
    for stage_name, name in _targets_in_order(plan, status.targets.values()):
        target = status.targets[name]
        for sha in target.commits:
            info = infos.get(sha)
            url = commit_url(template, plan.gitops_repo, sha) if template else ""
            rows.append(
                CommitRow(
                    sha=sha,
                    target=name,
                    stage=stage_name,
                    step=info.step if info else "",
                    subject=info.subject if info else "",
                    author=info.author if info else "",
                    date=info.date if info else "",
                    url=url,
                    external=bool(template),
                    dropped=sha in status.off_branch,
                )
            )
    rows.sort(key=lambda row: row.date or "~")
    return rows


def _targets_in_order(plan: DeliveryPlan, targets: Iterable[TargetStatus]) -> list[tuple[str, str]]:
    known = {target.target: target.stage for target in targets}
    ordered = [(stage.name, name) for stage in plan.stages for name in stage.targets if name in known]
    return ordered + [(stage, name) for name, stage in known.items() if (stage, name) not in ordered]
