"""`aicd init` to a first delivery succeeded on the embedded stack: the seed's "template deployment time"
(goal: under 30 s from typing `aicd init`). A running `aicd dev` is started first (not timed, as a user
has it open in another shell); then, timed as typed: `aicd init APP` and
`aicd deliver APP/delivery/APP.local.yaml --revision main --wait` (build, staging and production canaries,
promotion, on `local` targets run by the stack's reconciler).

Run from the repo root: `.venv/bin/python bench/init_to_delivery.py [--runs N] [--template python]`.
Last line: `init_s=A deliver_s=B total_s=C goal_s=30 runs=N template=T load1=L` (medians over the runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from aicd.testing.dev_cli import aicd_command, running_aicd_dev

GOAL_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--template", default="python")
    args = parser.parse_args()
    init_times, deliver_times = [], []
    with tempfile.TemporaryDirectory(prefix="aicd-bench-") as scratch:
        work = Path(scratch)
        with running_aicd_dev(work / "state") as env:
            for run in range(args.runs):
                app = f"app{run}"
                began = time.perf_counter()
                made = subprocess.run(
                    [*aicd_command(), "init", app, "-t", args.template, "-o", "json"],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if made.returncode != 0:
                    raise SystemExit(f"aicd init failed: {made.stderr}")
                initialised = time.perf_counter()
                spec = json.loads(made.stdout)["local_spec"]
                delivered = subprocess.run(
                    [*aicd_command(), "deliver", spec, "--revision", "main", "--wait"],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                done = time.perf_counter()
                if delivered.returncode != 0:
                    raise SystemExit(f"aicd deliver failed: {delivered.stdout} {delivered.stderr}")
                init_times.append(initialised - began)
                deliver_times.append(done - initialised)
                print(f"{app}: init {initialised - began:.1f} s, deliver {done - initialised:.1f} s")
    init_s, deliver_s = statistics.median(init_times), statistics.median(deliver_times)
    print(
        f"init_s={init_s:.1f} deliver_s={deliver_s:.1f} total_s={init_s + deliver_s:.1f} goal_s={GOAL_S:.0f}"
        f" runs={args.runs} template={args.template} load1={os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
