"""Feature flags in GitOps style: setFlag steps change a flagd flag-definition file in the GitOps repository,
one commit per change, and a rollback restores it. What each commit means is checked the way an application
would read it: the real OpenFeature Python SDK with its flagd provider in in-process file mode, evaluating the
committed file for thousands of users."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from temporalio.testing import WorkflowEnvironment

from aicd.activities import WorkerSettings
from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.flags import FlagChange, apply_flag_change, rollout_percent
from aicd.messages import HumanAction, Trigger
from aicd.plan import render_tree
from aicd.status_view import status_text
from aicd.testing.engine import (
    assert_replays,
    commits,
    git,
    make_repo,
    plan_from,
    show,
    spec_document,
    temporal_env,
    wait_for,
)
from aicd.worker import build_worker

__all__ = ["temporal_env"]

VALUES = "apps/shop/values.yaml"
FLAGS = "apps/shop/flags.json"
FLAG_FILE = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "flags": {
        "new-checkout": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
        },
        "banner": {"state": "DISABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red"},
    },
}
SEED_FLAGS = json.dumps(FLAG_FILE, indent=2) + "\n"
USERS = 4000


def evaluate(text: str, tmp_path: Path, flag: str = "new-checkout") -> tuple[float, set[str]]:
    """The share of USERS that get True for `flag` from the file `text`, and the reasons OpenFeature gave:
    the flagd provider reads the file in process, as an application next to its GitOps checkout would."""
    file = tmp_path / f"flags-{time.monotonic_ns()}.json"
    file.write_text(text)
    api.set_provider_and_wait(
        FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(file))
    )
    try:
        client = api.get_client()
        details = [
            client.get_boolean_details(flag, False, EvaluationContext(f"user-{index}"))
            for index in range(USERS)
        ]
    finally:
        api.shutdown()
    assert not [(d.error_code, d.error_message) for d in details if d.error_code is not None][:3]
    return sum(d.value for d in details) / USERS, {str(d.reason) for d in details}


def test_a_percentage_rollout_is_a_fractional_split_the_sdk_evaluates(tmp_path: Path) -> None:
    text = apply_flag_change(SEED_FLAGS, FlagChange("new-checkout", percent=10, variant="on"))
    assert rollout_percent(text, "new-checkout", "on") == 10
    share, _ = evaluate(text, tmp_path)
    assert 0.07 < share < 0.13
    # Only that flag changed; the file keeps its layout and its other flags.
    document = json.loads(text)
    assert document["flags"]["banner"] == FLAG_FILE["flags"]["banner"]
    assert text.startswith('{\n  "$schema"') and text.endswith("}\n")
    wider = apply_flag_change(text, FlagChange("new-checkout", percent=50, variant="on"))
    assert json.loads(wider)["flags"]["new-checkout"]["targeting"] == {
        "fractional": [["on", 50], ["off", 50]]
    }


def test_flag_changes_that_cannot_be_made_say_why() -> None:
    with pytest.raises(
        ValueError, match=r"flag 'nope' is not defined \(flags: \['banner', 'new-checkout'\]\)"
    ):
        apply_flag_change(SEED_FLAGS, FlagChange("nope", state="ENABLED"))
    with pytest.raises(
        ValueError, match=r"default variant 'green' is not one of its variants \['blue', 'red'\]"
    ):
        apply_flag_change(SEED_FLAGS, FlagChange("banner", default_variant="green"))
    with pytest.raises(ValueError, match="'off' is already the default variant"):
        apply_flag_change(SEED_FLAGS, FlagChange("new-checkout", percent=10, variant="off"))
    ruled = json.loads(SEED_FLAGS)
    ruled["flags"]["new-checkout"]["targeting"] = {
        "if": [{"in": ["@example.com", {"var": "email"}]}, "on", None]
    }
    with pytest.raises(ValueError, match="targeting rules aicd did not write"):
        apply_flag_change(json.dumps(ruled), FlagChange("new-checkout", percent=10, variant="on"))
    with pytest.raises(ValueError, match='no "flags" object'):
        apply_flag_change("[]", FlagChange("new-checkout", state="ENABLED"))


def flag_delivery(tmp_path: Path, steps: list[dict[str, Any]]) -> tuple[Any, str]:
    source, revision = make_repo(tmp_path, "source", {"README": "shop\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {VALUES: "image:\n  tag: v1\n", FLAGS: SEED_FLAGS})
    document = spec_document(
        "shop",
        source,
        gitops,
        {"web": {"kind": "git", "path": VALUES, "flags": FLAGS}},
        [{"name": "prod", "targets": ["web"], "strategy": {"canary": {"steps": steps}}}],
        build={"command": ["true"], "artifact": "registry.example.com/shop:v2"},
    )
    return plan_from(document, revision), gitops


async def deliver(env: WorkflowEnvironment, tmp_path: Path, plan: Any) -> Any:
    client = env.client
    queue = f"flags-{os.getpid()}-{time.monotonic_ns()}"
    async with build_worker(client, WorkerSettings(state_dir=tmp_path / "state"), queue):
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
        await assert_replays(client, [plan.delivery_id, f"{plan.delivery_id}--prod--web"])
    return status


async def test_a_flag_rolled_out_to_10_50_100_percent_then_rolled_back(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    steps = [
        {"setWeight": 100},
        {"setFlag": {"flag": "new-checkout", "percent": 10, "variant": "on"}},
        {"setFlag": {"flag": "new-checkout", "percent": 50, "variant": "on"}},
        {"setFlag": {"flag": "new-checkout", "percent": 100, "variant": "on"}},
        {"setFlag": {"flag": "banner", "state": "ENABLED", "defaultVariant": "blue"}},
        {"verify": {"name": "e2e", "command": ["false"]}},  # fails: the whole rollout is rolled back
    ]
    plan, gitops = flag_delivery(tmp_path, steps)
    assert (
        "1-setFlag: setFlag new-checkout: on to 10% (one commit to the target's flags file)"
        in render_tree(plan)
    )
    status = await deliver(temporal_env, tmp_path, plan)
    assert status.phase == "failed" and "verify e2e failed" in status.reason

    by_step = {
        entry["Aicd-Step"].rsplit("/", 1)[1]: entry["sha"]
        for entry in commits(gitops)
        if "Aicd-Step" in entry
    }
    assert list(by_step) == ["0-setWeight", "1-setFlag", "2-setFlag", "3-setFlag", "4-setFlag", "rollback"]
    shares = []
    for step in ("1-setFlag", "2-setFlag", "3-setFlag"):
        share, reasons = evaluate(show(gitops, by_step[step], FLAGS), tmp_path)
        shares.append(share)
        assert reasons == {"TARGETING_MATCH"}
    assert 0.07 < shares[0] < 0.13 and 0.45 < shares[1] < 0.55 and shares[2] == 1.0
    banner = json.loads(show(gitops, by_step["4-setFlag"], FLAGS))["flags"]["banner"]
    assert (banner["state"], banner["defaultVariant"]) == ("ENABLED", "blue")
    # The rollback restored the flag file with the values file, in one commit: nobody gets the new checkout.
    assert show(gitops, "main", FLAGS) == SEED_FLAGS.strip()
    assert show(gitops, "main", VALUES) == "image:\n  tag: v1"
    share, reasons = evaluate(show(gitops, "main", FLAGS) + "\n", tmp_path)
    assert share == 0.0 and reasons == {"STATIC"}
    web = status.targets["web"]
    assert web.state == "rolled-back" and web.flags["new-checkout"] == "on to 100%"
    shown = status_text(status)
    assert "new-checkout on to 100%" in shown and "banner enable, default variant blue" in shown


async def test_a_flag_the_file_does_not_define_fails_the_step_without_a_commit(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    plan, gitops = flag_delivery(
        tmp_path, [{"setFlag": {"flag": "dark-mode", "state": "ENABLED"}}, {"setWeight": 100}]
    )
    status = await deliver(temporal_env, tmp_path, plan)
    assert status.phase == "failed"
    assert f"{FLAGS}: flag 'dark-mode' is not defined" in status.reason
    assert not [entry for entry in commits(gitops) if "Aicd-Step" in entry]
    assert show(gitops, "main", FLAGS) == SEED_FLAGS.strip()


async def test_a_rollback_keeps_a_flag_a_human_changed_mid_rollout_and_a_resume_accepted(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """On-call switches another flag in the flags file by hand while a flag rollout waits (the banner's
    default variant to blue: a kill switch would be the same one-value edit), the delivery stops at its next
    write, on-call resumes it (accepting the edit), and the rollout later fails. The rollback must take back the delivery's own flag rollout and
    keep the human's value, as for any values file. It used to restore the whole flags file as before the
    delivery - silently undoing the human's switch - because the delivery's first percentage step adds a
    `targeting` rule, more than a scalar, and then nobody's edits were carried over."""
    steps: list[dict[str, Any]] = [
        {"setFlag": {"flag": "new-checkout", "percent": 10, "variant": "on"}},
        {"pause": {}},
        {"setFlag": {"flag": "new-checkout", "percent": 50, "variant": "on"}},
        {"verify": {"name": "e2e", "command": ["false"]}},  # fails: the target is rolled back
    ]
    plan, gitops = flag_delivery(tmp_path, steps)
    client = temporal_env.client
    queue = f"flags-{os.getpid()}-{time.monotonic_ns()}"
    async with build_worker(client, WorkerSettings(state_dir=tmp_path / "state"), queue):
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.phase == "paused")
        work = tmp_path / "human"
        git("clone", "-q", gitops, str(work))
        edited = json.loads((work / FLAGS).read_text())
        edited["flags"]["banner"]["defaultVariant"] = "blue"
        (work / FLAGS).write_text(json.dumps(edited, indent=2) + "\n")
        git("-c", "user.name=Alice", "-c", "user.email=alice@x", "commit", "-qam", "banner: blue", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))  # the `pause: {}`
        await wait_for(client, plan.delivery_id, lambda s: s.targets["web"].human_edit is not None)
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall", "banner change is fine"))
        await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    assert status.phase == "failed" and status.targets["web"].state == "rolled-back"
    restored = json.loads(show(gitops, "main", FLAGS))
    assert "targeting" not in restored["flags"]["new-checkout"]  # the delivery's rollout is taken back
    assert restored["flags"]["banner"]["defaultVariant"] == "blue"  # the human's accepted switch stays
    expected = json.loads(SEED_FLAGS)
    expected["flags"]["banner"]["defaultVariant"] = "blue"
    assert restored == expected


async def test_a_human_edit_of_the_values_file_made_before_a_flag_step_still_pauses_the_next_values_write(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """While the canary waits at `pause: {}`, on-call sets the canary weight back to 0 by hand in the values
    file (a kill). The next step changes a flag - another file - and lands; the step after it writes the
    values file again. That write must stop and name the human's commit, as any write over a human's edit
    does: it used to land silently (setWeight 50 over the human's 0), because the ownership check only looked
    at commits after the delivery's last write to *any* of the target's files - the flag commit, made after
    the human's edit."""
    steps: list[dict[str, Any]] = [
        {"setWeight": 10},
        {"pause": {}},
        {"setFlag": {"flag": "banner", "state": "ENABLED"}},
        {"setWeight": 50},
        {"pause": {}},
    ]
    plan, gitops = flag_delivery(tmp_path, steps)
    client = temporal_env.client
    queue = f"flags-{os.getpid()}-{time.monotonic_ns()}"
    async with build_worker(client, WorkerSettings(state_dir=tmp_path / "state"), queue):
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.phase == "paused")
        work = tmp_path / "human"
        git("clone", "-q", gitops, str(work))
        values = (work / VALUES).read_text()
        assert "weight: 10" in values
        (work / VALUES).write_text(values.replace("weight: 10", "weight: 0"))
        git("-c", "user.name=Alice", "-c", "user.email=alice@x", "commit", "-qam", "kill canary", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        human = git("rev-parse", "HEAD", cwd=work)
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))  # the first `pause: {}`
        stopped = await wait_for(
            client,
            plan.delivery_id,
            lambda s: s.targets["web"].human_edit is not None or s.targets["web"].step_index == 4,
        )
        steps_done = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
        await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "enough"))
        await handle_for(client, plan.delivery_id).result()
    assert "prod/web/3-setWeight" not in steps_done, "setWeight 50 was written over the human's weight 0"
    edit = stopped.targets["web"].human_edit
    assert edit is not None and edit["sha"] == human, stopped.targets["web"]
    assert "weight: 0" in show(gitops, "main", VALUES)  # the abort keeps the human's kill


async def test_a_human_edit_of_the_flags_file_in_an_earlier_stage_pauses_the_next_stage_s_flag_write(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The target runs through two stages. In the first, a flag step rolls `new-checkout` to 10% and the canary
    waits at `pause: {}`, where on-call kills the flag by hand in the flags file; the resume's setWeight 100
    writes the values file - the other file - and lands. The second stage's flag step writes the flags file
    again: it must stop and name the human's commit. It used to land silently, because the second stage's
    rollout knew only the delivery's last write to any of the target's files - the values commit, made after
    the human's edit."""
    source, revision = make_repo(tmp_path, "source", {"README": "shop\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {VALUES: "image:\n  tag: v1\n", FLAGS: SEED_FLAGS})
    document = spec_document(
        "shop",
        source,
        gitops,
        {"web": {"kind": "git", "path": VALUES, "flags": FLAGS}},
        [
            {
                "name": "canary",
                "targets": ["web"],
                "strategy": {
                    "canary": {
                        "steps": [
                            {"setFlag": {"flag": "new-checkout", "percent": 10, "variant": "on"}},
                            {"pause": {}},
                            {"setWeight": 100},
                        ]
                    }
                },
            },
            {
                "name": "rest",
                "targets": ["web"],
                "strategy": {
                    "canary": {
                        "steps": [{"setFlag": {"flag": "new-checkout", "percent": 50, "variant": "on"}}]
                    }
                },
            },
        ],
        build={"command": ["true"], "artifact": "registry.example.com/shop:v2"},
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    queue = f"flags-{os.getpid()}-{time.monotonic_ns()}"
    async with build_worker(client, WorkerSettings(state_dir=tmp_path / "state"), queue):
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.phase == "paused")
        work = tmp_path / "human"
        git("clone", "-q", gitops, str(work))
        flags = json.loads((work / FLAGS).read_text())
        flags["flags"]["new-checkout"]["state"] = "DISABLED"
        (work / FLAGS).write_text(json.dumps(flags, indent=2) + "\n")
        git(
            "-c",
            "user.name=Alice",
            "-c",
            "user.email=alice@x",
            "commit",
            "-qam",
            "kill new-checkout",
            cwd=work,
        )
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        human = git("rev-parse", "HEAD", cwd=work)
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))
        stopped = await wait_for(
            client,
            plan.delivery_id,
            lambda s: (
                s.targets["web"].stage == "rest"
                and (s.targets["web"].human_edit is not None or s.phase in ("succeeded", "failed"))
            ),
        )
        steps_done = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
        if stopped.phase not in ("succeeded", "failed"):
            await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "enough"))
        await handle_for(client, plan.delivery_id).result()
        await assert_replays(client, [plan.delivery_id, f"{plan.delivery_id}--rest--web"])
    assert "rest/web/0-setFlag" not in steps_done, "the flag was rolled to 50% over the human's kill"
    edit = stopped.targets["web"].human_edit
    assert edit is not None and edit["sha"] == human, stopped.targets["web"]
    assert json.loads(show(gitops, "main", FLAGS))["flags"]["new-checkout"]["state"] == "DISABLED"
