"""An embedded Prometheus: Debian's `prometheus` binary on a free loopback port, scraping the demo apps.

    with EmbeddedPrometheus(state_dir / "prometheus", scrape_interval="1s") as prom:
        prom.url                       # http://127.0.0.1:PORT
        prom.sd_file                   # file_sd JSON the reconciler keeps up to date (LocalReconciler(sd_file=...))
        prom.set_targets(["127.0.0.1:8081"], labels={"target": "dev"})   # or static targets by hand

A target may carry its own `job` label (`set_targets([("host:port", {"job": "aicd-worker"})])`), as
aicd's alert rules and dashboard expect of the worker and the gateway; `rule_files` are evaluated every
scrape interval. Scrape targets come from file_sd files (refreshed every second), so targets can come and go without a
restart: `sd_file` (written by `set_targets`) plus any `extra_sd_files` another component writes. Prometheus'
discovery manager hands target changes to the scraper at most every 5 s, so a process that just started is
scraped after up to ~5 s plus one scrape interval; an analysis window should not start sooner than that.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import httpx

from aicd.dev import write_atomic
from aicd.dev.ports import LOOPBACK, free_port
from aicd.dev.processes import ManagedProcess

Target = str | tuple[str, Mapping[str, str]]  # "host:port", or ("host:port", {label: value})


def find_prometheus() -> str | None:
    """The prometheus binary: $AICD_PROMETHEUS_BIN, else `prometheus` on PATH, else Debian's path."""
    configured = os.environ.get("AICD_PROMETHEUS_BIN")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    found = shutil.which("prometheus")
    if found:
        return found
    return "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None


class PrometheusError(RuntimeError):
    pass


class EmbeddedPrometheus:
    def __init__(
        self,
        state_dir: Path,
        scrape_interval: str = "1s",
        *,
        extra_sd_files: Sequence[Path] = (),
        binary: str | None = None,
        port: int = 0,
        retention: str = "2d",
        job: str = "aicd-local",
        rule_files: Sequence[Path] = (),
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.scrape_interval = scrape_interval
        self.sd_file = self.state_dir / "targets.json"
        self._extra_sd_files = [Path(p).resolve() for p in extra_sd_files]
        self._binary = binary
        self._port = port
        self._retention = retention
        self._job = job
        self._rule_files = [Path(p).resolve() for p in rule_files]  # alerting/recording rules to evaluate
        self._process: ManagedProcess | None = None
        self.url = ""

    def config_text(self) -> str:
        """prometheus.yml (JSON is valid YAML, and needs no YAML writer)."""
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(p) for p in self._rule_files],
            "scrape_configs": [
                {
                    "job_name": self._job,
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "file_sd_configs": [
                        {
                            "files": [str(p) for p in [self.sd_file, *self._extra_sd_files]],
                            "refresh_interval": "1s",
                        }
                    ],
                }
            ],
        }
        return json.dumps(config, indent=2)

    def set_targets(self, targets: Iterable[Target], labels: Mapping[str, str] | None = None) -> None:
        """Replace the scrape targets written to `sd_file`; Prometheus picks them up within a second."""
        groups = []
        for target in targets:
            address, own = (target, {}) if isinstance(target, str) else target
            groups.append({"targets": [address], "labels": {**(labels or {}), **own}})
        write_atomic(self.sd_file, json.dumps(groups, indent=1))

    def start(self, timeout: float = 30.0) -> str:
        """Start and wait until /-/ready; returns the base URL. Retries on another port if the one picked
        was taken in between (free_port can race with other processes)."""
        if self._process is not None:
            raise PrometheusError("prometheus already started")
        binary = self._binary or find_prometheus()
        if binary is None:
            raise PrometheusError(
                "no prometheus binary: install Debian's package (apt-get install prometheus) "
                "or set AICD_PROMETHEUS_BIN"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.sd_file.exists():
            write_atomic(self.sd_file, "[]")
        for path in self._extra_sd_files:
            if not path.exists():
                write_atomic(path, "[]")
        config_file = self.state_dir / "prometheus.yml"
        _stop_leftover(self.state_dir / "prometheus.pid", config_file)
        write_atomic(config_file, self.config_text())
        attempts = 1 if self._port else 3
        last_error = ""
        for _ in range(attempts):
            port = self._port or free_port()
            process = ManagedProcess(
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={self.state_dir / 'data'}",
                    f"--storage.tsdb.retention.time={self._retention}",
                    f"--web.listen-address={LOOPBACK}:{port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                self.state_dir / "prometheus.log",
                cwd=self.state_dir,
            ).start()
            url = f"http://{LOOPBACK}:{port}"
            if _wait_ready(url, process, timeout):
                self._process, self.url = process, url
                write_atomic(self.state_dir / "prometheus.pid", str(process.pid))
                atexit.register(self.stop)  # a caller that forgets stop() must not leave it running
                return url
            last_error = process.log_tail(800)
            process.stop()
            if "address already in use" not in last_error:
                break
        raise PrometheusError(
            f"prometheus did not become ready (log {self.state_dir / 'prometheus.log'}): {last_error}"
        )

    def reload(self) -> None:
        """Re-read the config file (the lifecycle API); file_sd changes need no reload."""
        response = httpx.post(f"{self.url}/-/reload", timeout=10.0, trust_env=False)
        response.raise_for_status()

    def stop(self) -> None:
        if self._process is not None:
            atexit.unregister(self.stop)
            self._process.stop(grace=10.0)  # SIGTERM lets the TSDB close cleanly
            self._process = None
            (self.state_dir / "prometheus.pid").unlink(missing_ok=True)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> EmbeddedPrometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_leftover(pid_file: Path, config_file: Path) -> None:
    """A Prometheus left running on this state dir (its parent was killed with SIGKILL) holds the TSDB
    lock, so the new one could not start: stop it, but only if it really is ours (same config file)."""
    import psutil

    try:
        pid = int(pid_file.read_text().strip())
        cmdline = psutil.Process(pid).cmdline()
    except (OSError, ValueError, psutil.Error):
        return
    if f"--config.file={config_file}" not in cmdline:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)  # it leads its own process group (ManagedProcess)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).wait(timeout=10)


def _wait_ready(url: str, process: ManagedProcess, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not process.alive():
                return False
            try:
                if client.get(f"{url}/-/ready").status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    return False
