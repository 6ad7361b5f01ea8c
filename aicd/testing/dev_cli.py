"""`aicd dev` as a user runs it: the console command in a child process, until the test or bench is done.
Used by the newcomer paths (tests/test_init.py, bench/init_to_delivery.py, bench/cli_startup.py)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def aicd_command() -> list[str]:
    """How to run this checkout's `aicd`: the console script beside the interpreter, else `python -m aicd`."""
    script = Path(sys.executable).with_name("aicd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "aicd"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TEMPORAL_", "AICD_"))}
    env.update(extra)
    return env


@contextlib.contextmanager
def running_aicd_dev(state_dir: Path, timeout: float = 120.0) -> Iterator[dict[str, str]]:
    """Start `aicd dev --state-dir STATE_DIR` on free ports; yields the environment other shells use
    (TEMPORAL_ADDRESS, AICD_STATE_DIR); Ctrl-C (SIGINT) stops it afterwards, as a user would."""
    log = state_dir.parent / f"{state_dir.name}-aicd-dev.log"
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        process = subprocess.Popen(
            [*aicd_command(), "dev", "--state-dir", str(state_dir), "--port", "0", "--ui-port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        address = None
        while address is None:
            text = log.read_text()
            found = re.search(r"export TEMPORAL_ADDRESS=(\S+)", text)
            if found and "Ctrl-C stops everything" in text:
                address = found.group(1)
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aicd dev did not come up:\n{text[-3000:]}")
            time.sleep(0.2)
        yield clean_env(TEMPORAL_ADDRESS=address, AICD_STATE_DIR=str(state_dir))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
