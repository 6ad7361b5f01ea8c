"""The `aicd` command: one Typer app; each area of commands lives in its own module of this package."""

from __future__ import annotations

import typer

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and the answer is "no" (refused update, unknown ID, unreachable Temporal)
EXIT_USAGE = 2  # bad arguments or invalid input

app = typer.Typer(
    name="aicd",
    help="GitOps workflow engine and progressive-delivery orchestrator on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print one clear line to stderr and return the Exit to raise."""
    typer.echo(f"aicd: {message}", err=True)
    return typer.Exit(code)
