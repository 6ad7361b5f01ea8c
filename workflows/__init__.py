"""Deterministic orchestration only: no I/O here. Every side effect is an activity in `activities/`."""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from workflows.delivery import DeliveryWorkflow
from workflows.target_rollout import TargetRolloutWorkflow

ALL_WORKFLOWS: list[type] = [DeliveryWorkflow, TargetRolloutWorkflow]

try:  # edge fleets live in their own module
    from workflows.edge_fleet import EdgeFleetWorkflow

    ALL_WORKFLOWS.append(EdgeFleetWorkflow)
except ModuleNotFoundError as error:
    if error.name != "workflows.edge_fleet":
        raise

# Deterministic, heavy modules are passed through rather than re-imported for every workflow run.
PASSED_THROUGH_MODULES = ("aicd", "activities", "ruamel", "yaml", "jsonschema", "git", "numpy", "scipy")


def sandbox_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH_MODULES)
    )
