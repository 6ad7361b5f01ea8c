"""Entry point of the `aicd` console script."""

from __future__ import annotations

import importlib

from aicd.cli.app import app

# Each module registers its commands on `app` when imported.
_COMMAND_MODULES = ("spec", "dev", "delivery", "argocd", "analyze", "serve", "demo")


def main() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"aicd.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"aicd.cli.{name}":
                raise
    app()
