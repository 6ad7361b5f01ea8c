"""`aicd audit`: the audit records of past deliveries rebuilt from what cannot be edited quietly - each
delivery's Temporal history (its trigger, the phases it went through, every human action it accepted, its
rollbacks, how it ended) and the GitOps repository's commits with its trailers (every desired-state change,
who it is attributed to). The streamed types come out as the worker wrote them (aicd.governance.audit), so
an exported file can be checked against Temporal."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio.client import Client

from aicd.dashboard.history import DeliveryDigest
from aicd.governance.audit import AuditEntry, cloud_event
from aicd.messages import DELIVERY_WORKFLOW
from aicd.people import resolve
from aicd.plan import delivery_id as delivery_prefix
from aicd.trailers import ACTOR, DELIVERY_ID, STEP, parse_actor, trailer_values

# Update names whose recorded kind differs (the update is named for Python, the record for people).
ACTION_KIND = {"break_glass": "break-glass"}


@dataclass
class Delivery:
    delivery_id: str
    run_id: str
    started: datetime


async def deliveries(client: Client, app: str | None, since: datetime | None) -> list[Delivery]:
    query = f"WorkflowType = '{DELIVERY_WORKFLOW}'"
    if app:
        query += f" AND WorkflowId STARTS_WITH '{delivery_prefix(app, '')}'"
    if since is not None:
        query += f" AND StartTime >= '{since.isoformat()}'"
    found = [
        Delivery(execution.id, execution.run_id, execution.start_time)
        async for execution in client.list_workflows(query)
    ]
    return sorted(found, key=lambda delivery: (delivery.started, delivery.delivery_id))


async def digest_of(client: Client, delivery: Delivery) -> DeliveryDigest:
    history = await client.get_workflow_handle(delivery.delivery_id, run_id=delivery.run_id).fetch_history()
    digest = DeliveryDigest()
    await digest.feed(list(history.events), client.data_converter)
    return digest


def git_commits(repo: str, branch: str, delivery_id: str) -> list[dict[str, str]]:
    """The delivery's commits on the GitOps branch (oldest first): sha, time, subject and trailers."""
    with tempfile.TemporaryDirectory(prefix="aicd-audit-") as clone:
        subprocess.run(
            [
                "git",
                "clone",
                "--quiet",
                "--bare",
                "--filter=blob:none",
                "--single-branch",
                "--branch",
                branch,
                repo,
                clone,
            ],
            check=True,
            capture_output=True,
        )
        log = subprocess.run(
            [
                "git",
                "--git-dir",
                clone,
                "log",
                "--reverse",
                "--fixed-strings",
                f"--grep={DELIVERY_ID}: {delivery_id}",
                "--format=%H%x00%cI%x00%(trailers:only,unfold)%x00%s%x1e",
                branch,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    commits = []
    for record in log.split("\x1e"):
        record = record.strip()
        if not record:
            continue
        sha, when, trailers, subject = record.split("\x00")
        values = trailer_values(trailers)
        if values.get(DELIVERY_ID) == delivery_id:
            commits.append({"sha": sha, "time": when, "subject": subject, **values})
    return commits


def _dedupe_phases(phases: list[tuple[datetime, str]]) -> list[tuple[datetime, str]]:
    kept: list[tuple[datetime, str]] = []
    for at, phase in phases:
        if not kept or kept[-1][1] != phase:
            kept.append((at, phase))
    return kept


def records_of(
    delivery: Delivery, digest: DeliveryDigest, commits: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """The delivery's audit records in time order (streamed types first where times are equal)."""
    plan = digest.input.plan if digest.input is not None else None
    app = plan.app if plan is not None else delivery.delivery_id
    entries: list[tuple[str, int, AuditEntry]] = []

    def add(kind: str, at: str, order: int, data: dict[str, Any]) -> None:
        entries.append((at, order, AuditEntry(kind, delivery.delivery_id, app, at, 0, data)))

    if digest.input is not None and digest.started is not None:
        trigger = digest.input.trigger
        add(
            "started",
            digest.started.isoformat(),
            0,
            {
                "trigger": {"source": trigger.source, "actor": trigger.actor, "branch": trigger.branch},
                "revision": digest.input.plan.revision,
                "artifact": digest.input.plan.artifact,
            },
        )
    for at, phase in _dedupe_phases(digest.phases):
        add("phase", at.isoformat(), 1, {"phase": phase})
    people = digest.input.plan.people if digest.input is not None else []
    for recorded in digest.actions:
        stage = next((name for when, name in reversed(digest.stages) if when <= recorded.at), None)
        person = resolve(people, recorded.action.actor, recorded.action.via)
        add(
            "action",
            recorded.at.isoformat(),
            2,
            {
                "kind": ACTION_KIND.get(recorded.kind, recorded.kind),
                "actor": recorded.action.actor,
                "reason": recorded.action.reason,
                "stage": stage,
                "via": recorded.action.via,
                # As the worker streamed it: only when the spec declares the person.
                **({"person": person.name} if person.declared else {}),
            },
        )
    for rollback in digest.rollbacks:
        add("rollback", rollback.at.isoformat(), 3, {"targets": rollback.targets, "reason": rollback.reason})
    for commit in commits:
        # The person a human's commit names (`alice (as U0ALICE via slack)`) in the shape of an action's record.
        actor = parse_actor(commit.get(ACTOR, ""))
        who = {"actor": actor.identity, "via": actor.via, "person": actor.person} if actor.person else {}
        add(
            "commit",
            datetime.fromisoformat(commit["time"]).isoformat(),
            3,
            {
                "sha": commit["sha"],
                "step": commit.get(STEP, ""),
                **(who or {"actor": actor.who}),
                "subject": commit["subject"],
            },
        )
    if digest.result is not None and digest.closed is not None:
        add(
            "finished",
            digest.closed.isoformat(),
            4,
            {"phase": digest.result.phase, "reason": digest.result.reason},
        )
    ordered = sorted(entries, key=lambda item: (datetime.fromisoformat(item[0]), item[1]))
    records = []
    for seq, (_at, _order, entry) in enumerate(ordered, 1):
        entry.seq = seq
        records.append(cloud_event(entry))
    return records


async def reconstruct(
    client: Client, app: str | None = None, since: datetime | None = None
) -> list[dict[str, Any]]:
    """Every matching delivery's records, delivery after delivery (by start)."""
    records: list[dict[str, Any]] = []
    for delivery in await deliveries(client, app, since):
        digest = await digest_of(client, delivery)
        plan = digest.input.plan if digest.input is not None else None
        commits = (
            git_commits(plan.gitops_repo, plan.gitops_branch, delivery.delivery_id)
            if plan is not None
            else []
        )
        records += records_of(delivery, digest, commits)
    return records
