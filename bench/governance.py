"""What governance costs a delivery: the policy gate's in-process Rego evaluation (the example policies of
`policies/` over a realistic input with a 200-finding Trivy report), the gate activity's whole check of a
stage (calendar read from a GitOps clone, freeze board, policy) on the embedded stack, and the audit
chain's write and verify rates.

Run from the repo root: `.venv/bin/python bench/governance.py [--reps N]`.
Last line: `policy_eval_ms=A gate_check_ms=B audit_append_per_s=C audit_verify_per_s=D`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _stack import dev_server

from aicd.activities.audit import AUDIT_FILE_ENV, AuditActivities
from aicd.activities.gitops import GitOpsActivities
from aicd.activities.governance import GovernanceActivities
from aicd.gates import GateRequest
from aicd.governance.audit import AuditEntry, chained, cloud_event, verify
from aicd.governance.model import policy_from, schedule_from
from aicd.governance.rego import evaluate
from aicd.testing.engine import make_repo

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {
    f"policies/{p.name}": p.read_text() for p in (ROOT / "policies").glob("*.rego") if "_test" not in p.name
}
CALENDAR = "apiVersion: aicd.dev/v1alpha1\nkind: DeliveryCalendar\nwindows: [{days: [mon-sun], hours: '00:00-24:00'}]\n"


def policy_input() -> dict[str, Any]:
    findings = [
        {
            "VulnerabilityID": f"CVE-2024-{n}",
            "PkgName": f"pkg{n}",
            "InstalledVersion": "1",
            "Severity": "MEDIUM",
        }
        for n in range(200)
    ]
    return {
        "stage": {"name": "production", "regions": ["us-east-1", "eu-west-1"], "targets": ["a", "b"]},
        "trigger": {"source": "github", "actor": "alice", "branch": "release/1"},
        "approvals": {"production": ["alice", "bob"]},
        "reports": {"trivy": {"Results": [{"Target": "app", "Vulnerabilities": findings}]}},
    }


async def gate_checks(reps: int, root: Path) -> float:
    gitops, _ = make_repo(root, "gitops", {"aicd/calendar.yaml": CALENDAR, **POLICIES})
    async with dev_server() as env:
        governance = GovernanceActivities(
            root / "state", GitOpsActivities(root / "state", env.client), env.client
        )
        request = GateRequest(
            delivery_id="delivery-bench-" + "a" * 40,
            app="bench",
            stage="production",
            wave=None,
            at="2026-12-07T12:00:00+00:00",
            held_since="2026-12-07T12:00:00+00:00",
            gitops_repo=gitops,
            gitops_branch="main",
            policy=policy_from({"modules": ["policies/"]}),
            schedule=schedule_from({"timezone": "UTC"}),
            input_document=policy_input(),
        )
        await governance.check_gates(request)  # the first clone
        times = []
        for _ in range(reps):
            began = time.perf_counter()
            await governance.check_gates(request)
            times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


async def audit_rates(count: int, root: Path) -> tuple[float, float]:
    os.environ[AUDIT_FILE_ENV] = str(root / "audit.jsonl")
    sink = AuditActivities()
    entries = [
        AuditEntry(
            "phase", "delivery-bench", "bench", "2026-12-07T12:00:00+00:00", n, {"phase": "progressing"}
        )
        for n in range(count)
    ]
    began = time.perf_counter()
    for start in range(0, count, 10):  # batches of 10, as a busy delivery sends them
        await sink.append(entries[start : start + 10])
    append_s = time.perf_counter() - began
    lines = chained([cloud_event(entry) for entry in entries])
    began = time.perf_counter()
    assert verify(lines) == []
    verify_s = time.perf_counter() - began
    return count / append_s, count / verify_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    document = policy_input()
    evaluate(POLICIES, "aicd.delivery", document)
    times = []
    for _ in range(args.reps):
        began = time.perf_counter()
        evaluate(POLICIES, "aicd.delivery", document)
        times.append(time.perf_counter() - began)
    policy_ms = statistics.median(times) * 1000
    with tempfile.TemporaryDirectory() as root:
        gate_ms = asyncio.run(gate_checks(args.reps, Path(root)))
        append_rate, verify_rate = asyncio.run(audit_rates(2000, Path(root)))
    print(
        f"policy: {policy_ms:.2f} ms per evaluation (200 findings); gate check of a stage: {gate_ms:.1f} ms"
    )
    print(
        f"audit: {append_rate:.0f} records/s appended (fsync per batch of 10), {verify_rate:.0f} records/s verified"
    )
    print(
        f"policy_eval_ms={policy_ms:.2f} gate_check_ms={gate_ms:.1f}"
        f" audit_append_per_s={append_rate:.0f} audit_verify_per_s={verify_rate:.0f}"
    )


if __name__ == "__main__":
    main()
