"""Deterministic orchestration only: no I/O here. Every side effect is an activity in `activities/`."""

from __future__ import annotations

import pkgutil

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import aicd
from aicd.workflows.delivery import DeliveryWorkflow
from aicd.workflows.edge_fleet import EdgeFleetWorkflow
from aicd.workflows.freezes import FreezeBoardWorkflow
from aicd.workflows.target_rollout import TargetRolloutWorkflow

ALL_WORKFLOWS: list[type] = [DeliveryWorkflow, TargetRolloutWorkflow, EdgeFleetWorkflow, FreezeBoardWorkflow]

# Deterministic, heavy modules are passed through rather than re-imported for every workflow run: every part
# of aicd but the workflows themselves, which the sandbox loads afresh for each run.
PASSED_THROUGH_MODULES = (
    *(f"aicd.{module.name}" for module in pkgutil.iter_modules(aicd.__path__) if module.name != "workflows"),
    "ruamel",
    "yaml",
    "jsonschema",
    "git",
    "numpy",
    "scipy",
)


def sandbox_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH_MODULES)
    )
