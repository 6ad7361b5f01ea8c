"""The embedded stack a demo runs on: Prometheus, the local reconciler, Temporal and the worker, and the
load generator, started in that order and stopped in reverse without leaving a process behind."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from aicd.dashboard.embedded import DashboardStartError, EmbeddedDashboard, start_embedded
from aicd.dev.demo.model import DemoError, DemoInterrupted, DemoOptions, Traffic
from aicd.dev.demo.repos import DemoLayout
from aicd.dev.loadgen import LoadGenerator, LoadStats
from aicd.dev.prometheus import EmbeddedPrometheus, PrometheusError
from aicd.dev.reconciler import LocalReconciler
from aicd.dev.temporal import DevStackError, DevStackInterrupted, EmbeddedTemporal
from aicd.spec.model import DeliverySpec

TASK_QUEUE = "aicd-demo"  # the demo's own worker, apart from any `aicd dev` worker


class TrafficMeter:
    """Recent traffic from the load generator's running totals."""

    WINDOW_S = 5.0

    def __init__(self, generator: LoadGenerator) -> None:
        self._generator = generator
        self._history: collections.deque[tuple[float, LoadStats]] = collections.deque()

    def sample(self) -> Traffic:
        now, stats = time.monotonic(), self._generator.stats()
        self._history.append((now, stats))
        while len(self._history) > 2 and now - self._history[1][0] >= self.WINDOW_S:
            self._history.popleft()
        then, old = self._history[0]
        sent = stats.sent - old.sent
        if sent <= 0 or now <= then:
            return Traffic(0.0, 0.0, 0.0, {})
        errors = sum(n - old.by_status.get(code, 0) for code, n in stats.by_status.items() if code >= 500)
        versions = {v: n - old.by_version.get(v, 0) for v, n in stats.by_version.items()}
        # "?": the proxy answered for an app that did not answer in time; that is the machine, not a version.
        proxy_answers = versions.pop("?", 0)
        answered = sum(n for n in versions.values() if n > 0) or 1
        shares = {v: n / answered for v, n in sorted(versions.items()) if n > 0}
        app_errors = {v: n - old.errors_by_version.get(v, 0) for v, n in stats.errors_by_version.items()}
        error_shares = {v: app_errors.get(v, 0) / n for v, n in sorted(versions.items()) if n > 0}
        no_answer = (stats.failed - old.failed) + proxy_answers
        return Traffic(sent / (now - then), errors / sent, no_answer / sent, shares, error_shares)


class DemoStack:
    """Prometheus, the reconciler, Temporal and the worker, the load generator: started in that order,
    stopped in reverse, each stop independent of the others so one failure leaves no orphans."""

    def __init__(self, layout: DemoLayout, spec: DeliverySpec, options: DemoOptions) -> None:
        self.layout = layout
        self.spec = spec
        self.options = options
        self.prometheus: EmbeddedPrometheus | None = None
        self.reconciler: LocalReconciler | None = None
        self.temporal: EmbeddedTemporal | None = None
        self.loadgen: LoadGenerator | None = None
        self.meter: TrafficMeter | None = None
        self.dashboard: EmbeddedDashboard | None = None

    def start_prometheus(self, note: Callable[[str], None]) -> str:
        """First, because the effective spec needs its URL (a free port) before anything else starts."""
        note("starting Prometheus")
        self.prometheus = EmbeddedPrometheus(self.layout.root / "prometheus", scrape_interval="1s")
        try:
            return self.prometheus.start()
        except PrometheusError as error:
            raise DemoError(str(error)) from None

    def start(self, cancel: threading.Event, note: Callable[[str], None]) -> None:
        """The rest of the stack, once Prometheus runs."""
        assert self.prometheus is not None, "start_prometheus() first"
        self._check(cancel)
        note("starting the local reconciler (demo app 1.0 on every target)")
        keys = {
            "image": self.spec.write.image,
            "canary": self.spec.write.canary_image,
            "weight": self.spec.write.weight,
            "preview": self.spec.write.preview,
            "previous": self.spec.write.previous,
        }
        self.reconciler = LocalReconciler(
            self.layout.gitops_repo,
            self.spec.gitops_branch,
            {name: {"path": target.path, "keys": keys} for name, target in self.spec.targets.items()},
            self.layout.artifacts,
            self.layout.root / "reconciler",
            sd_file=self.prometheus.sd_file,
        )
        reconciler_url = self.reconciler.start()
        self._check(cancel)
        note("starting Temporal and the aicd worker")
        self.temporal = EmbeddedTemporal(
            self.layout.root, self.options.temporal_port, self.options.ui_port, ui=self.options.ui
        )
        try:
            self.temporal.start(cancel=cancel)
            self.temporal.start_worker(
                task_queue=TASK_QUEUE, env={"AICD_RECONCILER_URL": reconciler_url}, cancel=cancel
            )
        except DevStackInterrupted:
            raise DemoInterrupted("interrupted during start-up") from None
        except DevStackError as error:
            raise DemoError(str(error)) from None
        self._wait_targets_healthy(cancel)
        approvers = [
            name for stage in self.spec.stages if stage.approval for name in stage.approval.approvers
        ]
        try:
            self.dashboard = start_embedded(self.temporal, approvers[0] if approvers else "demo")
        except DashboardStartError as error:
            raise DemoError(str(error)) from None
        board = self.dashboard
        note(f"dashboard {board.url}: to act there, sign in as {board.identity} with token {board.token}")
        reconciler = self.reconciler
        self.loadgen = LoadGenerator(lambda: reconciler.proxy_urls().values(), rate=self.options.load_rate)
        self.loadgen.start()
        self.meter = TrafficMeter(self.loadgen)
        note(
            f"load generator: {self.options.load_rate:g} requests/s to each of {', '.join(self.spec.targets)}"
        )

    @staticmethod
    def _check(cancel: threading.Event) -> None:
        if cancel.is_set():
            raise DemoInterrupted("interrupted during start-up")

    def _wait_targets_healthy(self, cancel: threading.Event, timeout: float = 60.0) -> None:
        assert self.reconciler is not None
        deadline = time.monotonic() + timeout
        while True:
            self._check(cancel)
            states = {name: self.reconciler.status(name) for name in self.spec.targets}
            if all(state["healthy"] for state in states.values()):
                return
            if time.monotonic() >= deadline:
                waiting = "; ".join(f"{n}: {s['message']}" for n, s in states.items() if not s["healthy"])
                raise DemoError(f"the local targets did not become healthy within {timeout:.0f}s: {waiting}")
            time.sleep(0.2)

    def worker_problem(self) -> str | None:
        worker = self.temporal.worker if self.temporal else None
        if worker is None or worker.alive():
            return None
        return f"the worker exited with status {worker.returncode()} (log {worker.log_path}): {worker.log_tail()}"

    def running(self) -> dict[str, dict[str, Any]]:
        assert self.reconciler is not None
        return {name: self.reconciler.status(name) for name in self.spec.targets}

    def stop(self) -> list[str]:
        """Stop everything that was started; returns what went wrong while stopping."""
        problems: list[str] = []
        steps: list[tuple[str, Callable[[], object]]] = []
        if self.loadgen is not None:
            steps.append(("load generator", self.loadgen.stop))
        if self.dashboard is not None:
            steps.append(("dashboard", self.dashboard.stop))
        if self.temporal is not None:
            steps.append(("Temporal and the worker", self.temporal.stop))
        if self.reconciler is not None:
            steps.append(("reconciler and demo apps", self.reconciler.stop))
        if self.prometheus is not None:
            steps.append(("Prometheus", self.prometheus.stop))
        for name, stop in steps:
            try:
                stop()
            except Exception as error:  # keep stopping the rest
                problems.append(f"stopping {name}: {error}")
        return problems
