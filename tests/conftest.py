"""Shared pytest fixtures: keep this small and generic; area-specific helpers live in tests/helpers_*.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

RunAicd = Callable[..., subprocess.CompletedProcess[str]]


def aicd_env(**extra: str) -> dict[str, str]:
    """The environment for an `aicd` child process: this checkout importable, no ambient Temporal settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TEMPORAL_", "AICD_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def run_aicd() -> RunAicd:
    """Run `python -m aicd ARGS...` to completion in the repository root; returns the CompletedProcess."""

    def run(
        *args: str,
        cwd: Path = REPO_ROOT,
        timeout: float = 120.0,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aicd", *args],
            cwd=cwd,
            env=env or aicd_env(),
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            input=input,
        )

    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The minutes-long tests first: with two xdist workers one runs them while the other takes the rest."""
    items.sort(
        key=lambda item: item.get_closest_marker("slow") is None and item.get_closest_marker("image") is None
    )
