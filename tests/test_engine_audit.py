"""The audit trail end to end: a delivery with an approval, a pause and a resume, and an abort that rolls
back streams CloudEvents to the worker's JSON-lines file; `aicd audit` rebuilds the same records from the
Temporal history (plus the commits from Git trailers and the rollback), the HTTP sink receives the same
chained records, both chains verify, and changing one field of an exported file is detected at its line.
The batches go as local activities (workflows.delivery.LOCAL_ACTIVITIES): no activity task through the server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from aicd.activities.audit import AUDIT_FILE_ENV, AUDIT_URL_ENV
from aicd.client import handle_for, send_action, start_delivery
from aicd.governance.audit import STREAMED_TYPES, TYPE_PREFIX, chained, comparable, verify
from aicd.governance.reconstruct import reconstruct
from aicd.messages import HumanAction, Trigger
from aicd.testing.engine import make_repo, plan_from, running_worker, spec_document, temporal_env, wait_for
from aicd.testing.standins.incidents import IncidentStandin
from aicd.workflows.delivery import AUDIT_DRAIN_WITHOUT_TIMER
from aicd.workflows.registry import ALL_WORKFLOWS, sandbox_runner
from tests.record_histories import activity_types, patch_markers

__all__ = ["temporal_env"]


def by_type(records: list[dict[str, Any]]) -> dict[str, list[tuple[str, str, str]]]:
    grouped: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for record in records:
        kind = record["type"].removeprefix(TYPE_PREFIX)
        if kind in STREAMED_TYPES:
            grouped[kind].append(comparable(record))
    return dict(grouped)


async def test_streamed_audit_matches_the_reconstruction_and_tampering_shows(
    temporal_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = tmp_path / "audit" / "aicd.jsonl"
    monkeypatch.setenv(AUDIT_FILE_ENV, str(stream))
    sink = IncidentStandin()
    await sink.start()
    monkeypatch.setenv(AUDIT_URL_ENV, sink.audit_url)
    sink.fail_next(1)  # the sink down for a moment: the batch is retried, and written to the file once
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(
        tmp_path, "gitops", {"apps/web/values.yaml": "image:\n  tag: v0\ncanary:\n  weight: 0\n"}
    )
    document = spec_document(
        "audited",
        source,
        gitops,
        {"web": {"kind": "git", "path": "apps/web/values.yaml"}},
        [
            {
                "name": "staging",
                "targets": ["web"],
                "approval": {"approvers": ["alice"]},
                "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]}},
            }
        ],
        people={"alice": {"slack": "U0ALICE"}},
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "carol", branch="release/1"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "staging")
        await send_action(
            client, plan.delivery_id, "approve", HumanAction("U0ALICE", stage="staging", via="slack")
        )
        await wait_for(client, plan.delivery_id, lambda s: s.phase == "paused")  # the `pause: {}` step
        await send_action(client, plan.delivery_id, "pause", HumanAction("oncall", "look closer", via="cli"))
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall", via="cli"))
        await send_action(
            client, plan.delivery_id, "abort", HumanAction("oncall", "canary looks wrong", via="cli")
        )
        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "aborted"
        streamed_lines = stream.read_text().splitlines()
        await sink.wait_for(
            lambda: (
                sum(len(batch) for batch in sink.audit_batches) == len(streamed_lines)
                and any(e["type"].endswith(".finished") for b in sink.audit_batches for e in b)
            )
        )
        rebuilt = await reconstruct(client, "audited")
        history = await handle_for(client, plan.delivery_id).fetch_history()
    await sink.stop()
    # Every batch, the one the sink refused at first too, went as a local activity: markers, no activity tasks.
    scheduled, local = activity_types(json.loads(history.to_json())["events"])
    assert "audit_append" not in scheduled and local.count("audit_append") >= 4, (scheduled, local)
    assert "claim_release" not in scheduled and local.count("claim_release") == 1, (scheduled, local)
    streamed = [json.loads(line) for line in streamed_lines]
    assert verify(streamed_lines) == []
    # The HTTP sink got the same records, chain included; a retried batch did not repeat in the file.
    assert [event for batch in sink.audit_batches for event in batch] == streamed
    assert len({record["id"] for record in streamed}) == len(streamed)
    assert {record["subject"] for record in streamed} == {plan.delivery_id}
    assert by_type(streamed) == by_type(rebuilt)
    actions = [json.loads(item[2]) for item in by_type(streamed)["action"]]
    assert [(a["kind"], a["actor"], a["via"], a["stage"], a.get("person")) for a in actions] == [
        ("approve", "U0ALICE", "slack", "staging", "alice"),
        ("pause", "oncall", "cli", "staging", None),
        ("resume", "oncall", "cli", "staging", None),
        ("abort", "oncall", "cli", "staging", None),
    ]
    phases = [json.loads(item[2])["phase"] for item in by_type(streamed)["phase"]]
    assert phases[:2] == ["awaiting-approval", "progressing"] and "rolling-back" in phases
    assert phases[-1] == "aborted"
    # What only the reconstruction has: the commits (from Git trailers) and the rollback (from the history).
    commits = [record["data"] for record in rebuilt if record["type"] == TYPE_PREFIX + "commit"]
    # The approval's commit names Alice (Aicd-Actor: alice (as U0ALICE via slack)), recorded as her action is.
    assert commits[0]["step"] == "staging/web/0-setWeight"
    assert (commits[0]["actor"], commits[0]["via"], commits[0]["person"]) == ("U0ALICE", "slack", "alice")
    assert commits[-1]["step"] == "staging/web/rollback" and commits[-1]["actor"] == "oncall"
    assert "person" not in commits[-1]
    [rollback] = [record["data"] for record in rebuilt if record["type"] == TYPE_PREFIX + "rollback"]
    assert rollback == {"targets": ["web"], "reason": "canary looks wrong"}

    exported = tmp_path / "export.jsonl"
    exported.write_text("\n".join(chained(rebuilt)) + "\n")

    def verify_cli() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "aicd", "audit", "--verify", str(exported)]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    intact = verify_cli()
    assert intact.returncode == 0 and "chain intact" in intact.stdout
    lines = exported.read_text().splitlines()
    target = next(index for index, line in enumerate(lines) if '"kind":"abort"' in line)
    lines[target] = lines[target].replace('"actor":"oncall"', '"actor":"someone-else"')
    exported.write_text("\n".join(lines) + "\n")
    tampered = verify_cli()
    assert tampered.returncode == 1
    assert f"line {target + 2}: aicdprevhash" in tampered.stderr  # the record after the edited one
    assert verify(lines[:target] + lines[target + 1 :])  # removing a record breaks the chain too


async def test_a_slow_audit_sink_at_the_end_leaves_a_history_that_replays(
    temporal_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last audit batch (a local activity) was still being written when the delivery began to wait for it
    with a timer; live, the timer was started, while on replay the batch's result is known at once and the
    timer never is: the finished delivery's history no longer replayed - `aicd status` of it failed with a
    nondeterminism error as soon as a worker had to replay it. The wait is now the batch's own."""
    sink = IncidentStandin(audit_delay_s=1.5)
    await sink.start()
    monkeypatch.setenv(AUDIT_URL_ENV, sink.audit_url)
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"a.yaml": "image:\n  tag: v0\ncanary:\n  weight: 0\n"})
    document = spec_document(
        "slow-sink",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [{"name": "one", "targets": ["a"], "strategy": {"canary": {"steps": [{"setWeight": 100}]}}}],
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "carol"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
        history = await handle_for(client, plan.delivery_id).fetch_history()
    await sink.stop()
    assert result.phase == "succeeded", result.reason
    assert any(e["type"].endswith(".finished") for batch in sink.audit_batches for e in batch)
    replayed = await Replayer(workflows=ALL_WORKFLOWS, workflow_runner=sandbox_runner()).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert replayed.replay_failure is None, replayed.replay_failure
    events = json.loads(history.to_json())["events"]  # the end took the path without a timer
    assert any(AUDIT_DRAIN_WITHOUT_TIMER.encode() in patch for patch in patch_markers(events))
