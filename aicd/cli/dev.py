"""`aicd dev`: the embedded stack for a laptop or CI (Temporal dev server with a SQLite file + the worker)."""

from __future__ import annotations

import getpass
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from aicd.cli.app import EXIT_FAILED, EXIT_OK, app, fail

if TYPE_CHECKING:
    from aicd.dev.reconciler import LocalReconciler
    from aicd.dev.temporal import EmbeddedTemporal

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _say(text: str) -> None:
    typer.echo(text)
    sys.stdout.flush()  # a parent reading our stdout through a pipe must see each line at once


# Shared by `aicd dev` and `aicd demo`, which start the same embedded Temporal.
TemporalPort = Annotated[
    int | None,
    typer.Option(
        "--port",
        help="Temporal gRPC port (default 7233, or a free port if 7233 is taken; 0: any free port).",
        show_default=False,
    ),
]
TemporalUiPort = Annotated[
    int | None,
    typer.Option(
        "--ui-port",
        help="Temporal web UI port (default 8233, or a free port if 8233 is taken; 0: any free port).",
        show_default=False,
    ),
]


@app.command()
def dev(
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            envvar="AICD_STATE_DIR",
            help="Where the Temporal database (temporal.db), dev.json, logs/ and the worker's clones live.",
        ),
    ] = Path(".aicd"),
    port: TemporalPort = None,
    ui_port: TemporalUiPort = None,
    worker: Annotated[
        bool,
        typer.Option("--worker/--no-worker", help="Also run the aicd worker (--no-worker: only Temporal)."),
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for each part to come up.")
    ] = 30.0,
) -> None:
    """Run the embedded stack (Temporal dev server, aicd worker, reconciler of `local` targets) until Ctrl-C.

    Temporal keeps its state in STATE_DIR/temporal.db across restarts and has the aicd search attributes registered. Ctrl-C or SIGTERM stops both cleanly, the worker first. Other shells find the stack through STATE_DIR/dev.json, or with the printed `export TEMPORAL_ADDRESS=...` line.
    """
    # Imported here: the Temporal client libraries are not needed by the other commands' start-up.
    from aicd.dashboard.embedded import DashboardStartError, start_embedded
    from aicd.dev.local_gitops import BRANCH, LocalGitOpsError, local_artifacts, local_gitops_repo
    from aicd.dev.reconciler import LocalReconciler
    from aicd.dev.temporal import DevStackError, DevStackInterrupted, EmbeddedTemporal

    for value, name in ((port, "--port"), (ui_port, "--ui-port")):
        if value is not None and not 0 <= value <= 65535:
            raise fail(f"{name} {value} is not a port number (0-65535; 0 = any free port)", 2)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in _STOP_SIGNALS}
    stack = EmbeddedTemporal(state_dir, port, ui_port)
    board = None
    reconciler: LocalReconciler | None = None
    code = EXIT_OK
    try:
        try:
            address = stack.start(timeout=timeout, cancel=stop)
            if worker:
                # `local` targets (aicd init's) run here: the reconciler follows the stack's own GitOps repo.
                reconciler = LocalReconciler(
                    local_gitops_repo(state_dir),
                    BRANCH,
                    {},
                    local_artifacts(state_dir),
                    stack.state_dir / "reconciler",
                )
                reconciler_url = reconciler.start(timeout=timeout)
                stack.start_worker(
                    wait=True,
                    timeout=max(timeout, 60.0),
                    cancel=stop,
                    env={"AICD_RECONCILER_URL": reconciler_url},
                )
            actor = os.environ.get("AICD_ACTOR") or getpass.getuser()  # the CLI's actor: the token's identity
            board = start_embedded(stack, actor)
        except DevStackInterrupted:
            _say("aicd dev: interrupted during start-up; stopped")
            return
        except (DevStackError, DashboardStartError, LocalGitOpsError, RuntimeError, TimeoutError) as error:
            raise fail(str(error), EXIT_FAILED) from None
        _say(f"aicd dev: running (state {stack.state_dir})")
        _say(f"  Temporal gRPC  {address}  (namespace {stack.namespace})")
        if stack.ui_url:
            _say(f"  Temporal UI    {stack.ui_url}")
        _say(f"  Dashboard      {board.url}  (sign in as {board.identity}: token in {board.tokens_file})")
        if stack.worker is not None:
            _say(
                f"  worker         task queue {stack.worker_task_queue}, pid {stack.worker.pid},"
                f" log {stack.worker.log_path}"
            )
        else:
            _say("  worker         not started (--no-worker)")
        if reconciler is not None:
            _say(
                f"  local targets  reconciler {reconciler.url}, GitOps repo {local_gitops_repo(state_dir)}"
                " (aicd init adds apps to it)"
            )
        _say(f"  logs           {stack.state_dir / 'logs'}")
        _say("In other shells:")
        _say(f"  export TEMPORAL_ADDRESS={address}")
        _say("Ctrl-C stops everything.")
        while not stop.wait(0.5):
            problem = _dead_child(stack)
            if problem:
                typer.echo(f"aicd: {problem}", err=True)
                code = EXIT_FAILED
                break
    finally:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, on_signal)  # a second Ctrl-C must not cut the shutdown short
        if board is not None:
            board.stop()
        stack.stop()
        if reconciler is not None:
            reconciler.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        _say(f"aicd dev: stopped ({signal.Signals(received[0]).name})")
    raise typer.Exit(code)


def _dead_child(stack: EmbeddedTemporal) -> str | None:
    if stack.server is not None and not stack.server.alive():
        return (
            f"the Temporal dev server exited with status {stack.server.returncode()}"
            f" (log {stack.server.log_path}); stopping"
        )
    if stack.worker is not None and not stack.worker.alive():
        return f"the worker exited with status {stack.worker.returncode()} (log {stack.worker.log_path}); stopping"
    return None
