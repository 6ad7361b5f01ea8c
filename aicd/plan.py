"""Expansion of a spec and a revision into the delivery it runs: the same code `aicd plan` prints and the
workflows execute. Plan objects are plain dataclasses so Temporal's converter carries them as input."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from aicd.gates import gate_lines, incident_lines
from aicd.governance.model import IncidentPlan, PolicyPlan, SchedulePlan
from aicd.judge.model import DEFAULT_MIN_SAMPLES, JudgeConfig, MetricConfig
from aicd.people import Person, Roster
from aicd.redact import redact_credentials
from aicd.spec.durations import format_duration
from aicd.spec.model import Concurrency, DeliverySpec, PodQuery, PrometheusConfig, RollbackScope
from aicd.spec.placeholders import render
from aicd.steps import Step
from aicd.strategies import BlueGreenStrategy, CanaryStrategy, StrategyKind
from aicd.targets import TARGET_KINDS, TargetConfig, TargetKind
from aicd.verification import Verification

REVISION = re.compile(r"^[0-9a-fA-F]{7,64}$")


@dataclass
class CommandPlan:
    name: str
    argv: list[str]
    timeout_s: float
    env: dict[str, str] = field(default_factory=dict)  # literal values, placeholders filled
    secret_env: list[str] = field(default_factory=list)  # names only: the worker reads the values


@dataclass
class TargetPlan:
    name: str
    kind: str
    path: str  # values file in the GitOps repo; edge paths keep {{ site }}
    region: str | None
    progress_deadline_s: float
    settings: TargetConfig | None = None  # the kind's typed config (aicd.targets); read it through typed()
    # Plans made before `settings` carried the kind's spec fields as written (running deliveries still do):
    # typed() parses them with the kind's own parser.
    config: dict[str, Any] = field(default_factory=dict)
    flags: str | None = None  # its flagd flag-definition file in the GitOps repository
    urls: dict[str, str] = field(default_factory=dict)  # placeholder (url, preview.url, ...) -> URL

    def files(self) -> list[str]:
        """Every file of the target in the GitOps repository (what a rollback restores)."""
        return [self.path, *([self.flags] if self.flags else [])]

    def typed(self) -> TargetKind:
        return self.settings if self.settings is not None else TARGET_KINDS[self.kind].parse(self.config)


@dataclass
class ApprovalPlan:
    approvers: list[str]
    min_approvals: int
    timeout_s: float


@dataclass
class StagePlan:
    name: str
    approval: ApprovalPlan | None
    waves: list[list[str]]
    steps: list[Step]  # each kind's typed step (aicd.steps)
    verify: list[Verification] = field(default_factory=list)  # after every target is promoted
    # Any strategy but a canary, whose steps are `steps` (as in every plan made before strategies had kinds).
    strategy: BlueGreenStrategy | None = None

    def rollout_strategy(self) -> StrategyKind:
        return self.strategy if self.strategy is not None else CanaryStrategy(list(self.steps))

    @property
    def targets(self) -> list[str]:
        return [target for wave in self.waves for target in wave]


@dataclass
class MetricPlan:
    config: MetricConfig
    query: str  # PromQL with {{ track }}
    total: str | None = None
    pod_query: str | None = None  # a metric judged per pod: PromQL with {{ track }}, one series per pod
    pod_label: str | None = None  # the label that tells its pods apart


@dataclass
class AnalysisPlan:
    interval_s: float
    alpha: float
    no_data_limit: float
    metrics: list[MetricPlan]
    min_samples: int = DEFAULT_MIN_SAMPLES
    warmup_intervals: int = 0
    prometheus: PrometheusConfig | None = None
    prometheus_url: str = ""  # plans made before `prometheus` carried the whole connection

    @property
    def connection(self) -> PrometheusConfig:
        return self.prometheus if self.prometheus is not None else PrometheusConfig(url=self.prometheus_url)

    def judge_config(
        self, names: list[str] | None = None, planned_intervals: int | None = None
    ) -> JudgeConfig:
        """The judge's configuration for the chosen metrics (all when ``names`` is empty) of one analysis
        step that may last ``planned_intervals`` intervals."""
        chosen = [metric.config for metric in self.metrics if not names or metric.config.name in names]
        return JudgeConfig(
            metrics=tuple(chosen),
            alpha=self.alpha,
            no_data_limit=self.no_data_limit,
            min_samples=self.min_samples,
            warmup_intervals=self.warmup_intervals,
            interval_s=self.interval_s,
            planned_intervals=planned_intervals,
        )


@dataclass
class WritePlan:
    """Write paths in a target's file (aicd.yamledit); weight and canary_image None: the file has no canary."""

    image: str
    weight: str | None
    canary_image: str | None
    # Blue-green keys (None: the file has none; plans made before blue-green have none either).
    preview: str | None = None
    previous: str | None = None

    def canary_values(self, tag: str, weight: int) -> dict[str, Any]:
        """What a setWeight step writes (nothing when the file has no canary keys)."""
        values: dict[str, Any] = {}
        if self.canary_image is not None:
            values[self.canary_image] = tag
        if self.weight is not None:
            values[self.weight] = weight
        return values

    def preview_values(self, tag: str) -> dict[str, Any]:
        """Blue-green: the release as the preview, without live traffic."""
        assert self.preview is not None, "validation requires write.preview for blue-green"
        return {self.preview: tag}

    def switch_values(self, tag: str) -> tuple[dict[str, Any], dict[str, str]]:
        """Blue-green's switch, one commit: the release takes live traffic (and stops being the preview), the
        version it replaces is kept warm as `previous`. Returns (values, copies): copies take the value a key
        held before the commit (the active version, which only the file knows)."""
        assert self.preview is not None and self.previous is not None
        values = {**self.promote_values(tag), self.preview: None}
        return values, {self.previous: self.image}

    def retire_values(self) -> dict[str, Any]:
        """Blue-green: the previous version retired after the scale-down delay."""
        assert self.previous is not None
        return {self.previous: None}

    def promote_values(self, tag: str) -> dict[str, Any]:
        """What the promotion writes: the release becomes stable, the canary stops."""
        values: dict[str, Any] = {self.image: tag}
        if self.weight is not None:
            values[self.weight] = 0
        if self.canary_image is not None:
            values[self.canary_image] = tag
        return values


@dataclass
class DeliveryPlan:
    app: str
    delivery_id: str
    revision: str
    revision_short: str
    artifact: str
    artifact_tag: str  # the part written to targets
    source_repo: str
    gitops_repo: str
    gitops_branch: str
    write: WritePlan
    build: CommandPlan | None
    tests: list[CommandPlan]
    provision: list[CommandPlan]
    targets: dict[str, TargetPlan]
    stages: list[StagePlan]
    analysis: AnalysisPlan | None
    rollback_scope: RollbackScope
    slack_channel: str | None
    concurrency: Concurrency = "supersede"  # what an older running delivery of the app does
    # supersede: how long this delivery waits for the older ones to withdraw their canaries before its first
    # write; one that has not ended by then is left to Git's ownership rules.
    supersede_wait_s: float = 300.0
    # Governance (aicd.governance): None in plans made before it, which then run without these gates.
    policy: PolicyPlan | None = None
    schedule: SchedulePlan | None = None
    incidents: IncidentPlan | None = None
    # Who is who (aicd.people): identities only, no secrets. Empty in plans made before people, and then
    # every identity is a person of its own, as it was.
    people: list[Person] = field(default_factory=list)

    def stage(self, name: str) -> StagePlan:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r} in delivery {self.delivery_id}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Any delivery's ID (older deliveries were named by 7-12 hex digits of their revision).
DELIVERY_ID = re.compile(r"delivery-[a-z0-9-]{1,53}-[0-9a-f]{7,64}(-[0-9a-z]{1,16})?")


def delivery_id(app: str, revision: str, suffix: str = "") -> str:
    """`delivery-<app>-<full revision>[-<suffix>]`: the suffix tells apart deliveries of one revision (a
    re-deploy, or one per push event); aicd.client chooses it when it starts the delivery."""
    base = f"delivery-{app}-{revision.lower()}"
    return f"{base}-{suffix}" if suffix else base


def artifact_tag(artifact: str) -> str:
    """`registry/app:tag` -> `tag`; an artifact without a tag is written whole."""
    last = artifact.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else artifact


def build_plan(spec: DeliverySpec, revision: str, *, artifact_override: str | None = None) -> DeliveryPlan:
    if not REVISION.fullmatch(revision):
        raise ValueError(f"revision {revision!r} is not a commit SHA (7 to 64 hex digits)")
    revision = revision.lower()
    short = revision[:7]
    variables = {"revision": revision, "revision.short": short}
    artifact = artifact_override or (render(spec.build.artifact, variables) if spec.build else revision)
    variables["artifact"] = artifact

    def command(
        name: str, argv: tuple[str, ...], timeout_s: float, env: dict[str, str], secret_env: tuple[str, ...]
    ) -> CommandPlan:
        return CommandPlan(
            name,
            [render(arg, variables, partial=True) for arg in argv],
            timeout_s,
            {key: render(value, variables, partial=True) for key, value in env.items()},
            list(secret_env),
        )

    targets = {
        name: TargetPlan(
            name=name,
            kind=target.kind,
            path=render(target.path, {**variables, "target": name}, partial=True),
            region=target.region,
            progress_deadline_s=target.progress_deadline_s,
            settings=target.config,
            flags=(
                render(target.flags, {**variables, "target": name}, partial=True) if target.flags else None
            ),
            urls=dict(target.urls),
        )
        for name, target in spec.targets.items()
    }
    analysis = None
    if spec.analysis is not None:
        judge = spec.analysis.judge
        analysis = AnalysisPlan(
            interval_s=spec.analysis.interval_s,
            alpha=judge.alpha,
            no_data_limit=judge.no_data_limit,
            metrics=[
                MetricPlan(
                    metric,
                    spec.analysis.queries[metric.name],
                    spec.analysis.totals.get(metric.name),
                    *_pod_reading(spec.analysis.pods.get(metric.name)),
                )
                for metric in judge.metrics
            ],
            min_samples=judge.min_samples,
            warmup_intervals=judge.warmup_intervals,
            prometheus=spec.analysis.prometheus,
        )
    return DeliveryPlan(
        app=spec.name,
        delivery_id=delivery_id(spec.name, revision),
        revision=revision,
        revision_short=short,
        artifact=artifact,
        artifact_tag=artifact_tag(artifact),
        source_repo=spec.source_repo,
        gitops_repo=spec.gitops_repo,
        gitops_branch=spec.gitops_branch,
        write=WritePlan(
            spec.write.image,
            spec.write.weight,
            spec.write.canary_image,
            spec.write.preview,
            spec.write.previous,
        ),
        build=(
            command("build", spec.build.command, spec.build.timeout_s, spec.build.env, spec.build.secret_env)
            if spec.build
            else None
        ),
        tests=[
            command(test.name, test.argv, test.timeout_s, test.env, test.secret_env) for test in spec.tests
        ],
        provision=[
            command(step.name, step.argv, step.timeout_s, step.env, step.secret_env)
            for step in spec.provision
        ],
        targets=targets,
        stages=[
            StagePlan(
                name=stage.name,
                approval=(
                    ApprovalPlan(
                        list(stage.approval.approvers), stage.approval.min_approvals, stage.approval.timeout_s
                    )
                    if stage.approval
                    else None
                ),
                waves=[list(wave) for wave in stage.waves],
                steps=list(stage.steps),
                verify=list(stage.verify),
                strategy=stage.strategy,
            )
            for stage in spec.stages
        ],
        analysis=analysis,
        rollback_scope=spec.rollback_scope,
        slack_channel=spec.slack_channel,
        concurrency=spec.concurrency,
        policy=spec.policy,
        # Without a spec schedule the organisation's calendar and `aicd freeze` still hold the delivery.
        schedule=spec.schedule if spec.schedule is not None else SchedulePlan(),
        incidents=spec.incidents,
        people=list(spec.people),
    )


def render_tree(plan: DeliveryPlan) -> str:
    """The plan as a readable tree for `aicd plan`."""
    lines = [
        f"delivery {plan.delivery_id}",
        f"  app {plan.app} @ {plan.revision}",
        f"  artifact {plan.artifact}",
    ]
    gitops = redact_credentials(plan.gitops_repo)
    lines.append(f"  gitops {gitops} ({plan.gitops_branch}); rollback scope: {plan.rollback_scope}")
    if plan.build:
        lines += _command_lines("build", plan.build)
    for test in plan.tests:
        lines += _command_lines(f"test {test.name}", test)
    for command in plan.provision:
        lines += _command_lines(f"provision {command.name}", command)
    for line in incident_lines(plan.incidents):
        lines.append(f"  {line}")
    if plan.people:
        lines.append("  people: " + "; ".join(_person_line(person) for person in plan.people))
    for stage in plan.stages:
        lines.append(f"  stage {stage.name}")
        if stage.approval:
            gate = stage.approval
            approvers = Roster.of(plan.people, gate.approvers).names()
            lines.append(
                f"    approval gate: {gate.min_approvals} of {', '.join(approvers)}"
                f" within {format_duration(gate.timeout_s)}"
            )
        lines += [f"    {line}" for line in gate_lines(plan.policy, plan.schedule, stage.name)]
        for wave_index, wave in enumerate(stage.waves):
            lines.append(f"    wave {wave_index + 1}: {', '.join(wave)} (in parallel)")
            for name in wave:
                target = plan.targets[name]
                where = f" {target.region}" if target.region else ""
                lines.append(f"      target {name} [{target.kind}{where}] {target.path}")
                lines += [f"        {line}" for line in target.typed().plan_lines()]
                if target.flags:
                    lines.append(f"        flags file {target.flags} (flagd; setFlag steps change it)")
                if target.urls:
                    lines.append(
                        "        urls: " + ", ".join(f"{{{{ {k} }}}}={v}" for k, v in target.urls.items())
                    )
                strategy = stage.rollout_strategy()
                if stage.strategy is not None:
                    lines.append(f"        strategy {strategy.name}")
                lines += [f"        {line}" for line in strategy.plan_lines(plan.write, plan.artifact_tag)]
        for run in stage.verify:
            each = " (once per target)" if run.per_target else ""
            lines.append(f"    after the stage: {run.describe()}{each}")
    return "\n".join(lines)


def _person_line(person: Person) -> str:
    return (
        f"{person.name} ({', '.join(f'{channel} {identity}' for channel, identity in person.identities())})"
    )


def _command_lines(label: str, command: CommandPlan) -> list[str]:
    lines = [f"  {label}: {' '.join(command.argv)}  [timeout {format_duration(command.timeout_s)}]"]
    if command.env:
        lines.append("    env: " + ", ".join(f"{key}={value}" for key, value in command.env.items()))
    if command.secret_env:
        lines.append(
            f"    secretEnv: {', '.join(command.secret_env)} (values from the worker's allowed secrets)"
        )
    return lines


def assignments(values: dict[str, Any]) -> str:
    """`path=value, ...` of what a step writes, for `aicd plan`."""
    return (
        ", ".join(f"{path}={value}" for path, value in values.items()) or "nothing written (no canary keys)"
    )


def _pod_reading(pods: PodQuery | None) -> tuple[str | None, str | None]:
    return (None, None) if pods is None else (pods.query, pods.label)
