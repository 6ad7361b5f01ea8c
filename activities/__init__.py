"""Every side effect of a delivery: commands, Git, target drivers, Prometheus, Slack."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client

from activities.analysis import analysis_look
from activities.commands import CommandActivities
from activities.edge import check_sites
from activities.gitops import GitOpsActivities
from activities.notify import notify
from activities.releases import ReleaseActivities
from activities.steps import StepActivities
from activities.sync import sync_target


@dataclass
class WorkerSettings:
    state_dir: Path  # Git clones, source checkouts and command logs


def all_activities(settings: WorkerSettings, client: Client) -> list[Callable[..., Any]]:
    """Every activity; `client` lets activities ask Temporal before a write (the fence) and tell other
    deliveries of an app that a newer one claims it."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    gitops = GitOpsActivities(settings.state_dir, client)
    commands = CommandActivities(settings.state_dir)
    releases = ReleaseActivities(client)
    return [
        commands.run_command,
        gitops.commit,
        StepActivities(gitops).apply_step,
        gitops.rollback,
        gitops.rollback_many,
        gitops.read_file,
        sync_target,
        check_sites,
        analysis_look,
        notify,
        releases.claim,
        releases.running,
    ]
