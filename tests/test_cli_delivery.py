"""The CLI drives whole deliveries through a subprocess: deliver, status, list, approve, pause, resume,
abort, stop-the-line by app; unknown IDs, refused actions and an unreachable Temporal are one line, exit 1;
usage errors exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from aicd.dev.temporal import EmbeddedTemporal
from aicd.testing.engine import commits, make_repo, spec_document

QUEUE = "cli-tests"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTemporal]:
    with EmbeddedTemporal(tmp_path_factory.mktemp("stack"), port=0, ui=False, write_info=False) as running:
        running.start_worker(task_queue=QUEUE)
        yield running


def aicd(stack: EmbeddedTemporal, *args: str, address: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address or stack.address,
        "AICD_TASK_QUEUE": QUEUE,
        "AICD_ACTOR": "tester",
    }
    return subprocess.run(
        [sys.executable, "-m", "aicd", *args], capture_output=True, text=True, env=env, timeout=60
    )


def wait_status(stack: EmbeddedTemporal, delivery_id: str, predicate, timeout: float = 30) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        shown = aicd(stack, "status", delivery_id, "--json")
        if shown.returncode == 0:
            status = json.loads(shown.stdout)
            if predicate(status):
                return status
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached: {shown.stdout} {shown.stderr}")
        time.sleep(0.2)


def write_spec(tmp_path: Path, app: str) -> tuple[Path, str, str]:
    source, revision = make_repo(tmp_path, f"{app}-source", {"README": "x\n"})
    gitops, _ = make_repo(
        tmp_path, f"{app}-gitops", {"s.yaml": "image: {tag: v0}\n", "p.yaml": "image: {tag: v0}\n"}
    )
    document = spec_document(
        app,
        source,
        gitops,
        {"stg": {"kind": "git", "path": "s.yaml"}, "prd": {"kind": "git", "path": "p.yaml"}},
        [
            {"name": "staging", "targets": ["stg"]},
            {
                "name": "production",
                "targets": ["prd"],
                "approval": {"approvers": ["alice"], "timeout": "1h"},
                "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 100}]}},
            },
        ],
    )
    path = tmp_path / f"{app}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path, gitops, revision


def test_cli_drives_a_delivery_through_approval_pause_resume(stack: EmbeddedTemporal, tmp_path: Path) -> None:
    spec, gitops, revision = write_spec(tmp_path, "cli-app")
    started = aicd(stack, "deliver", str(spec), "--revision", revision)
    assert started.returncode == 0, started.stderr
    delivery_id = started.stdout.strip()
    assert delivery_id == f"delivery-cli-app-{revision}"
    # A short SHA, the full SHA and a branch naming the same commit are one delivery.
    for spelling in (revision, revision[:7], revision.upper()[:10], "main"):
        again = aicd(stack, "deliver", str(spec), "--revision", spelling)
        assert again.stdout.strip() == f"{delivery_id} (already started)", (spelling, again.stderr)

    wait_status(stack, delivery_id, lambda s: s["pending_approval"] == "production")
    refused = aicd(stack, "approve", delivery_id, "--stage", "production", "--as", "mallory")
    assert (
        refused.returncode == 1
        and refused.stderr.strip() == "aicd: mallory is not an approver of stage production"
    )
    approved = aicd(stack, "approve", delivery_id, "--stage", "production", "--as", "alice")
    assert approved.returncode == 0 and "approved production" in approved.stdout

    waiting = wait_status(
        stack, delivery_id, lambda s: s["targets"].get("prd", {}).get("state") == "awaiting-resume"
    )
    # Delivery order, not name order ("prd" sorts before "stg"): in JSON and in the text view.
    assert list(waiting["targets"]) == ["stg", "prd"] and waiting["target_order"] == ["stg", "prd"]
    shown = aicd(stack, "status", delivery_id, "-o", "json")
    assert shown.returncode == 0 and list(json.loads(shown.stdout)["targets"]) == ["stg", "prd"]
    text = aicd(stack, "status", delivery_id).stdout
    rows = [
        line.split()[1] for line in text.splitlines() if line.split()[:1] in (["staging"], ["production"])
    ]
    assert rows == ["stg", "prd"], text
    assert f"`aicd resume {delivery_id}` releases it" in text, text
    listed = aicd(stack, "list", "--app", "cli-app", "--running")
    assert listed.returncode == 0 and delivery_id in listed.stdout
    listed_json = aicd(stack, "list", "--app", "cli-app", "--running", "-o", "json")
    assert listed_json.returncode == 0, listed_json.stderr
    assert {"id": delivery_id, "status": "running", "phase": "paused"} in json.loads(listed_json.stdout)
    paused = aicd(stack, "pause", "--app", "cli-app", "--reason", "stop the line")
    assert paused.returncode == 0 and f"{delivery_id}: paused" in paused.stdout
    status = wait_status(stack, delivery_id, lambda s: s["phase"] == "paused")
    assert status["pause_reason"] == "stop the line"
    text = aicd(stack, "status", delivery_id)
    assert "paused" in text.stdout and "prd" in text.stdout and "pause by tester" in text.stdout
    resumed = aicd(stack, "resume", delivery_id)
    assert resumed.returncode == 0
    resumed_step = aicd(stack, "resume", delivery_id)  # releases the `pause: {}` step
    assert resumed_step.returncode == 0, resumed_step.stderr
    final = wait_status(stack, delivery_id, lambda s: s["phase"] in ("succeeded", "failed"))
    assert final["phase"] == "succeeded"
    kinds = [(action["kind"], action["actor"]) for action in final["actions"]]
    assert kinds == [("approve", "alice"), ("pause", "tester"), ("resume", "tester"), ("resume", "tester")]
    steps = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
    assert steps == [
        "staging/stg/0-setWeight",
        "staging/stg/promote",
        "production/prd/0-setWeight",
        "production/prd/2-setWeight",
        "production/prd/promote",
    ]


def test_cli_abort_and_errors(stack: EmbeddedTemporal, tmp_path: Path) -> None:
    spec, gitops, revision = write_spec(tmp_path, "cli-abort")
    delivery_id = aicd(stack, "deliver", str(spec), "--revision", revision).stdout.strip()
    wait_status(stack, delivery_id, lambda s: s["pending_approval"] == "production")
    aborted = aicd(stack, "abort", delivery_id, "--reason", "wrong build")
    assert aborted.returncode == 0, aborted.stderr
    final = wait_status(stack, delivery_id, lambda s: s["phase"] == "aborted")
    assert final["reason"] == "wrong build"
    # Staging finished before the abort; scope `stage` leaves it, and the pending stage had nothing.
    assert [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry] == [
        "staging/stg/0-setWeight",
        "staging/stg/promote",
    ]

    unknown = aicd(stack, "status", "delivery-nope-000000000000")
    assert (
        unknown.returncode == 1 and unknown.stderr.strip() == "aicd: no delivery delivery-nope-000000000000"
    )
    finished = aicd(stack, "resume", delivery_id)
    assert (
        finished.returncode == 1
        and finished.stderr.strip() == f"aicd: delivery {delivery_id} has already ended"
    )
    unreachable = aicd(stack, "status", delivery_id, address="127.0.0.1:1")
    assert unreachable.returncode == 1 and unreachable.stderr.startswith("aicd: cannot reach Temporal")
    assert len(unreachable.stderr.strip().splitlines()) == 1
    usage = aicd(stack, "pause")
    assert usage.returncode == 2 and "name a delivery ID or --app" in usage.stderr
    source = yaml.safe_load(spec.read_text())["spec"]["source"]["repo"]
    for given, why in (
        ("not-a-sha", "is neither a branch, a tag nor a commit SHA of"),
        ("deadbeef", "no commit 'deadbeef' on any branch or tag of"),
        ("-x", "is not a revision of"),
    ):
        bad_revision = aicd(stack, "deliver", str(spec), "--revision", given)
        assert bad_revision.returncode == 1, bad_revision.stderr
        assert why in bad_revision.stderr and source in bad_revision.stderr, bad_revision.stderr
        assert len(bad_revision.stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: aicd.dev/v1alpha1\nkind: DeliverySpec\nmetadata: {name: x}\nspec: {}\n")
    invalid = aicd(stack, "deliver", str(broken), "--revision", revision)
    assert invalid.returncode == 2 and f"{broken}:4:1: error: $.spec: 'source' is required" in invalid.stderr
