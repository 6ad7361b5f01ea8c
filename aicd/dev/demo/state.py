"""The demo's state directory: one demo at a time, a fresh `<state>/demo/` each run, and the processes of
an earlier demo that was killed outright stopped first."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

from aicd.dev.demo.model import DemoError
from aicd.dev.demo.repos import DemoLayout
from aicd.dev.processes import signal_group, wait_gone
from aicd.dev.temporal import dev_address, read_dev_info

DEMO_DIR = "demo"
MARKER = ".aicd-demo"  # only a directory carrying it is ever wiped


@contextlib.contextmanager
def exclusive(state_dir: Path) -> Iterator[None]:
    """One demo per state dir at a time; the lock goes with the process, even on SIGKILL."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "demo.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoError(f"another `aicd demo` runs with state dir {state_dir}") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _cmdline(pid: object) -> list[str]:
    import psutil

    if not isinstance(pid, int) or pid <= 0:
        return []
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def stop_leftovers(root: Path) -> list[int]:
    """Processes an earlier demo in `root` left behind when it was killed outright (SIGKILL gives it no
    chance to stop its children): Temporal, the worker and Prometheus lead their own process groups. Only
    processes whose command line names `root` are touched. Returns the PIDs stopped."""
    info = read_dev_info(root) or {}
    candidates = [info.get("temporal_pid"), info.get("worker_pid")]
    with contextlib.suppress(OSError, ValueError):
        candidates.append(int((root / "prometheus" / "prometheus.pid").read_text().strip()))
    stopped = []
    for pid in candidates:
        if isinstance(pid, int) and any(str(root) in part for part in _cmdline(pid)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            stopped.append(pid)
    for pid in wait_gone(stopped, timeout=10.0):
        signal_group(pid, signal.SIGKILL)
    return stopped


def prepare(layout: DemoLayout) -> None:
    """A fresh `<state>/demo/`: a new Temporal history and new repositories, so a second run never meets
    "already started" deliveries of the first."""
    root = layout.root
    if dev_address(root):
        raise DemoError(f"a dev stack runs on {root} (aicd dev --state-dir {root}?); stop it first")
    if root.exists():
        if any(root.iterdir()) and not (root / MARKER).exists():
            raise DemoError(f"{root} exists and was not made by `aicd demo`; not wiping it")
        stop_leftovers(root)
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text("made by `aicd demo`; wiped at the start of each run\n", encoding="utf-8")
