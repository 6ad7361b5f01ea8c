"""The demo's flow: merge each release, deliver it through Temporal, steer its gates, check the outcome,
then check what the targets serve; `run_demo()` ties it together."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx
from temporalio.client import Client
from temporalio.service import RPCError

from aicd import client as deliveries
from aicd.dev.demo.effective_spec import load_demo_spec, write_effective_spec
from aicd.dev.demo.model import (
    INITIAL,
    DemoError,
    DemoInterrupted,
    DemoObserver,
    DemoOptions,
    DemoReport,
    LiveState,
    QuietObserver,
    Release,
    ReleaseOutcome,
)
from aicd.dev.demo.repos import DemoLayout, DemoRepos, gitops_log, stable_at_head
from aicd.dev.demo.stack import TASK_QUEUE, DemoStack
from aicd.dev.demo.state import DEMO_DIR, exclusive, prepare
from aicd.messages import DeliveryStatus, HumanAction, Trigger
from aicd.plan import build_plan
from aicd.spec.model import DeliverySpec

DEMO_ACTOR = "demo"
POLL_S = 0.5
SERVE_SAMPLES = 30  # answers per target in the final "what runs now" check
SERVE_TRIES = 3  # at most this many times SERVE_SAMPLES requests per target, for a starved machine
SERVE_TIMEOUT_S = 10.0  # per request: a busy laptop answers late, not wrongly


class _Run:
    """State shared by the deliveries of one demo run."""

    def __init__(
        self,
        options: DemoOptions,
        observer: DemoObserver,
        cancel: threading.Event,
        stack: DemoStack,
        repos: DemoRepos,
        spec: DeliverySpec,
        report: DemoReport,
    ) -> None:
        self.options = options
        self.observer = observer
        self.cancel = cancel
        self.stack = stack
        self.repos = repos
        self.spec = spec
        self.report = report

    async def deliver_all(self) -> None:
        assert self.stack.temporal is not None
        try:
            client = await self.stack.temporal.client()
            for release in self.options.releases:
                self.report.outcomes.append(await self.deliver(client, release))
        except (deliveries.ActionRefused, RPCError) as error:  # Temporal gone or refusing: say so plainly
            problem = self.stack.worker_problem() or ""
            raise DemoError(
                f"talking to Temporal at {self.stack.temporal.address} failed: {error} {problem}"
            ) from None

    async def deliver(self, client: Client, release: Release) -> ReleaseOutcome:
        revision = await asyncio.to_thread(self.repos.merge_release, release)
        self.report.versions[revision[:7]] = release.version
        self.observer.note(
            f"merged release {release.version} ({release.summary}) to {release.branch}: {revision[:12]}"
        )
        plan = build_plan(self.spec, revision)
        trigger = Trigger("demo", DEMO_ACTOR, release.branch, f"aicd demo: release {release.version}")
        started = await deliveries.start_delivery(client, plan, trigger, queue=TASK_QUEUE)
        self.observer.release_started(release, revision, started.delivery_id)
        began = time.monotonic()
        status = await self._follow(client, release, started.delivery_id, began)
        outcome = ReleaseOutcome(release, revision, started.delivery_id, status, time.monotonic() - began)
        self._check(outcome)
        self.observer.release_finished(outcome)
        return outcome

    async def _follow(
        self, client: Client, release: Release, delivery_id: str, began: float
    ) -> DeliveryStatus:
        asked_gates: set[str] = set()
        asked_resumes: set[tuple[str, int]] = set()
        deadline = began + self.options.release_timeout
        while True:
            if self.cancel.is_set():
                raise DemoInterrupted(f"interrupted during the delivery of release {release.version}")
            status = await deliveries.get_status(client, delivery_id)
            assert self.stack.meter is not None
            running = await asyncio.to_thread(self.stack.running)
            traffic = self.stack.meter.sample()
            elapsed = time.monotonic() - began
            self.observer.progress(
                LiveState(release, status, elapsed, running, traffic, dict(self.report.versions))
            )
            if status.terminal:
                return status
            if status.pending_approval and status.pending_approval not in asked_gates:
                asked_gates.add(status.pending_approval)
                await self._gate(client, release, status, status.pending_approval)
            for target in status.targets.values():
                if (
                    target.state == "awaiting-resume"
                    and (target.target, target.step_index) not in asked_resumes
                ):
                    asked_resumes.add((target.target, target.step_index))
                    await self._resume(client, release, status, target.target)
            problem = self.stack.worker_problem()
            if problem:
                raise DemoError(problem)
            if time.monotonic() >= deadline:
                raise DemoError(
                    f"release {release.version} ({delivery_id}) did not finish within "
                    f"{self.options.release_timeout:.0f}s (phase {status.phase})"
                )
            await asyncio.sleep(POLL_S)

    async def _gate(self, client: Client, release: Release, status: DeliveryStatus, stage: str) -> None:
        approver = next(iter(self._approvers(stage)), DEMO_ACTOR)
        if self.options.auto_approve:
            self.observer.note(f"approving stage {stage} as {approver} (--yes)")
            approved, reason = True, "approved automatically (aicd demo --yes)"
        else:
            approved = await asyncio.to_thread(self.observer.approve, release, status, stage, approver)
            reason = "approved at the aicd demo prompt" if approved else "rejected at the aicd demo prompt"
        if self.cancel.is_set():
            raise DemoInterrupted(f"interrupted at the approval of stage {stage}")
        action = HumanAction(approver, reason, stage=stage)
        try:
            await deliveries.send_action(
                client, status.delivery_id, "approve" if approved else "reject", action
            )
        except deliveries.ActionRefused as refused:
            self.observer.note(f"{'approval' if approved else 'rejection'} of {stage} refused: {refused}")

    async def _resume(self, client: Client, release: Release, status: DeliveryStatus, target: str) -> None:
        """An inconclusive analysis waits for a human: with --yes the demo resumes it (as the approver),
        otherwise it asks; either way the outcome notes it, since a clean demo needs no such help."""
        actor = next(iter(self._all_approvers()), DEMO_ACTOR)
        if self.options.auto_approve:
            self.observer.note(f"{target}: analysis inconclusive; resuming as {actor} (--yes)")
            resume = True
        else:
            resume = await asyncio.to_thread(self.observer.resume, release, status, target, actor)
        if self.cancel.is_set():
            raise DemoInterrupted(f"interrupted while {target} waited for a resume")
        if resume:
            with contextlib.suppress(deliveries.ActionRefused):
                await deliveries.send_action(
                    client, status.delivery_id, "resume", HumanAction(actor, "aicd demo")
                )

    def _approvers(self, stage: str) -> tuple[str, ...]:
        for candidate in self.spec.stages:
            if candidate.name == stage and candidate.approval is not None:
                return candidate.approval.approvers
        return ()

    def _all_approvers(self) -> list[str]:
        return [a for stage in self.spec.stages if stage.approval for a in stage.approval.approvers]

    def _check(self, outcome: ReleaseOutcome) -> None:
        """Did the release go the way the demo shows it should?"""
        status, release = outcome.status, outcome.release
        if status.phase != release.expect:
            why = f": {status.reason}" if status.reason else ""
            outcome.problems.append(f"ended {status.phase}, expected {release.expect}{why}")
        trailer = f"{self.spec.name}@{outcome.revision}"
        commits = [
            c
            for c in gitops_log(self.repos.layout.gitops_repo, self.spec.gitops_branch)
            if c.delivery == trailer
        ]
        outcome.rollback_commits = [c for c in commits if c.step.endswith("/rollback")]
        if release.expect == "succeeded":
            for name in self.spec.targets:
                target = status.targets.get(name)
                if target is None or target.state != "promoted" or target.weight != 100:
                    state = f"{target.state} at weight {target.weight}" if target else "never started"
                    outcome.problems.append(f"{name}: {state}, expected promoted at weight 100")
        else:
            if not outcome.rollback_commits:
                outcome.problems.append("no rollback commit in the GitOps repo")
            if "analysis failed" not in status.reason:
                outcome.problems.append(f"not failed by the analysis: {status.reason or 'no reason given'}")
        # An inconclusive analysis (too little data, e.g. on a starved machine) waits for a human; the
        # release still went where it should, so this is worth a note, not a failed demo.
        for action in status.actions:
            if action.kind == "resume":
                outcome.notes.append(f"an inconclusive analysis was resumed by {action.actor}")


@dataclass
class ServingCheck:
    """What each target answered in the final check, against what Git says it should run."""

    serving: dict[str, dict[str, int]] = field(default_factory=dict)  # target -> version -> answers
    canaries: dict[str, str | None] = field(default_factory=dict)  # target -> canary the reconciler runs
    problems: list[str] = field(default_factory=list)  # a wrong version served, a canary left: the demo fails
    load_notes: list[str] = field(default_factory=list)  # requests a busy machine did not answer in time


def check_serving(
    stack: DemoStack,
    desired: Mapping[str, str],
    samples: int = SERVE_SAMPLES,
    progress: Callable[[str], None] | None = None,
) -> ServingCheck:
    """Ask each target's proxy which version answers until `samples` answers came (or `SERVE_TRIES` times
    as many requests were sent), and the reconciler which canary runs. Every target must serve exactly the
    version Git says (`desired`) and no canary: that is what the demo exists to show. A request the app
    does not answer in time (a timeout, the proxy's 502/503 without a version) says the machine is busy,
    not which version runs: it is retried and reported as load, never as a failure; only a wrong version
    answering, or no answer at all, fails the check."""
    assert stack.reconciler is not None
    check = ServingCheck()
    say = progress or (lambda text: None)
    with httpx.Client(timeout=SERVE_TIMEOUT_S, trust_env=False) as http:
        for name, url in stack.reconciler.proxy_urls().items():
            counts: collections.Counter[str] = collections.Counter()
            unanswered: collections.Counter[str] = collections.Counter()
            sent = 0
            while sum(counts.values()) < samples and sent < samples * SERVE_TRIES:
                sent += 1
                try:
                    version = http.get(f"{url}/").headers.get("x-version")
                except httpx.HTTPError as error:
                    unanswered[type(error).__name__] += 1
                    time.sleep(min(2.0, 0.1 * sum(unanswered.values())))  # let a starved machine catch up
                    continue
                if version is None:
                    unanswered["proxy: no answer from the app"] += 1
                    continue
                counts[version] += 1
            check.serving[name] = dict(counts)
            check.canaries[name] = stack.reconciler.status(name).get("canary")
            want = desired.get(name)
            wrong = {version: n for version, n in counts.items() if version != want}
            answered = sum(counts.values())
            if wrong:
                served = ", ".join(f"{version} ({n}/{answered} answers)" for version, n in wrong.items())
                check.problems.append(f"{name} serves {served}; Git says {want}")
            elif not answered:
                check.problems.append(
                    f"{name}: no answer in {sent} requests, so what it serves is unknown"
                    f" (timeouts: {dict(unanswered)}); is the machine overloaded?"
                )
            if unanswered:
                check.load_notes.append(
                    f"{name}: {sum(unanswered.values())} of {sent} requests got no answer in time"
                    f" ({', '.join(f'{why} {n}' for why, n in unanswered.items())}): a busy machine, retried"
                )
            if check.canaries[name] is not None:
                check.problems.append(f"{name} still runs canary {check.canaries[name]}")
            verdict = "as Git says" if not wrong and answered else "NOT as Git says"
            say(
                f"checked {name}: {answered} answers from {', '.join(counts) or 'nobody'}, {verdict} ({want})"
            )
    return check


# --- the whole demo ---------------------------------------------------------------------------------------


def run_demo(
    options: DemoOptions,
    observer: DemoObserver | None = None,
    *,
    cancel: threading.Event | None = None,
    before_stop: Callable[[DemoStack, DemoReport], None] | None = None,
) -> DemoReport:
    """Run the demo; returns its report (`report.ok`: everything went as the demo says it should).

    DemoError when it cannot run, DemoInterrupted when `cancel` is set; either way every process the demo
    started is stopped before this returns or raises. `before_stop` runs with the stack still up."""
    observer = observer or QuietObserver()
    cancel = cancel or threading.Event()
    began = time.monotonic()
    state_dir = options.state_dir.resolve()
    layout = DemoLayout(state_dir / DEMO_DIR)
    template = load_demo_spec(options.spec)  # the committed spec must be valid before anything starts
    report = DemoReport(
        state_dir=layout.root,
        app=template.name,
        targets=list(template.targets),
        gitops_branch=template.gitops_branch,
    )
    with exclusive(state_dir):
        observer.note(f"preparing {layout.root} (source and GitOps repos, release {INITIAL.version} built)")
        prepare(layout)
        repos = DemoRepos(layout, template)
        initial_tag = repos.create()
        report.versions[initial_tag] = INITIAL.version
        # The stack needs targets, value keys and branch only: the same in the committed and effective spec.
        stack = DemoStack(layout, template, options)
        try:
            report.prometheus_url = stack.start_prometheus(observer.note)
            spec = write_effective_spec(options.spec, layout, report.prometheus_url, options)
            report.spec_path = layout.spec
            observer.note(f"wrote the effective spec {layout.spec} (valid)")
            stack.start(cancel, observer.note)
            assert stack.temporal is not None
            report.temporal_address = stack.temporal.address
            report.temporal_ui = stack.temporal.ui_url
            report.dashboard_url = stack.dashboard.url if stack.dashboard else None
            report.setup_seconds = time.monotonic() - began
            run = _Run(options, observer, cancel, stack, repos, spec, report)
            asyncio.run(run.deliver_all())
            desired = stable_at_head(layout, spec)
            observer.note(
                f"checking what each target serves ({SERVE_SAMPLES} answers each) against Git: "
                + ", ".join(f"{target} {tag}" for target, tag in desired.items())
            )
            checked = check_serving(stack, desired, progress=observer.note)
            report.serving, report.canaries = checked.serving, checked.canaries
            report.problems.extend(checked.problems)
            report.load_notes.extend(checked.load_notes)
            report.gitops_log = gitops_log(layout.gitops_repo, spec.gitops_branch)
            report.traffic = stack.loadgen.stats() if stack.loadgen is not None else None
            report.total_seconds = time.monotonic() - began
            if before_stop is not None:
                before_stop(stack, report)
        finally:
            report.problems.extend(stack.stop())
    report.total_seconds = time.monotonic() - began
    return report
