"""Entry point of the `aicd` console script."""

from __future__ import annotations

import importlib
import os
import sys

from aicd.cli.app import app
from aicd.observability.tracing import flush_process_tracing

# Each module registers its commands on `app` when imported.
_COMMAND_MODULES = (
    "init",
    "spec",
    "dev",
    "delivery",
    "governance",
    "argocd",
    "importer",
    "analyze",
    "serve",
    "dashboard",
    "demo",
    "worker",
)


def main() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"aicd.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"aicd.cli.{name}":
                raise
    code = 0
    try:
        app()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    flush_process_tracing()  # spans of the command's Temporal calls, when OTEL_* turned tracing on
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal SDK's runtime thread can abort the interpreter at exit (temporalio/sdk-python#300);
    # leaving at once keeps the exit code honest.
    os._exit(code)
