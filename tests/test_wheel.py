"""The distribution as a user gets it: a wheel built from the repository (not editable), installed with its
`dev` extra into a fresh venv outside the checkout, runs validate, plan, worker, dev and the demo (through
staging, then Ctrl-C) from a directory that is not the checkout, with no PYTHONPATH. This proves the package data (schema, demo spec),
the declared dependencies and the module entry points (`python -m aicd.worker`), none found by path."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import psutil
import pytest

from aicd.dev.processes import wait_gone
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

SPEC = REPO_ROOT / "delivery_specs" / "checkout-api.yaml"
BUILD_IGNORES = (
    ".git",
    ".venv",
    "build",
    "dist",
    ".aicd",
    "*.egg-info",
    "__pycache__",
    "*_cache",
    ".hypothesis",
)


def clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH, no ambient Temporal or aicd settings, the venv's bin first on PATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TEMPORAL_", "AICD_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(extra)
    return env


class Installed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "venv" / "bin"
        self.work = root / "work"  # the current directory of every command: nowhere near the checkout
        self.env = clean_env(PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}")

    def run(self, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.bin / "aicd"), *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert done.returncode == 0, (
                f"aicd {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    assert not root.resolve().is_relative_to(REPO_ROOT.resolve())
    # Built from a copy of the checkout: a build/ left in the checkout by an earlier build would add files
    # the tree no longer has.
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*BUILD_IGNORES))
    dist = root / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("aic_delivery-*.whl")
    venv.EnvBuilder(with_pip=True).create(root / "venv")
    install = subprocess.run(
        [str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[dev]"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,
        env=clean_env(),
    )
    assert install.returncode == 0, install.stderr[-3000:]
    target = Installed(root)
    target.work.mkdir()
    yield target  # left to pytest's temporary directory retention: removing a venv takes many seconds


def test_the_wheel_holds_only_the_aicd_namespace(installed: Installed) -> None:
    (site,) = (installed.root / "venv" / "lib").glob("python3*/site-packages")
    assert (site / "aicd" / "workflows" / "delivery.py").is_file()
    assert (site / "aicd" / "activities" / "gitops.py").is_file()
    assert (site / "aicd" / "schemas" / "delivery-spec.v1alpha1.json").is_file()
    assert (site / "aicd" / "delivery_specs" / "demo.yaml").is_file()
    for generic in ("workflows", "activities", "worker.py", "tests", "bench"):
        assert not (site / generic).exists(), f"{generic} installed at the top level of site-packages"
    probe = subprocess.run(
        [
            str(installed.bin / "python"),
            "-c",
            "import aicd.worker, aicd.workflows, aicd.activities; import workflows",
        ],
        cwd=installed.work,
        env=installed.env,
        capture_output=True,
        text=True,
    )
    assert "No module named 'workflows'" in probe.stderr, probe.stderr


def test_validate_and_plan_from_the_wheel(installed: Installed) -> None:
    spec = installed.work / "checkout-api.yaml"
    shutil.copy(SPEC, spec)
    installed.run("validate", spec.name, check=True)
    broken = installed.work / "broken.yaml"
    broken.write_text(SPEC.read_text().replace("kind: argocd", "kind: argo", 1))
    refused = installed.run("validate", broken.name)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stdout.startswith("broken.yaml:") and ": error: $.spec.targets." in refused.stdout, (
        refused.stdout
    )
    plan = installed.run("plan", spec.name, "--revision", "4f2c1d9e" * 5, "--format", "json", check=True)
    assert json.loads(plan.stdout)["delivery_id"] == f"delivery-checkout-api-{'4f2c1d9e' * 5}"


def test_init_templates_from_the_wheel(installed: Installed) -> None:
    """The app templates are package data: listed and scaffolded from the installed wheel."""
    listed = installed.run("init", "--list", "-o", "json", check=True)
    assert set(json.loads(listed.stdout)) == {"python", "node", "image"}
    for template in ("python", "node"):
        app = f"wheel-{template}"
        installed.run("init", app, "-t", template, "--state-dir", "init-state", check=True)
        made = installed.work / app
        assert (made / ".gitignore").is_file() and (
            made / "gitops" / "apps" / app / "staging" / "Chart.yaml"
        ).is_file()
        assert (made / "gitops" / "apps" / app / "production" / "templates" / "deployments.yaml").is_file()
        installed.run("validate", str(made / "delivery"), check=True)


def test_worker_help_from_the_wheel(installed: Installed) -> None:
    done = installed.run("worker", "--help", check=True)
    assert "--task-queue" in done.stdout


def test_dev_stack_from_the_wheel(installed: Installed) -> None:
    state = installed.work / "state"
    process = subprocess.Popen(
        [str(installed.bin / "aicd"), "dev", "--state-dir", str(state), "--port", "0", "--ui-port", "0"],
        cwd=installed.work,
        env=installed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        address = ""
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("  export TEMPORAL_ADDRESS="):
                address = line.split("=", 1)[1].strip()
                break
            assert time.monotonic() < deadline, "aicd dev did not come up"
        assert address, "aicd dev ended before it printed its address"
        info = json.loads((state / "dev.json").read_text())
        assert info["address"] == address and info["worker_pid"]
        installed.env["TEMPORAL_ADDRESS"] = address
        installed.run("list", check=True)  # the wheel's CLI reaches the stack's Temporal
    finally:
        installed.env.pop("TEMPORAL_ADDRESS", None)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "aicd dev: stopped (SIGINT)" in rest
    assert not (state / "dev.json").exists()


def _read_lines(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def descendants(pid: int) -> set[int]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    return set()


def test_demo_from_the_wheel_runs_staging_and_stops_on_ctrl_c(installed: Installed) -> None:
    """The installed demo carries release 1.1 through staging - the demo app built and served, Prometheus
    scraping it, the canary analysis passed, the flag rollout and the end-to-end check - up to the production
    approval; then SIGINT stops it and every process it started. (tests/test_demo.py runs the whole demo from
    the checkout.)"""
    argv = [str(installed.bin / "aicd"), "demo", "--yes", "--state-dir", str(installed.work / "demo-state")]
    argv += ["--port", "0", "--ui-port", "0", "--rate", "10"]
    proc = subprocess.Popen(
        argv,
        cwd=installed.work,
        env=installed.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    output: list[str] = []
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 420
        # Staging is done (its analysis passed) when the demo approves the production stage.
        while not any("approving stage production as demo-user" in line for line in output):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(output)
            started |= descendants(proc.pid)
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=0.5))
        started |= descendants(proc.pid)
        assert len(started) >= 6, "Temporal, the worker, Prometheus and a demo app per target run"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:  # the test failed: still give the demo its chance to clean up
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        left = wait_gone(sorted(started), timeout=10)
        for pid in left:  # never leave orphans behind for the rest of the suite, even when failing
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    time.sleep(0.2)
    while not lines.empty():
        output.append(lines.get())
    text = "".join(output)
    assert "▶ release 1.1" in text and "interrupted" in text, text
    assert left == []
