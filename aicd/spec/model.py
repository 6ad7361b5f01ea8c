"""The delivery spec as an immutable, typed model (built only from a validated document)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aicd.judge.model import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_NO_DATA_LIMIT,
    DEFAULT_TOLERANCE,
    JudgeConfig,
    MetricConfig,
)
from aicd.people import Person
from aicd.spec.durations import parse_duration, parse_percent
from aicd.steps import Step
from aicd.strategies import BlueGreenStrategy, CanaryStrategy, parse_strategy
from aicd.targets import TARGET_KINDS, TargetConfig
from aicd.verification import URL_KEYS, Verification

if TYPE_CHECKING:
    from aicd.governance.model import IncidentPlan, PolicyPlan, SchedulePlan

# What a failed step rolls back; what a newer delivery of the app does to older running ones.
RollbackScope = Literal["target", "stage", "release"]
Concurrency = Literal["supersede", "queue"]

DEFAULT_BUILD_TIMEOUT_S = 20 * 60.0
DEFAULT_COMMAND_TIMEOUT_S = 10 * 60.0
DEFAULT_PROGRESS_DEADLINE_S = 10 * 60.0
DEFAULT_APPROVAL_TIMEOUT_S = 24 * 3600.0
DEFAULT_ANALYSIS_INTERVAL_S = 30.0
DEFAULT_POLL_INTERVAL_S = 60.0
DEFAULT_PROMETHEUS_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Command:
    name: str
    argv: tuple[str, ...]
    timeout_s: float
    env: dict[str, str] = field(default_factory=dict, hash=False)  # literal values
    secret_env: tuple[str, ...] = ()  # names of secrets the worker holds; never their values


@dataclass(frozen=True)
class Build:
    command: tuple[str, ...]
    artifact: str
    timeout_s: float
    env: dict[str, str] = field(default_factory=dict, hash=False)
    secret_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    name: str
    kind: str
    path: str
    region: str | None
    progress_deadline_s: float
    config: TargetConfig = field(hash=False)  # the kind's typed config (aicd.targets)
    flags: str | None = None  # its flagd flag-definition file in the GitOps repository
    urls: dict[str, str] = field(
        default_factory=dict, hash=False
    )  # placeholder (url, preview.url, ...) -> URL


@dataclass(frozen=True)
class WriteKeys:
    """Write paths (aicd.yamledit) in a target's file; weight and canary_image None: the file has no canary."""

    image: str = "image.tag"
    weight: str | None = "canary.weight"
    canary_image: str | None = "canary.tag"
    preview: str | None = "preview.tag"  # blue-green: the version under test, without live traffic
    previous: str | None = "previous.tag"  # blue-green: the version switched away from, kept warm a while


@dataclass(frozen=True)
class SecretSource:
    """Where the worker reads a secret at each use: an environment variable or a file on the worker. The
    spec (and so the plan, the workflow history and status) only ever holds the name or the path."""

    env: str | None = None
    file: str | None = None

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"


@dataclass(frozen=True)
class PrometheusConfig:
    """How the analysis reaches Prometheus (or Mimir, Cortex, Thanos, Grafana Cloud): TLS is verified
    against the system's CAs, or ``ca_cert`` (a PEM file on the worker), unless ``insecure`` says not to."""

    url: str
    timeout_s: float = DEFAULT_PROMETHEUS_TIMEOUT_S
    headers: dict[str, str] = field(default_factory=dict, hash=False)
    bearer: SecretSource | None = None  # Authorization: Bearer <token>
    basic_username: str | None = None  # HTTP basic auth, with the password from basic_password
    basic_password: SecretSource | None = None
    ca_cert: str | None = None
    insecure: bool = False


DEFAULT_POD_LABEL = "pod"


@dataclass(frozen=True)
class PodQuery:
    """How the baseline of a metric judged per pod is read: ``query`` (PromQL with {{ track }}) returns one
    series per pod, told apart by the value of ``label``."""

    query: str
    label: str = DEFAULT_POD_LABEL


@dataclass(frozen=True)
class Analysis:
    prometheus: PrometheusConfig
    interval_s: float
    judge: JudgeConfig  # the metrics and the judge's settings (alpha, noDataLimit, minSamples, warm-up)
    queries: dict[str, str] = field(hash=False)  # metric name -> PromQL with {{ track }}
    totals: dict[str, str] = field(hash=False)  # metric name -> PromQL of the total, count metrics only
    # metric name -> the baseline's per-pod reading: (PromQL with {{ track }}, the label that names the pod)
    pods: dict[str, PodQuery] = field(default_factory=dict, hash=False)

    @property
    def metrics(self) -> tuple[MetricConfig, ...]:
        return self.judge.metrics


@dataclass(frozen=True)
class Approval:
    approvers: tuple[str, ...]
    min_approvals: int
    timeout_s: float


@dataclass(frozen=True)
class Stage:
    name: str
    waves: tuple[tuple[str, ...], ...]
    steps: tuple[Step, ...]
    approval: Approval | None
    verify: tuple[Verification, ...] = ()  # runs after every target of the stage is promoted
    # Any strategy but a canary (whose steps are `steps`, as in every plan before strategies had kinds).
    strategy: BlueGreenStrategy | None = None


@dataclass(frozen=True)
class DeliverySpec:
    name: str
    source_repo: str
    branches: tuple[str, ...]
    poll_interval_s: float
    build: Build | None
    tests: tuple[Command, ...]
    provision: tuple[Command, ...]
    gitops_repo: str
    gitops_branch: str
    targets: dict[str, Target] = field(hash=False)
    write: WriteKeys = WriteKeys()
    analysis: Analysis | None = None
    stages: tuple[Stage, ...] = ()
    rollback_scope: RollbackScope = "stage"
    slack_channel: str | None = None
    concurrency: Concurrency = "supersede"
    # Governance (aicd.governance.model): a Rego policy gate, windows and freezes, incident hooks.
    policy: PolicyPlan | None = None
    schedule: SchedulePlan | None = None
    incidents: IncidentPlan | None = None
    people: tuple[Person, ...] = ()  # who is who across Slack, the dashboard and the CLI (aicd.people)
    raw: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def _command(raw: dict[str, Any]) -> Command:
    return Command(
        name=raw["name"],
        argv=tuple(raw["command"]),
        timeout_s=parse_duration(raw["timeout"]) if "timeout" in raw else DEFAULT_COMMAND_TIMEOUT_S,
        env=dict(raw.get("env", {})),
        secret_env=tuple(raw.get("secretEnv", ())),
    )


def _secret(raw: dict[str, Any]) -> SecretSource:
    return SecretSource(env=raw.get("env"), file=raw.get("file"))


def _prometheus(raw: dict[str, Any]) -> PrometheusConfig:
    auth = raw.get("auth", {})
    basic = auth.get("basic")
    return PrometheusConfig(
        url=raw["url"].rstrip("/"),
        timeout_s=parse_duration(raw["timeout"]) if "timeout" in raw else DEFAULT_PROMETHEUS_TIMEOUT_S,
        headers=dict(raw.get("headers", {})),
        bearer=_secret(auth["bearer"]) if "bearer" in auth else None,
        basic_username=basic["username"] if basic else None,
        basic_password=_secret(basic["password"]) if basic else None,
        ca_cert=raw.get("caCert"),
        insecure=bool(raw.get("insecure", False)),
    )


def _analysis(raw: dict[str, Any]) -> Analysis:
    interval_s = parse_duration(raw["interval"]) if "interval" in raw else DEFAULT_ANALYSIS_INTERVAL_S
    metrics = tuple(
        MetricConfig(
            name=metric["name"],
            kind=metric["kind"],
            direction=metric.get("direction", "increase"),
            tolerance=parse_percent(metric["tolerance"]) if "tolerance" in metric else DEFAULT_TOLERANCE,
            absolute_tolerance=parse_percent(metric["absoluteTolerance"])
            if "absoluteTolerance" in metric
            else 0.0,
            max=metric.get("max"),
            min=metric.get("min"),
            critical=bool(metric.get("critical", False)),
            interval_correlation=float(metric["intervalCorrelation"])
            if "intervalCorrelation" in metric
            else None,
            per_pod="perPod" in metric,
        )
        for metric in raw.get("metrics", [])
    )
    return Analysis(
        prometheus=_prometheus(raw["prometheus"]),
        interval_s=interval_s,
        judge=JudgeConfig(
            metrics=metrics,
            alpha=float(raw.get("alpha", DEFAULT_ALPHA)),
            no_data_limit=parse_percent(raw["noDataLimit"])
            if "noDataLimit" in raw
            else DEFAULT_NO_DATA_LIMIT,
            min_samples=int(raw.get("minSamples", DEFAULT_MIN_SAMPLES)),
            warmup_intervals=int(raw.get("warmupIntervals", 0)),
            interval_s=interval_s,
        ),
        queries={metric["name"]: metric["query"] for metric in raw.get("metrics", [])},
        totals={metric["name"]: metric["total"] for metric in raw.get("metrics", []) if "total" in metric},
        pods={
            metric["name"]: PodQuery(
                query=metric["perPod"].get("query", metric["query"]),
                label=metric["perPod"].get("label", DEFAULT_POD_LABEL),
            )
            for metric in raw.get("metrics", [])
            if "perPod" in metric
        },
    )


def build_model(document: dict[str, Any]) -> DeliverySpec:
    """Typed model of a document that passed schema and semantic validation."""
    from aicd.governance.model import incidents_from, policy_from, schedule_from  # it builds on this module

    spec = document["spec"]
    build = spec.get("build")
    targets = {
        name: Target(
            name=name,
            kind=raw["kind"],
            path=raw["path"],
            region=raw.get("region"),
            progress_deadline_s=(
                parse_duration(raw["progressDeadline"])
                if "progressDeadline" in raw
                else DEFAULT_PROGRESS_DEADLINE_S
            ),
            config=TARGET_KINDS[raw["kind"]].parse(raw),
            flags=raw.get("flags"),
            urls={name: raw[key] for name, key in URL_KEYS.items() if key in raw},
        )
        for name, raw in spec["targets"].items()
    }
    stages = []
    for raw in spec["stages"]:
        waves = tuple(tuple(wave) for wave in raw["waves"]) if "waves" in raw else (tuple(raw["targets"]),)
        strategy = parse_strategy(raw.get("strategy"))
        approval = raw.get("approval")
        stages.append(
            Stage(
                name=raw["name"],
                waves=waves,
                steps=tuple(strategy.steps()) if isinstance(strategy, CanaryStrategy) else (),
                strategy=strategy if isinstance(strategy, BlueGreenStrategy) else None,
                verify=tuple(Verification.parse(run) for run in raw.get("verify", [])),
                approval=(
                    Approval(
                        approvers=tuple(approval["approvers"]),
                        min_approvals=int(approval.get("minApprovals", 1)),
                        timeout_s=(
                            parse_duration(approval["timeout"])
                            if "timeout" in approval
                            else DEFAULT_APPROVAL_TIMEOUT_S
                        ),
                    )
                    if approval
                    else None
                ),
            )
        )
    write = spec.get("write", {})
    return DeliverySpec(
        name=document["metadata"]["name"],
        source_repo=spec["source"]["repo"],
        branches=tuple(spec["source"]["branches"]),
        poll_interval_s=(
            parse_duration(spec["source"]["pollInterval"])
            if "pollInterval" in spec["source"]
            else DEFAULT_POLL_INTERVAL_S
        ),
        build=(
            Build(
                command=tuple(build["command"]),
                artifact=build["artifact"],
                timeout_s=parse_duration(build["timeout"]) if "timeout" in build else DEFAULT_BUILD_TIMEOUT_S,
                env=dict(build.get("env", {})),
                secret_env=tuple(build.get("secretEnv", ())),
            )
            if build
            else None
        ),
        tests=tuple(_command(raw) for raw in spec.get("test", [])),
        provision=tuple(_command(raw) for raw in spec.get("provision", [])),
        gitops_repo=spec["gitops"]["repo"],
        gitops_branch=spec["gitops"].get("branch", "main"),
        targets=targets,
        write=WriteKeys(
            image=write.get("image", WriteKeys.image),
            weight=write.get("weight", WriteKeys.weight),
            canary_image=write.get("canaryImage", WriteKeys.canary_image),
            preview=write.get("preview", WriteKeys.preview),
            previous=write.get("previous", WriteKeys.previous),
        ),
        analysis=_analysis(spec["analysis"]) if "analysis" in spec else None,
        stages=tuple(stages),
        rollback_scope=spec.get("rollback", {}).get("scope", "stage"),
        slack_channel=spec.get("notifications", {}).get("slack", {}).get("channel"),
        concurrency=spec.get("concurrency", "supersede"),
        policy=policy_from(spec.get("policy")),
        schedule=schedule_from(spec["schedule"]) if "schedule" in spec else None,
        incidents=incidents_from(spec.get("notifications", {})),
        people=tuple(Person(name, **identities) for name, identities in spec.get("people", {}).items()),
        raw=document,
    )
