"""Every side effect of a delivery: commands, Git, target drivers, Prometheus, Slack."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client

from aicd.activities.analysis import analysis_look
from aicd.activities.audit import AuditActivities
from aicd.activities.commands import CommandActivities, CommandSecrets
from aicd.activities.edge import EdgeActivities
from aicd.activities.gitops import GitOpsActivities
from aicd.activities.governance import GovernanceActivities
from aicd.activities.incidents import IncidentActivities
from aicd.activities.notify import notify
from aicd.activities.releases import ReleaseActivities
from aicd.activities.steps import StepActivities
from aicd.activities.sync import sync_target
from aicd.activities.verification import VerificationActivities


@dataclass
class WorkerSettings:
    state_dir: Path  # Git clones, source checkouts and command logs
    # What specs may hand to their commands by name (AICD_COMMAND_SECRET_ENV, AICD_COMMAND_SECRET_DIR).
    command_secrets: CommandSecrets = field(default_factory=CommandSecrets.from_env)
    # The queue only this worker serves (aicd.workflows.common.host_queue; set by build_worker): results of
    # commands name it, so the delivery's later commands and gate checks find the checkout and reports.
    host_queue: str = ""


def delivery_activities(settings: WorkerSettings, client: Client) -> list[Callable[..., Any]]:
    """The activities of the delivery queue, served by every worker: commands, reads, syncs, analysis,
    notifications, release claims, gates, incident hooks, the audit stream. `client` lets activities ask
    Temporal (release claims, the freeze board)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    commands = CommandActivities(settings.state_dir, settings.command_secrets, settings.host_queue)
    releases = ReleaseActivities(client)
    gitops = GitOpsActivities(settings.state_dir, client)  # reads only: writes are the writer's
    governance = GovernanceActivities(settings.state_dir, gitops, client)
    return [
        commands.run_command,
        VerificationActivities(settings.command_secrets).http_check,
        gitops.read_file,
        gitops.read_fleet,
        gitops.read_fleet_names,
        sync_target,
        EdgeActivities(gitops).check_sites,
        analysis_look,
        notify,
        releases.claim,
        releases.running,
        governance.check_gates,
        IncidentActivities(client).send,
        AuditActivities().append,
    ]


def writer_activities(settings: WorkerSettings, client: Client) -> list[Callable[..., Any]]:
    """The GitOps writes (aicd.workflows.common.writer_queue): served by one worker of the fleet at a time.
    `client` lets each write ask Temporal whether it is still wanted before it pushes (the fence)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    gitops = GitOpsActivities(settings.state_dir, client)
    return [gitops.commit, StepActivities(gitops).apply_step, gitops.rollback, gitops.rollback_many]
