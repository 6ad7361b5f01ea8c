"""The worker's workflows and their sandbox, in one place. Kept out of the package's ``__init__``: the
sandbox imports the package afresh for every workflow run, which then loads only that workflow's modules."""

from __future__ import annotations

import pkgutil

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import aicd
from aicd.workflows.delivery import DeliveryWorkflow
from aicd.workflows.edge_fleet import EdgeFleetWorkflow
from aicd.workflows.freezes import FreezeBoardWorkflow
from aicd.workflows.target_rollout import TargetRolloutWorkflow

ALL_WORKFLOWS: list[type] = [DeliveryWorkflow, TargetRolloutWorkflow, EdgeFleetWorkflow, FreezeBoardWorkflow]


def sandbox_runner() -> SandboxedWorkflowRunner:
    # Deterministic, heavy modules are passed through rather than re-imported for every workflow run: every
    # part of aicd but the workflows themselves, which the sandbox loads afresh for each run.
    passed_through = (
        *(
            f"aicd.{module.name}"
            for module in pkgutil.iter_modules(aicd.__path__)
            if module.name != "workflows"
        ),
        "ruamel",
        "yaml",
        "jsonschema",
        "git",
        "numpy",
        "scipy",
    )
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*passed_through)
    )
