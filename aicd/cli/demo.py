"""`aicd demo`: the demo (aicd.dev.demo) in the terminal: a live view of each delivery, the approval prompt,
and a summary at the end (aicd.cli.demo_view). Ctrl-C stops the demo and every process it started."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from aicd.cli.app import EXIT_FAILED, EXIT_OK, app, fail
from aicd.cli.dev import TemporalPort, TemporalUiPort

if TYPE_CHECKING:
    from aicd.dev.demo import DemoReport, DemoStack

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# --- the command ------------------------------------------------------------------------------------------------


@app.command()
def demo(
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            envvar="AICD_STATE_DIR",
            help="The demo lives in STATE_DIR/demo (wiped at the start of each run): repos, Temporal history, logs.",
        ),
    ] = Path(".aicd"),
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Approve the production gate automatically, as its listed approver."
        ),
    ] = False,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Keep the stack running after the summary (Temporal UI, Prometheus) until Ctrl-C."
        ),
    ] = False,
    port: TemporalPort = None,
    ui_port: TemporalUiPort = None,
    rate: Annotated[
        float, typer.Option("--rate", help="Load: requests per second to each target.", min=1.0)
    ] = 30.0,
    spec: Annotated[
        Path | None,
        typer.Option(
            "--spec", help="The demo spec to run (default delivery_specs/demo.yaml).", show_default=False
        ),
    ] = None,
) -> None:
    """A good release promoted and a bad one rolled back, live, on the embedded stack (a few minutes).

    Sets up a demo source repo and GitOps repo, starts Temporal, the worker, a local reconciler running the demo app, Prometheus and a load generator, then delivers release 1.1 (good: a staging canary with a feature-flag rollout and an end-to-end check, approval, a canary on prod-a, a blue-green switch on prod-b) and release 1.2 (bad: the canary analysis fails it, the delivery rolls back). Exit 0 when both went as expected.
    """
    # Imported here: the other commands need neither Temporal's client nor the embedded stack at start-up.
    from rich.console import Console
    from rich.text import Text

    from aicd.cli.demo_view import TerminalObserver, render_summary
    from aicd.dev.demo import DEFAULT_SPEC, DemoError, DemoInterrupted, DemoOptions, run_demo

    for value, name in ((port, "--port"), (ui_port, "--ui-port")):
        if value is not None and not 0 <= value <= 65535:
            raise fail(f"{name} {value} is not a port number (0-65535; 0 = any free port)", 2)
    console = Console()
    cancel = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        cancel.set()  # the demo notices within half a second and stops everything; a second signal changes nothing

    previous = {signum: signal.signal(signum, on_signal) for signum in _STOP_SIGNALS}
    observer = TerminalObserver(console, cancel)
    options = DemoOptions(
        state_dir=state_dir,
        spec=spec or DEFAULT_SPEC,
        auto_approve=yes,
        temporal_port=port,
        ui_port=ui_port,
        load_rate=rate,
    )

    def before_stop(stack: DemoStack, report: DemoReport) -> None:
        console.print(render_summary(report, kept=keep), soft_wrap=True)  # links stay whole lines
        if keep:
            while not cancel.wait(0.5):
                pass
        console.print(Text("stopping the stack (worker, Temporal, demo apps, Prometheus)…", style="dim"))

    code = EXIT_OK
    try:
        report = run_demo(options, observer, cancel=cancel, before_stop=before_stop)
    except DemoInterrupted as interrupted:
        if observer.live is not None:
            observer.live.stop()
        console.print(f"aicd demo: {interrupted}; stopped everything it had started")
        code = EXIT_FAILED
    except DemoError as error:
        if observer.live is not None:
            observer.live.stop()
        raise fail(str(error), EXIT_FAILED) from None
    else:
        console.print(Text("stopped.", style="dim"))
        if not report.ok:
            code = EXIT_FAILED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    raise typer.Exit(code)
