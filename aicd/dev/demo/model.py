"""What the demo is about: its releases, options, observer protocol and report (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aicd.dev.loadgen import LoadStats
from aicd.messages import DeliveryStatus
from aicd.resources import example_spec

DEFAULT_SPEC = example_spec("demo.yaml")


class DemoError(RuntimeError):
    """The demo could not run (a component did not start, a spec is invalid); the message says why."""


class DemoInterrupted(DemoError):
    """Ctrl-C / SIGTERM: the demo stopped early (and stopped everything it had started)."""


@dataclass(frozen=True)
class Release:
    version: str
    branch: str
    summary: str
    error_ratio: float
    added_latency_ms: float = 0.0
    expect: str = "succeeded"  # the delivery phase that makes this release's part of the demo a success
    # A build that ships other code than its tag says: the app answers with this version instead. The
    # deliveries cannot tell; the demo's final check (what each target serves, per Git) must.
    claims_version: str | None = None

    def app_yaml(self, app: str) -> str:
        claims = f"claims_version: '{self.claims_version}'\n" if self.claims_version else ""
        return (
            f"# demo-app {self.version}: {self.summary}\n"
            f"name: {app}\nerror_ratio: {self.error_ratio}\nadded_latency_ms: {self.added_latency_ms}\n"
            + claims
        )


INITIAL = Release("1.0", "main", "the version running before the demo", 0.0)
GOOD = Release("1.1", "release/1.1", "a good release (no errors)", 0.0, expect="succeeded")
BAD = Release("1.2", "release/1.2", "a bad release (30% of requests fail)", 0.3, expect="failed")


@dataclass
class DemoOptions:
    state_dir: Path = Path(".aicd")
    spec: Path = DEFAULT_SPEC
    auto_approve: bool = False  # approve gates (and resume inconclusive analyses) as the listed approver
    temporal_port: int | None = None  # None: 7233 if free, else any free port; 0: any free port
    ui_port: int | None = None
    ui: bool = True
    load_rate: float = 30.0  # requests per second to each target
    # Overrides of the spec's timings (seconds), for tests and impatient people.
    analysis_duration: float | None = None
    analysis_interval: float | None = None
    pause: float | None = None
    release_timeout: float = 600.0
    releases: tuple[Release, ...] = (GOOD, BAD)


@dataclass(frozen=True)
class GitOpsCommit:
    sha: str
    subject: str
    step: str  # Aicd-Step trailer ("" for commits made by hand)
    delivery: str  # Aicd-Delivery trailer


@dataclass(frozen=True)
class Traffic:
    """What the load generator saw over the last few seconds, split into what a release does (its own 5xx
    answers) and what a busy machine does (requests the app did not answer in time: timeouts, the proxy's
    5xx), so the live view never blames a good release for a starved laptop."""

    rate: float  # requests per second, all targets
    error_share: float  # share of requests answered with a 5xx, by the app or the proxy
    no_answer_share: float  # share of requests the app did not answer: no HTTP answer, or the proxy's 5xx
    by_version: dict[str, float]  # version -> share of the app's answers
    error_share_by_version: dict[str, float] = field(
        default_factory=dict
    )  # version -> its answers' 5xx share


@dataclass
class LiveState:
    """One frame of the live view."""

    release: Release
    status: DeliveryStatus
    elapsed: float
    running: dict[str, dict[str, Any]]  # the reconciler's view per target: stable, canary, weight, phase
    traffic: Traffic
    versions: dict[str, str]  # artifact tag -> release version, for friendlier labels


@dataclass
class ReleaseOutcome:
    release: Release
    revision: str
    delivery_id: str
    status: DeliveryStatus
    seconds: float
    rollback_commits: list[GitOpsCommit] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # how it differed from what the demo expects
    notes: list[str] = field(default_factory=list)  # worth knowing, but the demo still went as it should

    @property
    def as_expected(self) -> bool:
        return not self.problems


@dataclass
class DemoReport:
    state_dir: Path
    spec_path: Path | None = None
    temporal_address: str | None = None
    temporal_ui: str | None = None
    dashboard_url: str | None = None
    prometheus_url: str | None = None
    versions: dict[str, str] = field(default_factory=dict)  # artifact tag -> release version
    outcomes: list[ReleaseOutcome] = field(default_factory=list)
    serving: dict[str, dict[str, int]] = field(default_factory=dict)  # target -> version -> answers
    canaries: dict[str, str | None] = field(default_factory=dict)  # target -> canary the reconciler runs
    gitops_log: list[GitOpsCommit] = field(default_factory=list)
    traffic: LoadStats | None = None  # everything the load generator sent during the demo
    app: str = ""
    targets: list[str] = field(default_factory=list)  # in the spec's order
    gitops_branch: str = "main"
    problems: list[str] = field(default_factory=list)  # checks after the deliveries
    load_notes: list[str] = field(default_factory=list)  # what a busy machine did (timeouts), not a failure
    setup_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.as_expected for o in self.outcomes) and not self.problems

    def workflow_url(self, delivery_id: str) -> str | None:
        if not self.temporal_ui:
            return None
        return f"{self.temporal_ui}/namespaces/default/workflows/{delivery_id}"


class DemoObserver(Protocol):
    """How the demo shows itself; every method is called from the thread running the demo, except
    `approve`/`resume`, which run in a worker thread (they may block on a prompt)."""

    def note(self, text: str) -> None: ...

    def release_started(self, release: Release, revision: str, delivery_id: str) -> None: ...

    def progress(self, state: LiveState) -> None: ...

    def approve(self, release: Release, status: DeliveryStatus, stage: str, approver: str) -> bool: ...

    def resume(self, release: Release, status: DeliveryStatus, target: str, actor: str) -> bool: ...

    def release_finished(self, outcome: ReleaseOutcome) -> None: ...


class QuietObserver:
    """Collects notes, approves every gate and resumes nothing (tests, scripts)."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.frames = 0

    def note(self, text: str) -> None:
        self.notes.append(text)

    def release_started(self, release: Release, revision: str, delivery_id: str) -> None:
        self.notes.append(f"release {release.version}: {delivery_id}")

    def progress(self, state: LiveState) -> None:
        self.frames += 1

    def approve(self, release: Release, status: DeliveryStatus, stage: str, approver: str) -> bool:
        return True

    def resume(self, release: Release, status: DeliveryStatus, target: str, actor: str) -> bool:
        return False

    def release_finished(self, outcome: ReleaseOutcome) -> None:
        self.notes.append(f"release {outcome.release.version}: {outcome.status.phase}")
