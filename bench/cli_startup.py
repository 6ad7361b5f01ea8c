"""Start-up time of the `aicd` console command, as a newcomer types it: `aicd --help`, `aicd validate` of a
spec, and `aicd status` of a delivery on a running dev stack (started here with `aicd dev`, one delivery
made with `aicd init` + `aicd deliver` so status has something to show). Goal: --help and validate under
300 ms on a quiet machine (status also connects to Temporal and queries the workflow).

Run from the repo root: `.venv/bin/python bench/cli_startup.py [--reps N]`. Each figure is the median wall
time in milliseconds of N runs (a fresh process each), and beside it the CPU time (user + system) the run
took, which a busy machine does not inflate; the load average is printed so a busy machine shows.
Last line: `help_ms=A validate_ms=B status_ms=C version_ms=D help_cpu_ms=.. validate_cpu_ms=.. status_cpu_ms=..
reps=N load1=L`
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from aicd.testing.dev_cli import aicd_command, clean_env, running_aicd_dev

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC = REPO_ROOT / "delivery_specs" / "checkout-api.yaml"


def timed(args: list[str], env: dict[str, str], reps: int, cwd: Path) -> tuple[float, float]:
    """Median wall and CPU milliseconds of `aicd ARGS`."""
    walls, cpus = [], []
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        done = subprocess.run([*aicd_command(), *args], env=env, cwd=cwd, capture_output=True, text=True)
        walls.append(time.perf_counter() - began)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise SystemExit(f"aicd {' '.join(args)} failed: {done.stderr.strip()}")
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    env = clean_env()
    help_ms, help_cpu = timed(["--help"], env, args.reps, REPO_ROOT)
    version_ms, _ = timed(["--version"], env, args.reps, REPO_ROOT)
    validate_ms, validate_cpu = timed(["validate", str(SPEC)], env, args.reps, REPO_ROOT)
    print(f"aicd --help      {help_ms:6.0f} ms  (cpu {help_cpu:.0f} ms)")
    print(f"aicd --version   {version_ms:6.0f} ms")
    print(f"aicd validate    {validate_ms:6.0f} ms  (cpu {validate_cpu:.0f} ms)")
    with tempfile.TemporaryDirectory(prefix="aicd-bench-") as scratch:
        work = Path(scratch)
        with running_aicd_dev(work / "state") as dev_env:
            made = subprocess.run(
                [*aicd_command(), "init", "bench", "-o", "json"],
                cwd=work,
                env=dev_env,
                capture_output=True,
                text=True,
            )
            spec = json.loads(made.stdout)["local_spec"]
            delivered = subprocess.run(
                [*aicd_command(), "deliver", spec, "--revision", "main"],
                cwd=work,
                env=dev_env,
                capture_output=True,
                text=True,
            )
            delivery_id = delivered.stdout.split()[0]
            status_ms, status_cpu = timed(["status", delivery_id], dev_env, args.reps, work)
    print(f"aicd status      {status_ms:6.0f} ms  (cpu {status_cpu:.0f} ms; against a running aicd dev)")
    load1 = os.getloadavg()[0]
    print(
        f"help_ms={help_ms:.0f} validate_ms={validate_ms:.0f} status_ms={status_ms:.0f}"
        f" version_ms={version_ms:.0f} help_cpu_ms={help_cpu:.0f} validate_cpu_ms={validate_cpu:.0f}"
        f" status_cpu_ms={status_cpu:.0f} reps={args.reps} load1={load1:.2f}"
    )


if __name__ == "__main__":
    main()
