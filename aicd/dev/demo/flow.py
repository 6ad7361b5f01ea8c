"""The demo's flow: merge each release, deliver it through Temporal, steer its gates, check the outcome,
then check what the targets serve; `run_demo()` ties it together."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Mapping

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
SERVE_SAMPLES = 30  # requests per target in the final "what runs now" check


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


def check_serving(
    stack: DemoStack, desired: Mapping[str, str], samples: int = SERVE_SAMPLES
) -> tuple[dict[str, dict[str, int]], dict[str, str | None], list[str]]:
    """Ask each target's proxy `samples` times which version answers, and the reconciler which canary runs:
    after the deliveries every target must serve exactly the version Git says (`desired`), no canary."""
    assert stack.reconciler is not None
    serving: dict[str, dict[str, int]] = {}
    canaries: dict[str, str | None] = {}
    problems: list[str] = []
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        for name, url in stack.reconciler.proxy_urls().items():
            counts: collections.Counter[str] = collections.Counter()
            for _ in range(samples):
                try:
                    counts[http.get(f"{url}/").headers.get("x-version", "?")] += 1
                except httpx.HTTPError as error:
                    counts[f"error: {type(error).__name__}"] += 1
            serving[name] = dict(counts)
            canaries[name] = stack.reconciler.status(name).get("canary")
            if set(counts) != {desired.get(name)}:
                problems.append(f"{name} serves {dict(counts)}, Git says {desired.get(name)}")
            if canaries[name] is not None:
                problems.append(f"{name} still runs canary {canaries[name]}")
    return serving, canaries, problems


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
            report.serving, report.canaries, problems = check_serving(stack, desired)
            report.problems.extend(problems)
            report.gitops_log = gitops_log(layout.gitops_repo, spec.gitops_branch)
            report.traffic = stack.loadgen.stats() if stack.loadgen is not None else None
            report.total_seconds = time.monotonic() - began
            if before_stop is not None:
                before_stop(stack, report)
        finally:
            report.problems.extend(stack.stop())
    report.total_seconds = time.monotonic() - began
    return report
