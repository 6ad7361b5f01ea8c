"""The chaos runner: many deliveries on the real embedded stack while faults are injected at seeded random
points, then a verdict computed from Git and Temporal alone.

What runs (all on loopback, every process in its own group and stopped at the end):
- Temporal's dev server (SQLite file, a fixed port so a restart comes back where clients expect it) and the
  aicd worker as a separate process (`python worker.py`), exactly as `aicd dev` runs them;
- one bare GitOps repository shared by every delivery (so pushes race), with a `pre-receive` hook that refuses
  every push while a flag file exists;
- the loopback Kubernetes/Argo CD stand-in (threads of this process) with a time-window outage hook;
- four demo-app exporters (stable/canary of a healthy and of a broken release, the broken canary answering 40 %
  errors) under steady load, scraped every second by Debian's Prometheus.

Faults, drawn from `random.Random(seed)` and injected one after another: SIGKILL of the worker (restarted after
a delay), stop/start of the Temporal dev server, pushes refused, Prometheus stopped while an analysis runs, the
Argo CD API answering 500 or hanging. The harness never acts as a human.

The verdict (`check_run`) reads only the GitOps branch and the records taken from Temporal (workflow status,
results, status queries, target workflow histories): terminal states, one commit per step, no reported commit
missing from the branch, no canary promoted past an analysis whose final look did not pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

from aicd.argocd_manifests import render_applications
from aicd.client import get_status, handle_for, start_delivery
from aicd.dev.loadgen import LoadGenerator
from aicd.dev.ports import free_port, wait_http_ok
from aicd.dev.processes import ManagedProcess, signal_group
from aicd.dev.prometheus import EmbeddedPrometheus
from aicd.dev.temporal import DevStackError, EmbeddedTemporal
from aicd.messages import DeliveryStatus, Trigger, rollout_workflow_id
from aicd.plan import DeliveryPlan
from aicd.testing.engine import commits, git, make_repo, plan_from, release_remote_locks, spec_document
from aicd.testing.standins.kube_argocd import KubeArgoCD, _Fault
from aicd.trailers import split_step
from aicd.yamledit import get_path

T = TypeVar("T")

FAULT_KINDS = (
    "worker_kill",
    "server_restart",
    "push_refused",
    "prometheus_stop",
    "argocd_500",
    "argocd_hang",
)
TASK_QUEUE = "chaos"
BRANCH = "main"
SEED_CONTENT = "image:\n  tag: v0\ncanary:\n  weight: 0\n"
# (app label, track) -> error ratio: the broken release's canary answers 40 % errors.
EXPORTERS = {
    ("healthy", "stable"): 0.0,
    ("healthy", "canary"): 0.0,
    ("broken", "stable"): 0.0,
    ("broken", "canary"): 0.4,
}
SETTLED_TARGET_STATES = {"awaiting-resume", "promoted", "failed", "aborted", "rolled-back"}
# How long each fault lasts (seconds), per kind: long enough to hit work in flight, short enough that the
# retry budgets (push: 30 re-applies then 20 activity attempts; sync: 10 attempts) outlast it.
FAULT_SECONDS = {
    "worker_kill": (0.5, 3.0),  # the worker's downtime
    "server_restart": (1.0, 4.0),  # the server's downtime
    "push_refused": (3.0, 10.0),
    "prometheus_stop": (4.0, 10.0),
    "argocd_500": (3.0, 10.0),
    "argocd_hang": (3.0, 10.0),  # below the driver's 15 s request timeout, so hung requests finish late
}


@dataclass
class ChaosConfig:
    seed: int = 1
    deliveries: int = 8
    faults: int = 6  # total faults; at least one of every kind when >= len(FAULT_KINDS)
    start_span_s: float = 30.0  # deliveries start spread over this span
    fault_span_s: float = 45.0  # faults are scheduled over this span (run one after another)
    deadline_s: float = (
        180.0  # the whole run, from the first delivery start; what still runs then is incorrect
    )
    analysis_duration_s: int = 12
    analysis_interval_s: int = 3
    root: Path = field(default_factory=lambda: Path("chaos-run"))
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))


_runtime: Runtime | None = None


def _client_runtime() -> Runtime:
    """A Temporal runtime whose core logs (its retries while the server is down are expected here) go to
    Python logging - stderr - instead of stdout, where the run's report goes."""
    global _runtime
    if _runtime is None:
        forwarding = LogForwardingConfig(logger=logging.getLogger("aicd.chaos.temporal-core"))
        _runtime = Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(
                    filter=TelemetryFilter(core_level="WARN", other_level="ERROR"), forwarding=forwarding
                )
            )
        )
    return _runtime


# --- records and the checker (pure: Git + what Temporal said) ------------------------------------------------


@dataclass
class TargetRecord:
    name: str
    stage: str
    path: str
    steps: list[tuple[int, str]]  # (index, kind) of the stage's canary steps
    final_looks: list[str] = field(
        default_factory=list
    )  # outcome of each analysis' final look, in step order
    human_resumes: int = 0  # resume signals in the target's history


@dataclass
class DeliveryRecord:
    delivery_id: str
    trailer: str  # Aicd-Delivery value, "<app>@<revision>"
    healthy: bool
    phase: str  # the delivery's phase; "running" / Temporal's status name when it did not end normally
    reason: str = ""
    awaiting_human: bool = False  # paused with a target awaiting-resume and a pause reason
    reported_commits: list[str] = field(default_factory=list)
    targets: list[TargetRecord] = field(default_factory=list)
    image_key: str = "image.tag"
    artifact_tag: str = ""
    seed_content: str = SEED_CONTENT

    @property
    def outcome(self) -> str:
        return f"{'healthy' if self.healthy else 'broken'}:{self.phase}"


@dataclass
class CheckResult:
    deliveries: int = 0
    correct: int = 0
    duplicate_commits: int = 0
    lost_commits: int = 0
    unsafe_promotions: int = 0
    human_resumes: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def _step_index(step: str) -> float | None:
    """`<stage>/<target>/<n>-<kind>` -> n, `.../promote` -> infinity, a rollback -> None."""
    last = split_step(step)[2]
    if last == "promote":
        return float("inf")
    head = last.split("-", 1)[0]
    return float(head) if head.isdigit() else None


def check_run(gitops: str, records: list[DeliveryRecord], branch: str = BRANCH) -> CheckResult:
    """Judge a run from the GitOps branch and the records read from Temporal."""
    result = CheckResult(deliveries=len(records))
    log = commits(gitops, branch)
    on_branch = {entry["sha"] for entry in log}
    per_step = Counter(
        (entry["Aicd-Delivery"], entry["Aicd-Step"])
        for entry in log
        if "Aicd-Step" in entry and "Aicd-Delivery" in entry
    )
    bad: set[str] = set()

    def problem(record: DeliveryRecord, text: str) -> None:
        bad.add(record.delivery_id)
        result.problems.append(f"{record.delivery_id} ({record.outcome}): {text}")

    for record in records:
        result.outcomes[record.outcome] += 1
        mine = {step: count for (delivery, step), count in per_step.items() if delivery == record.trailer}
        for step, count in mine.items():
            if count > 1:
                result.duplicate_commits += count - 1
                problem(record, f"{count} commits for step {step}")
        for sha in record.reported_commits:
            if sha not in on_branch:
                result.lost_commits += 1
                problem(record, f"reported commit {sha[:12]} is not on {branch}")
        for target in record.targets:
            result.human_resumes += target.human_resumes
            prefix = f"{target.stage}/{target.name}/"
            indices = [
                index for step in mine if step.startswith(prefix) and (index := _step_index(step)) is not None
            ]
            analyses = [index for index, kind in target.steps if kind == "analysis"]
            unsafe = ""
            for order, analysis_index in enumerate(analyses):
                if not any(index > analysis_index for index in indices):
                    continue  # nothing was committed past this analysis
                look = target.final_looks[order] if order < len(target.final_looks) else "none"
                if look != "pass" and target.human_resumes == 0:
                    unsafe = f"{target.name} committed past analysis step {analysis_index} whose final look was {look}"
                    break
            if not unsafe and not record.healthy and f"{prefix}promote" in mine:
                unsafe = f"{target.name} of a broken release was promoted"
            if unsafe:
                result.unsafe_promotions += 1
                problem(record, unsafe)
            if record.phase == "succeeded":  # every step that changes desired state left its commit
                wanted = [f"{prefix}{index}-{kind}" for index, kind in target.steps if kind == "setWeight"]
                for step in [*wanted, f"{prefix}promote"]:
                    if step not in mine:
                        problem(record, f"no commit for step {step}")
        _check_terminal(gitops, branch, record, problem)
    result.correct = sum(1 for record in records if record.delivery_id not in bad)
    return result


def _check_terminal(
    gitops: str, branch: str, record: DeliveryRecord, problem: Callable[[DeliveryRecord, str], None]
) -> None:
    """A broken release never succeeds; a healthy one succeeds, or ends failed with a reason (a fault that
    outlasted its retry budget - but never a failed analysis), or waits for a human with a reason."""
    phase = record.phase
    if phase == "succeeded":
        if not record.healthy:
            problem(record, "a broken release succeeded")
            return
        for target in record.targets:
            content = yaml.safe_load(_show(gitops, branch, target.path) or "") or {}
            if get_path(content, record.image_key) != record.artifact_tag:
                problem(record, f"{target.path} on {branch} does not run {record.artifact_tag} after success")
    elif phase == "failed":
        if not record.reason:
            problem(record, "failed without a reason")
        if record.healthy and record.reason.startswith("analysis failed"):
            problem(record, f"a healthy canary failed its analysis: {record.reason}")
        for target in record.targets:
            if _show(gitops, branch, target.path) != record.seed_content.rstrip("\n"):
                problem(record, f"{target.path} not restored after the failure")
    elif phase == "paused":
        if not record.awaiting_human:
            problem(record, "paused without a target awaiting a human and a reason")
    else:
        problem(record, f"not a correct terminal state: {phase} {record.reason}".rstrip())


def _show(gitops: str, branch: str, path: str) -> str | None:
    try:
        return git("--git-dir", gitops, "show", f"{branch}:{path}")
    except subprocess.CalledProcessError:
        return None


# --- the Argo CD stand-in with a time-window outage ----------------------------------------------------------


class ChaosArgoCD(KubeArgoCD):
    """The stand-in, plus an outage: once armed, it starts with the next request (so it meets a sync in flight)
    and lasts `seconds`; meanwhile every request answers 500, or hangs until the outage ends."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._outage: tuple[str, float, float | None] | None = None  # (kind, seconds, ends at once begun)
        self.outage_hits = 0

    def arm_outage(self, kind: str, seconds: float) -> None:
        with self._cond:
            self._outage = (kind, seconds, None)

    def end_outage(self) -> None:
        with self._cond:
            self._outage = None

    def _take_fault(self, method: str, is_watch: bool) -> _Fault | None:
        with self._cond:
            outage = self._outage
            if outage is not None:
                kind, seconds, until = outage
                if until is None:
                    until = time.monotonic() + seconds
                    self._outage = (kind, seconds, until)
                left = until - time.monotonic()
                if left > 0:
                    self.outage_hits += 1
                    return (
                        _Fault("status", 1, status=500) if kind == "500" else _Fault("hang", 1, seconds=left)
                    )
        return super()._take_fault(method, is_watch)


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Case:
    index: int
    healthy: bool
    plan: DeliveryPlan
    start_at: float  # seconds after the run starts
    started: bool = False
    settled: bool = False


@dataclass
class PlannedFault:
    at: float
    kind: str
    seconds: float


@dataclass
class ChaosReport:
    seed: int
    faults: Counter[str]
    fault_hits: Counter[str]  # evidence that faults met work in flight
    check: CheckResult
    unplanned_worker_restarts: int
    leftover_processes: list[str]
    elapsed_s: float

    def summary_line(self) -> str:
        check = self.check
        return (
            f"seed={self.seed} faults={sum(self.faults.values())} deliveries={check.deliveries} correct={check.correct}"
            f" duplicate_commits={check.duplicate_commits} lost_commits={check.lost_commits}"
            f" unsafe_promotions={check.unsafe_promotions}"
        )

    def lines(self) -> list[str]:
        out = [f"seed: {self.seed}"]
        out.append(
            "faults injected: " + ", ".join(f"{kind}={self.faults.get(kind, 0)}" for kind in FAULT_KINDS)
        )
        out.append(
            "fault hits: " + ", ".join(f"{kind}={count}" for kind, count in sorted(self.fault_hits.items()))
        )
        out.append(
            "deliveries by outcome: "
            + ", ".join(f"{name}={count}" for name, count in sorted(self.check.outcomes.items()))
        )
        out.append(
            f"unplanned worker restarts: {self.unplanned_worker_restarts}; human resumes: {self.check.human_resumes}"
        )
        out.append(f"leftover processes: {len(self.leftover_processes)}; elapsed: {self.elapsed_s:.0f}s")
        out += [f"PROBLEM {text}" for text in self.check.problems]
        out.append(self.summary_line())
        return out


def plan_faults(rng: random.Random, count: int, span_s: float) -> list[PlannedFault]:
    """`count` faults at random points of the span: every kind once first (when count allows), the rest drawn."""
    kinds = list(FAULT_KINDS)[: max(count, 0)] if count < len(FAULT_KINDS) else list(FAULT_KINDS)
    kinds += [rng.choice(FAULT_KINDS) for _ in range(count - len(kinds))]
    rng.shuffle(kinds)
    times = sorted(rng.uniform(3.0, span_s) for _ in kinds)
    return [
        PlannedFault(at, kind, round(rng.uniform(*FAULT_SECONDS[kind]), 1))
        for at, kind in zip(times, kinds, strict=True)
    ]


class ChaosRun:
    def __init__(self, config: ChaosConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.root = Path(config.root).resolve()
        self.log = config.log
        self.t0 = time.monotonic()
        self.stack: EmbeddedTemporal | None = None
        self.client: Client | None = None
        self.prometheus: EmbeddedPrometheus | None = None
        self.standin: ChaosArgoCD | None = None
        self.exporters: list[ManagedProcess] = []
        self.loadgen: LoadGenerator | None = None
        self.cases: list[Case] = []
        self.statuses: dict[str, DeliveryStatus] = {}
        self.faults: Counter[str] = Counter()
        self.fault_hits: Counter[str] = Counter()
        self.unplanned_restarts = 0
        self.stack_lock = asyncio.Lock()  # faults that touch the stack vs the worker supervisor
        self.refuse_flag = self.root / "refuse-pushes"
        self.refused_log = self.root / "refused-pushes.log"
        self.gitops = ""

    def say(self, text: str) -> None:
        self.log(f"[chaos {time.monotonic() - self.t0:6.1f}s] {text}")

    # -- setup

    def _setup_processes(self) -> None:
        exporters_dir = self.root / "exporters"
        exporters_dir.mkdir(parents=True, exist_ok=True)
        addresses = []
        for (app, track), ratio in EXPORTERS.items():
            config_file = exporters_dir / f"{app}-{track}.yaml"
            config_file.write_text(f"error_ratio: {ratio}\nadded_latency_ms: 2\n")
            port = free_port()
            argv = [
                sys.executable,
                "-m",
                "aicd.dev.demo_app",
                "--port",
                str(port),
                "--track",
                track,
                "--version",
                f"{app}-{track}",
                "--config",
                str(config_file),
                "--app",
                app,
                "--exit-with-parent",
            ]
            self.exporters.append(ManagedProcess(argv, exporters_dir / f"{app}-{track}.log").start())
            addresses.append(f"127.0.0.1:{port}")
        for address in addresses:
            if not wait_http_ok(f"http://{address}/health", timeout=60):
                raise RuntimeError(f"exporter {address} did not come up")
        self.loadgen = LoadGenerator([f"http://{address}" for address in addresses], rate=20)
        self.loadgen.__enter__()
        # A fixed port: Prometheus comes back at the same URL after a stop, as the spec's `prometheus.url` expects.
        self.prometheus = EmbeddedPrometheus(self.root / "prometheus", scrape_interval="1s", port=free_port())
        self.prometheus.start(timeout=60)
        self.prometheus.set_targets(addresses)
        self.standin = ChaosArgoCD(bookmark_interval_s=1.0)
        self.standin.start()
        self.stack = EmbeddedTemporal(self.root / "stack", port=free_port(), ui=False, write_info=False)
        self.stack.start(timeout=90)
        self.stack.start_worker(task_queue=TASK_QUEUE, timeout=120)

    def _setup_repos(self) -> None:
        config = self.config
        source, revision = make_repo(self.root, "source", {"README": "chaos\n"})
        kinds: list[tuple[bool, str, bool]] = []  # (healthy, target mix, analysis)
        # Every ingredient at least once, then drawn from the seed.
        required = [
            (True, "git", True),
            (False, "argocd", True),
            (True, "argocd", False),
            (False, "git", True),
            (True, "both", True),
        ]
        for index in range(config.deliveries):
            if index < len(required):
                kinds.append(required[index])
                continue
            healthy = self.rng.random() < 0.6
            kinds.append(
                (
                    healthy,
                    self.rng.choice(["git", "argocd", "both"]),
                    (not healthy) or self.rng.random() < 0.7,
                )
            )
        self.rng.shuffle(kinds)
        files: dict[str, str] = {}
        documents = []
        kubeconfig = (
            self.standin.write_kubeconfig(self.root / "kubeconfig", context="chaos") if self.standin else None
        )
        for index, (healthy, mix, analysis) in enumerate(kinds):
            app = f"chaos-{index:02d}-{'ok' if healthy else 'bad'}"
            targets: dict[str, dict[str, Any]] = {}
            if mix in ("git", "both"):
                targets["web"] = {"kind": "git", "path": f"apps/{app}/web/values.yaml"}
            if mix in ("argocd", "both"):
                targets["api"] = {
                    "kind": "argocd",
                    "path": f"apps/{app}/api/values.yaml",
                    "app": f"{app}-api",
                    "context": "chaos",
                    "kubeconfig": str(kubeconfig),
                    "progressDeadline": "2m",
                }
            for target in targets.values():
                files[target["path"]] = SEED_CONTENT
            steps: list[dict[str, Any]] = [{"setWeight": 20}]
            steps += (
                [{"analysis": {"duration": f"{config.analysis_duration_s}s"}}]
                if analysis
                else [{"pause": "2s"}]
            )
            steps += [{"setWeight": 100}]
            label = "healthy" if healthy else "broken"
            extra: dict[str, Any] = {"rollback": {"scope": "stage"}}
            if analysis:
                assert self.prometheus is not None
                extra["analysis"] = {
                    "prometheus": {"url": self.prometheus.url},
                    "interval": f"{config.analysis_interval_s}s",
                    "metrics": [
                        {
                            # No errors on either side is shown safe only with an absolute tolerance.
                            "name": "error-rate",
                            "kind": "count",
                            "critical": True,
                            "absoluteTolerance": "5%",
                            "query": f'sum(rate(http_requests_total{{app="{label}",track="{{{{ track }}}}",code=~"5.."}}[5s]))',
                            "total": f'sum(rate(http_requests_total{{app="{label}",track="{{{{ track }}}}"}}[5s]))',
                        }
                    ],
                }
            documents.append((index, healthy, app, targets, steps, extra))
        self.gitops, _ = make_repo(self.root, "gitops", files)
        hook = Path(self.gitops) / "hooks" / "pre-receive"
        # The remote refuses every push while the flag exists ("! [remote rejected] ... pre-receive hook declined").
        hook.write_text(
            f"#!/bin/sh\nif [ -e '{self.refuse_flag}' ]; then\n  echo refused >> '{self.refused_log}'\n"
            "  echo 'chaos: pushes refused for a while' >&2\n  exit 1\nfi\nexit 0\n"
        )
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        for index, healthy, app, targets, steps, extra in documents:
            document = spec_document(
                app,
                source,
                self.gitops,
                targets,
                [
                    {
                        "name": "prod",
                        "waves": [[name] for name in targets],
                        "strategy": {"canary": {"steps": steps}},
                    }
                ],
                **extra,
            )
            plan = plan_from(document, revision)
            if self.standin is not None:
                for manifest in render_applications(
                    app, self.gitops, BRANCH, {n: t for n, t in targets.items() if t["kind"] == "argocd"}
                ):
                    stale = {
                        "sync": {"status": "Synced", "revision": "0" * 40},
                        "health": {"status": "Healthy"},
                        "reconciledAt": "2020-01-01T00:00:00Z",
                    }
                    self.standin.add_application(manifest, status=stale)
            start_at = config.start_span_s * index / max(config.deliveries - 1, 1)
            self.cases.append(Case(index, healthy, plan, start_at))

    # -- the stack, under faults

    async def _connect(self) -> Client:
        assert self.stack is not None
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client = await Client.connect(self.stack.address, runtime=_client_runtime())
                return self.client
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    def _start_server(self) -> None:
        assert self.stack is not None
        deadline = time.monotonic() + 90
        while True:
            try:
                self.stack.start(timeout=60)
                return
            except DevStackError as error:
                # the old server's sockets can hold the port for a moment after it exited
                if "taken" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _ensure_worker(self) -> bool:
        """Start the worker if it is not running; True when it had to be started."""
        assert self.stack is not None
        if self.stack.worker is not None and self.stack.worker.alive():
            return False
        if self.stack.worker is not None:
            self.stack.stop_worker()
        self.stack.start_worker(task_queue=TASK_QUEUE, timeout=120)
        return True

    async def _inject(self, fault: PlannedFault) -> None:
        assert self.stack is not None and self.prometheus is not None and self.standin is not None
        kind, seconds = fault.kind, fault.seconds
        if kind == "prometheus_stop":
            await self._wait_for_analysis(timeout=30)
        self.say(f"fault {kind} for {seconds}s")
        self.faults[kind] += 1
        if kind == "worker_kill":
            async with self.stack_lock:
                worker = self.stack.worker
                if worker is not None:
                    signal_group(worker.pid, signal.SIGKILL)
                await asyncio.to_thread(self.stack.stop_worker)
                release_remote_locks(self.gitops)
                try:
                    await asyncio.sleep(seconds)
                finally:
                    await asyncio.to_thread(self._ensure_worker)
        elif kind == "server_restart":
            async with self.stack_lock:
                server, self.stack.server = self.stack.server, None
                # The worker keeps running: it must ride out the outage as it would against a real cluster.
                if server is not None:
                    await asyncio.to_thread(server.stop)
                try:
                    await asyncio.sleep(seconds)
                finally:
                    await asyncio.to_thread(self._start_server)
                    await self._connect()
                    if await asyncio.to_thread(self._ensure_worker):
                        self.unplanned_restarts += 1
                        self.say("the worker did not survive the server restart; restarted")
        elif kind == "push_refused":
            self.refuse_flag.touch()
            try:
                await asyncio.sleep(seconds)
            finally:
                self.refuse_flag.unlink(missing_ok=True)
        elif kind == "prometheus_stop":
            await asyncio.to_thread(self.prometheus.stop)
            try:
                await asyncio.sleep(seconds)
            finally:
                await asyncio.to_thread(self.prometheus.start, 60.0)
        elif kind in ("argocd_500", "argocd_hang"):
            hits = self.standin.outage_hits
            self.standin.arm_outage("500" if kind == "argocd_500" else "hang", seconds)
            try:
                # It begins with the next request to the API (a sync starting or a watch renewing), if one
                # comes within a while; then it lasts its seconds.
                waited = 0.0
                while self.standin.outage_hits == hits and waited < 30.0:
                    await asyncio.sleep(0.1)
                    waited += 0.1
                await asyncio.sleep(seconds)
            finally:
                self.standin.end_outage()
            self.fault_hits[kind] += self.standin.outage_hits - hits
        else:  # a new kind needs code here
            raise ValueError(kind)

    async def _wait_for_analysis(self, timeout: float) -> None:
        """Prometheus goes away while some canary is being analysed (or after `timeout` regardless)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            analysing = [
                status
                for case in self.cases
                if not case.settled
                and (status := self.statuses.get(case.plan.delivery_id))
                and any(
                    t.step_kind == "analysis" and t.state == "progressing" for t in status.targets.values()
                )
            ]
            if analysing:
                self.fault_hits["prometheus_stop"] += len(analysing)
                return
            await asyncio.sleep(0.5)

    async def _run_faults(self, planned: list[PlannedFault]) -> None:
        for fault in planned:
            delay = fault.at - (time.monotonic() - self.t0)
            if delay > 0:
                await asyncio.sleep(delay)
            await self._inject(fault)

    async def _start_deliveries(self) -> None:
        for case in self.cases:
            delay = case.start_at - (time.monotonic() - self.t0)
            if delay > 0:
                await asyncio.sleep(delay)
            # The server may be restarting right now: try again until it answers.
            for attempt in range(240):
                try:
                    assert self.client is not None
                    await asyncio.wait_for(
                        start_delivery(self.client, case.plan, Trigger("cli", "chaos"), queue=TASK_QUEUE), 10
                    )
                    case.started = True
                    break
                except Exception as error:
                    if attempt % 10 == 0:
                        self.say(
                            f"start of {case.plan.app} not accepted yet: {type(error).__name__}: {str(error)[:160]}"
                        )
                    await asyncio.sleep(0.5)
            self.say(f"started {case.plan.app} ({'healthy' if case.healthy else 'broken'})")

    async def _poll(self, case: Case) -> None:
        assert self.client is not None
        handle = handle_for(self.client, case.plan.delivery_id)
        description = await asyncio.wait_for(handle.describe(), 5)
        if description.status != WorkflowExecutionStatus.RUNNING:
            case.settled = True
            return
        status = await asyncio.wait_for(get_status(self.client, case.plan.delivery_id), 5)
        self.statuses[case.plan.delivery_id] = status
        if (
            status.phase == "paused"
            and status.targets
            and all(t.state in SETTLED_TARGET_STATES for t in status.targets.values())
        ):
            case.settled = True  # waits for a human, who never comes in a chaos run

    async def _watch(self, faults: asyncio.Task[None], starts: asyncio.Task[None]) -> None:
        deadline = self.t0 + self.config.deadline_s
        while time.monotonic() < deadline:
            if not self.stack_lock.locked() and self.stack is not None and self.stack.server is not None:
                async with self.stack_lock:
                    if self.stack.worker is None or not self.stack.worker.alive():
                        self.unplanned_restarts += 1
                        self.say("the worker exited on its own; restarting it")
                        await asyncio.to_thread(self._ensure_worker)
            for case in self.cases:
                if case.started and not case.settled:
                    with contextlib.suppress(Exception):
                        await self._poll(case)
            if faults.done() and starts.done() and all(case.settled for case in self.cases):
                return
            await asyncio.sleep(1.0)
        self.say("deadline reached; what still runs counts as incorrect")

    # -- records

    async def _record(self, case: Case) -> DeliveryRecord:
        assert self.client is not None
        plan = case.plan
        stage = plan.stages[0]
        record = DeliveryRecord(
            delivery_id=plan.delivery_id,
            trailer=f"{plan.app}@{plan.revision}",
            healthy=case.healthy,
            phase="not-started",
            image_key=plan.write.image,
            artifact_tag=plan.artifact_tag,
        )
        if not case.started:
            return record
        handle = handle_for(self.client, plan.delivery_id)
        description = await handle.describe()
        status = await _retry(lambda: get_status(self.client, plan.delivery_id), 60)  # type: ignore[arg-type]
        commits_reported = status.commits()
        if description.status == WorkflowExecutionStatus.COMPLETED:
            result = await handle.result()
            record.phase, record.reason = result.phase, result.reason
            commits_reported += result.commits
        elif description.status == WorkflowExecutionStatus.RUNNING:
            record.phase = status.phase if status.phase == "paused" else "running"
            record.reason = status.pause_reason or status.reason
            record.awaiting_human = bool(status.pause_reason) and any(
                t.state == "awaiting-resume" for t in status.targets.values()
            )
        else:
            record.phase = (description.status.name if description.status else "unknown").lower()
        record.reported_commits = sorted(set(commits_reported))
        for name in stage.targets:
            if name not in status.targets:
                continue
            target = TargetRecord(
                name, stage.name, plan.targets[name].path, [(step.index, step.name) for step in stage.steps]
            )
            target.final_looks, target.human_resumes = await self._analysis_history(
                rollout_workflow_id(plan.delivery_id, stage.name, name)
            )
            record.targets.append(target)
        return record

    async def _analysis_history(self, workflow_id: str) -> tuple[list[str], int]:
        """From a target workflow's history: the outcome of each analysis step's final look (in step order,
        one analysis step per distinct `start`), and how many resumes a human sent."""
        assert self.client is not None
        history = await self.client.get_workflow_handle(workflow_id).fetch_history()
        scheduled: dict[int, dict[str, Any]] = {}
        outcomes: dict[int, str] = {}
        resumes = 0
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                attributes = event.activity_task_scheduled_event_attributes
                if attributes.activity_type.name == "analysis_look":
                    scheduled[event.event_id] = json.loads(attributes.input.payloads[0].data)
            elif event.HasField("activity_task_completed_event_attributes"):
                completed = event.activity_task_completed_event_attributes
                if completed.scheduled_event_id in scheduled:
                    outcomes[completed.scheduled_event_id] = str(
                        json.loads(completed.result.payloads[0].data).get("outcome")
                    )
            elif event.HasField("workflow_execution_signaled_event_attributes"):
                resumes += event.workflow_execution_signaled_event_attributes.signal_name == "resume"
        finals: dict[float, str] = {}
        for event_id, request in sorted(scheduled.items()):
            if request.get("final"):
                finals[float(request["start"])] = outcomes.get(event_id, "error")
        return [finals[start] for start in sorted(finals)], resumes

    # -- the whole run

    async def run(self) -> ChaosReport:
        before = {process.pid for process in psutil.Process().children(recursive=True)}
        self.root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        records: list[DeliveryRecord] = []
        try:
            await asyncio.to_thread(self._setup_processes)
            await asyncio.to_thread(self._setup_repos)
            await self._connect()
            planned = plan_faults(self.rng, self.config.faults, self.config.fault_span_s)
            self.say(
                f"seed {self.config.seed}: {len(self.cases)} deliveries, faults planned: "
                + ", ".join(f"{f.kind}@{f.at:.0f}s/{f.seconds}s" for f in planned)
            )
            await asyncio.sleep(
                max(0.0, 7.0 - (time.monotonic() - started))
            )  # Prometheus picks file_sd targets up within ~5 s
            self.t0 = time.monotonic()
            faults = asyncio.create_task(self._run_faults(planned))
            starts = asyncio.create_task(self._start_deliveries())
            try:
                await self._watch(faults, starts)
            finally:
                for task in (faults, starts):
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            self.refuse_flag.unlink(missing_ok=True)
            async with self.stack_lock:
                if self.stack is not None and self.stack.server is None:
                    await asyncio.to_thread(self._start_server)
                    await self._connect()
                await asyncio.to_thread(self._ensure_worker)  # status queries need a worker
            records = [await self._record(case) for case in self.cases]
            self.fault_hits["push_refused"] += _lines(self.refused_log)
        finally:
            await asyncio.to_thread(self._teardown)
        leftovers = _leftovers(before)
        check = check_run(self.gitops, records)
        return ChaosReport(
            self.config.seed,
            self.faults,
            self.fault_hits,
            check,
            self.unplanned_restarts,
            leftovers,
            time.monotonic() - started,
        )

    def _teardown(self) -> None:
        with contextlib.suppress(Exception):
            if self.stack is not None:
                self.stack.stop()
        with contextlib.suppress(Exception):
            if self.prometheus is not None:
                self.prometheus.stop()
        with contextlib.suppress(Exception):
            if self.loadgen is not None:
                self.loadgen.__exit__(None, None, None)
        for process in self.exporters:
            with contextlib.suppress(Exception):
                process.stop()
        with contextlib.suppress(Exception):
            if self.standin is not None:
                self.standin.stop()


async def _retry(factory: Callable[[], Awaitable[T]], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.wait_for(factory(), 10)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def _leftovers(before: set[int]) -> list[str]:
    """Processes this run started that still live (zombies excluded: they are already gone)."""
    time.sleep(0.2)
    left = []
    for process in psutil.Process().children(recursive=True):
        if process.pid in before:
            continue
        with contextlib.suppress(psutil.Error):
            if process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
    return left


def run_chaos(config: ChaosConfig) -> ChaosReport:
    """Run one chaos run to the end (blocking)."""
    return asyncio.run(ChaosRun(config).run())
