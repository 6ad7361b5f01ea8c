"""`analysis: {duration, metrics}`: the canary judge compares canary and baseline over spec.analysis's
metrics (or a subset) for a duration; a failure fails the rollout, too little evidence waits for a human."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from aicd.judge.decision import AnalysisPolicy
from aicd.judge.model import OnInconclusive
from aicd.spec.durations import format_duration, parse_duration
from aicd.spec.yamlsafe import Path
from aicd.steps.base import Finding, Rollout, StepKind
from aicd.steps.unsupported import unsupported_analysis_fields

DEFAULT_ANALYSIS_DURATION_S = 5 * 60.0


@dataclass(frozen=True)
class AnalysisStep(StepKind):
    duration_s: float
    metrics: list[str] = field(default_factory=list)  # a subset of spec.analysis.metrics; empty: all
    on_inconclusive: OnInconclusive = OnInconclusive.PAUSE  # what an inconclusive end does
    max_duration_s: float | None = None  # with onInconclusive extend: look until then
    kind: Literal["analysis"] = "analysis"

    name: ClassVar[str] = "analysis"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "description": "Run the canary judge over spec.analysis.metrics for a duration.",
        "properties": {
            "duration": {
                "$ref": "#/$defs/duration",
                "description": "How long the judge gathers evidence (default 5m). A shown regression fails the"
                " step at any look; a pass needs the whole duration.",
            },
            "metrics": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Only these metrics of spec.analysis (default all).",
            },
            "onInconclusive": {
                "enum": [str(choice) for choice in OnInconclusive],
                "description": "What happens when the duration is over and some metric is neither shown within"
                " tolerance nor failed: pause waits for a human to resume (a pass) or abort (default); fail fails"
                " the step (rollback); extend keeps looking every interval until the evidence decides or"
                " maxDuration is reached, then waits for a human.",
            },
            "maxDuration": {
                "$ref": "#/$defs/duration",
                "description": "With onInconclusive extend: the longest the step may look in all, at least the"
                " duration (default three times the duration).",
            },
            # Argo Rollouts' form, expanded into the fields above when the spec is loaded
            # (aicd.argo_rollouts.expand): its Prometheus metrics join spec.analysis.metrics.
            "templates": {
                "type": "array",
                "minItems": 1,
                "description": "Argo Rollouts AnalysisTemplates (or ClusterAnalysisTemplates) whose Prometheus"
                " metrics this step judges, read from spec.analysis.analysisTemplates.files; each metric's"
                " successCondition/failureCondition becomes the canary's min/max and the judge compares canary"
                " with stable (`aicd validate` says what it does instead of each condition).",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["templateName"],
                    "properties": {
                        "templateName": {
                            "type": "string",
                            "minLength": 1,
                            "description": "The template's metadata.name.",
                        },
                        "clusterScope": {
                            "type": "boolean",
                            "description": "A ClusterAnalysisTemplate rather than an AnalysisTemplate.",
                        },
                    },
                },
            },
            "args": {
                "type": "array",
                "description": "Values for the templates' {{args.NAME}} (Argo Rollouts' form).",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "description": "The template's arg."},
                        "value": {
                            "type": "string",
                            "description": "Its value; aicd placeholders are filled.",
                        },
                        "valueFrom": {
                            "type": "object",
                            "description": "Refused where used: aicd cannot read values from the cluster.",
                        },
                    },
                },
            },
            "analysisRunMetadata": {
                "type": "object",
                "description": "Argo Rollouts' labels and annotations for the AnalysisRun; aicd runs none, so"
                " they are ignored.",
            },
            **unsupported_analysis_fields(),
        },
    }

    @classmethod
    def parse(cls, index: int, value: Any) -> AnalysisStep:
        value = value or {}
        duration = value.get("duration")
        return cls(
            index,
            parse_duration(duration) if duration else DEFAULT_ANALYSIS_DURATION_S,
            list(value.get("metrics", ())),
            OnInconclusive(value.get("onInconclusive", OnInconclusive.PAUSE)),
            parse_duration(value["maxDuration"]) if "maxDuration" in value else None,
        )

    def policy(self, interval_s: float) -> AnalysisPolicy:
        """The step's timeline for the judge's decision across looks."""
        return AnalysisPolicy(self.duration_s, interval_s, self.on_inconclusive, self.max_duration_s)

    @classmethod
    def checks(cls, occurrences: list[tuple[Path, Any]], spec: Mapping[str, Any]) -> Iterator[Finding]:
        """An analysis needs spec.analysis, and names only its metrics."""
        analysis = spec.get("analysis")
        known = {metric.get("name") for metric in (analysis or {}).get("metrics", [])}
        for path, value in occurrences:
            if analysis is None:
                yield (
                    path,
                    "analysis step but spec.analysis (a Prometheus provider and metrics) is not configured",
                )
            elif not known:
                yield path, "analysis step but spec.analysis.metrics is empty"
            for index, name in enumerate((value or {}).get("metrics", [])):
                if name not in known:
                    yield (*path, "metrics", index), f"unknown metric {name!r}; metrics are {sorted(known)}"

    def describe(self) -> str:
        subset = f" on {', '.join(self.metrics)}" if self.metrics else ""
        if self.on_inconclusive == OnInconclusive.FAIL:
            subset += " (fails if inconclusive)"
        elif self.on_inconclusive == OnInconclusive.EXTEND:
            subset += f" (if inconclusive, looks on up to {format_duration(self.policy(1.0).horizon_s)})"
        return f"analysis {format_duration(self.duration_s)}{subset}"

    async def run(self, rollout: Rollout) -> None:
        await rollout.analyse(self)
