"""Argo Rollouts' canary steps that aicd does not have: each is refused by name, saying why and what to do
instead, where a user who pasted their Rollout's steps would otherwise read "unknown key". The step schema
lists them (so an editor shows the same words on hover), each matching nothing."""

from __future__ import annotations

from typing import Any

REFUSAL_PREFIX = "Argo Rollouts "  # every refusal's description starts so; the loader shows it as the message

# Argo Rollouts' CanaryStep fields (pkg/apis/rollouts/v1alpha1) that aicd has no step for -> why and instead.
UNSUPPORTED_STEPS: dict[str, str] = {
    "experiment": "aicd starts no extra ReplicaSets for an experiment; its analysis steps compare the canary"
    " with the stable version already serving. Use `setWeight: N` then `analysis: {duration: 10m}` (metrics"
    " under spec.analysis.metrics, or Argo AnalysisTemplates through spec.analysis.analysisTemplates)",
    "setCanaryScale": "aicd changes the canary's traffic weight (spec.write.weight), not its replica count; size"
    " the canary in the chart the target's file configures, and remove this step",
    "setHeaderRoute": "aicd routes traffic by weight only; configure header-based routing to the canary in your"
    " ingress or mesh (the chart of the target's file), and remove this step",
    "setMirrorRoute": "aicd does not mirror traffic; send real traffic to the canary with a small `setWeight`"
    " followed by an `analysis` step, and remove this step",
    "plugin": "aicd has no step plugins; run the plugin's work as a `test` or `provision` command of the spec,"
    " or as a separate stage, and remove this step",
}


# Fields of Argo's analysis step (RolloutAnalysis) that aicd has no equivalent for.
UNSUPPORTED_ANALYSIS_FIELDS: dict[str, str] = {
    "dryRun": "aicd has no dry-run metrics; a metric either counts or is not listed. Remove the metric from"
    " this step (keep it in the template), or remove dryRun",
    "measurementRetention": "the judge keeps every look of a step in the delivery's history (see `aicd status`"
    " and the dashboard); remove measurementRetention",
}


def refusal(name: str) -> str:
    """The message for an Argo Rollouts step aicd does not support."""
    return f"{REFUSAL_PREFIX}step {name} is not supported by aicd: {UNSUPPORTED_STEPS[name]}"


def unsupported_step_schemas() -> dict[str, dict[str, Any]]:
    """Schema properties that match no value and carry the refusal as their description."""
    return {name: {"not": {}, "description": refusal(name)} for name in UNSUPPORTED_STEPS}


def unsupported_analysis_fields() -> dict[str, dict[str, Any]]:
    """The same for the fields of Argo's analysis step that aicd lacks."""
    return {
        name: {
            "not": {},
            "description": f"{REFUSAL_PREFIX}analysis field {name} is not supported by aicd: {why}",
        }
        for name, why in UNSUPPORTED_ANALYSIS_FIELDS.items()
    }
