"""The large chaos run: many deliveries (git and Argo CD targets, healthy and broken releases, analysis against
a real Prometheus) while the worker is SIGKILLed, the Temporal dev server restarted, pushes refused, Prometheus
stopped and the Argo CD API failing or hanging, at seeded random points; then the verdict from Git and Temporal.

    python bench/chaos.py [--seed S] [--deliveries N] [--faults F] [--keep DIR]

Last line: `seed=S faults=F deliveries=D correct=C duplicate_commits=.. lost_commits=.. unsafe_promotions=..`.
Exit status 0 when every delivery ended correctly and nothing was duplicated, lost or promoted unsafely.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from aicd.testing.chaos import ChaosConfig, run_chaos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=20240608)
    parser.add_argument("--deliveries", type=int, default=40)
    parser.add_argument(
        "--faults", type=int, default=None, help="default: 5 per 8 deliveries, at least one of each kind"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="run in this directory and keep it (logs, repos)"
    )
    args = parser.parse_args(argv)
    deliveries = max(args.deliveries, 1)
    faults = args.faults if args.faults is not None else max(6, deliveries * 5 // 8)
    # Deliveries start over most of the fault span so faults land in every phase of them; the deadline leaves
    # room for retries after the last fault (a delivery takes ~20-40 s undisturbed).
    start_span = max(20.0, deliveries * 6.0)
    fault_span = start_span + 30.0
    root = args.keep or Path(tempfile.mkdtemp(prefix="aicd-chaos-"))
    config = ChaosConfig(
        seed=args.seed,
        deliveries=deliveries,
        faults=faults,
        start_span_s=start_span,
        fault_span_s=fault_span,
        deadline_s=fault_span + faults * 12.0 + 120.0,
        root=root,
    )
    try:
        report = run_chaos(config)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    for line in report.lines():
        print(line, flush=True)
    check = report.check
    ok = (
        check.correct == check.deliveries
        and not (check.duplicate_commits or check.lost_commits or check.unsafe_promotions)
        and not report.leftover_processes
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
