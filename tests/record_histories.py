"""Records the workflow histories the replay test guards: a delivery with an approval gate, a pause and a
resume, a `pause: {}` step, a second stage whose target is aborted and rolled back.

Run `python -m tests.record_histories` after a deliberate, versioned change of workflow behaviour; the
replay test fails whenever workflow code changes in a way that would break running deliveries."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from aicd import search
from aicd.client import handle_for, send_action, start_delivery
from aicd.messages import HumanAction, Trigger
from tests.helpers_engine import TEMPORAL_BIN, make_repo, plan_from, running_worker, spec_document, wait_for

HISTORY_DIR = Path(__file__).parent / "histories"


async def record_scenario(client: Client, root: Path) -> list[WorkflowHistory]:
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {"a.yaml": "image: {tag: v0}\n", "b.yaml": "image: {tag: v0}\n"})
    document = spec_document(
        "replay",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}, "b": {"kind": "git", "path": "b.yaml"}},
        [
            {
                "name": "one",
                "targets": ["a"],
                "approval": {"approvers": ["alice"], "timeout": "1h"},
                "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": "1s"}, {"pause": {}}, {"setWeight": 100}]}},
            },
            {"name": "two", "targets": ["b"], "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]}}},
        ],
        rollback={"scope": "release"},
    )
    plan = plan_from(document, revision)
    async with running_worker(client, root / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "one")
        await send_action(client, plan.delivery_id, "approve", HumanAction("alice"))
        await wait_for(client, plan.delivery_id, lambda s: "a" in s.targets and s.targets["a"].step_index == 1)
        await send_action(client, plan.delivery_id, "pause", HumanAction("oncall", "look"))
        await asyncio.sleep(1.5)
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))
        await wait_for(client, plan.delivery_id, lambda s: "a" in s.targets and s.targets["a"].state == "awaiting-resume")
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))
        await wait_for(client, plan.delivery_id, lambda s: "b" in s.targets and s.targets["b"].state == "awaiting-resume")
        await send_action(client, plan.delivery_id, "abort", HumanAction("carol", "enough"))
        await handle_for(client, plan.delivery_id).result()
        ids = [plan.delivery_id, f"{plan.delivery_id}--one--a", f"{plan.delivery_id}--two--b"]
        return [await client.get_workflow_handle(workflow_id).fetch_history() for workflow_id in ids]


async def main() -> None:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL_BIN, search_attributes=list(search.ALL)
    ) as env:
        with tempfile.TemporaryDirectory() as root:
            histories = await record_scenario(env.client, Path(root))
    HISTORY_DIR.mkdir(exist_ok=True)
    for history in histories:
        kind = "delivery" if "--" not in history.workflow_id else "target-" + history.workflow_id.rsplit("--", 1)[1]
        path = HISTORY_DIR / f"{kind}.json"
        path.write_text(json.dumps(json.loads(history.to_json()), indent=1))
        print(f"recorded {path} ({len(history.events)} events)")


if __name__ == "__main__":
    asyncio.run(main())
